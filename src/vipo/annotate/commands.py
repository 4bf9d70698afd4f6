"""The ``vipo annotate`` verbs: what each does with the folder, the store and the export (the CLI only parses)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import UserError
from .export import ExportOptions, write_export
from .items import folder_items, read_folder
from .store import Store, db_path


def _store(root: str | None, db: str | None, must_exist: bool = False) -> Store:
    if root is None and db is None:
        raise UserError("annotate: give the folder (--dir DIR) or the database (--db PATH)")
    if root is not None and not Path(root).is_dir():
        raise UserError(f"annotate: {root}: not a folder")
    path = db_path(root or ".", db)
    if must_exist and not path.is_file():
        raise UserError(
            f"annotate: {path}: no annotation database (run `vipo annotate serve` or "
            "`vipo annotate add-user` on the folder first)"
        )
    return Store(path)


def add_user(name: str, root: str | None, db: str | None, admin: bool, reset: bool) -> int:
    store = _store(root, db)
    token = store.add_user(name, admin=admin, reset=reset)
    print(f"user {name.strip()}{' (admin)' if admin else ''}: token {token}")
    print(
        "the token is shown once and stored only hashed; give it to its owner (lost: add-user --reset)", file=sys.stderr
    )
    return 0


def serve(
    root: str,
    db: str | None,
    task: str,
    k: int,
    pairs: int | None,
    seed: int,
    host: str,
    port: int,
    claim_ttl_s: float,
    max_body: int,
) -> int:
    try:
        from .server import run_server
    except ModuleNotFoundError as e:
        if e.name in ("fastapi", "uvicorn", "starlette"):
            raise UserError("annotate serve needs FastAPI and uvicorn: pip install 'vipo[annotate]'") from None
        raise

    if k < 1:
        raise UserError(f"annotate serve --k: {k} must be >= 1")
    items = folder_items(root, task, pairs, seed)
    store = _store(root, db)
    if store.meta("seed") is None:
        store.set_meta(seed=seed)
    store.set_meta(k=k)
    store.claim_ttl_s = claim_ttl_s
    new = store.sync_items(items)
    if not store.users():
        print(
            "no users yet: add some with `vipo annotate add-user NAME --dir DIR` (the server reads them live)",
            file=sys.stderr,
        )
    print(f"{len(items)} items ({new} new), each to {k} annotators; state in {store.path}", file=sys.stderr)
    run_server(root, store, k, host, port, max_body)
    return 0


def export(
    root: str,
    out: str,
    db: str | None,
    min_annotators: int | None,
    test_fraction: float,
    frames: int,
    prompts_dir: str,
    label_studio_url: str,
    copy: bool,
) -> int:
    import json

    store = _store(root, db, must_exist=True)
    read_folder(root)  # the folder must still be sound (files inside it, present)
    k = int(store.meta("k", "1"))
    opts = ExportOptions(
        min_annotators=min_annotators or k,
        test_fraction=test_fraction,
        question_frames=frames,
        prompts_dir=prompts_dir,
        label_studio_url=label_studio_url,
        link=not copy,
    )
    items = store.items()
    summary = write_export(out, root, items, store.answers(), opts)
    q = summary["questions"]
    print(
        json.dumps(
            {
                "questions": q,
                "labels_rows": summary["labels_rows"],
                "critic_train_records": summary["critic_train_records"],
            },
            indent=1,
        )
    )
    for task, per in summary["agreement"].items():
        for d, a in per["dimensions"].items():
            pa, al = a["percent_agreement"], a["alpha"]
            print(
                f"{task} {d}: percent agreement {'n/a' if pa is None else f'{100 * pa:.1f}%'}, "
                f"Krippendorff alpha {'n/a' if al is None else f'{al:.3f}'}"
            )
    pb = summary["position_bias"]["all"]
    if pb["left"] + pb["right"]:
        print(
            f"position bias: {100 * pb['left_share']['rate']:.1f}% of A/B choices picked the left video "
            f"(n={pb['left'] + pb['right']})"
        )
    print(f"export: {out} (labels.jsonl for `vipo judge {root} --critic human --labels {Path(out) / 'labels.jsonl'}`)")
    return 0


def import_label_studio(export_json: str, root: str, db: str | None, task: str, pairs: int | None, seed: int) -> int:
    from .labelstudio import read_export

    store = _store(root, db)
    items = {it.id: it for it in folder_items(root, task, pairs, seed)}
    answers = read_export(export_json, items)
    # items the team labelled in Label Studio join the store (kept, not served, unless serve lists them too)
    store.sync_items([items[i] for i in dict.fromkeys(a.item for a in answers)], deactivate_others=False)
    n = store.import_answers(answers, "label-studio")
    print(
        f"imported {n} answers by {len({a.annotator for a in answers})} annotators from {export_json} into "
        f"{store.path}; export with `vipo annotate export {root} --out OUT`"
    )
    return 0
