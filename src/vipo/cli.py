"""The ``vipo`` command line: one verb per stage, plus ``run`` (the whole loop), ``export`` and ``world pretrain``.

Options come from dataclass defaults < ``--config FILE.yaml`` < ``--set key=value`` < explicit flags. Bad input
fails at start with one line naming the file, line or field, and a non-zero exit code.

Exit codes: 0 done; 2 a user error or a stage stopped on purpose (the line says why); 3 out of disk space (free
some and run the same command again); 130 Ctrl-C; 143 SIGTERM (the current item finished or rolled back, the
training state saved: run the same command again to continue). docs/reliability.md has the details.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from . import __version__
from .errors import UserError

log = logging.getLogger("vipo")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML recipe (see configs/)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field, e.g. --set train.beta=500 (repeatable)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _pickle_arg(p)


def _pickle_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="also load weights stored with pickle (.bin/.pt/.ckpt), which can run code: trusted files only",
    )


def _run_args(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    _common(p)
    p.add_argument("--out", required=out_required, help="run folder")
    p.add_argument("--model", help="base model: 'world' or a diffusers folder")
    p.add_argument("--method", choices=("dpo", "kto", "rwr"), help="training objective")
    p.add_argument("--rounds", type=int, help="number of IPO rounds")
    p.add_argument("--seed", type=int, help="run seed")
    p.add_argument("--device", help="auto, cpu or cuda")
    p.add_argument(
        "--force",
        action="store_true",
        help="continue a run folder with a config that differs from its "
        "snapshot (the changed fields are logged); vipo judge DIR: judge everything again with another "
        "critic or options, or overwrite an --out file vipo judge did not write",
    )


def _options_epilog(p: argparse.ArgumentParser, section: str | None) -> None:
    """``--help`` ends with the options of the verb's config section(s), their defaults and docs (config.describe)."""
    from .config import describe

    names = "every config option" if section is None else f"the options of the '{section}' section"
    p.epilog = (
        f"{names} (--set KEY=VALUE or a --config YAML; `vipo config [SECTION]` prints them alone):\n\n"
        + describe(section)
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def _critic_args(p: argparse.ArgumentParser) -> None:
    from .critics import CRITICS

    p.add_argument("--critic", help=f"judge.critic: {', '.join(CRITICS)} (with --help: that critic's options)")
    p.add_argument("--base-url", help="judge.base_url of an OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--labels", help="judge.labels: the human critic's JSONL")


def _judge_epilog(p: argparse.ArgumentParser, critic: str | None) -> None:
    """``vipo judge --help`` ends with the common judge options and the list of critics; ``--critic X --help`` with
    the common options and X's own (config.describe_critic)."""
    from .config import describe_critic

    which = "the list of critics" if critic is None else f"the '{critic}' critic's options"
    p.epilog = (
        f"the judge options common to every critic, then {which} (--set judge.KEY=VALUE or a --config YAML; "
        "`vipo config judge` prints every critic's):\n\n" + describe_critic(critic)
    )
    p.formatter_class = argparse.RawDescriptionHelpFormatter


def _help_critic(argv: list[str]) -> str | None:
    """The ``--critic`` of a ``vipo judge ... --help`` command line (None otherwise), so that the help can show that
    critic's options: argparse prints --help as soon as it meets it, before the other arguments are known."""
    verb = next((a for a in argv if not a.startswith("-")), None)
    if verb != "judge" or not {"-h", "--help"} & set(argv):
        return None
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--critic")
    return pre.parse_known_args(argv)[0].critic


def build_parser(help_critic: str | None = None) -> argparse.ArgumentParser:
    """The ``vipo`` parser; ``help_critic``: the critic whose options ``vipo judge --help`` shows."""
    ap = argparse.ArgumentParser(
        prog="vipo",
        description="Iterative preference optimization for text-to-video diffusion models (IPO, Diffusion-DPO/KTO).",
    )
    ap.add_argument("--version", action="version", version=f"vipo {__version__}")
    ap.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = ap.add_subparsers(dest="verb", required=True)

    p = sub.add_parser("run", help="R rounds of generate -> judge -> pairs -> train -> eval (resumable)")
    _run_args(p)
    _options_epilog(p, None)

    p = sub.add_parser(
        "judge",
        help="judge a round's samples (pointwise and, for DPO, pairwise in both orders), or "
        "any folder of videos: vipo judge DIR --out judgments.jsonl",
    )
    p.add_argument(
        "dir",
        nargs="?",
        help="a folder of videos with metadata.jsonl (file_name, prompt); --out is "
        "then the judgments JSONL and --model the critic's model",
    )
    _run_args(p)
    p.add_argument("--round", type=int, help="round number (run folders)")
    _critic_args(p)
    p.add_argument("--pairwise", action="store_true", help="DIR: also judge each prompt's pairs in both orders")
    _judge_epilog(p, help_critic)

    c = sub.add_parser("critic", help="critics").add_subparsers(dest="critic_verb", required=True)
    p = c.add_parser(
        "eval",
        help="a critic's accuracy (IPO's Table 6, with 95%% intervals): on critic-training "
        "records (DATA.jsonl: their voted labels, or --against world), or on a folder of videos against "
        "human labels (--truth) or the world judge",
    )
    p.add_argument("dir", help="critic-training records (DATA.jsonl), or a folder of videos with metadata.jsonl")
    _common(p)
    p.add_argument("--truth", help="folder: JSONL of human annotations (default: the world judge)")
    p.add_argument("--split", default="test", choices=("test", "train", "all"), help="DATA.jsonl: records scored")
    p.add_argument(
        "--against",
        default="labels",
        choices=("labels", "world"),
        help="DATA.jsonl: the records' voted labels, or the exact world judge on the same videos",
    )
    p.add_argument("--model", help="the critic's model")
    _critic_args(p)
    p.add_argument("--out", help="also write the result here (JSON)")
    _critic_learn_parsers(c)

    for verb, text in (
        ("pairs", "build a round's DPO pairs and KTO examples from its judgments"),
        ("train", "train a round's LoRA on its pairs/examples"),
    ):
        p = sub.add_parser(verb, help=text)
        _run_args(p)
        p.add_argument("--round", type=int, required=True, help="round number")
        _options_epilog(p, verb)
    p = sub.add_parser(
        "eval",
        help="evaluate a round's checkpoint (round 0 = the base model), or VBench-style "
        "metrics on any folder of videos: vipo eval DIR",
    )
    p.add_argument(
        "dir",
        nargs="?",
        help="a folder of videos: metadata.jsonl (file_name, prompt) or VBench's "
        "'prompt-index.mp4' names; results go to --out (default DIR/vbench)",
    )
    _run_args(p, out_required=False)
    p.add_argument("--round", type=int, help="round number (run folders)")
    p.add_argument(
        "--backend",
        choices=("builtin", "vbench"),
        default="builtin",
        help="DIR: builtin (the weight-free dimensions, and those whose local model paths are given: "
        "--dino, --clip, --aesthetic-head, --musiq, --xclip) or the vbench package when installed",
    )
    p.add_argument(
        "--dimension",
        action="append",
        help="DIR: a VBench dimension (repeatable; default: every one the backend can measure with what it is given)",
    )
    p.add_argument("--name", default="vipo", help="DIR: prefix of the VBench-named output files")
    for flag, text in (
        ("dino", "a local DINO ViT folder: subject consistency"),
        ("clip", "a local CLIPModel folder: background consistency (VBench: ViT-B/32)"),
        ("aesthetic-clip", "the CLIPModel folder for the aesthetic predictor (VBench: ViT-L/14; default: --clip)"),
        ("aesthetic-head", "the LAION aesthetic predictor, .safetensors (.pth with --allow-pickle): aesthetic quality"),
        ("musiq", "MUSIQ weights (needs the pyiqa package): imaging quality"),
        (
            "xclip",
            "a local XCLIPModel folder: overall_consistency_xclip, a stand-in for VBench's ViCLIP overall consistency",
        ),
    ):
        p.add_argument(f"--{flag}", help=f"DIR, builtin: judge.{flag.replace('-', '_')}, {text}")
    _options_epilog(p, "eval")

    p = sub.add_parser("report", help="write a run folder's report again (report.html, report.md, PNGs)")
    p.add_argument("run_dir", help="run folder")

    pr = sub.add_parser("prompts", help="prompt suites").add_subparsers(dest="prompts_verb", required=True)
    p = pr.add_parser("build", help="random category combinations expanded into prompts (an LLM or templates)")
    p.add_argument("--out", required=True, help="text file, one prompt per line")
    p.add_argument("-n", type=int, default=100, help="number of prompts")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--llm", help="local folder of an instruction LLM (transformers); default: template expansion")
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--top-k", type=int, default=50)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--min-words", type=int, default=4)
    p.add_argument("--max-words", type=int, default=60, help="length limit (the text encoder reads only so much)")
    p.add_argument("--near", type=float, default=0.85, help="near-duplicate threshold (character 3-gram Jaccard)")
    p = pr.add_parser("import", help="prompts from txt, json, jsonl, csv, VBench's suite or VidProM into a text file")
    p.add_argument("file")
    p.add_argument("--out", required=True, help="text file, one prompt per line")
    p.add_argument(
        "--format",
        choices=("txt", "json", "jsonl", "csv", "vbench", "vidprom"),
        help="default: from the file's extension",
    )
    p.add_argument("--field", help="the prompt's field or column (default: prompt, prompt_en, text, caption)")
    p.add_argument("--near", type=float, default=1.0, help="also drop near-duplicates at this similarity (<1)")

    p = sub.add_parser(
        "ablate",
        help="run named variants of a recipe (DPO vs KTO, real-data NLL, rounds, samples "
        "per prompt, alpha) and write OUT/ablation.md",
    )
    _common(p)
    p.add_argument("--out", required=True, help="folder; each variant runs in OUT/VARIANT")
    p.add_argument("--variant", action="append", help="a variant (repeatable; default: all)")
    p.add_argument("--model", help="base model: 'world' or a diffusers folder")
    p.add_argument("--rounds", type=int, help="rounds per variant")

    p = sub.add_parser("generate", help="sample videos: standalone inference, or a round's samples with --round")
    _common(p)
    p.add_argument("--out", required=True, help="output folder (or run folder with --round)")
    p.add_argument("--model", default=None, help="'world' (the committed embedded model) or a diffusers folder")
    p.add_argument("--lora", help="a vipo round checkpoint folder or a diffusers LoRA folder")
    p.add_argument("--prompts", help="text file, one prompt per line")
    p.add_argument("--prompt", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--samples-per-prompt", type=int, default=None, help="generate.samples_per_prompt")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--steps", type=int, default=None, help="sampler steps: generate.num_steps")
    p.add_argument("--guidance", type=float, default=None, help="generate.guidance")
    for dim in ("frames", "height", "width"):
        p.add_argument(f"--{dim}", type=int, default=None, help=f"clip {dim} (default: the model's; generate.{dim})")
    p.add_argument("--device", default=None)
    p.add_argument(
        "--model-dtype",
        choices=("float32", "bfloat16", "float16"),
        default=None,
        help="the real families' weights in this dtype (default float32; with --round: model_dtype)",
    )
    p.add_argument("--round", type=int, help="generate round K's training samples of the run in --out")
    p.add_argument(
        "--force",
        action="store_true",
        help="--out holds videos made with other inputs (model, LoRA, "
        "prompts, seed, sampler options): delete them and start over (with --round: continue the run "
        "with a changed config)",
    )
    p.add_argument("--method", choices=("dpo", "kto", "rwr"), help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    _options_epilog(p, "generate")

    p = sub.add_parser(
        "export",
        help="write a round checkpoint's policy as one merged model folder, with a "
        "model card (README.md: Hub metadata, the run's eval table, the command that reproduces it)",
    )
    p.add_argument("--merge", required=True, metavar="CHECKPOINT", help="a vipo round checkpoint folder")
    p.add_argument("--out", required=True, help="new folder for the merged model (a diffusers pipeline folder)")
    p.add_argument("--model", default=None, help="base model (default: the one the checkpoint names)")
    p.add_argument("--device", default="cpu")
    _pickle_arg(p)

    _annotate_parsers(sub)
    _bench_parser(sub)

    p = sub.add_parser("config", help="every config option with its default and docs (all sections, or one)")
    p.add_argument("section", nargs="?", help="run, prompts, generate, judge, pairs, train, eval or pretrain")

    w = sub.add_parser("world", help="the embedded world").add_subparsers(dest="world_verb", required=True)
    p = w.add_parser("pretrain", help="pretrain the embedded base model from scratch (resumable)")
    _common(p)
    p.add_argument("--out", required=True, help="output folder; the model is written to OUT/model")
    p.add_argument("--device", default="auto")
    p.add_argument("--steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument(
        "--force",
        action="store_true",
        help="--out was started with another config: delete its saved state and start over",
    )
    p = w.add_parser("render", help="render ground-truth clips of prompts as mp4")
    p.add_argument("--out", required=True)
    p.add_argument("--prompt", action="append", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--force",
        action="store_true",
        help="--out holds clips rendered from other prompts or another seed: delete them and render again",
    )
    p = w.add_parser(
        "annotate",
        help="simulated annotators (the world judge's verdicts, flipped at --error) label "
        "world clips; the annotation export's votes and critic-training records",
    )
    p.add_argument("--out", required=True, help="folder: OUT/clips (generated clips), OUT/export (the export)")
    p.add_argument("--videos", help="label this folder of world videos (metadata.jsonl) instead of generating")
    p.add_argument("--model", default="world", help="the model whose samples are labelled (default: the world base)")
    p.add_argument("--lora", help="a round checkpoint or LoRA folder on top of --model")
    p.add_argument("--repeats", type=int, default=4, help="random phrasings of every combination (default 4)")
    p.add_argument("--samples-per-prompt", type=int, default=4, help="videos per phrasing (default 4)")
    p.add_argument("--annotators", type=int, default=3, help="simulated annotators per item (default 3)")
    p.add_argument(
        "--error",
        type=float,
        default=None,
        help="chance that an annotator's verdict on a dimension is another one, drawn uniformly (default 0.15)",
    )
    p.add_argument("--pairs-per-prompt", type=int, default=None, help="at most N pairs per prompt (default: all)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return ap


def _critic_learn_parsers(c) -> None:
    p = c.add_parser(
        "train",
        help="train a critic on critic-training records (vipo annotate export, vipo world "
        "annotate, vipo critic import): a LoRA-tuned VLM, or the learned world critic",
    )
    p.add_argument("data", help="critic-training records (DATA.jsonl)")
    p.add_argument("--out", required=True, help="the critic's folder")
    p.add_argument("--arch", choices=("auto", "world", "vlm"), help="world, vlm or auto (default)")
    p.add_argument("--model", help="vlm: the base image-text-to-text model")
    p.add_argument("--epochs", type=float, help="passes over the training records")
    _common(p)
    p = c.add_parser("import", help="critic-training records from LiFT-HRA, VideoGen-RewardBench or vipo judge output")
    p.add_argument("kind", choices=("lift", "videogen-rewardbench", "judgments"))
    p.add_argument("src", help="LiFT-HRA-data.json, videogen-rewardbench.csv, or a judgments JSONL")
    p.add_argument("--out", required=True, help="records to write (DATA.jsonl)")
    p.add_argument("--videos", help="judgments: the folder of videos `vipo judge DIR` judged")
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of prompts in the test split (0.1)")


def _bench_parser(sub) -> None:
    p = sub.add_parser(
        "bench",
        help="measure training steps, generation, judging and a round as interleaved ratios "
        "and write docs/benchmarks.md (--gpu: real-size models on one GPU, appended)",
    )
    p.add_argument("--out", default="docs/benchmarks.md", help="the Markdown report (raw numbers beside it as .json)")
    p.add_argument("--repeats", type=int, default=5, help="interleaved rounds per figure")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda (the CPU bench); --gpu always uses cuda")
    p.add_argument(
        "--only",
        action="append",
        choices=("steps", "generation", "judging", "round"),
        help="measure only this part (repeatable; default: all)",
    )
    p.add_argument("--round-config", default="configs/world.yaml", help="the recipe whose round 1 is timed by stage")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the round's recipe, e.g. --set train.ref_cache=4",
    )
    p.add_argument(
        "--tiny",
        action="store_true",
        help="tiny sizes: checks the machinery in seconds (numbers meaningless); with --gpu, tiny models on the CPU",
    )
    p.add_argument(
        "--gpu",
        action="store_true",
        help="real-size CogVideoX-2B/5B and Wan 2.1 1.3B (published configs, "
        "random weights) in bf16 on one GPU: step time, peak memory, MFU, generation; appends to --out",
    )
    p.add_argument(
        "--budget-s", type=float, default=540.0, help="--gpu: stop starting new measurements after this many seconds"
    )


def cmd_bench(args) -> int:
    import shlex

    from . import bench
    from .config import parse_overrides

    _setup_logging(args.verbose)
    command = "vipo " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))
    if args.repeats < 1 or args.threads < 1:
        raise UserError("bench: --repeats and --threads must be at least 1")
    if args.gpu:
        from .bench import gpu

        gpu.run(Path(args.out), tiny=args.tiny, budget_s=args.budget_s, command=command)
        return 0
    opts = bench.Options(
        out=Path(args.out),
        repeats=args.repeats,
        threads=args.threads,
        device=args.device,
        parts=tuple(args.only or bench.PARTS),
        round_config=args.round_config,
        round_set=parse_overrides(args.set),
        tiny=args.tiny,
        command=command,
    )
    bench.run(opts)
    print(f"benchmarks: {args.out}")
    return 0


