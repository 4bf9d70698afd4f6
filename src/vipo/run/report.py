"""The run's report: ``summary.json``, a markdown table and a PNG plot of every round's evaluation."""
from __future__ import annotations

from pathlib import Path

from ..io import atomic

COLUMNS = (("semantic_pass", "semantic pass"), ("color", "color"), ("shape", "shape"), ("direction", "direction"),
           ("fidelity_good", "fidelity Good"), ("motion_good", "motion Good"))


def write_report(run_dir: Path, evals: dict[int, dict], info: dict) -> Path:
    run_dir = Path(run_dir)
    summary = dict(info)
    summary["rounds"] = {str(k): v for k, v in sorted(evals.items())}
    atomic.write_json(run_dir / "summary.json", summary)
    lines = [f"# vipo run: {run_dir.name}", "", f"method: {info.get('method')}, rounds evaluated: {len(evals) - 1}",
             "", "Judge pass rates on fixed evaluation seeds (round 0 = base model).", ""]
    for split in ("indist", "heldout"):
        n = next((e[split]["n"] for e in evals.values() if split in e), 0)
        lines += [f"## {split} ({n} clips per round)", "",
                  "| round | " + " | ".join(c[1] for c in COLUMNS) + " |",
                  "|---|" + "---|" * len(COLUMNS)]
        for k, e in sorted(evals.items()):
            if split in e:
                lines.append(f"| {k} | " + " | ".join(f"{100 * e[split].get(c, 0):.1f}%" for c, _ in COLUMNS) + " |")
        lines.append("")
    if info.get("stopped_early"):
        lines.append(f"Stopped early after round {info['last_round']}: no improvement for {info['patience']} rounds.")
    atomic.write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    _plot(run_dir / "report.png", evals)
    return run_dir / "report.md"


def _plot(path: Path, evals: dict[int, dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rounds = sorted(evals)
    fig, ax = plt.subplots(figsize=(6, 4))
    for split, style in (("indist", "-o"), ("heldout", "--s")):
        for key, label in (("semantic_pass", "semantic pass"), ("fidelity_good", "fidelity Good")):
            ys = [100 * evals[r].get(split, {}).get(key, float("nan")) for r in rounds]
            ax.plot(rounds, ys, style, label=f"{split} {label}")
    ax.set_xlabel("round")
    ax.set_ylabel("% of eval clips")
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
