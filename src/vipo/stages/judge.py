"""``judge``: pointwise labels for every sample and pairwise verdicts for every pair of a prompt, in both orders.

The critic sees decoded pixels read back from the mp4 files (what anyone else would see), never seeds or metadata.
Each judgment stores the critic's raw text beside the parsed verdict; an answer that does not parse (after the
critic's own retries) is stored with its error and raw text, left out of pairs and examples, and counted. Judgments
already in the ledger are skipped on re-runs, except unparseable ones, which are asked again.

:func:`summarize` reports, from the ledger, the round's unparseable rate, position-swap consistency rate (the share
of pairs judged in both orders whose two overall verdicts agree) and label counts per dimension; the stage stops
with :class:`StageAborted` when the unparseable rate passes ``judge.max_unparseable``.

A video that does not decode, has no frames or not the frame count its sample row recorded is quarantined (its id
and reason in the ledger's ``quarantine`` table), never shown to the critic; past ``max_quarantined`` of the round's
samples the stage stops. Each prompt's judgments commit in one transaction, so a kill loses at most the group in
flight, and no committed judgment is asked again.
"""

from __future__ import annotations

import itertools
import logging
from collections import Counter, defaultdict
from contextlib import ExitStack
from pathlib import Path

from tqdm.auto import tqdm

from .. import dist, faults
from ..config import JudgeConfig
from ..critics.base import DIMENSIONS, Critic, CriticParseError, Video
from ..critics.options import current_names
from ..data.folders import folder_samples, read_checked
from ..data.ledger import Ledger, check_quarantine
from ..data.pairs import consistent_verdict
from ..errors import StageAborted, UserError

log = logging.getLogger(__name__)
MIN_FOR_EARLY_ABORT = 50  # judgments before the unparseable rate is trusted mid-stage


def make_critic(cfg: JudgeConfig | str) -> Critic:
    """The critic ``cfg.critic`` names (a bare name: that critic with default options), through the registry
    :data:`vipo.critics.CRITICS`."""
    from ..critics import build

    return build(JudgeConfig(critic=cfg) if isinstance(cfg, str) else cfg)


def check_prompts(critic: Critic, prompts) -> None:
    """Refuse at start the first prompt the critic cannot read; ``prompts``: (where, prompt) pairs, ``where`` naming
    the file and line ("prompts.txt:7") or the field it came from."""
    for where, prompt in prompts:
        why = critic.unreadable(prompt)
        if why:
            raise UserError(f"{where}: prompt {prompt!r}: the {critic.name} critic cannot judge it: {why}")


def _row(row: dict, parsed, kind: str) -> dict:
    if isinstance(parsed, CriticParseError):
        return dict(row, raw=parsed.raw, error=str(parsed))
    if kind == "pointwise":
        return dict(
            row,
            raw=parsed.raw,
            labels=parsed.labels,
            reasons=parsed.reasons,
            scores=parsed.scores,
            overall=parsed.overall,
        )
    return dict(row, raw=parsed.raw, verdicts=parsed.verdicts, reasons=parsed.reasons, overall=parsed.overall)


