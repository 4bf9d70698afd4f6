"""``run``: R rounds of generate -> judge -> pairs -> train -> eval, resumable at any point.

Layout of a run folder::

    config.yaml          the resolved config (a re-run must use the same one)
    ledger.sqlite        every sample, judgment, pair, example and finished stage
    round-0/eval/        the base model's evaluation
    round-K/             samples/ (mp4 + metadata.jsonl), latents/, *.jsonl exports, train_log.jsonl,
                         checkpoint/ (policy.json + the LoRA chain, or the fine-tuned denoiser),
                         eval/ (mp4 + metadata.jsonl + eval.json)
    cache/text/          each prompt's text conditioning, for the families that cache it (see TextCache)
    summary.json, report.md, report.png, report.html (+ report-*.png)
    tensorboard/         with ``train.tracker: tensorboard``, the metrics mirrored as event files (vipo.tracking)

Real videos for the real families' NLL term (``train.real_videos``) are VAE-encoded once into a cache outside the
run (``train.real_cache``), shared by every run of the same model.

The policy of round K is the base with the adapters of rounds 1..K-1 fused; it is also round K's reference.

Before each stage the driver checks for a SIGTERM (saved and stopped: exit 143) and for ``min_free_gb`` of free
disk. A round checkpoint carries its training summary and the hash of the train config it was trained under, so a
run killed after training but before the ledger recorded it finds the checkpoint and does not train again; each
round records the hash of the checkpoint it trained (``train``) and of the policy it generated with (``generate``).
"""

from __future__ import annotations

import logging
import random
import shutil
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path

from .. import dist, faults, seeds, tracking
from ..config import RunConfig, eval_judge, merge, to_dict
from ..critics.options import current_names
from ..data import suites
from ..data.cache import LatentCache, TextCache
from ..data.ledger import Ledger
from ..data.real import EncodedRealVideos, WorldRealVideos, read_dataset
from ..device import resolve_device
from ..errors import UserError
from ..io import atomic, provenance
from ..io.lock import folder_lock
from ..models import check_model
from ..models import policy as policies
from ..stages import evaluate as eval_stage
from ..stages import pairs as pairs_stage
from ..stages.generate import PromptItem, generate
from ..stages.judge import BackgroundJudge, GroupJudge, check_prompts, judge, make_critic
from ..train import lora, trainer
from ..train.state import train_config_hash
from ..train.trainer import train_round
from ..world import grammar
from .report import write_report

log = logging.getLogger(__name__)


def round_prompts(cfg: RunConfig, round_: int) -> list[PromptItem]:
    """The round's training prompts (never a held-out combination)."""
    rng = random.Random(seeds.stream_seed(cfg.seed, round_, "prompts"))
    if cfg.prompts.source == "world":
        combos = list(grammar.INDIST)
        if cfg.prompts.per_round < len(combos):
            combos = rng.sample(combos, cfg.prompts.per_round)
        else:
            combos = [combos[i % len(combos)] for i in range(cfg.prompts.per_round)]
        items = []
        for i, a in enumerate(combos):
            text = a.prompt() if cfg.prompts.phrasing == "canonical" else grammar.random_prompt(a, rng)
            items.append(PromptItem(i, text, grammar.split_of(a)))
        return items
    lines = [text for _, text in source_prompts(cfg)]
    chosen = rng.sample(lines, min(cfg.prompts.per_round, len(lines)))
    return [PromptItem(i, t, "") for i, t in enumerate(chosen)]


def check(cfg: RunConfig) -> None:
    """What can fail late, checked before hours of generation: the optimizer's package, the real-video dataset, the
    prompt files and that no evaluation prompt is a training prompt."""
    suites.resolve(cfg)
    if cfg.train.optimizer == "adamw8bit":
        trainer.bitsandbytes()
    tracking.require(cfg.train.tracker)
    if cfg.train.real_videos:
        if cfg.model == "world":
            raise UserError(
                "train.real_videos: the world family draws its real videos from its renderer; leave it empty"
            )
        read_dataset(cfg.train.real_videos)


def real_cache_dir(cfg: RunConfig) -> Path:
    if cfg.train.real_cache:
        return Path(cfg.train.real_cache)
    src = Path(cfg.train.real_videos)
    return (src if src.is_dir() else src.parent) / ".vipo-cache"


