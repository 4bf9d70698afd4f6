"""Tests of vipo.annotate.store."""

import json

import pytest
from annotate_helpers import make_folder

from vipo.annotate.items import folder_items
from vipo.annotate.store import Store
from vipo.cli import main
from vipo.critics.learn.data import split_of
from vipo.errors import UserError


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