class GroupJudge:
    """Judging prompt groups: :meth:`work` judges one group (on any rank: the critic reads the mp4s) and returns its
    rows; :meth:`commit` writes groups to the ledger, each group's quarantine and judgments in one transaction
    (the main rank)."""

    def __init__(
        self,
        critic: Critic,
        round_dir: Path,
        ledger: Ledger,
        round_: int,
        pairwise: bool,
        n_samples: int,
        max_unparseable: float,
        max_quarantined: float,
        export: Path | None = None,
    ):
        self.critic, self.round_dir, self.ledger, self.round = critic, Path(round_dir), ledger, round_
        self.export = export
        self.pairwise, self.n_samples = pairwise, n_samples
        self.max_unparseable, self.max_quarantined = max_unparseable, max_quarantined
        #: judgment keys that need no asking (unparseable ones are asked again) and quarantined sample ids
        self.done, self.quarantined = dist.from_main(
            lambda: (
                {j["key"] for j in ledger.rows("judgments", round_) if "error" not in j},
                ledger.quarantined(round_),
            )
        )

    def work(self, item: tuple[int, list[dict]] | None) -> dict | None:
        if item is None:
            return None
        pid, group = item
        critic, round_, round_dir = self.critic, self.round, self.round_dir
        bad, videos = {}, {}
        for s in group:
            if s["id"] in self.quarantined:
                continue
            got = read_checked(round_dir / s["file_name"], s.get("frames"))
            if isinstance(got, str):
                log.warning("round %d: %s: %s; quarantined", round_, s["id"], got)
                bad[s["id"]] = got
            else:
                videos[s["id"]] = Video(s["prompt"], got, str(round_dir / s["file_name"]))
        group = [s for s in group if s["id"] in videos]
        rows = []
        todo = [s for s in group if f"pw:{s['id']}" not in self.done]
        for s, parsed in zip(todo, critic.pointwise_many([videos[s["id"]] for s in todo])):
            rows.append(
                _row(
                    {
                        "key": f"pw:{s['id']}",
                        "round": round_,
                        "kind": "pointwise",
                        "prompt_id": pid,
                        "a": s["id"],
                        "critic": critic.name,
                    },
                    parsed,
                    "pointwise",
                )
            )
        if self.pairwise:
            todo = [(a, b) for a, b in itertools.permutations(group, 2) if f"pair:{a['id']}|{b['id']}" not in self.done]
            for (a, b), parsed in zip(
                todo, critic.pairwise_many([(videos[a["id"]], videos[b["id"]]) for a, b in todo])
            ):
                rows.append(
                    _row(
                        {
                            "key": f"pair:{a['id']}|{b['id']}",
                            "round": round_,
                            "kind": "pairwise",
                            "prompt_id": pid,
                            "a": a["id"],
                            "b": b["id"],
                            "critic": critic.name,
                        },
                        parsed,
                        "pairwise",
                    )
                )
        return {"bad": bad, "rows": rows}

    def commit(self, results: list) -> int:
        """Each group's quarantine and judgments in one transaction each, in the order given (the main rank)."""
        ledger, round_ = self.ledger, self.round
        n = 0
        for res in results:
            if res is None:
                continue
            if res["bad"]:
                with ledger.transaction():
                    for sid, reason in res["bad"].items():
                        ledger.quarantine(round_, sid, reason)
                check_quarantine(ledger, round_, self.n_samples, self.max_quarantined, "judge")
            with ledger.transaction():
                for row in res["rows"]:
                    ledger.add_judgment(row, replace=True)
                faults.point("judge.mid_record")
            faults.point("judge.after_commit")
            n += 1
            if any("error" in r for r in res["rows"]):
                info = summarize(ledger.rows("judgments", round_))
                if info["judgments"] >= MIN_FOR_EARLY_ABORT:
                    _check_rate(info, self.max_unparseable, round_, ledger, self.export)
        return n


def judge(
    critic: Critic,
    samples: list[dict],
    round_dir: Path,
    ledger: Ledger,
    round_: int,
    pairwise: bool = True,
    progress: bool = True,
    max_unparseable: float = 1.0,
    max_quarantined: float = 1.0,
    export: Path | None = None,
) -> dict:
    """Judge every prompt group not judged yet; ``export``: where the judgments are exported (JSONL) before the stage
    stops on ``max_unparseable``, so the message can point at them. Under a launcher the groups are sharded across
    ranks (group ``j`` in prompt order to rank ``j % N``; a served critic's requests go out from every rank,
    ``judge.concurrency`` each); the main rank commits each round of groups, in prompt order."""
    gj = GroupJudge(critic, round_dir, ledger, round_, pairwise, len(samples), max_unparseable, max_quarantined, export)
    groups: dict[int, list[dict]] = defaultdict(list)
    for s in samples:
        groups[s["prompt_id"]].append(s)
    ordered = sorted(groups.items())
    bar = tqdm(total=len(ordered), disable=not progress or not dist.is_main(), desc=f"judge r{round_}", unit="prompt")
    for s in range(dist.steps(len(ordered))):
        mine = dist.shard(ordered[s * dist.world() : (s + 1) * dist.world()])
        n, stop = dist.step(lambda: gj.work(mine[0] if mine else None), gj.commit, faults.term_requested)
        bar.update(n)
        if stop:
            raise faults.Terminated(f"round {round_} judge")
    bar.close()

    def finish() -> dict:
        info = summarize(ledger.rows("judgments", round_))
        _check_rate(info, max_unparseable, round_, ledger, export)
        log.info(
            "round %d judged: %d judgments, %.1f%% unparseable, consistency %s; labels %s",
            round_,
            info["judgments"],
            100 * info["unparseable_rate"],
            "n/a" if info["consistency_rate"] is None else f"{100 * info['consistency_rate']:.1f}%",
            info["labels"],
        )
        return info

    return dist.from_main(finish)