def source_prompts(cfg: RunConfig) -> list[tuple[str, str]]:
    """Every prompt a round may draw from ``prompts.source``, each with the file and line it came from; held-out
    combinations refused (the world's own prompts: none, they are drawn from its in-distribution combinations)."""
    if cfg.prompts.source == "world":
        return []
    path = Path(cfg.prompts.source)
    out = []
    for n, text in suites.resolve(cfg).train:  # a file shared with the evaluation: its training part only
        a = grammar.parse(text)
        if a is not None and a in grammar.HELDOUT:
            raise UserError(f"{path}:{n}: prompt {text!r} is a held-out combination and may not be trained on")
        out.append((f"{path}:{n}", text))
    return out


def preflight(cfg: RunConfig, critic=None, scorer=None) -> None:
    """What can be checked before a run folder is written: the model folder (and its components), the optimizer's
    package and the real videos (:func:`check`), the prompt file, that ``critic`` can read the training prompts and
    that ``scorer`` (the evaluating critic) can read the evaluation's."""
    check_model(cfg.model, dtype=cfg.model_dtype)
    check(cfg)
    prompts = source_prompts(cfg)
    if critic is not None:
        check_prompts(critic, prompts)
    if scorer is not None:
        p = suites.resolve(cfg)
        where = {
            "heldout": f"eval.prompts ({p.heldout_of or suites.eval_source(cfg)})",
            "vbench": f"eval.vbench ({cfg.eval.vbench})",
        }
        check_prompts(
            scorer,
            [
                (where.get(split, f"eval split {split}"), text)
                for split, texts in {**(p.splits or {}), **p.extra}.items()
                for text in dict.fromkeys(texts)
            ],
        )


@contextmanager
def open_run(
    cfg: RunConfig,
    run_dir: Path,
    force: bool = False,
    critic=None,
    need_critic: bool = True,
    scorer=None,
    need_scorer: bool | None = None,
):
    """Check everything that can be checked (:func:`preflight`; a typo writes nothing), then hold the run folder's
    lock and its config snapshot while the block writes it. Yields ``(critic, scorer)``: the judge's critic and
    the evaluating one (``eval.critic``), each made here when needed (``need_scorer`` defaults to ``need_critic``)
    and not given, else None.

    Under a launcher the process group is joined first; every rank checks and makes its critics, and the main rank
    alone takes the lock and writes the snapshot (a refusal is raised on every rank)."""
    resolve_device(cfg.device)  # (under a launcher: joins the process group)
    if need_critic or need_scorer:
        check_model(cfg.model, dtype=cfg.model_dtype)  # the cheap checks before a critic loads its weights
    if need_critic and critic is None:
        critic = make_critic(cfg.judge)
    if (need_critic if need_scorer is None else need_scorer) and scorer is None:
        scorer = eval_critic(cfg, critic)
    preflight(cfg, critic, scorer)
    with ExitStack() as held:

        def take() -> None:
            held.enter_context(folder_lock(run_dir))
            snapshot(cfg, run_dir, force)

        dist.from_main(take)
        yield critic, scorer


def snapshot(cfg: RunConfig, run_dir: Path, force: bool = False) -> None:
    """Write the config snapshot, or refuse a config that differs from it (``force``: accept it and overwrite).
    Options added since the snapshot was written count as their defaults."""
    provenance.check(
        run_dir / "config.yaml",
        to_dict(cfg),
        force,
        defaults=to_dict(RunConfig()),
        upgrade=current_names,
        refusal="this run folder was started with a different config ({changes}); re-run with the same "
        "config, choose another --out, or pass --force to continue with the new one",
        forced=f"--force: continuing {run_dir} with a changed config: {{changes}}",
    )


def before_stage(cfg: RunConfig, run_dir: Path, what: str) -> None:
    """Stop here on SIGTERM (on any rank: all stop); refuse to start a stage with less than ``min_free_gb`` of free
    disk."""
    if dist.any_true(faults.term_requested()):
        raise faults.Terminated(what)
    free = shutil.disk_usage(run_dir).free / 1e9
    if free < cfg.min_free_gb:
        raise UserError(
            f"{run_dir}: {free:.2f} GB free, below min_free_gb={cfg.min_free_gb}; free some space before {what}"
        )