def _annotate_parsers(sub) -> None:
    a = sub.add_parser(
        "annotate", help="people label videos in the browser; vote, agreement, exports (docs/annotation.md)"
    ).add_subparsers(dest="annotate_verb", required=True)

    def where(p, required_dir=False):
        if required_dir:
            p.add_argument("dir", help="a folder of videos with metadata.jsonl (file_name, prompt)")
        else:
            p.add_argument("--dir", help="the folder of videos (its database is DIR/.vipo-annotate.sqlite)")
        p.add_argument("--db", help="the annotation database (default DIR/.vipo-annotate.sqlite)")

    def items(p):
        p.add_argument(
            "--task",
            default="both",
            choices=("pairwise", "pointwise", "both"),
            help="pairs of videos of one prompt, single videos, or both (default)",
        )
        p.add_argument(
            "--pairs",
            type=int,
            default=None,
            metavar="N",
            help="at most N pairs per prompt, drawn with --seed (default: every pair)",
        )
        p.add_argument("--seed", type=int, default=0, help="seed of the pair sample and of the left/right draw")

    p = a.add_parser("serve", help="the annotation app on http://HOST:PORT (every request needs a user's token)")
    where(p, True)
    items(p)
    p.add_argument("--k", type=int, default=3, help="distinct annotators per item (default 3)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free one, printed)")
    p.add_argument(
        "--claim-ttl",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="an item shown but not answered is offered to others after this long",
    )
    p.add_argument("--max-body", type=int, default=65536, metavar="BYTES", help="largest request body accepted")
    p = a.add_parser("add-user", help="add an annotator; prints their token once (stored hashed)")
    p.add_argument("name")
    where(p)
    p.add_argument("--admin", action="store_true", help="may see everyone's progress")
    p.add_argument("--reset", action="store_true", help="an existing user gets a new token (the old one stops working)")
    p = a.add_parser(
        "export", help="vote, agreement, labels for the human critic, critic training data, Label Studio files"
    )
    where(p, True)
    p.add_argument("--out", required=True, help="new folder for the export (an earlier export there is replaced)")
    p.add_argument(
        "--min-annotators",
        type=int,
        default=None,
        metavar="N",
        help="answers an item needs to count (default: the k the app served with)",
    )
    p.add_argument("--test-fraction", type=float, default=0.1, help="share of prompts in the test split (0.1)")
    p.add_argument("--frames", type=int, default=16, help="{n_frames} in the rendered critic questions (16)")
    p.add_argument("--prompts-dir", default="", help="question templates overriding the packaged ones")
    p.add_argument(
        "--label-studio-url",
        default="",
        metavar="PREFIX",
        help="prefix of video URLs in the Label Studio tasks (default /data/local-files/?d=DIRNAME/)",
    )
    p.add_argument("--copy", action="store_true", help="copy the videos into OUT/videos (default: hard links)")
    p = a.add_parser("import-label-studio", help="read Label Studio's JSON export back into the folder's store")
    p.add_argument("export_json", metavar="EXPORT.json")
    where(p, True)
    items(p)