class BackgroundJudge:
    """A served critic judging beside generation: each prompt group goes to a thread of the rank that owns it (group
    ``j`` of the round's prompts to rank ``j % N``) as soon as its last sample is committed, so the critic's server
    answers batch k while batch k+1 samples. Its results ride with the next round of batches to the main rank,
    which commits them as the judge stage would; what generation's end finds unfinished is waited for. The judge
    stage then asks only what is still missing (nothing, normally), checks the thresholds and records the stage.

    Only for critics that run elsewhere (:attr:`Critic.served`): an in-process critic would share the GPU with the
    sampler."""

    def __init__(self, gj: GroupJudge, prompt_ids: list[int], samples_per_prompt: int, committed: list[dict]):
        from concurrent.futures import ThreadPoolExecutor

        self.gj, self.expected = gj, samples_per_prompt
        self.owner = {pid: j % dist.world() for j, pid in enumerate(sorted(set(prompt_ids)))}
        self.seen: dict[int, list[dict]] = defaultdict(list)
        for row in committed:  # (a resumed generation: those groups are left to the judge stage)
            self.seen[row["prompt_id"]].append(row)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vipo-judge")
        self.pending: list = []

    def committed(self, rows: list[dict]) -> None:
        """Every rank, after each round of batches, with the samples just committed (in ledger order)."""
        for row in rows:
            group = self.seen[row["prompt_id"]]
            group.append(row)
            if len(group) == self.expected and self.owner.get(row["prompt_id"]) == dist.rank():
                self.pending.append(self.pool.submit(self.gj.work, (row["prompt_id"], list(group))))

    def take(self, wait: bool = False) -> list:
        """The finished groups' results, in submission order (all of them with ``wait``); a critic's exception is
        raised here, in the stage's thread."""
        out = []
        while self.pending and (wait or self.pending[0].done()):
            out.append(self.pending.pop(0).result())
        return out

    def commit(self, parts: list[list]) -> int:
        return self.gj.commit([r for part in parts for r in part])

    def finish(self) -> None:
        """Wait for this rank's groups and commit every rank's (one last exchange)."""
        try:
            dist.step(lambda: self.take(wait=True), self.commit)
        finally:
            self.close()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _check_rate(info: dict, limit: float, round_: int, ledger: Ledger, export: Path | None) -> None:
    if info["unparseable_rate"] > limit:
        where = ledger.path
        if export is not None:
            where = ledger.export("judgments", round_, export)  # written first: the message points at it
        raise StageAborted(
            f"round {round_} judge: {info['parse_errors']} of {info['judgments']} judgments "
            f"({100 * info['unparseable_rate']:.1f}%) unparseable, above judge.max_unparseable="
            f"{limit}; see the 'raw' text of the rows with an 'error' in {where}"
        )


def summarize(judgments: list[dict]) -> dict:
    """Counts, unparseable rate, position-swap consistency and label counts per dimension of a set of judgments."""
    kinds = Counter(j["kind"] for j in judgments)
    errors = sum("error" in j for j in judgments)
    labels = {d: dict(Counter(j["labels"][d] for j in judgments if "labels" in j)) for d in DIMENSIONS}
    verdicts = {d: dict(Counter(j["verdicts"][d] for j in judgments if "verdicts" in j)) for d in DIMENSIONS}
    overall = {(j["a"], j["b"]): j["overall"] for j in judgments if j["kind"] == "pairwise" and "overall" in j}
    both = [(x, y) for x, y in overall if x < y and (y, x) in overall]
    consistent = sum(consistent_verdict(overall[(x, y)], overall[(y, x)]) is not None for x, y in both)
    return {
        "pointwise": kinds["pointwise"],
        "pairwise": kinds["pairwise"],
        "judgments": len(judgments),
        "parse_errors": errors,
        "unparseable_rate": errors / len(judgments) if judgments else 0.0,
        "pairs_both_orders": len(both),
        "consistency_rate": consistent / len(both) if both else None,
        "labels": labels,
        "pairwise_verdicts": verdicts,
    }


# -- vipo judge DIR --out F: the judgments of a folder, kept as a cache beside F ------------------------------------
#: judge options that change how a critic is reached, not what it answers (left out of the provenance record)
OPERATIONAL = (
    "concurrency",
    "timeout_s",
    "http_retries",
    "backoff_s",
    "batch_size",
    "device",
    "max_unparseable",
    "feature_batch",
    "api_key_env",
)


def critic_record(cfg: JudgeConfig) -> dict:
    """The critic and the options that decide its answers (with the labels file's content hash for the human critic):
    what a folder's judgments depend on besides the videos and prompts."""
    from ..config import to_dict
    from ..io.hashing import file_digest

    rec = {k: v for k, v in to_dict(cfg).items() if k not in OPERATIONAL}
    if cfg.labels and Path(cfg.labels).is_file():
        rec["labels_sha256"] = file_digest(cfg.labels)[:16]
    return rec


def wanted_keys(samples: list[dict], pairwise: bool) -> set[str]:
    """The judgment keys :func:`judge` asks for ``samples``."""
    keys = {f"pw:{s['id']}" for s in samples}
    if pairwise:
        groups: dict[int, list[str]] = defaultdict(list)
        for s in samples:
            groups[s["prompt_id"]].append(s["id"])
        keys |= {f"pair:{a}|{b}" for g in groups.values() for a, b in itertools.permutations(g, 2)}
    return keys


