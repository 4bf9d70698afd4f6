"""The run's report: ``summary.json``, a markdown table and a PNG plot of every round's evaluation, and
``report.html``, one self-contained page (PNGs embedded as base64, also written beside it as ``report-*.png``):

- metrics per round, shaped like the IPO paper's Table 2 (rows: base, round 1..R; columns per split). The columns
  are what the run measured (:func:`columns`): the world judge's exact attribute checks where it evaluated, else the
  critic's Good rates and mean score; then the win rate against the base (wins, ties, losses over consistent
  verdicts, with 95% Wilson intervals) and VBench's quality score;
- the critic's label distributions per round (on the evaluation clips, ``round-K/eval/results.jsonl``);
- the pairs' score-gap histogram per round (VideoDPO's Fig. 3; ``round-K/pairs.jsonl``);
- implicit accuracy and reward margin during training (``round-K/train_log.jsonl``);
- a gallery: the same evaluation prompt and seed across the base model and every round (frame strips, with links
  to the mp4s).

Every value read from the run's records is escaped before it is written into the page or the markdown (a record is a
file anyone could have edited: a ``<script>`` in a seed must show as text, never run); a value that should be a
number and is not is left out of plots and intervals and shown as text in the tables; a gallery ``file_name`` must
stay inside its folder.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from ..io import atomic
from ..stats import fmt, paired_difference

COLUMNS = (
    ("semantic_pass", "semantic pass"),
    ("color", "color"),
    ("shape", "shape"),
    ("direction", "direction"),
    ("fidelity_good", "fidelity Good"),
    ("motion_good", "motion Good"),
)
#: a critic other than the world judge: its Good rates and mean score
CRITIC_COLUMNS = (
    ("semantic_good", "semantic Good"),
    ("fidelity_good", "fidelity Good"),
    ("motion_good", "motion Good"),
    ("score", "mean score"),
)
#: every evaluation, where measured: the win rate against the base, VBench's quality score
MORE_COLUMNS = (
    ("win_rate", "win vs base"),
    ("tie_rate", "tie"),
    ("loss_rate", "loss"),
    ("vbench_quality", "VBench quality"),
)
NOT_RATES = ("score", "vbench_quality")


def splits(evals: dict[int, dict]) -> list[str]:
    """The evaluation's splits: indist, heldout, vbench, then any other."""
    found = dict.fromkeys(
        s for e in evals.values() if isinstance(e, dict) for s, v in e.items() if s != "config" and isinstance(v, dict)
    )
    order = ("indist", "heldout", "vbench")
    return sorted(found, key=lambda s: order.index(s) if s in order else len(order))


def columns(evals: dict[int, dict], split: str) -> list[tuple[str, str]]:
    """The columns of ``split``: what some round measured there (a world attribute only where the world judge
    evaluated)."""
    have = {k for e in evals.values() for k in _split(e, split)}
    base = COLUMNS if "semantic_pass" in have else CRITIC_COLUMNS
    return [c for c in (*base, *MORE_COLUMNS) if c[0] in have]


def cell(split: dict, key: str) -> str:
    """A rate with its interval (``53.1% [43.2, 62.8]``), a score with 3 decimals, '-' where not measured, or the
    escaped text of a value that is not a number (a record edited by hand)."""
    if split.get(key) is None:
        return "-"
    v = _num(split[key])
    if v is None:
        return _esc(split[key])
    return f"{v:.3f}" if key in NOT_RATES else fmt(v, _ci(split, key))


def versus(split: dict) -> str:
    """``W/T/L`` against the base, with the inconsistent and unjudged clips."""
    c = split.get("versus_base")
    if not isinstance(c, dict) or not c:
        return "-"
    n = {k: _esc(c.get(k, 0)) for k in ("wins", "ties", "losses", "inconsistent", "unjudged")}
    return (
        f"{n['wins']}/{n['ties']}/{n['losses']}"
        + (f", {n['inconsistent']} inconsistent" if c.get("inconsistent") else "")
        + (f", {n['unjudged']} unjudged" if c.get("unjudged") else "")
    )


def _num(v) -> float | None:
    """``v`` as a number, or None when it is not one (a record edited by hand, or a value the run never wrote)."""
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None


def _esc(v) -> str:
    return html.escape(str(v))


def _split(e, split: str) -> dict:
    got = e.get(split) if isinstance(e, dict) else None
    return got if isinstance(got, dict) else {}