def cmd_annotate(args) -> int:
    from .annotate import commands as annotate_commands

    _setup_logging(args.verbose)
    if args.annotate_verb == "add-user":
        return annotate_commands.add_user(args.name, args.dir, args.db, args.admin, args.reset)
    if args.annotate_verb == "serve":
        return annotate_commands.serve(
            args.dir,
            args.db,
            args.task,
            args.k,
            args.pairs,
            args.seed,
            args.host,
            args.port,
            args.claim_ttl,
            args.max_body,
        )
    if args.annotate_verb == "export":
        return annotate_commands.export(
            args.dir,
            args.out,
            args.db,
            args.min_annotators,
            args.test_fraction,
            args.frames,
            args.prompts_dir,
            args.label_studio_url,
            args.copy,
        )
    return annotate_commands.import_label_studio(args.export_json, args.dir, args.db, args.task, args.pairs, args.seed)


def _load_run_config(args):
    from .config import RunConfig, load, merge, parse_overrides

    over = parse_overrides(args.set)
    for flag, key in (
        ("model", "model"),
        ("method", "train.method"),
        ("rounds", "rounds"),
        ("seed", "seed"),
        ("device", "device"),
        ("model_dtype", "model_dtype"),
    ):
        v = getattr(args, flag, None)
        if v is not None:
            over = merge(over, parse_overrides([f"{key}={v}"]) if flag != "model" else {"model": v})
    for flag in ("critic", "base_url", "labels"):
        if getattr(args, flag, None) is not None:
            over = merge(over, {"judge": {flag: getattr(args, flag)}})
    run_dir = Path(args.out)
    cfg_path = args.config
    if cfg_path is None and (run_dir / "config.yaml").is_file():
        cfg_path = run_dir / "config.yaml"  # continuing a run: its snapshot is the recipe
    return load(RunConfig, cfg_path, over)