def run(cfg: RunConfig, run_dir: Path, progress: bool = True, force: bool = False, critic=None, scorer=None) -> dict:
    run_dir = Path(run_dir)
    with open_run(cfg, run_dir, force, critic, scorer=scorer) as (critic, scorer):
        device = resolve_device(cfg.device)  # (under a launcher: this rank's device; open_run joined the group)
        t_start = time.time()
        evals: dict[int, dict] = {}
        info = {
            "method": cfg.train.method,
            "rounds_planned": cfg.rounds,
            "patience": cfg.patience,
            "stopped_early": False,
            "model": cfg.model,
        }
        with dist.on_main(Ledger, run_dir / "ledger.sqlite") as ledger:  # only rank 0 opens it (dist.py says why)
            evals[0] = evaluate_base(cfg, run_dir, ledger, device, progress, scorer)
            best, best_round, since_best = _metric(evals[0], cfg), 0, 0
            for k in range(1, cfg.rounds + 1):
                rd = run_dir / f"round-{k}"
                if not dist.from_main(lambda: ledger.is_done(k, "round")):
                    Round(cfg, run_dir, k, ledger, critic, device, progress, scorer).all()
                evals[k] = eval_stage.read_summary(rd / "eval")
                m = _metric(evals[k], cfg)
                if m > best or best != best:  # (best is NaN when the base's clips could not be judged)
                    best, best_round, since_best = m, k, 0
                else:
                    since_best += 1
                log.info("round %d: %s = %.3f (best %.3f at round %d)", k, metric_name(cfg), m, best, best_round)
                if cfg.patience and since_best >= cfg.patience and k < cfg.rounds:
                    info.update(stopped_early=True, last_round=k)
                    log.info("stopping early: no improvement for %d rounds", since_best)
                    break
            info.update(
                best_round=best_round,
                best_metric=best,
                metric=metric_name(cfg),
                elapsed_s_this_invocation=round(time.time() - t_start, 1),
            )
        tracking.finish()
        report = dist.from_main(lambda: write_report(run_dir, evals, info))
    info["report"] = str(report)
    return info


def evaluate_base(
    cfg: RunConfig, run_dir: Path, ledger: Ledger, device: str, progress: bool = True, critic=None
) -> dict:
    """Round 0: the base model's evaluation (skipped when already done); ``critic``: the evaluating critic."""
    out = Path(run_dir) / "round-0" / "eval"
    if not dist.from_main(lambda: ledger.is_done(0, "eval")):
        before_stage(cfg, Path(run_dir), "round 0 eval")
        log.info("round 0: evaluating the base model")
        base = load(cfg, None, device, "eval")
        ev = eval_stage.evaluate(
            base,
            out,
            cfg.eval,
            critic or eval_critic(cfg),
            progress,
            cfg.generate.fps,
            text_cache(base, run_dir),
            rows=eval_rows(cfg),
            features=eval_features(cfg, device),
        )
        dist.from_main(lambda: ledger.mark_done(0, "eval", ev))
        if dist.is_main():  # (the tracker logs from rank 0 only)
            track(cfg, run_dir)
            tracking.eval_round(0, ev, out, cfg.generate.fps)
    return eval_stage.read_summary(out)


def base_eval_inputs(cfg: RunConfig) -> dict:
    """What round 0's evaluation depends on: the base model (by name or path), its dtype, the eval options (less the
    metric early stopping reads), the evaluating critic's options, the mp4 frame rate and the decoder settings."""
    ev = to_dict(cfg.eval)
    ev.pop("metric", None)
    g, e = cfg.generate, cfg.eval
    return {
        "model": cfg.model,
        "family": cfg.family,
        "model_dtype": cfg.model_dtype,
        "eval": ev,
        "critic": to_dict(eval_judge(cfg)),
        "fps": cfg.generate.fps,
        "vae": [cfg.generate.vae_tiling, cfg.generate.vae_slicing],
        # the clips themselves (a held-out split drawn from prompts.source) and their size (eval.* 0 = the run's)
        "rows": eval_rows(cfg),
        "size": [e.frames or g.frames, e.height or g.height, e.width or g.width],
    }