def _ci(split: dict, key: str) -> tuple[float, float] | None:
    ci = split.get("ci95")
    ci = ci.get(key) if isinstance(ci, dict) else None
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(x) is not None for x in ci):
        return float(ci[0]), float(ci[1])
    return None


def write_report(run_dir: Path, evals: dict[int, dict], info: dict) -> Path:
    run_dir = Path(run_dir)
    summary = dict(info)
    summary["rounds"] = {str(k): v for k, v in sorted(evals.items())}
    atomic.write_json(run_dir / "summary.json", summary)
    # (markdown passes HTML through to whatever renders it: the records are escaped here too)
    lines = [
        f"# vipo run: {_esc(run_dir.name)}",
        "",
        f"method: {_esc(info.get('method'))}, rounds evaluated: {len(evals) - 1}",
        "",
        "Judge pass rates on fixed evaluation seeds (round 0 = base model); win/tie/loss "
        "against the base over the clips whose two orders agreed (W/T/L).",
        "",
    ]
    for split in splits(evals):
        n = next((_split(e, split).get("n") for e in evals.values() if _split(e, split)), 0)
        cols = columns(evals, split)
        lines += [
            f"## {_esc(split)} ({_esc(n)} clips per round)",
            "",
            "| round | " + " | ".join(c[1] for c in cols) + " | W/T/L vs base |",
            "|---|" + "---|" * (len(cols) + 1),
        ]
        for k, e in sorted(evals.items()):
            if _split(e, split):
                lines.append(
                    f"| {k} | "
                    + " | ".join(cell(_split(e, split), c) for c, _ in cols)
                    + f" | {versus(_split(e, split))} |"
                )
        lines.append("")
        lines += _paired_lines(run_dir, sorted(evals), split)
    lines += ["Brackets: 95% Wilson intervals over the clips.", ""] + _training_lines(run_dir, sorted(evals))
    if info.get("stopped_early"):
        lines.append(
            f"Stopped early after round {_esc(info.get('last_round'))}: no improvement for "
            f"{_esc(info.get('patience'))} rounds."
        )
    atomic.write_text(run_dir / "report.md", "\n".join(lines) + "\n")
    _plot(run_dir / "report.png", evals)
    write_html(run_dir, evals, info)
    return run_dir / "report.md"


def paired_change(run_dir: Path, k: int, split: str, base: int = 0) -> tuple[str, dict] | None:
    """Round ``k``'s change from round ``base`` on the same evaluation clips (same prompt and seed, matched by file
    name), paired: the world judge's semantic pass where it was measured, else the semantic Good rate."""
    rows = [
        {
            str(r.get("file_name")): r
            for r in _rows(run_dir / f"round-{j}" / "eval" / "results.jsonl")
            if r.get("split") == split and isinstance(r.get("labels"), dict)
        }
        for j in (k, base)
    ]
    common = sorted(set(rows[0]) & set(rows[1]))
    if not common:
        return None
    key = "passed" if all("passed" in rows[j][f] for j in (0, 1) for f in common) else None

    def hit(r: dict) -> bool:
        return r["passed"] is True if key else r["labels"].get("semantic") == "Good"

    return (
        "semantic pass" if key else "semantic Good",
        paired_difference([hit(rows[0][f]) for f in common], [hit(rows[1][f]) for f in common]),
    )


def _paired_lines(run_dir: Path, rounds: list[int], split: str) -> list[str]:
    got = [(k, paired_change(run_dir, k, split)) for k in rounds if k > 0]
    got = [(k, g) for k, g in got if g is not None]
    if not got:
        return []
    name = got[0][1][0]
    cells = ", ".join(
        f"round {k} {100 * d['diff']:+.1f} [{100 * d['ci95'][0]:+.1f}, {100 * d['ci95'][1]:+.1f}]" for k, (_, d) in got
    )
    return [
        f"Change of {name} from the base, paired over the same {got[0][1][1]['n']} clips (Newcombe's interval): "
        f"{cells}.",
        "",
    ]


