"""Tests of vipo.data.ledger: natural keys make re-running a stage idempotent; rows, exports and the quarantine stop."""

import json

import pytest

from vipo.data.ledger import Ledger, check_quarantine
from vipo.errors import StageAborted


def _sample(i, round_=1, prompt_id=0):
    return {"id": f"r{round_}-p{prompt_id}-s{i}", "round": round_, "prompt_id": prompt_id, "sample_index": i,
            "prompt": "a red circle moving left", "seed": 100 + i}  # fmt: skip


def test_inserting_again_never_duplicates_or_overwrites(tmp_path):
    with Ledger(tmp_path / "ledger.sqlite") as led:
        led.add_sample(_sample(0))
        led.add_sample({**_sample(0), "seed": 999})  # a re-run after a kill: the first row stands
        led.add_sample(_sample(1))
        assert [r["seed"] for r in led.rows("samples", 1)] == [100, 101]
        j = {"key": "k1", "round": 1, "kind": "pointwise", "prompt_id": 0, "a": "x", "raw": "first"}
        led.add_judgment(j)
        led.add_judgment({**j, "raw": "second"})
        assert led.rows("judgments", 1)[0]["raw"] == "first"
        led.add_judgment({**j, "raw": "asked again"}, replace=True)  # an unparseable answer asked again
        assert [r["raw"] for r in led.rows("judgments", 1)] == ["asked again"]
    with Ledger(tmp_path / "ledger.sqlite") as led:  # what is in the ledger is done, across opens
        assert led.keys("samples", 1) == {"r1-p0-s0", "r1-p0-s1"} and led.keys("judgments", 1) == {"k1"}


def test_rows_filter_by_round_and_columns_in_insertion_order(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        for r, p, i in [(1, 0, 0), (2, 0, 0), (1, 1, 0), (1, 0, 1)]:
            led.add_sample(_sample(i, r, p))
        assert [s["id"] for s in led.rows("samples", 1)] == ["r1-p0-s0", "r1-p1-s0", "r1-p0-s1"]
        assert [s["id"] for s in led.rows("samples", 1, prompt_id=0)] == ["r1-p0-s0", "r1-p0-s1"]
        assert len(led.rows("samples")) == 4
        with pytest.raises(AssertionError):
            led.rows("sqlite_master")  # only the ledger's tables


def test_derived_rows_are_replaced_per_round_atomically(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        led.replace_rows("pairs", 1, [{"id": "a", "prompt_id": 0}, {"id": "b", "prompt_id": 1}])
        led.replace_rows("pairs", 2, [{"id": "c", "prompt_id": 0}])
        led.replace_rows("pairs", 1, [{"id": "d", "prompt_id": 0}])  # recomputed: round 1's old rows go
        assert [r["id"] for r in led.rows("pairs", 1)] == ["d"] and [r["id"] for r in led.rows("pairs", 2)] == ["c"]
        with pytest.raises(RuntimeError):
            with led.transaction() as db:
                db.execute("DELETE FROM pairs WHERE round = 2")
                raise RuntimeError("killed mid-transaction")
        assert [r["id"] for r in led.rows("pairs", 2)] == ["c"]  # rolled back


def test_stages_quarantine_and_forget(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        assert not led.is_done(1, "generate") and led.stage_info(1, "generate") is None
        led.mark_done(1, "generate", {"samples": 8})
        assert led.is_done(1, "generate") and led.stage_info(1, "generate") == {"samples": 8}
        led.quarantine(1, "r1-p0-s0", "non-finite latent")
        led.quarantine(1, "r1-p0-s0", "again")  # first reason stands
        assert led.quarantined(1) == {"r1-p0-s0"} and led.rows("quarantine", 1)[0]["reason"] == "non-finite latent"
        led.add_judgment({"key": "k", "round": 1, "kind": "pointwise", "prompt_id": 0, "a": "x"})
        with led.transaction():
            led.forget(1, judgments=["k"], quarantine=["r1-p0-s0"])
        assert led.keys("judgments", 1) == set() and led.quarantined(1) == set()


def test_quarantine_above_the_limit_stops_the_stage_naming_the_first(tmp_path):
    with Ledger(tmp_path / "l.sqlite") as led:
        led.quarantine(3, "r3-p0-s1", "truncated video")
        check_quarantine(led, 3, 10, 0.1, "generate")  # 1 of 10 is not above 0.1
        led.quarantine(3, "r3-p0-s2", "truncated video")
        with pytest.raises(StageAborted) as e:
            check_quarantine(led, 3, 10, 0.1, "generate")
        assert str(e.value) == (
            "round 3 generate: 2 of 10 samples quarantined (first: r3-p0-s1: truncated video), above "
            "generate.max_quarantined=0.1"
        )


def test_export_writes_jsonl_that_datasets_reads(tmp_path):
    datasets = pytest.importorskip("datasets")
    with Ledger(tmp_path / "l.sqlite") as led:
        led.replace_rows(
            "pairs", 1, [{"id": "a", "prompt_id": 0, "mixed": [1, "x"], "same": [1, 2], "nested": {"k": 1}}]
        )
        path = led.export("pairs", 1, tmp_path / "out" / "pairs.jsonl")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert rows == [{"id": "a", "prompt_id": 0, "mixed": '[1, "x"]', "same": [1, 2], "nested": {"k": 1}}]
    ds = datasets.load_dataset("json", data_files=str(path), split="train")
    assert ds[0]["mixed"] == '[1, "x"]' and ds[0]["same"] == [1, 2] and ds[0]["nested"] == {"k": 1}