def adopt_base_eval(cfg: RunConfig, run_dir: Path, source: Path) -> bool:
    """Copy run folder ``source``'s finished base evaluation into ``run_dir`` when both runs evaluate the same base
    the same way (:func:`base_eval_inputs`), so a study of many variants of one recipe (``vipo ablate``) evaluates
    its base once. Returns whether it did; a run that has its own base evaluation is left alone."""
    run_dir, source = Path(run_dir), Path(source)
    if not (source / "config.yaml").is_file() or not (source / "round-0" / "eval" / "eval.json").is_file():
        return False
    data = merge(to_dict(RunConfig()), provenance.read(source / "config.yaml") or {})
    from ..config import build, validate_tree

    src_cfg = build(RunConfig, data)
    validate_tree(src_cfg)
    if base_eval_inputs(src_cfg) != base_eval_inputs(cfg):
        return False
    with Ledger(source / "ledger.sqlite") as src:
        info = src.stage_info(0, "eval") if src.is_done(0, "eval") else None
    if info is None:
        return False
    with folder_lock(run_dir), Ledger(run_dir / "ledger.sqlite") as ledger:  # (a run of that folder may be live)
        if ledger.is_done(0, "eval"):
            return False
        out = run_dir / "round-0" / "eval"
        if out.exists():
            shutil.rmtree(out)  # an unfinished evaluation of the same clips (the ledger says it never finished)
        with atomic.atomic_dir(out) as tmp:
            for f in (source / "round-0" / "eval").iterdir():
                if f.is_file():
                    shutil.copy2(f, tmp / f.name)
        ledger.mark_done(0, "eval", dict(info, adopted_from=str(source)))
    log.info("round 0: the base evaluation of %s adopted (same base model, eval options and critic)", source)
    return True


def load(cfg: RunConfig, checkpoint: Path | None, device: str, stage: str = "generate"):
    """The base (``checkpoint`` None) or a round's policy, at the run's clip size (``generate.frames/height/width``;
    for ``stage`` 'eval' the evaluation's, ``eval.*``, where set), checked against what the family takes."""
    model = policies.load_sampler(cfg.model, checkpoint, cfg.generate, device=device, dtype=cfg.model_dtype)
    e = cfg.eval
    if stage == "eval":
        model.set_size(e.frames, e.height, e.width, "eval")
    return model


def eval_rows(cfg: RunConfig) -> list[dict]:
    """The evaluation clips (file_name, prompt, split, seed): the world grammar's splits or the suite's held-out
    prompts, and the vbench split where ``eval.vbench`` names one (:mod:`vipo.data.suites`)."""
    p = suites.resolve(cfg)
    rows = eval_stage.eval_prompts(cfg.eval) if p.splits is None else []
    return rows + suites.rows({**(p.splits or {}), **p.extra}, cfg.eval.clips_per_split, cfg.eval.seed)


def eval_features(cfg: RunConfig, device: str):
    """The VBench feature models the evaluating critic's options name (``dino``, ``clip``, ...; none: the
    weight-free dimensions only), loaded once per evaluation."""
    from ..critics.features import FeatureModels

    return FeatureModels(eval_judge(cfg), device)


def track(cfg: RunConfig, run_dir: Path) -> None:
    """Start the run's tracker (``train.tracker``) in this process, once (vipo.tracking)."""
    tracking.start(cfg.train.tracker, Path(run_dir), to_dict(cfg))


def eval_critic(cfg: RunConfig, judge_critic=None):
    """The critic that judges the evaluation clips (``eval.critic``; the run's judge, ``judge_critic`` when made
    already, where it is empty or names the same options)."""
    options = eval_judge(cfg)
    if options == cfg.judge and judge_critic is not None:
        return judge_critic
    return make_critic(options)


def text_cache(model, run_dir: Path) -> TextCache | None:
    """The run's text-conditioning cache, for the families that cache it."""
    return TextCache(Path(run_dir) / "cache" / "text", model.cache_key("text")) if model.cache_text else None


def metric_name(cfg: RunConfig) -> str:
    """``eval.metric`` with 'auto' resolved: the world judge's exact pass rate, else the mean dimension score (of the
    evaluating critic, ``eval.critic``)."""
    if cfg.eval.metric != "auto":
        return cfg.eval.metric
    if suites.eval_source(cfg) != suites.WORLD:
        return "heldout_score"
    return "indist_pass" if eval_judge(cfg).critic == "world" else "indist_score"


