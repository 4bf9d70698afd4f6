"""Model cards: the README.md that ``vipo export`` writes beside an exported model, so the folder can go to the
Hugging Face Hub as it is and says what it is.

The card follows the Hub's model-card layout (a YAML front matter the Hub reads: ``base_model``, ``library_name``,
``pipeline_tag``, ``tags``; then markdown): how the model was made (method, rounds, critic, the main training
options), the run's evaluation per round with its 95% intervals (from each round's ``eval/eval.json``), and the
commands that reproduce it (the run's resolved ``config.yaml`` is printed in full). A checkpoint outside a run folder
gets a card without the evaluation and the recipe.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ..io import atomic
from . import report

SPLITS = {"indist": "in-distribution prompts", "heldout": "held-out prompts", "vbench": "VBench prompts"}


def _run_dir(checkpoint: Path) -> Path | None:
    """The run folder a round checkpoint (RUN/round-K/checkpoint) belongs to, if it is in one."""
    run = checkpoint.resolve().parent.parent
    return (
        run
        if (run / "config.yaml").is_file() and re.fullmatch(r"round-\d+", checkpoint.resolve().parent.name)
        else None
    )


def hub_id(base: str) -> str | None:
    """``base`` when it reads as a Hub repository id (owner/name, not a folder on this machine), else None."""
    if re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", base) and not Path(base).exists():
        return base
    return None


def eval_table(run_dir: Path, last_round: int) -> list[str]:
    """Markdown tables, one per split: a row per evaluated round 0..last_round with the columns the report shows (the
    rates with their 95% intervals; report.columns and report.cell)."""
    evals = {}
    for k in range(last_round + 1):
        path = run_dir / f"round-{k}" / "eval" / "eval.json"
        if path.is_file():
            evals[k] = atomic.read_json(path)
    lines: list[str] = []
    for split in report.splits(evals):
        rows = {k: e[split] for k, e in evals.items() if isinstance(e.get(split), dict)}
        cols = report.columns(evals, split)
        n = max((r.get("n", 0) for r in rows.values() if isinstance(r.get("n"), int)), default=0)
        lines += [
            f"**{split}** ({SPLITS.get(split, split)}, {n} clips per round)",
            "",
            "| model | " + " | ".join(name for _, name in cols) + " |",
            "|---|" + "---|" * len(cols),
        ]
        for k, r in sorted(rows.items()):
            lines.append(
                f"| {'base' if k == 0 else f'round {k}'} | " + " | ".join(report.cell(r, c) for c, _ in cols) + " |"
            )
        lines.append("")
    return lines


def model_card(checkpoint: Path, out: Path, base: str, family: str, policy: dict) -> str:
    """The card's text for the export of ``checkpoint`` (a vipo round checkpoint) into ``out``."""
    checkpoint = Path(checkpoint)
    run_dir = _run_dir(checkpoint)
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text(encoding="utf-8")) if run_dir else {}
    cfg = cfg if isinstance(cfg, dict) else {}
    train = cfg.get("train") or {}
    method = train.get("method", "unknown")
    full = bool(policy.get("denoiser")) and not policy.get("adapters")
    finetune = "full" if full or train.get("finetune") == "full" else "lora"
    rounds = (
        int(checkpoint.resolve().parent.name.split("-")[1])
        if run_dir is not None
        else len(policy.get("adapters") or []) or "unknown"
    )
    critic = (cfg.get("judge") or {}).get("critic", "unknown")
    hub = hub_id(base)
    meta = {
        "library_name": "diffusers",
        "pipeline_tag": "text-to-video",
        "tags": [
            "text-to-video",
            "diffusers",
            "vipo",
            "preference-optimization",
            method,
            "lora" if finetune == "lora" else "full-fine-tune",
            family,
        ],
    }
    if hub:
        meta = {"base_model": hub, **meta}
    lines = [
        "---",
        yaml.safe_dump(meta, sort_keys=False).strip(),
        "---",
        "",
        f"# {out.name}",
        "",
        f"A {family} text-to-video model preference-tuned with vipo by iterative "
        f"preference optimization: {rounds} round(s) of generate -> judge -> {method.upper()} training, each round "
        "starting from the previous round's policy (which is also its reference). "
        + (
            "The whole denoiser was fine-tuned."
            if finetune == "full"
            else "Each round trained a LoRA; this folder holds the base with every round's LoRA fused in."
        ),
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base}` |",
        f"| family | {family} |",
        f"| method | {method} |",
        f"| rounds | {rounds} |",
        f"| critic | {critic} |",
    ]
    for key in ("beta", "lr", "epochs", "lora_rank", "lambda_winner", "lambda_real"):
        if key in train and not (key == "lora_rank" and finetune == "full"):
            lines.append(f"| train.{key} | {train[key]} |")
    gen = cfg.get("generate") or {}
    if "samples_per_prompt" in gen:
        lines.append(f"| samples per prompt | {gen['samples_per_prompt']} |")
    lines.append("")
    if run_dir is not None:
        table = eval_table(run_dir, int(rounds))
        if table:
            ev = cfg.get("eval") or {}
            lines += [
                "## Evaluation",
                "",
                f"Fixed evaluation seeds never used in training ({ev.get('num_steps', '?')} sampler steps, "
                f"guidance {ev.get('guidance', '?')}), judged by the run's evaluating critic. Brackets: 95% "
                "Wilson intervals over the clips.",
                "",
            ] + table
        again = run_dir.with_name(run_dir.name + "-reproduced")  # a new folder: the same one would only resume
        lines += [
            "## Reproduce",
            "",
            "```bash",
            f"vipo run --config {run_dir / 'config.yaml'} --out {again}",
            f"vipo export --merge {again / checkpoint.resolve().parent.name / 'checkpoint'} "
            f"--out {out.with_name(out.name + '-reproduced')}",
            "```",
            "",
            "<details><summary>the run's resolved config.yaml</summary>",
            "",
            "```yaml",
            (run_dir / "config.yaml").read_text(encoding="utf-8").rstrip(),
            "```",
            "",
            "</details>",
            "",
        ]
    else:
        lines += [
            f"Exported from the round checkpoint `{checkpoint}` (not inside a run folder: no evaluation "
            "recorded here).",
            "",
        ]
    lines += ["## Use", "", "```bash", f'vipo generate --model {out} --prompt "..." --out samples/', "```", ""]
    if family != "world":
        lines += [
            "```python",
            "from diffusers import DiffusionPipeline",
            "",
            f'pipe = DiffusionPipeline.from_pretrained("{out}")  # or the Hub repository it was uploaded to',
            "```",
            "",
        ]
    return "\n".join(lines)
