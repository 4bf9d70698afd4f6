"""Tests of vipo.annotate.labelstudio."""

import json

import pytest
from annotate_helpers import make_folder

from vipo.annotate.export import ExportOptions, write_export
from vipo.annotate.items import folder_items
from vipo.annotate.labelstudio import read_export
from vipo.cli import main
from vipo.errors import UserError


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