def _metric(ev: dict, cfg: RunConfig) -> float:
    name = metric_name(cfg)
    split, _, key = name.partition("_")
    key = {"pass": "semantic_pass"}.get(key, key)
    if split not in ev:  # every clip of the split unjudged (e.g. human labels, which eval clips never have)
        return float("nan")
    if key in ev[split] and ev[split][key] is None:  # measured, but nothing to rate (no consistent verdict)
        return float("nan")
    have = [k for k, v in ev[split].items() if isinstance(v, (int, float)) and k != "n"]
    if key not in ev[split] and all(k.startswith("vbench_") for k in have):  # the critic judged no clip (human
        return float("nan")  # labels, which eval clips never have): only the weight-free VBench dimensions ran
    if not isinstance(ev[split].get(key), (int, float)):
        raise UserError(
            f"eval.metric={name}: this run's evaluation has no {key!r} for {split} (it has "
            f"{', '.join(have)}); choose one of those or 'auto'"
        )
    return float(ev[split][key])


class Round:
    """One round's stages, each callable alone (the CLI verbs) and each safe to re-run."""

    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        k: int,
        ledger: Ledger,
        critic=None,
        device: str = "cpu",
        progress: bool = True,
        scorer=None,
    ):
        self.cfg, self.run_dir, self.k, self.ledger = cfg, Path(run_dir), k, ledger
        self._critic, self._scorer = critic, scorer
        self.device, self.progress = device, progress
        self.dir = self.run_dir / f"round-{k}"
        track(cfg, self.run_dir)
        self.previous = self.run_dir / f"round-{k - 1}" / "checkpoint" if k > 1 else None
        self._policy = None

    @property
    def critic(self):
        # made on first use: the stages before judge (a stage verb such as `vipo generate --round K`) need no critic,
        # and a human critic's labels for the round's samples cannot exist before they are generated
        if self._critic is None:
            self._critic = make_critic(self.cfg.judge)
        return self._critic

    @property
    def scorer(self):
        """The evaluating critic (``eval.critic``), made on first use like the judge."""
        if self._scorer is None:
            self._scorer = self.critic if eval_judge(self.cfg) == self.cfg.judge else eval_critic(self.cfg)
        return self._scorer

    def _done(self, stage: str) -> bool:
        """Whether the ledger records ``stage`` of this round as finished (asked of the main rank)."""
        return dist.from_main(lambda: self.ledger.is_done(self.k, stage))

    def _mark(self, stage: str, info=None) -> None:
        """Record ``stage`` as finished with ``info`` (a dict, or a function computing it: the main rank alone
        computes it); every rank returns once it is recorded."""
        dist.from_main(lambda: self.ledger.mark_done(self.k, stage, info() if callable(info) else info))

    def _require(self, stage: str) -> None:
        if not self._done(stage):
            raise UserError(f"round {self.k}: the {stage} stage has not finished; run it first")

    def policy(self):
        if self._policy is None:
            if self.previous is not None and not atomic.is_complete(self.previous):
                raise UserError(f"{self.previous}: round {self.k - 1} has no finished checkpoint")
            self._policy = load(self.cfg, self.previous, self.device)
        return self._policy

    def real_videos(self, policy):
        """The real-data NLL term's videos: the world's renderer, or the configured dataset through its cache."""
        if policy.family == "world":
            if self.cfg.train.real_videos:
                raise UserError(
                    "train.real_videos: the world family draws its real videos from its renderer; leave it empty"
                )
            return WorldRealVideos(policy.frames, policy.side, self.cfg.train.real_caption_noise)
        if not self.cfg.train.real_videos:
            return None
        cache = LatentCache(real_cache_dir(self.cfg), policy.cache_key("vae"))
        return EncodedRealVideos(read_dataset(self.cfg.train.real_videos), cache)

    def _start(self, stage: str) -> None:
        before_stage(self.cfg, self.run_dir, f"round {self.k} {stage}")

    def generate(self, overlap: bool = False) -> None:
        """Generate the round's samples; with ``overlap`` and a served critic, judge each prompt meanwhile."""
        if self._done("generate"):
            return
        self._start("generate")
        if dist.is_main():
            self.dir.mkdir(parents=True, exist_ok=True)
        prompts = round_prompts(self.cfg, self.k)
        background = None
        if overlap and self.critic.served and not self._done("judge"):
            gj = GroupJudge(
                self.critic,
                self.dir,
                self.ledger,
                self.k,
                self.cfg.train.method == "dpo",
                len(prompts) * self.cfg.generate.samples_per_prompt,
                self.cfg.judge.max_unparseable,
                self.cfg.generate.max_quarantined,
            )
            background = BackgroundJudge(
                gj,
                [p.prompt_id for p in prompts],
                self.cfg.generate.samples_per_prompt,
                dist.from_main(lambda: self.ledger.rows("samples", self.k)),
            )
        generate(
            self.policy(),
            prompts,
            self.dir,
            self.ledger,
            self.k,
            self.cfg.generate,
            self.cfg.seed,
            progress=self.progress,
            text_cache=text_cache(self.policy(), self.run_dir),
            background=background,
        )
        self._mark(
            "generate",
            lambda: {"policy": policies.policy_hash(self.previous) if self.previous is not None else self.cfg.model},
        )

    def judge(self) -> None:
        if self._done("judge"):
            return
        self._require("generate")
        self._start("judge")
        counts = judge(
            self.critic,
            dist.from_main(lambda: self.ledger.rows("samples", self.k)),
            self.dir,
            self.ledger,
            self.k,
            pairwise=self.cfg.train.method == "dpo",
            progress=self.progress,
            max_unparseable=self.cfg.judge.max_unparseable,
            max_quarantined=self.cfg.generate.max_quarantined,
            export=self.dir / "judgments.jsonl",
        )
        self._mark("judge", counts)

    def pairs(self) -> None:
        if self._done("pairs"):
            return
        self._require("judge")
        self._start("pairs")
        dist.from_main(self._pairs)  # (cheap and pure: the main rank alone)

    def _pairs(self) -> None:
        info = pairs_stage.build(self.ledger, self.k, self.dir, self.cfg.pairs)
        log.info(
            "round %d: %d pairs from %d prompts (%d without a clear winner, %d with no consistent verdict; "
            "%d inconsistent verdicts%s%s); KTO labels %s",
            self.k,
            info["pairs"],
            info["prompts"],
            info["dropped_no_winner"],
            info["dropped_inconsistent"],
            info["inconsistent"],
            f", {info['unjudged']} pairs ranked by pointwise scores only" if info.get("unjudged") else "",
            f", {info['unparseable_samples']} samples without a parseable pointwise judgment left out"
            if info.get("unparseable_samples")
            else "",
            info["kto_labels"],
        )
        self.ledger.mark_done(self.k, "pairs", info)

    def train(self) -> None:
        if self._done("train"):
            return
        self._require("pairs")
        ckpt, chash = self.dir / "checkpoint", train_config_hash(self.cfg.train, self.cfg.seed, self.k)
        summary = dist.from_main(lambda: lora.finished_training(ckpt, chash))
        if summary is not None:
            log.info(
                "round %d: %s is complete (trained before the run could record it); not training again", self.k, ckpt
            )
        else:
            self._start("train")
            policy = self.policy()
            summary = train_round(
                policy,
                self.cfg.train,
                self.ledger,
                self.k,
                self.dir,
                real=self.real_videos(policy),
                run_seed=self.cfg.seed,
                progress=self.progress,
                text_cache=text_cache(policy, self.run_dir),
                max_quarantined=self.cfg.generate.max_quarantined,
            )
            summary = dict(summary, train_config=chash)
            dist.from_main(
                lambda: lora.write_checkpoint(
                    policy,
                    ckpt,
                    self.cfg.model,
                    self.previous,
                    self.k,
                    full=self.cfg.train.finetune == "full",
                    summary=summary,
                )
            )
            self._policy = None  # the in-memory model now carries an adapter; later stages reload the checkpoint
            faults.point("driver.after_train_before_record")
        self._mark("train", lambda: dict(summary, policy=policies.policy_hash(ckpt)))

    def evaluate(self) -> dict:
        if not self._done("eval"):
            self._require("train")
            self._start("eval")
            trained = load(self.cfg, self.dir / "checkpoint", self.device, "eval")
            ev = eval_stage.evaluate(
                trained,
                self.dir / "eval",
                self.cfg.eval,
                self.scorer,
                self.progress,
                self.cfg.generate.fps,
                text_cache(trained, self.run_dir),
                rows=eval_rows(self.cfg),
                base_dir=self.run_dir / "round-0" / "eval",
                features=eval_features(self.cfg, self.device),
            )
            self._mark("eval", ev)
            if dist.is_main():
                tracking.eval_round(self.k, ev, self.dir / "eval", self.cfg.generate.fps)
        return eval_stage.read_summary(self.dir / "eval")

    def all(self) -> dict:
        self.generate(overlap=True)
        self.judge()
        self.pairs()
        self.train()
        ev = self.evaluate()
        self._mark("round", {"eval": ev})
        state = self.dir / "train_state"
        if dist.is_main() and state.exists():
            shutil.rmtree(state)
        return ev