def refresh_cache(ledger: Ledger, root: Path, samples: list[dict], pairwise: bool) -> int:
    """Forget the judgments a folder's re-run must ask again: those of a video whose prompt or bytes changed since it
    was judged (and its quarantine entry), and those no longer asked (a video gone, pairs regrouped, ``pairwise``
    off). Records the videos' fingerprints (sha256 of prompt and bytes) in the same transaction. Returns how many
    videos changed."""
    from ..io.hashing import digest, file_digest

    now = {s["id"]: digest(s["prompt"] + "\0" + file_digest(Path(root) / s["file_name"])) for s in samples}
    before = ledger.stage_info(0, "inputs") or {}
    changed = {sid for sid, d in now.items() if before.get(sid) not in (None, d)}
    wanted = wanted_keys(samples, pairwise)
    rows = ledger.rows("judgments", 0)
    stale = [j["key"] for j in rows if j["key"] not in wanted or j["a"] in changed or j.get("b") in changed]
    pid = {s["id"]: s["prompt_id"] for s in samples}
    moved = [dict(j, prompt_id=pid[j["a"]]) for j in rows if j["key"] not in stale and j["prompt_id"] != pid[j["a"]]]
    with ledger.transaction():
        ledger.forget(
            0, stale, [q["id"] for q in ledger.rows("quarantine", 0) if q["id"] in changed or q["id"] not in now]
        )
        for j in moved:  # an unchanged video whose prompt's number moved (another prompt changed before it)
            ledger.add_judgment(j, replace=True)
        ledger.mark_done(0, "inputs", now)
    if changed or stale:
        log.info(
            "%s: %d videos changed since they were judged; %d judgments to ask again", root, len(changed), len(stale)
        )
    return len(changed)


def judge_folder(
    root: Path, out: Path, cfg: JudgeConfig, pairwise: bool = False, progress: bool = True, force: bool = False
) -> dict:
    """``vipo judge DIR --out F``: judge a folder's videos into the JSONL ``F``, kept as a cache beside it.

    ``F.ledger.sqlite`` holds every answer (an interrupted run resumes) and ``F.provenance.json`` the critic and
    the options that decide its answers. Run again, only what changed is asked: the videos whose prompt or bytes
    changed, the new ones, the new pairs; answers about videos gone are dropped. Another critic or other options are
    refused naming the changed fields; ``force`` drops every answer and starts over. ``F`` existing without that
    ledger (not written by ``vipo judge``) is refused unless ``force``.
    """
    from ..io import provenance
    from ..io.lock import ensure_folder, hold, lock_path_for_file

    root, out = Path(root), Path(out)
    if out.is_dir():
        raise UserError(f"--out {out}: is a folder; --out names the judgments file (JSONL)")
    samples = folder_samples(root)
    critic = make_critic(cfg)
    check_prompts(critic, [(f"{root / 'metadata.jsonl'}:{s['line']}", s["prompt"]) for s in samples])
    ledger_path = out.with_name(out.name + ".ledger.sqlite")
    record_path = out.with_name(out.name + ".provenance.json")

    def start_over() -> None:
        for p in (ledger_path, Path(f"{ledger_path}-wal"), Path(f"{ledger_path}-shm"), record_path):
            p.unlink(missing_ok=True)

    def take() -> None:  # the main rank (under a launcher): the lock, the checks, the cache's refresh
        ensure_folder(out.parent, "--out")
        held.enter_context(hold(lock_path_for_file(out), str(out)))
        if out.exists() and not ledger_path.exists():
            if not force:
                raise UserError(
                    f"--out {out}: exists and was not written by vipo judge (no {ledger_path.name} "
                    "beside it); choose another --out, or pass --force to overwrite it"
                )
        if ledger_path.exists() and not record_path.exists():  # a ledger from before provenance: trust nothing
            log.warning("%s: no record of the critic that filled it; judging everything again", ledger_path)
            start_over()
        provenance.check(
            record_path,
            {"judge": critic_record(cfg)},
            force,
            start_over=start_over,
            upgrade=current_names,
            refusal=f"{out} holds judgments of another critic or other options ({{changes}}); choose "
            "another --out, or pass --force to judge everything again",
            forced=f"--force: judging everything in {root} again ({{changes}})",
        )
        opened.append(held.enter_context(Ledger(ledger_path)))
        refresh_cache(opened[0], root, samples, pairwise)

    opened: list[Ledger] = []
    with ExitStack() as held:
        dist.from_main(take)
        ledger = opened[0] if dist.is_main() else dist.OnMain("ledger")  # only the main rank opens it
        info = judge(
            critic,
            samples,
            root,
            ledger,
            0,
            pairwise=pairwise,
            progress=progress,
            max_unparseable=cfg.max_unparseable,
            export=out,
        )
        dist.from_main(lambda: ledger.export("judgments", 0, out))
    return info
