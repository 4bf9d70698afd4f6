"""card: ``vipo export`` writes a Hub model card beside the merged model, with the run's eval table and recipe."""

import json

import yaml

from vipo.cli import main
from vipo.run.card import hub_id
from vipo.stats import fmt


def test_export_writes_a_model_card_with_metadata_eval_table_and_command(tmp_path, tiny_run_dir):
    ckpt = tiny_run_dir / "round-1" / "checkpoint"
    out = tmp_path / "merged"
    assert main(["export", "--merge", str(ckpt), "--out", str(out)]) == 0
    text = (out / "README.md").read_text()
    _, front, body = text.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["library_name"] == "diffusers" and meta["pipeline_tag"] == "text-to-video"
    assert {"dpo", "lora", "world", "vipo"} <= set(meta["tags"])
    assert "base_model" not in meta  # a local folder is no Hub id
    assert "| method | dpo |" in body and "| rounds | 1 |" in body
    for k in (0, 1):
        ev = json.loads((tiny_run_dir / f"round-{k}" / "eval" / "eval.json").read_text())["indist"]
        row = f"| {'base' if k == 0 else 'round 1'} | {fmt(ev['semantic_pass'], ev['ci95']['semantic_pass'])} |"
        assert row in body, (row, body)
    again = tiny_run_dir.with_name(tiny_run_dir.name + "-reproduced")
    assert f"vipo run --config {tiny_run_dir / 'config.yaml'} --out {again}\n" in body
    assert f"vipo export --merge {again / 'round-1' / 'checkpoint'} --out {out}-reproduced\n" in body
    assert (tiny_run_dir / "config.yaml").read_text().strip() in body


def test_only_ahub_id_becomes_base_model(tmp_path):
    assert hub_id("THUDM/CogVideoX-2b") == "THUDM/CogVideoX-2b"
    assert hub_id("world") is None and hub_id(str(tmp_path)) is None and hub_id("./a/b") is None