def _training_lines(run_dir: Path, rounds: list[int]) -> list[str]:
    """Per trained round: the gradient norm of each loss term at its first step (what each weighs) and, for KTO,
    the class weights; from ``round-K/checkpoint/train_summary.json``."""
    rows = []
    for k in rounds:
        path = run_dir / f"round-{k}" / "checkpoint" / "train_summary.json"
        if k == 0 or not path.is_file():
            continue
        t = _record(path)
        norms = [_num(t.get(f"grad_norm_{n}")) for n in ("preference", "winner_nll", "real_nll")]
        ratio = " : ".join("-" if v is None else f"{v / norms[0]:.3g}" for v in norms) if norms[0] else "-"
        g = lambda key, spec=".3g": "-" if (v := _num(t.get(key))) is None else f"{v:{spec}}"  # noqa: E731
        kto = (
            f"{g('lambda_desirable')} / {g('lambda_undesirable')} ({_esc(t.get('n_desirable'))} / "
            f"{_esc(t.get('n_undesirable'))})"
            if "lambda_desirable" in t
            else "-"
        )
        rows.append(
            f"| {k} | {_esc(t.get('steps', '-'))} | "
            + " | ".join("-" if v is None else f"{v:.3g}" for v in norms)
            + f" | {ratio} | {g('grad_cos_preference_real', '.2f')} | {kto} |"
        )
    if not rows:
        return []
    return [
        "## Training",
        "",
        "Gradient norm of each weighted loss term at the round's first step, measured apart.",
        "",
        "| round | steps | preference | winner NLL | real NLL | ratio pref : winner : real | cos(pref, real) | "
        "KTO lambda D / U (n D / U) |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot(path: Path, evals: dict[int, dict]) -> None:
    plt = _pyplot()
    rounds = sorted(evals)
    fig, ax = plt.subplots(figsize=(7.5, 4))
    for split, style in zip(splits(evals), ("-o", "--s", ":^", "-.v")):
        for key, label in [c for c in columns(evals, split) if c[0] not in NOT_RATES][:2]:
            ys = [
                100 * (v if (v := _num(_split(evals[r], split).get(key))) is not None else float("nan")) for r in rounds
            ]
            ax.plot(rounds, ys, style, label=f"{split} {label}")
    ax.set_xlabel("round")
    ax.set_ylabel("% of eval clips")
    ax.set_xticks(rounds)
    ax.grid(alpha=0.3)
    _legend(ax)
    _save(fig, path)


def _legend(ax) -> None:
    """The legend to the right of the plotting area, where it can never cover a line or a bar."""
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)


