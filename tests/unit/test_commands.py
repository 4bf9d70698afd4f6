"""vipo.annotate.commands, the verbs behind ``vipo annotate`` called directly: which store they open and the one-line
refusals, what add-user prints, what serve records before it hands the store to the server (a stand-in here), and
what export and import print from known summaries (the export and the Label Studio reader themselves are tested in
test_export.py and test_labelstudio.py)."""

import json
import sys

import pytest

from vipo.annotate import commands
from vipo.annotate.store import DB_NAME, Store
from vipo.annotate.votes import Answer
from vipo.errors import UserError


def folder(root, prompts=("a red circle", "a red circle", "a blue square")):
    """A folder of empty files named in metadata.jsonl (the verbs check presence, not contents)."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, p in enumerate(prompts):
        (root / f"clip-{i}.mp4").write_bytes(b"")
        rows.append(json.dumps({"file_name": f"clip-{i}.mp4", "prompt": p}))
    (root / "metadata.jsonl").write_text("\n".join(rows) + "\n")
    return root


def test_a_store_needs_the_folder_or_the_database():
    with pytest.raises(UserError, match=r"^annotate: give the folder \(--dir DIR\) or the database \(--db PATH\)$"):
        commands._store(None, None)


def test_a_store_refuses_a_folder_that_is_not_one(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(UserError, match=rf"^annotate: {tmp_path / 'f'}: not a folder$"):
        commands._store(str(tmp_path / "f"), None)


def test_the_store_is_in_the_folder_unless_a_database_is_named(tmp_path):
    assert commands._store(str(tmp_path), None).path == tmp_path / DB_NAME
    assert commands._store(str(tmp_path), str(tmp_path / "x.sqlite")).path == tmp_path / "x.sqlite"
    assert commands._store(None, str(tmp_path / "y.sqlite")).path == tmp_path / "y.sqlite"


def test_a_store_that_must_exist_is_not_created(tmp_path):
    with pytest.raises(
        UserError, match=rf"^annotate: {tmp_path / DB_NAME}: no annotation database \(run `vipo annotate serve`"
    ):
        commands._store(str(tmp_path), None, must_exist=True)
    assert not (tmp_path / DB_NAME).exists()


def test_add_user_prints_a_token_that_authenticates_once_stored(tmp_path, capsys):
    assert commands.add_user("  ann ", str(tmp_path), None, admin=True, reset=False) == 0
    out, err = capsys.readouterr()
    assert out.startswith("user ann (admin): token ") and out.count("\n") == 1
    token = out.split("token ", 1)[1].strip()
    assert "shown once and stored only hashed" in err
    user = Store(tmp_path / DB_NAME).authenticate(token)
    assert user.name == "ann" and user.admin
    # a reset gives a new token; the old one stops working
    commands.add_user("ann", str(tmp_path), None, admin=False, reset=True)
    new = capsys.readouterr().out.split("token ", 1)[1].strip()
    assert new != token and Store(tmp_path / DB_NAME).authenticate(token) is None
    assert Store(tmp_path / DB_NAME).authenticate(new).name == "ann"


@pytest.fixture
def served(monkeypatch):
    """Replace the server with a recorder of what it was handed."""
    import vipo.annotate.server as server

    calls = []
    monkeypatch.setattr(server, "run_server", lambda *a: calls.append(a))
    return calls


def serve(root, k=2, seed=0, pairs=None, task="both", ttl=60.0):
    return commands.serve(str(root), None, task, k, pairs, seed, "127.0.0.1", 0, ttl, 1000)


def test_serve_syncs_the_items_and_hands_the_store_to_the_server(tmp_path, served, capsys):
    root = folder(tmp_path / "d")
    assert serve(root, k=2, seed=7, ttl=60.0) == 0
    ((r, store, k, host, port, max_body),) = served
    assert (r, k, host, port, max_body) == (str(root), 2, "127.0.0.1", 0, 1000)
    assert store.claim_ttl_s == 60.0 and store.meta("k") == "2" and store.meta("seed") == "7"
    # 3 pointwise items and one pair (the two red circles)
    assert [i.id for i in store.items(active_only=True)] == [
        "pairwise:clip-0.mp4|clip-1.mp4",
        "pointwise:clip-0.mp4",
        "pointwise:clip-1.mp4",
        "pointwise:clip-2.mp4",
    ]
    err = capsys.readouterr().err
    assert "no users yet" in err
    assert f"4 items (4 new), each to 2 annotators; state in {root / DB_NAME}" in err


def test_serve_again_keeps_the_first_seed_and_counts_no_new_items(tmp_path, served, capsys):
    root = folder(tmp_path / "d")
    serve(root, k=2, seed=7)
    Store(root / DB_NAME).add_user("ann")
    capsys.readouterr()
    serve(root, k=3, seed=8, task="pointwise")
    store = served[-1][1]
    assert store.meta("seed") == "7" and store.meta("k") == "3"
    assert [i.task for i in store.items(active_only=True)] == ["pointwise"] * 3
    err = capsys.readouterr().err
    assert "no users yet" not in err and "3 items (0 new), each to 3 annotators" in err


def test_serve_refuses_k_below_one_before_opening_anything(tmp_path, served):
    root = folder(tmp_path / "d")
    with pytest.raises(UserError, match=r"^annotate serve --k: 0 must be >= 1$"):
        serve(root, k=0)
    assert served == [] and not (root / DB_NAME).exists()


def test_serve_without_fastapi_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "vipo.annotate.server")
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi fails as if not installed
    with pytest.raises(UserError, match=r"^annotate serve needs FastAPI and uvicorn: pip install 'vipo\[annotate\]'$"):
        serve(folder(tmp_path / "d"))


def test_serve_does_not_hide_another_missing_module(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "vipo.annotate.server", None)
    with pytest.raises(ModuleNotFoundError):
        serve(folder(tmp_path / "d"))


SUMMARY = {
    "questions": {"pairwise": {"motion": {"decided": 1}}},
    "labels_rows": 2,
    "critic_train_records": 5,
    "agreement": {
        "pairwise": {"dimensions": {"motion": {"percent_agreement": 2 / 3, "alpha": 0.25}}},
        "pointwise": {"dimensions": {"semantic": {"percent_agreement": None, "alpha": None}}},
    },
    "position_bias": {"all": {"left": 3, "right": 1, "left_share": {"rate": 0.75}}},
}


@pytest.fixture
def exported(tmp_path, monkeypatch):
    root = folder(tmp_path / "d")
    store = Store(root / DB_NAME)
    store.set_meta(k=3)
    store.close()
    calls = []

    def write_export(out, r, items, answers, opts):
        calls.append((out, r, opts))
        return json.loads(json.dumps(SUMMARY))

    monkeypatch.setattr(commands, "write_export", write_export)
    return root, calls


def export(root, out, min_annotators=None, copy=False):
    return commands.export(str(root), str(out), None, min_annotators, 0.2, 8, "prompts", "http://ls", copy)


def test_export_needs_k_annotators_by_default_and_links_the_videos(tmp_path, exported):
    root, calls = exported
    assert export(root, tmp_path / "o") == 0
    ((out, r, opts),) = calls
    assert (out, r) == (str(tmp_path / "o"), str(root))
    assert opts.min_annotators == 3  # the k serve recorded
    assert opts.link and (opts.test_fraction, opts.question_frames) == (0.2, 8)
    assert (opts.prompts_dir, opts.label_studio_url) == ("prompts", "http://ls")
    export(root, tmp_path / "o", min_annotators=1, copy=True)
    assert calls[1][2].min_annotators == 1 and not calls[1][2].link


def test_export_prints_the_counts_agreement_and_position_bias(tmp_path, exported, capsys):
    root, _ = exported
    export(root, tmp_path / "o")
    out = capsys.readouterr().out
    head, end = json.JSONDecoder().raw_decode(out)
    assert head == {"questions": SUMMARY["questions"], "labels_rows": 2, "critic_train_records": 5}
    lines = out[end:].strip().splitlines()
    assert lines[:3] == [
        "pairwise motion: percent agreement 66.7%, Krippendorff alpha 0.250",
        "pointwise semantic: percent agreement n/a, Krippendorff alpha n/a",
        "position bias: 75.0% of A/B choices picked the left video (n=4)",
    ]
    assert (
        lines[3]
        == f"export: {tmp_path / 'o'} (labels.jsonl for `vipo judge {root} --critic human --labels {tmp_path / 'o' / 'labels.jsonl'}`)"
    )


def test_export_without_ab_choices_prints_no_position_bias(tmp_path, exported, capsys):
    root, _ = exported
    none = {**SUMMARY, "position_bias": {"all": {"left": 0, "right": 0, "left_share": {"rate": float("nan")}}}}
    commands.write_export = lambda *a: none  # (monkeypatched by the fixture: restored after the test)
    export(root, tmp_path / "o")
    assert "position bias" not in capsys.readouterr().out


def test_export_refuses_a_folder_without_a_database(tmp_path):
    root = folder(tmp_path / "d")
    with pytest.raises(UserError, match="no annotation database"):
        export(root, tmp_path / "o")


def test_export_refuses_a_folder_whose_videos_went_missing(tmp_path, exported):
    root, calls = exported
    (root / "clip-1.mp4").unlink()
    with pytest.raises(UserError, match=r"metadata.jsonl:2: file_name: clip-1.mp4: file not found$"):
        export(root, tmp_path / "o")
    assert calls == []


def test_import_adds_only_the_labelled_items_and_their_answers(tmp_path, monkeypatch, capsys):
    root = folder(tmp_path / "d")
    store = Store(root / DB_NAME)
    store.sync_items([])  # nothing served yet
    store.close()
    v = {"semantic": "A", "fidelity": "A", "motion": "B"}
    answers = [
        Answer("pairwise:clip-0.mp4|clip-1.mp4", "ls:1", "pairwise", v),
        Answer("pairwise:clip-0.mp4|clip-1.mp4", "ls:2", "pairwise", v),
        Answer("pointwise:clip-2.mp4", "ls:1", "pointwise", {"semantic": "Good", "fidelity": "Bad", "motion": "Good"}),
    ]
    seen = []
    monkeypatch.setattr(
        "vipo.annotate.labelstudio.read_export", lambda path, items: seen.append((path, items)) or answers
    )
    assert commands.import_label_studio("ls.json", str(root), None, "both", None, 0) == 0
    ((path, items),) = seen
    assert path == "ls.json" and len(items) == 4 and all(k == it.id for k, it in items.items())
    store = Store(root / DB_NAME)
    assert [i.id for i in store.items()] == ["pairwise:clip-0.mp4|clip-1.mp4", "pointwise:clip-2.mp4"]
    assert sorted((a.item, a.annotator) for a in store.answers()) == sorted((a.item, a.annotator) for a in answers)
    assert capsys.readouterr().out == (
        f"imported 3 answers by 2 annotators from ls.json into {root / DB_NAME}; "
        f"export with `vipo annotate export {root} --out OUT`\n"
    )