def _setup_logging(verbose: bool, run_dir: Path | None = None) -> None:
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if run_dir is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(run_dir / "vipo.log"))
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        handlers=handlers,
        force=True,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "PIL", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from . import dist

    dist.quiet_logging()


def cmd_run(args) -> int:
    from .run.driver import open_run, run

    cfg = _load_run_config(args)
    run_dir = Path(args.out)
    _setup_logging(args.verbose)
    with open_run(cfg, run_dir, args.force) as (critic, scorer):  # checked first: a typo writes nothing; locked
        _setup_logging(args.verbose, run_dir)
        info = run(cfg, run_dir, progress=not args.quiet, force=args.force, critic=critic, scorer=scorer)
    from . import dist

    if dist.is_main():
        print(f"report: {Path(info['report']).with_name('report.html')} (markdown: {info['report']})")
    return 0


def cmd_stage(args) -> int:
    from . import dist
    from .data.ledger import Ledger
    from .device import resolve_device
    from .run.driver import Round, evaluate_base, open_run

    cfg = _load_run_config(args)
    run_dir = Path(args.out)
    _setup_logging(args.verbose)
    if args.round < 0 or args.round > cfg.rounds:
        raise UserError(f"--round must be between 0 and rounds={cfg.rounds}, got {args.round}")
    if args.round == 0 and args.verb != "eval":
        raise UserError("--round 0 is the base model's evaluation; only `vipo eval --round 0` applies")
    with (
        open_run(cfg, run_dir, getattr(args, "force", False), need_critic=args.verb == "judge", need_scorer=False) as (
            critic,
            _,
        ),
        dist.on_main(Ledger, run_dir / "ledger.sqlite") as ledger,
    ):  # (open_run joined the process group)
        _setup_logging(args.verbose, run_dir)
        if args.round == 0:
            ev = evaluate_base(cfg, run_dir, ledger, resolve_device(cfg.device), not args.quiet)
            if dist.is_main():
                print(json.dumps(ev, indent=2))
            return 0
        r = Round(cfg, run_dir, args.round, ledger, critic, device=resolve_device(cfg.device), progress=not args.quiet)
        out = {"generate": r.generate, "judge": r.judge, "pairs": r.pairs, "train": r.train, "eval": r.evaluate}[
            args.verb
        ]()
        if dist.is_main():
            info = ledger.stage_info(args.round, args.verb)
            print(json.dumps(out if isinstance(out, dict) else info, indent=2))
    return 0