def _save(fig, path: Path) -> bytes:
    """Write the figure as a PNG and return its bytes (for embedding)."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    _pyplot().close(fig)
    atomic.write_bytes(path, buf.getvalue())
    return buf.getvalue()


def _rows(path: Path) -> list[dict]:
    """The objects of a JSONL record (none where it is missing); anything else is refused naming the line."""
    from ..io.text import jsonl_objects

    return [row for _, row in jsonl_objects(path)] if path.is_file() else []


def _record(path: Path) -> dict:
    """A JSON record (an object), or one line saying why not."""
    from ..errors import UserError

    try:
        got = atomic.read_json(path)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise UserError(f"{path}: not a JSON record ({e})") from None
    if not isinstance(got, dict):
        raise UserError(f"{path}: expected a JSON object")
    return got


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _round_name(k: int) -> str:
    return "base" if k == 0 else f"round {k}"


def _table(evals: dict[int, dict]) -> str:
    cols = {s: columns(evals, s) for s in splits(evals)}
    head = "".join(f'<th colspan="{len(c)}">{_esc(s)}</th>' for s, c in cols.items())
    sub = "".join(f"<th>{c}</th>" for cs in cols.values() for _, c in cs)
    body = "".join(
        "<tr><td>"
        + _round_name(k)
        + "</td>"
        + "".join(_html_cell(_split(e, s), c) for s, cs in cols.items() for c, _ in cs)
        + "</tr>"
        for k, e in sorted(evals.items())
    )
    return f'<table id="metrics"><tr><th rowspan="2">model</th>{head}</tr><tr>{sub}</tr>{body}</table>'


def _html_cell(split: dict, key: str) -> str:
    if split.get(key) is None:
        return "<td>-</td>"
    v = _num(split[key])
    if v is None:
        return f"<td>{_esc(split[key])}</td>"
    if key in NOT_RATES:
        return f"<td>{v:.3f}</td>"
    ci = _ci(split, key)
    band = f'<br><small class="ci">[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}]</small>' if ci and ci[0] == ci[0] else ""
    return f"<td>{100 * v:.1f}{band}</td>"


def _label_plot(run_dir: Path, rounds: list[int]) -> bytes | None:
    counts = {}  # (round, dimension) -> {label: fraction}
    for k in rounds:
        rs = [r for r in _rows(run_dir / f"round-{k}" / "eval" / "results.jsonl") if isinstance(r.get("labels"), dict)]
        for dim in ("semantic", "fidelity", "motion"):
            if rs:
                counts[k, dim] = {
                    lab: np.mean([r["labels"].get(dim) == lab for r in rs]) for lab in ("Good", "Normal", "Bad")
                }
    if not counts:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(10, 3), sharey=True)
    for ax, dim in zip(axes, ("semantic", "fidelity", "motion")):
        bottom = np.zeros(len(rounds))
        for lab, color in (("Good", "#4caf50"), ("Normal", "#ffb300"), ("Bad", "#e53935")):
            ys = np.array([100 * counts.get((k, dim), {}).get(lab, 0.0) for k in rounds])
            ax.bar([_round_name(k) for k in rounds], ys, bottom=bottom, color=color, label=lab)
            bottom += ys
        ax.set_title(dim)
    axes[0].set_ylabel("% of eval clips")
    _legend(axes[-1])
    return _save(fig, run_dir / "report-labels.png")


def _gap_plot(run_dir: Path, rounds: list[int]) -> bytes | None:
    gaps = {
        k: [g for p in _rows(run_dir / f"round-{k}" / "pairs.jsonl") if (g := _num(p.get("gap"))) is not None]
        for k in rounds
    }
    gaps = {k: g for k, g in gaps.items() if g}
    if not gaps:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, max(max(g) for g in gaps.values()) + 1e-9, 21)
    for k, g in gaps.items():
        ax.hist(g, bins=bins, histtype="step", linewidth=1.5, label=f"round {k} ({len(g)} pairs)")
    ax.set_xlabel("score gap, chosen - rejected")
    ax.set_ylabel("pairs")
    _legend(ax)
    return _save(fig, run_dir / "report-gaps.png")


def _train_plot(run_dir: Path, rounds: list[int]) -> bytes | None:
    logs = {k: _rows(run_dir / f"round-{k}" / "train_log.jsonl") for k in rounds}
    logs = {k: h for k, h in logs.items() if h}
    if not logs:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, key in zip(axes, ("implicit_acc", "reward_margin")):
        start = 0
        for k, h in logs.items():
            pts = [(start + i, v) for i, r in enumerate(h) if (v := _num(r.get(key))) is not None]
            if pts:  # a marker where a round has a single step (a line of one point draws nothing)
                ax.plot(*zip(*pts), marker="o" if len(pts) == 1 else None, label=f"round {k}")
            start += len(h)
        ax.set_xlabel("training step (all rounds)")
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
    _legend(axes[-1])
    return _save(fig, run_dir / "report-train.png")


def frame_strip(frames: np.ndarray, n: int = 5) -> bytes:
    """PNG of ``n`` evenly spaced frames side by side."""
    from PIL import Image

    idx = np.linspace(0, len(frames) - 1, min(n, len(frames))).round().astype(int)
    pad = np.full((frames.shape[1], 2, 3), 255, np.uint8)
    strip = np.concatenate([x for i in idx for x in (frames[i], pad)][:-1], axis=1)
    buf = io.BytesIO()
    Image.fromarray(strip).save(buf, format="PNG")
    return buf.getvalue()


def _gallery(run_dir: Path, rounds: list[int], per_split: int = 2) -> str:
    from ..io.paths import inside
    from ..io.text import jsonl_objects
    from ..io.video import read_mp4

    path = run_dir / "round-0" / "eval" / "metadata.jsonl"
    meta = [dict(m, line=n) for n, m in jsonl_objects(path)] if path.is_file() else []
    picked = [
        m
        for s in dict.fromkeys(m.get("split") for m in meta)
        for m in [m for m in meta if m.get("split") == s][:per_split]
    ]
    out = []
    judged = {
        k: {r.get("file_name"): r for r in _rows(run_dir / f"round-{k}" / "eval" / "results.jsonl")} for k in rounds
    }
    for m in picked:
        cells = []
        name = str(m.get("file_name"))
        for k in rounds:
            video = inside(run_dir / f"round-{k}" / "eval", name, f"{path}:{m['line']}: file_name")
            if video.is_file():
                rel = video.relative_to(run_dir).as_posix()
                kind, text, words = verdict(judged[k].get(name))
                cells.append(
                    f"<td>{_img(frame_strip(read_mp4(video)), rel)}<br>"
                    f'<a href="{html.escape(rel)}">{_round_name(k)}</a><br>'
                    f'<span class="verdict {kind}" title="{_esc(words)}">{_esc(text)}</span></td>'
                )
        out.append(
            f"<tr><th>{_esc(m.get('prompt'))}<br><small>{_esc(m.get('split'))}, seed {_esc(m.get('seed'))}"
            "</small></th>" + "".join(cells) + "</tr>"
        )
    return '<table id="gallery">' + "".join(out) + "</table>"


def verdict(row: dict | None) -> tuple[str, str, str]:
    """A gallery clip's verdict from its ``results.jsonl`` row: (``pass``/``fail``/``''``, a short reason, the
    critic's own words for the tooltip). The world judge says which attribute was wrong; another critic's verdict is
    its semantic label, shown with all three labels."""
    if not isinstance(row, dict):
        return "", "not judged", ""
    words = str(row.get("raw") or "")[:400]
    if "error" in row:
        return "fail", "unparseable answer", str(row["error"])[:400]
    if "passed" in row:
        wrong = [a for a in ("color", "shape", "direction") if row.get(f"{a}_ok") is False]
        if row["passed"]:
            return "pass", "pass", words
        return "fail", "fail: wrong " + ", ".join(wrong) if wrong else "fail", words
    labels = row.get("labels") if isinstance(row.get("labels"), dict) else {}
    text = ", ".join(f"{d} {labels[d]}" for d in ("semantic", "fidelity", "motion") if d in labels)
    return ("pass" if labels.get("semantic") == "Good" else "fail"), (text or "no labels"), words


CSS = (
    "body{font-family:sans-serif;margin:2em;max-width:1400px}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 6px;text-align:center}#gallery img{height:64px}#gallery th{min-width:9em}"
    "figure{margin:1em 0}.verdict{font-size:small}.pass{color:#2e7d32}.fail{color:#c62828}"
)


def write_html(run_dir: Path, evals: dict[int, dict], info: dict) -> Path:
    run_dir = Path(run_dir)
    rounds = sorted(evals)
    parts = [
        f"<h1>vipo run: {html.escape(run_dir.name)}</h1>",
        f"<p>method: {html.escape(str(info.get('method')))}, model: {html.escape(str(info.get('model')))}, "
        f"rounds evaluated: {len(evals) - 1}. Percent of evaluation clips on fixed seeds.</p>",
        "<h2>Metrics per round</h2>",
        _table(evals),
        "<figure>",
        _img((run_dir / "report.png").read_bytes(), "metrics per round"),
        "</figure>",
    ]
    for title, fig_id, png in (
        ("Critic labels on the evaluation clips", "labels", _label_plot(run_dir, rounds)),
        ("Pair score gaps", "gaps", _gap_plot(run_dir, rounds)),
        ("Training: implicit accuracy and reward margin", "train", _train_plot(run_dir, rounds)),
    ):
        parts += [
            f"<h2>{title}</h2>",
            f'<figure id="{fig_id}">{_img(png, title)}</figure>' if png else "<p>(no data)</p>",
        ]
    parts += ["<h2>Gallery: same prompt and seed, base and every round</h2>", _gallery(run_dir, rounds)]
    page = (
        f'<!DOCTYPE html><html><head><meta charset="utf-8"><title>vipo report: {html.escape(run_dir.name)}'
        f"</title><style>{CSS}</style></head><body>" + "\n".join(parts) + "</body></html>\n"
    )
    atomic.write_text(run_dir / "report.html", page)
    return run_dir / "report.html"


def rerender(run_dir: Path) -> Path:
    """Write the report of an existing run folder again from its records (``vipo report RUN``)."""
    import re

    from ..errors import UserError

    run_dir = Path(run_dir)
    evals = {
        int(p.parent.parent.name.split("-")[1]): _record(p)
        for p in run_dir.glob("round-*/eval/eval.json")
        if re.fullmatch(r"round-\d+", p.parent.parent.name)
    }
    if 0 not in evals:
        raise UserError(
            f"{run_dir}: no round-0/eval/eval.json (not a vipo run folder, or its base evaluation is not done yet)"
        )
    info = _record(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else {}
    info.pop("rounds", None)
    write_report(run_dir, evals, info)
    return run_dir / "report.html"
