"""``vipo ablate``: named variants of a run recipe on the embedded world, and the tables comparing them.

Each variant is ``vipo run`` with a few extra flags, in ``OUT/<variant>``; runs resume like any run, so stopping
``ablate`` and starting it again continues. ``OUT/ablation.md`` has one table per study (the paper's Table 1:
objective; Table 2: rounds; Table 5: the real-data NLL term with its real-only control; the NLL units, caption
dropout, KTO's reference-point pool and class balance; samples per prompt and alpha re-weighting), each row the last
round's evaluation with 95% intervals and the command that reproduces it.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .. import dist
from ..errors import UserError
from ..io import atomic
from ..stats import fmt
from .driver import adopt_base_eval
from .report import COLUMNS

VARIANTS = {
    "dpo": [],
    "kto": ["--method", "kto"],
    # IPO Table 5: the real-video NLL term off, and its control: that term alone (a KTO term at beta 1e-6 has ~no
    # gradient) with the same steps, i.e. supervised fine-tuning on the world's real videos
    "no-nll": ["--set", "train.lambda_real=0"],
    "real-only": ["--method", "kto", "--set", "train.beta=0.000001"],
    # the regularizers in the old units (plain error: ~1e-4 of the preference gradient at beta 5000)
    "mse": ["--set", "train.nll_units=mse"],
    "no-dropout": ["--set", "train.caption_dropout=0"],
    "kto-no-dropout": ["--method", "kto", "--set", "train.caption_dropout=0"],
    # KTO's reference point over a pool of 8 rewards (one micro-batch) instead of 128; class weights fixed at 1
    "kto-pool-8": ["--method", "kto", "--set", "train.kto_kl_pool=8"],
    "kto-no-balance": ["--method", "kto", "--set", "train.lambda_desirable=1", "--set", "train.lambda_undesirable=1"],
    "n3": ["--set", "generate.samples_per_prompt=3"],
    "n8": ["--set", "generate.samples_per_prompt=8"],
    "alpha-0.5": ["--set", "pairs.alpha=0.5"],
    "alpha-1": ["--set", "pairs.alpha=1"],
}
STUDIES = (
    ("Objective (IPO Table 1)", ("dpo", "kto")),
    ("Real-data NLL term (IPO Table 5)", ("no-nll", "dpo", "real-only")),
    ("NLL units", ("mse", "dpo")),
    ("Caption dropout", ("no-dropout", "dpo", "kto-no-dropout", "kto")),
    ("KTO reference point", ("kto-pool-8", "kto")),
    ("KTO class balance", ("kto-no-balance", "kto")),
    ("Samples per prompt", ("n3", "dpo", "n8")),
    ("Alpha re-weighting (VideoDPO)", ("dpo", "alpha-0.5", "alpha-1")),
)


def variant_args(variant: str, cfg=None) -> list[str]:
    """The variant's flags. A KTO variant also scales ``train.epochs`` by 1/samples_per_prompt when ``cfg`` (the
    recipe's RunConfig) is given: DPO trains on one pair per prompt, KTO on every sample, so this keeps the optimizer
    steps (and the training time) of the two objectives equal."""
    args = list(VARIANTS[variant])
    if "kto" in args and cfg is not None and cfg.train.method == "dpo":
        epochs = max(1, round(cfg.train.epochs / cfg.generate.samples_per_prompt))
        args += ["--set", f"train.epochs={epochs}"]
    return args


def command(variant: str, config: str | None, out: Path, extra: list[str], cfg=None) -> list[str]:
    return (
        ["vipo", "run"]
        + (["--config", config] if config else [])
        + ["--out", str(out / variant)]
        + variant_args(variant, cfg)
        + extra
    )


#: the table's columns: every number for in-distribution prompts, the pass and quality rates for held-out ones
CELLS = tuple(("indist", c, f"indist {name}") for c, name in COLUMNS) + tuple(
    ("heldout", c, f"heldout {name}") for c, name in COLUMNS if c in ("semantic_pass", "fidelity_good", "motion_good")
)


def _cells(e: dict) -> str:
    return " | ".join(fmt(e[s][c], e[s].get("ci95", {}).get(c)) if c in e.get(s, {}) else "-" for s, c, _ in CELLS)


def tables(out: Path, variants: list[str], config: str | None, extra: list[str], cfg=None) -> str:
    head = "| {first} | " + " | ".join(name for _, _, name in CELLS) + " | command |\n|---|" + "---|" * (len(CELLS) + 1)
    evals = {
        v: atomic.read_json(out / v / "summary.json")["rounds"]
        for v in variants
        if (out / v / "summary.json").is_file()
    }
    lines = [
        f"# Ablations in {out}",
        "",
        "Percent of evaluation clips with 95% Wilson intervals; each row is the variant's last round.",
        "",
    ]
    for title, names in STUDIES:
        rows = [v for v in names if v in evals]
        if len(rows) < 2:
            continue
        lines += [f"## {title}", "", head.format(first="variant")]
        for v in rows:
            last = max(evals[v], key=int)
            lines.append(f"| {v} | {_cells(evals[v][last])} | `{shlex.join(command(v, config, out, extra, cfg))}` |")
        lines.append("")
    if "dpo" in evals:  # the rounds study reads every round of the dpo variant: round K's row is that run cut at K
        lines += ["## Rounds (IPO Table 2)", "", head.format(first="round")]
        for k, e in sorted(evals["dpo"].items(), key=lambda kv: int(kv[0])):
            cmd = command("dpo", config, out, extra + (["--rounds", k] if k != "0" else []))
            lines.append(f"| {'base' if k == '0' else k} | {_cells(e)} | `{shlex.join(cmd)}` |")
        lines.append("")
    return "\n".join(lines)


def ablate(out: Path, variants: list[str], config: str | None, extra: list[str], run_one, cfg=None, load=None) -> Path:
    """Run each variant (``run_one(argv)`` runs ``vipo`` with argv) and write ``OUT/ablation.md``; ``cfg`` is the
    recipe's RunConfig (with ``extra`` applied), used to size the kto variant; ``load(argv)`` gives a variant's
    RunConfig, so a variant whose base evaluation is another's (every variant of one recipe, as a rule) adopts it
    instead of evaluating the same base again."""
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise UserError(f"--variant {unknown[0]!r}: one of {', '.join(VARIANTS)}")
    out = Path(out)
    for v in variants:
        argv = command(v, config, out, extra, cfg)[1:]
        if load is not None and dist.launch_rank() == 0:  # (the main rank alone touches the run folders' ledgers)
            others = sorted(p for p in out.iterdir() if p.is_dir() and p.name != v) if out.is_dir() else []
            vcfg = load(argv)
            any(adopt_base_eval(vcfg, out / v, p) for p in others)
        code = run_one(argv)
        if code:
            raise UserError(f"variant {v} stopped with exit code {code}; run the same command again to continue")
    if dist.is_main():  # (under a launcher every variant ran on every rank; the tables are written once)
        atomic.write_text(out / "ablation.md", tables(out, variants, config, extra, cfg))
    return out / "ablation.md"