def _judge_config(args, flags=("critic", "base_url", "labels", "model")):
    """JudgeConfig for a folder: defaults < --config (a run recipe's ``judge:`` or bare judge keys) < --set < flags."""
    from .config import JudgeConfig, build, load_yaml, merge, parse_overrides, validate_tree

    data = load_yaml(args.config) if args.config else {}
    if isinstance(data.get("judge"), dict):
        data = data["judge"]
    over = parse_overrides(args.set)
    over = over.get("judge", over) if isinstance(over.get("judge"), dict) else over
    for flag in flags:
        if getattr(args, flag, None) is not None:
            over[flag] = getattr(args, flag)
    cfg = build(JudgeConfig, merge(data, over), "judge")
    validate_tree(cfg, "judge.")
    return cfg


def cmd_judge_dir(args) -> int:
    from . import dist
    from .device import resolve_device
    from .stages.judge import judge_folder

    _setup_logging(args.verbose)
    out = Path(args.out)
    cfg = _judge_config(args)
    resolve_device(cfg.device if cfg.critic == "vlm" else "cpu")  # (under a launcher: joins the process group)
    info = judge_folder(Path(args.dir), out, cfg, pairwise=args.pairwise, progress=not args.quiet, force=args.force)
    if dist.is_main():
        print(json.dumps(info, indent=2))
        print(f"judgments: {out}")
    return 0


