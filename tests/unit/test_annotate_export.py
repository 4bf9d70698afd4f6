"""The annotation store, the export (labels, critic data, agreement, Label Studio) and its round trip through
``vipo judge --critic human``; confined paths."""

import json
import os

import numpy as np
import pytest

from vipo.annotate.export import ExportOptions, split_of, write_export
from vipo.annotate.items import folder_items
from vipo.annotate.labelstudio import read_export
from vipo.annotate.store import Store
from vipo.annotate.votes import Answer
from vipo.cli import main
from vipo.errors import UserError
from vipo.io.paths import OutsideFolder, confined
from vipo.io.video import write_mp4

PROMPTS = ["a red circle moving left"] * 3 + ["a blue square moving up"] * 2


def make_folder(root, prompts=PROMPTS):
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, p in enumerate(prompts):
        frames = np.full((4, 16, 16, 3), 40 * i, dtype=np.uint8)
        write_mp4(root / f"clip-{i}.mp4", frames, fps=4, upscale_to=32)
        rows.append(json.dumps({"file_name": f"clip-{i}.mp4", "prompt": p}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def test_items_of_a_folder(tmp_path):
    root = make_folder(tmp_path / "d")
    items = folder_items(root)
    pairs = [i for i in items if i.task == "pairwise"]
    assert [p.videos for p in pairs] == [
        ("clip-0.mp4", "clip-1.mp4"),
        ("clip-0.mp4", "clip-2.mp4"),
        ("clip-1.mp4", "clip-2.mp4"),
        ("clip-3.mp4", "clip-4.mp4"),
    ]
    assert len([i for i in items if i.task == "pointwise"]) == 5
    few = [i for i in folder_items(root, "pairwise", pairs_per_prompt=1, seed=3)]
    assert len(few) == 2 and few == folder_items(root, "pairwise", pairs_per_prompt=1, seed=3)


def test_confined_paths(tmp_path):
    root = make_folder(tmp_path / "d")
    (tmp_path / "secret.txt").write_text("no")
    os.symlink(tmp_path / "secret.txt", root / "out.mp4")
    os.symlink(root / "clip-0.mp4", root / "in.mp4")
    assert confined(root, "in.mp4") == (root / "clip-0.mp4").resolve()
    for bad in ("../secret.txt", "/etc/passwd", "out.mp4", "a/../../secret.txt", "~/x", "C:\\x.mp4"):
        with pytest.raises(OutsideFolder):
            confined(root, bad)
    meta = root / "metadata.jsonl"
    meta.write_text(json.dumps({"file_name": "../secret.txt", "prompt": "p"}) + "\n")
    with pytest.raises(UserError, match=r"metadata.jsonl:1: file_name.*'\.\.'"):
        folder_items(root)
    # the app refuses to serve such a folder, with one line and exit 2 (before binding anything)
    assert main(["annotate", "serve", str(root), "--port", "0"]) == 2
    meta.write_text(json.dumps({"file_name": "out.mp4", "prompt": "p"}) + "\n")
    assert main(["annotate", "serve", str(root), "--port", "0"]) == 2
    assert main(["annotate", "export", str(root), "--out", str(tmp_path / "o")]) == 2  # no database yet


def _label_three(store, root):
    """Three annotators answer every pair and two singles; the hand-made answers below are the test's truth."""
    store.set_meta(k=3)
    store.sync_items(folder_items(root))
    users = {n: store.authenticate(store.add_user(n)) for n in ("ann", "bob", "cyd")}
    plan = {  # item -> annotator -> (semantic, fidelity, motion)
        "pairwise:clip-0.mp4|clip-1.mp4": {"ann": "AAB", "bob": "ABB", "cyd": "AAT"},
        "pairwise:clip-0.mp4|clip-2.mp4": {"ann": "BBB", "bob": "BAB", "cyd": "ATA"},
        "pairwise:clip-1.mp4|clip-2.mp4": {"ann": "TTT", "bob": "TTA", "cyd": "TTB"},
        "pairwise:clip-3.mp4|clip-4.mp4": {"ann": "AAA", "bob": "AAA"},  # only two: incomplete
        "pointwise:clip-0.mp4": {"ann": "GGN", "bob": "GNN", "cyd": "GBB"},
        "pointwise:clip-1.mp4": {"ann": "BBB", "bob": "BNG", "cyd": "BBG"},
    }
    word = {"A": "A", "B": "B", "T": "Tie", "G": "Good", "N": "Normal"}
    order = list(plan)
    for name, user in users.items():
        seen = 0
        while True:
            got = store.next_item(user, 3)
            if got is None:
                break
            item, swapped = got
            if name not in plan.get(item.id, {}):
                store.skip(user, item.id)
                continue
            code = plan[item.id][name]
            if item.task == "pointwise":
                v = {
                    d: {"G": "Good", "N": "Normal", "B": "Bad"}[c]
                    for d, c in zip(("semantic", "fidelity", "motion"), code)
                }
            else:
                v = {d: word[c] for d, c in zip(("semantic", "fidelity", "motion"), code)}
            store.answer(
                user,
                item.id,
                v,
                {d: f"{name}: {d} {v[d]} <img src=x onerror=alert(1)>" for d in v},
                {"A": ["blurry"]} if name == "ann" else {},
            )
            seen += 1
        assert seen == sum(name in by for by in plan.values())
    return users, order


def test_store_assignment_export_and_human_critic(tmp_path):
    root = make_folder(tmp_path / "d")
    store = Store(root / ".vipo-annotate.sqlite")
    users, _ = _label_three(store, root)
    # every item reached at most k=3 distinct annotators, and the fourth person gets nothing already full
    dora = store.authenticate(store.add_user("dora"))
    got = store.next_item(dora, 3)
    assert got is not None and got[0].id in ("pairwise:clip-3.mp4|clip-4.mp4", "pointwise:clip-2.mp4")
    assert store.progress(users["ann"], 3)["done"] == 6
    # wrong tokens
    assert store.authenticate("vipo_1_nope") is None and store.authenticate(None) is None
    assert store.authenticate("garbage") is None
    with pytest.raises(UserError, match="exists"):
        store.add_user("ann")
    # changing an answer replaces it
    store.answer(
        users["cyd"],
        "pointwise:clip-1.mp4",
        {"semantic": "Bad", "fidelity": "Bad", "motion": "Good"},
        {"semantic": "c", "fidelity": "c", "motion": "c2"},
        {},
    )
    store.close()

    out = tmp_path / "export"
    assert main(["annotate", "export", str(root), "--out", str(out), "--test-fraction", "0.5"]) == 0
    labels = [json.loads(x) for x in (out / "labels.jsonl").read_text().splitlines()]
    # pair 0|1: semantic A A A, fidelity A B A, motion B B Tie -> A, A, B; pair 0|2: fidelity B A Tie is tied, so
    # the item is left out of labels.jsonl (the human critic needs all three); pair 1|2: motion Tie A B tied;
    # pair 3|4: two answers of k=3 (incomplete); clip-0: fidelity Good Normal Bad tied; clip-1 (cyd's changed
    # answer): Bad, Bad, Good
    why = {"semantic": ["ann", "bob", "cyd"], "fidelity": ["ann", "cyd"], "motion": ["ann", "bob"]}
    verdicts = {"semantic": "A", "fidelity": "A", "motion": "B"}
    assert labels == [
        {
            "a": "clip-0.mp4",
            "b": "clip-1.mp4",
            "verdicts": verdicts,
            "reasons": {
                d: "; ".join(f"{n}: {d} {verdicts[d]} <img src=x onerror=alert(1)>" for n in who)
                for d, who in why.items()
            },
        },
        {
            "video": "clip-1.mp4",
            "labels": {"semantic": "Bad", "fidelity": "Bad", "motion": "Good"},
            "reasons": {
                "semantic": "ann: semantic Bad <img src=x onerror=alert(1)>; "
                "bob: semantic Bad <img src=x onerror=alert(1)>; c",
                "fidelity": "ann: fidelity Bad <img src=x onerror=alert(1)>; c",
                "motion": "bob: motion Good <img src=x onerror=alert(1)>; c2",
            },
        },
    ]
    summary = json.loads((out / "agreement.json").read_text())
    q = summary["questions"]
    assert q["pairwise"]["motion"] == {"decided": 2, "tied": 1, "incomplete": 1, "unanswered": 0}
    assert q["pairwise"]["fidelity"] == {"decided": 2, "tied": 1, "incomplete": 1, "unanswered": 0}
    assert q["pointwise"]["fidelity"] == {"decided": 1, "tied": 1, "incomplete": 0, "unanswered": 3}
    # hand-computed agreement, pointwise motion: clip-0 N N B (2/6), clip-1 B G G (2/6) -> 1/3
    pm = summary["agreement"]["pointwise"]["dimensions"]["motion"]
    assert pm["percent_agreement"] == pytest.approx(1 / 3)
    # alpha: o_NN 1, o_NB = o_BN 1, o_GG 1, o_GB = o_BG 1; n_N 2, n_B 2, n_G 2, n 6;
    # D_o = 4/6, D_e = 2 (2*2 + 2*2 + 2*2) / 30 = 24/30 -> alpha = 1 - (4/6) / (24/30) = 1/6
    assert pm["alpha"] == pytest.approx(1 / 6)
    train = [json.loads(x) for x in (out / "critic_train.jsonl").read_text().splitlines()]
    assert len(train) == summary["critic_train_records"]
    rec = next(r for r in train if r["id"] == "pairwise:clip-0.mp4|clip-1.mp4#motion")
    assert rec["verdict"] == "B" and rec["votes"] == {"A": 0, "B": 2, "Tie": 1} and rec["annotators"] == 3
    assert rec["videos"] == ["videos/clip-0.mp4", "videos/clip-1.mp4"] and rec["task"] == "pairwise"
    assert rec["reasons"] == [
        "ann: motion B <img src=x onerror=alert(1)>",
        "bob: motion B <img src=x onerror=alert(1)>",
    ]
    assert "a red circle moving left" in rec["question"] and "Verdict: A" in rec["question"]
    assert "{n_frames}" not in rec["question"] and "16 frames" in rec["question"]
    assert rec["split"] == split_of("a red circle moving left", 0.5)
    assert all((out / v).is_file() for r in train for v in r["videos"])
    assert {r["split"] for r in train if r["prompt"] == "a red circle moving left"} == {rec["split"]}
    # the human critic judges the folder from the voted labels
    j = tmp_path / "judgments.jsonl"
    assert (
        main(
            [
                "judge",
                str(root),
                "--critic",
                "human",
                "--labels",
                str(out / "labels.jsonl"),
                "--out",
                str(j),
                "--pairwise",
                "--set",
                "max_unparseable=1.0",
                "--quiet",
            ]
        )
        == 0
    )
    rows = [json.loads(x) for x in j.read_text().splitlines()]
    got = {r["a"]: r["labels"] for r in rows if r.get("kind") == "pointwise" and "labels" in r}
    assert got == {"clip-1.mp4": labels[1]["labels"]}
    pair = next(
        r
        for r in rows
        if r.get("kind") == "pairwise" and r["a"] == "clip-1.mp4" and r["b"] == "clip-0.mp4" and "verdicts" in r
    )
    assert pair["verdicts"] == {"semantic": "B", "fidelity": "B", "motion": "A"}  # asked as (b, a): flipped
    # the critic data opens with datasets
    import datasets

    ds = datasets.load_dataset("json", data_files=str(out / "critic_train.jsonl"), split="train")
    assert len(ds) == len(train) and set(ds.column_names) >= {"id", "videos", "question", "verdict", "reasons"}
    # an export over an earlier one replaces it; a folder that is not an export is refused
    assert main(["annotate", "export", str(root), "--out", str(out), "--min-annotators", "2"]) == 0
    assert json.loads((out / "agreement.json").read_text())["questions"]["pairwise"]["motion"]["incomplete"] == 0
    assert main(["annotate", "export", str(root), "--out", str(root)]) == 2


def test_label_studio_round_trip(tmp_path):
    root = make_folder(tmp_path / "d")
    items = folder_items(root)
    out = tmp_path / "export"
    write_export(out, root, items, [], ExportOptions())
    cfg = (out / "label_studio" / "pairwise_config.xml").read_text()
    assert '<Video name="video_a" value="$video_a" sync="video_b"/>' in cfg and 'name="motion_reason"' in cfg
    import xml.etree.ElementTree as ET

    for task in ("pairwise", "pointwise"):
        ET.fromstring((out / "label_studio" / f"{task}_config.xml").read_text())  # well-formed
    tasks = json.loads((out / "label_studio" / "pairwise_tasks.json").read_text())
    assert tasks[0]["data"]["video_a"] == "/data/local-files/?d=d/clip-0.mp4" and len(tasks) == 4
    # Label Studio's JSON export of those tasks (its documented shape: data + annotations[].result[] regions)
    exported = []
    for n, t in enumerate(tasks):
        res = [
            {
                "id": f"r{d}",
                "from_name": d,
                "to_name": "video_a",
                "type": "choices",
                "value": {"choices": ["A" if n % 2 else "Tie"]},
            }
            for d in ("semantic", "fidelity", "motion")
        ]
        res += [
            {
                "id": f"t{d}",
                "from_name": f"{d}_reason",
                "to_name": "video_a",
                "type": "textarea",
                "value": {"text": [f"because {d}"]},
            }
            for d in ("semantic", "fidelity", "motion")
        ]
        res.append(
            {
                "id": "g",
                "from_name": "tags_b",
                "to_name": "video_b",
                "type": "choices",
                "value": {"choices": ["flicker"]},
            }
        )
        exported.append(
            {
                "id": 100 + n,
                "data": t["data"],
                "project": 3,
                "predictions": [],
                "annotations": [
                    {"id": 7, "result": res, "was_cancelled": False, "completed_by": 1, "lead_time": 3.2},
                    {"id": 8, "result": res[:2], "was_cancelled": True, "completed_by": 2},
                    {"id": 9, "result": res, "was_cancelled": False, "completed_by": {"id": 5, "email": "eve@lab.org"}},
                ],
            }
        )
    ls = tmp_path / "ls_export.json"
    ls.write_text(json.dumps(exported))
    answers = read_export(ls, {it.id: it for it in items})
    assert len(answers) == 8 and {a.annotator for a in answers} == {"label-studio:1", "label-studio:eve@lab.org"}
    a0 = next(a for a in answers if a.item == tasks[1]["data"]["vipo_item"])
    assert a0.verdicts == {"semantic": "A", "fidelity": "A", "motion": "A"} and a0.tags == {"B": ["flicker"]}
    assert a0.reasons["motion"] == "because motion" and not a0.swapped
    # through the CLI into the folder's store, then exported
    assert main(["annotate", "import-label-studio", str(ls), str(root)]) == 0
    assert main(["annotate", "export", str(root), "--out", str(tmp_path / "e2"), "--min-annotators", "2"]) == 0
    labels = [json.loads(x) for x in (tmp_path / "e2" / "labels.jsonl").read_text().splitlines()]
    assert len(labels) == 4 and labels[1]["verdicts"]["motion"] == "A" and labels[0]["verdicts"]["motion"] == "Tie"
    # a broken export names the task and what is missing
    exported[0]["annotations"][0]["result"] = exported[0]["annotations"][0]["result"][1:]
    ls.write_text(json.dumps(exported))
    with pytest.raises(UserError, match=r"task 100, annotation 7: no choice for semantic"):
        read_export(ls, {it.id: it for it in items})
    exported[0]["data"]["vipo_item"] = "pairwise:x|y"
    ls.write_text(json.dumps(exported))
    assert main(["annotate", "import-label-studio", str(ls), str(root)]) == 2


def test_simulated_annotators_need_no_store(tmp_path):
    """What issue #17 does: answers made in code go through the same vote and export."""
    root = make_folder(tmp_path / "d", PROMPTS[:2])
    items = folder_items(root, "pointwise")
    answers = [
        Answer(
            it.id,
            f"sim{k}",
            "pointwise",
            {"semantic": "Good", "fidelity": "Bad", "motion": "Normal"},
            {"semantic": "ok"},
        )
        for it in items
        for k in range(3)
    ]
    summary = write_export(tmp_path / "o", root, items, answers, ExportOptions(min_annotators=3))
    assert summary["critic_train_records"] == 6 and summary["labels_rows"] == 2
    assert summary["agreement"]["pointwise"]["dimensions"]["semantic"]["percent_agreement"] == 1.0