def cmd_eval_dir(args) -> int:
    from .critics.features import FLAGS
    from .stages.vbench import evaluate_folder

    _setup_logging(args.verbose)
    out = Path(args.out) if args.out else Path(args.dir) / "vbench"
    # the feature models' paths: --config (a run recipe's judge: or bare judge keys) < --set < --dino/--clip/...
    judge = _judge_config(args, tuple(FLAGS))
    score = evaluate_folder(
        Path(args.dir),
        out,
        args.backend,
        args.name,
        args.dimension,
        getattr(args, "device", None) or judge.device,
        judge,
    )
    print(json.dumps(score, indent=2))
    print(f"results: {out / (args.name + '_eval_results.json')}, {out / (args.name + '_final_score.json')}")
    return 0


def cmd_prompts(args) -> int:
    from .data.prompts import LLMExpander, build_suite, dedupe, import_prompts
    from .io import atomic

    _setup_logging(args.verbose)
    if args.prompts_verb == "build":
        expand = None
        if args.llm:
            expand = LLMExpander(args.llm, args.temperature, args.top_k, args.top_p, args.max_words, args.seed)
        got = build_suite(args.n, args.seed, expand, args.min_words, args.max_words, args.near)
    else:
        rows, problems = import_prompts(args.file, args.format, args.field)
        for line in problems[:20]:
            print(f"skipped {line}", file=sys.stderr)
        if len(problems) > 20:
            print(f"... and {len(problems) - 20} more bad lines", file=sys.stderr)
        got = dedupe([t for _, t in rows], args.near)
    atomic.write_text(Path(args.out), "".join(p + "\n" for p in got))
    print(f"{len(got)} prompts in {args.out}")
    return 0


def cmd_ablate(args) -> int:
    from .io.lock import folder_lock
    from .run.ablate import VARIANTS, ablate
    from .run.driver import preflight

    extra = [x for k in ("model", "rounds") if getattr(args, k) is not None for x in (f"--{k}", str(getattr(args, k)))]
    extra += [x for kv in args.set for x in ("--set", kv)] + (["--quiet"] if args.quiet else [])
    cfg = _load_run_config(
        build_parser().parse_args(
            ["run", "--out", str(Path(args.out) / "_"), *(["--config", args.config] if args.config else []), *extra]
        )
    )
    preflight(cfg)
    with folder_lock(Path(args.out)):
        path = ablate(
            Path(args.out),
            args.variant or list(VARIANTS),
            args.config,
            extra,
            lambda argv: _dispatch(build_parser().parse_args(argv)),
            cfg,
            load=lambda argv: _load_run_config(build_parser().parse_args(argv)),
        )
    print(f"tables: {path}")
    return 0


def cmd_critic(args) -> int:
    from .run import critic_commands

    _setup_logging(args.verbose)
    if args.critic_verb == "train":
        cfg = critic_commands.train_config(
            args.config, args.set, {"arch": args.arch, "model": args.model, "epochs": args.epochs}
        )
        return critic_commands.train(args.data, args.out, cfg, progress=not args.quiet)
    if args.critic_verb == "import":
        return critic_commands.import_records(args.kind, args.src, args.out, args.videos, args.test_fraction)
    if Path(args.dir).is_file():
        from .stages.judge import make_critic

        return critic_commands.eval_records(
            args.dir, make_critic(_judge_config(args)), args.split, args.against, args.out
        )
    return cmd_critic_eval(args)


def cmd_critic_eval(args) -> int:
    from .run import critic_commands

    _setup_logging(args.verbose)
    if args.out and Path(args.out).is_dir():
        raise UserError(f"--out {args.out}: is a folder; --out names the result file (JSON)")
    return critic_commands.eval_folder(args.dir, _judge_config(args), args.truth, args.out)


def cmd_generate(args) -> int:
    if args.round is not None:
        return cmd_stage(args)
    from .config import GenerateConfig, load, parse_overrides

    _setup_logging(args.verbose)
    over = parse_overrides(args.set)
    for flag, name in (
        ("samples_per_prompt", "samples_per_prompt"),
        ("steps", "num_steps"),
        ("guidance", "guidance"),
        ("frames", "frames"),
        ("height", "height"),
        ("width", "width"),
    ):
        if getattr(args, flag) is not None:  # a flag overrides its field and meets the field's checks
            over[name] = getattr(args, flag)
    cfg = load(GenerateConfig, args.config, over)  # checked before the heavy imports below
    from .device import resolve_device
    from .stages.generate import standalone

    prompts = list(args.prompt)
    if args.prompts:
        from .data.prompts import read_prompts

        prompts += [text for _, text in read_prompts(args.prompts, "--prompts")]
    if not prompts:
        raise UserError("no prompts: give --prompts FILE or --prompt TEXT")
    out = Path(args.out)
    rows = standalone(
        args.model or "world",
        args.lora,
        prompts,
        out,
        cfg,
        0 if args.seed is None else args.seed,
        resolve_device(args.device or "auto"),
        args.model_dtype or "float32",
        not args.quiet,
        args.force,
    )
    from . import dist

    if dist.is_main():
        print(f"{len(rows)} videos in {out} (metadata: {out / 'metadata.jsonl'})")
    return 0


def cmd_export(args) -> int:
    from .device import resolve_device
    from .models.policy import export_merged, read_policy
    from .run.card import model_card

    _setup_logging(args.verbose)
    policy = read_policy(Path(args.merge))
    base = args.model or policy["base"]
    card = model_card(Path(args.merge), Path(args.out), base, policy.get("family", "unknown"), policy)
    model = export_merged(Path(args.merge), Path(args.out), args.model, device=resolve_device(args.device), readme=card)
    print(f"merged {model.family} model: {args.out} (model card: {Path(args.out) / 'README.md'})")
    return 0


def cmd_world(args) -> int:
    if args.world_verb == "annotate":
        from .run.critic_commands import world_annotate
        from .world.annotators import DEFAULT_ERROR

        _setup_logging(False)
        return world_annotate(
            args.out,
            args.videos,
            args.model,
            args.lora,
            args.repeats,
            args.samples_per_prompt,
            args.annotators,
            DEFAULT_ERROR if args.error is None else args.error,
            args.seed,
            args.pairs_per_prompt,
            args.device,
            progress=not args.quiet,
        )
    if args.world_verb == "render":
        import random

        from .io import provenance
        from .io.lock import folder_lock
        from .io.video import write_mp4
        from .world import grammar, render

        out = Path(args.out)
        attrs = [grammar.parse(p) for p in args.prompt]
        for p, a in zip(args.prompt, attrs):
            if a is None:
                raise UserError(
                    f"--prompt {p!r}: not a prompt of the world's grammar (e.g. 'a red circle moving left')"
                )
        record, path = {"prompts": args.prompt, "seed": args.seed}, out / "provenance.json"

        def start_over() -> None:  # the clips an earlier render wrote, nothing else
            for i in range(len((provenance.read(path) or {}).get("prompts", []))):
                (out / f"{i:03d}.mp4").unlink(missing_ok=True)

        with folder_lock(out):
            provenance.check(
                path,
                record,
                args.force,
                start_over=start_over,
                refusal=f"{out} holds clips rendered from other prompts ({{changes}}); choose another "
                "--out, or pass --force to delete them and render again",
            )
            for i, a in enumerate(attrs):
                write_mp4(out / f"{i:03d}.mp4", render.random_clip(a, random.Random(args.seed + i), 32, 9))
        print(f"{len(args.prompt)} clips in {out}")
        return 0
    from .config import PretrainConfig, load, parse_overrides, to_dict
    from .device import resolve_device
    from .world.pretrain import evaluate_pass_rate, open_folder, pretrain

    over = parse_overrides(args.set)
    for flag in ("steps", "seed"):
        if getattr(args, flag) is not None:
            over[flag] = getattr(args, flag)
    cfg = load(PretrainConfig, args.config, over)
    out = Path(args.out)
    _setup_logging(args.verbose)
    with open_folder(cfg, out, args.force):
        _setup_logging(args.verbose, out)
        model = pretrain(cfg, out, device=resolve_device(args.device), progress=not args.quiet)
        model.save(out / "model")
        res = evaluate_pass_rate(model, cfg.eval_clips, cfg.eval_steps, cfg.eval_guidance)
        from .io import atomic

        atomic.write_json(out / "model" / "pretrain_eval.json", {"indist": res, "config": to_dict(cfg)})
    print(f"model: {out / 'model'}  in-distribution semantic pass {100 * res['pass']:.1f}%")
    return 0


def _quiet_libraries() -> None:
    """``--quiet``: also no progress bars from the Hugging Face libraries (hub downloads, transformers' weight
    loading, diffusers' "Loading pipeline components").

    Without importing them: a command that never loads diffusers or transformers (``vipo judge`` with the world's
    critic, ``vipo report``...) would pay seconds for it (measured 3.5 s of a 10 s ``vipo judge --quiet``). Each
    library's switch is turned off right after its module is first imported (:func:`_after_import`), or now if it
    already was; the hub and transformers also read ``HF_HUB_DISABLE_PROGRESS_BARS`` when they are imported."""
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    for name, switch in (
        ("huggingface_hub.utils", "disable_progress_bars"),
        ("transformers.utils.logging", "disable_progress_bar"),
        ("diffusers.utils.logging", "disable_progress_bar"),
    ):
        _after_import(name, lambda module, switch=switch: getattr(module, switch)())


class _AfterImport:
    """A ``sys.meta_path`` finder that runs ``then(module)`` right after the module ``name`` is first executed. It
    finds nothing itself: it takes itself off ``sys.meta_path``, asks the import system for the spec, and wraps that
    spec's loader's ``exec_module`` for this one module (then restores it). ``then`` failing only logs: silencing a
    library must never break its import."""

    def __init__(self, name: str, then) -> None:
        self.name, self.then = name, then

    def find_spec(self, fullname, path, target=None):
        if fullname != self.name:
            return None
        import importlib.util

        sys.meta_path.remove(self)  # once; and the real finders answer the look-up below
        spec = importlib.util.find_spec(fullname)
        loader = spec.loader if spec is not None else None
        if loader is None or isinstance(loader, type) or not hasattr(loader, "exec_module"):
            return spec  # no loader object of its own to wrap (builtin, frozen): left as it is
        run, then, name = loader.exec_module, self.then, self.name
        own = "exec_module" in vars(loader)

        def exec_module(module):
            if own:
                loader.exec_module = run
            else:
                del loader.exec_module  # a loader shared by several modules (a zip's) is itself again
            run(module)
            if module.__name__ == name:
                try:
                    then(module)
                except Exception as e:
                    logging.getLogger(__name__).debug("after importing %s: %s", name, e)

        loader.exec_module = exec_module
        return spec


def _after_import(name: str, then) -> None:
    """``then(module)`` now if ``name`` is imported, else right after it is (never importing it for that)."""
    if name in sys.modules:
        then(sys.modules[name])
    elif not any(isinstance(f, _AfterImport) and f.name == name for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterImport(name, then))


def main(argv: list[str] | None = None) -> int:
    from . import dist, faults
    from .models import set_allow_pickle

    try:
        parser = build_parser(_help_critic(list(sys.argv[1:] if argv is None else argv)))
    except UserError as e:  # vipo judge --critic NAME --help with an unknown NAME
        print(f"vipo: error: {e}", file=sys.stderr)
        return 2
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # (the command line, as reports quote it)
    set_allow_pickle(getattr(args, "allow_pickle", False))
    if getattr(args, "quiet", False):
        _quiet_libraries()
    previous = faults.install_term_handler()  # SIGTERM: finish the current item, save, exit 143
    rc = None
    try:
        rc = _dispatch(args)
        return rc
    finally:
        faults.restore_term_handler(previous)
        dist.teardown(finished=rc == 0)


#: the verbs that split their work across the processes of a launch (docs/scale.md); under torchrun or accelerate
#: launch any other verb runs on rank 0 alone and the other ranks exit at once
SPLIT = ("run", "generate", "judge", "pairs", "train", "ablate")


def _dispatch(args) -> int:
    import errno

    from . import dist, faults

    if dist.launched() and not (args.verb in SPLIT or (args.verb == "eval" and args.dir is None)):
        if dist.launch_rank() != 0:
            return 0
        dist.alone()
    try:
        if dist.launched() and os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
            raise UserError(dist.DEEPSPEED_REFUSED)  # at start, not hours later when training begins
        if args.verb == "run":
            return cmd_run(args)
        if args.verb == "generate":
            return cmd_generate(args)
        if args.verb == "world":
            return cmd_world(args)
        if args.verb == "export":
            return cmd_export(args)
        if args.verb == "config":
            from .config import describe

            print(describe(args.section), end="")
            return 0
        if args.verb == "annotate":
            return cmd_annotate(args)
        if args.verb == "critic":
            return cmd_critic(args)
        if args.verb == "judge" and args.dir is not None:
            return cmd_judge_dir(args)
        if args.verb == "eval" and args.dir is not None:
            return cmd_eval_dir(args)
        if args.verb == "eval" and (args.round is None or args.out is None):
            raise UserError("eval: give --out RUN --round K (a run folder) or a folder of videos (vipo eval DIR)")
        if args.verb == "report":
            from .run.report import rerender

            print(f"report: {rerender(Path(args.run_dir))}")
            return 0
        if args.verb == "prompts":
            return cmd_prompts(args)
        if args.verb == "ablate":
            return cmd_ablate(args)
        if args.verb == "bench":
            return cmd_bench(args)
        if args.verb == "judge" and args.round is None:
            raise UserError("judge: give --round K (a run folder) or a folder of videos (vipo judge DIR --out FILE)")
        return cmd_stage(args)
    except UserError as e:
        print(f"vipo: error: {e}", file=sys.stderr)
        return 2
    except faults.Terminated as e:
        print(f"vipo: stopped by SIGTERM ({e}); state saved: run the same command again to continue", file=sys.stderr)
        return faults.EXIT_TERM
    except (FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError) as e:
        # a path that is a file where a folder belongs (or the other way round), or not ours to write
        print(f"vipo: error: {e.filename2 or e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        print(
            f"vipo: error: disk full ({e.strerror or e}); nothing partial was kept: free some space and run the "
            "same command again to continue",
            file=sys.stderr,
        )
        return 3
    except KeyboardInterrupt:
        print("vipo: interrupted; run the same command again to continue where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
