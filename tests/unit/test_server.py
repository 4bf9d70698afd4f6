"""Tests of vipo.annotate.server."""

import json
import os

import pytest

pytest.importorskip("fastapi")
from annotate_helpers import make_folder  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from vipo.annotate.items import folder_items  # noqa: E402
from vipo.annotate.server import create_app  # noqa: E402
from vipo.annotate.store import Store  # noqa: E402


@pytest.fixture()
def app(tmp_path):
    root = make_folder(tmp_path / "d")
    (tmp_path / "secret.txt").write_text("TOP SECRET")
    os.symlink(tmp_path / "secret.txt", root / "link.mp4")
    store = Store(root / ".vipo-annotate.sqlite")
    store.set_meta(seed=0, k=2)
    store.sync_items(folder_items(root))
    tokens = {n: store.add_user(n, admin=n == "boss") for n in ("ann", "bob", "boss")}
    return TestClient(create_app(root, store, k=2, max_body=4096)), tokens, store


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def test_every_request_needs_a_valid_token(app):
    client, tokens, _ = app
    for path in ("/", "/api/me", "/api/next", "/api/history", "/static/app.js", "/video/clip-0.mp4", "/api/admin"):
        r = client.get(path)
        assert r.status_code == 401, path
        assert "TOP SECRET" not in r.text and "a red circle" not in r.text
        assert client.get(path, headers=bearer("vipo_1_wrong")).status_code == 401
        assert client.get(path, headers=bearer(tokens["ann"][:-1] + "x")).status_code == 401
    assert client.post("/api/answer", json={}).status_code == 401
    assert client.get("/api/admin", headers=bearer(tokens["ann"])).status_code == 403
    assert client.get("/api/admin", headers=bearer(tokens["boss"])).json()["items"] == 9
    # the login form sets an HttpOnly, SameSite=Strict cookie
    r = client.post(
        "/login",
        content=f"token={tokens['ann']}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        follow_redirects=False,
    )
    assert r.status_code == 303 and "httponly" in r.headers["set-cookie"].lower()
    assert "samesite=strict" in r.headers["set-cookie"].lower()
    assert client.get("/api/me").json()["name"] == "ann"
    assert "script-src 'self'" in client.get("/").headers["content-security-policy"]


def test_videos_only_from_the_folder(app, tmp_path):
    client, tokens, _ = app
    h = bearer(tokens["ann"])
    ok = client.get("/video/clip-0.mp4", headers=h)
    assert ok.status_code == 200 and ok.content[4:8] == b"ftyp"
    part = client.get("/video/clip-0.mp4", headers={**h, "Range": "bytes=0-9"})
    assert part.status_code == 206 and len(part.content) == 10
    secret = str(tmp_path / "secret.txt")
    for bad in (
        "../secret.txt",
        "%2e%2e/secret.txt",
        "..%2fsecret.txt",
        secret,
        "/" + secret,
        "link.mp4",
        "metadata.jsonl",
        ".vipo-annotate.sqlite",
        "sub/../../secret.txt",
    ):
        r = client.get("/video/" + bad, headers=h)
        assert r.status_code in (403, 404), bad
        assert "TOP SECRET" not in r.text


def test_answers_are_checked_bounded_and_kept(app):
    client, tokens, store = app
    h = bearer(tokens["ann"])
    item = client.get("/api/next", headers=h).json()
    assert item["task"] == "pairwise" and [v["title"] for v in item["videos"]] in (["A", "B"], ["B", "A"])
    good = {
        "item": item["id"],
        "verdicts": {"semantic": "A", "fidelity": "Tie", "motion": "B"},
        "reasons": {"semantic": "s", "fidelity": "f", "motion": "<img src=x onerror=alert(1)>"},
        "tags": {"B": ["flicker"]},
    }
    for broken, code in (
        (dict(good, verdicts={"semantic": "A"}), 400),
        (dict(good, reasons=dict(good["reasons"], motion=" ")), 400),
        (dict(good, reasons=dict(good["reasons"], motion="x" * 3000)), 400),
        (dict(good, tags={"B": ["not a tag"]}), 400),
        (
            dict(
                good,
                item="pointwise:clip-4.mp4",
                tags={},
                verdicts={"semantic": "Good", "fidelity": "Good", "motion": "Bad"},
            ),
            403,
        ),
    ):
        assert client.post("/api/answer", json=broken, headers=h).status_code == code
    # not JSON, or from another origin: refused
    assert (
        client.post("/api/answer", content=json.dumps(good), headers={**h, "Content-Type": "text/plain"}).status_code
        == 415
    )
    assert client.post("/api/answer", json=good, headers={**h, "Origin": "http://evil.example"}).status_code == 403
    assert (
        client.post("/api/answer", content=b"x" * 5000, headers={**h, "Content-Type": "application/json"}).status_code
        == 413
    )
    r = client.post("/api/answer", json=good, headers=h)
    assert r.status_code == 200 and r.json()["progress"]["done"] == 1
    got = client.get("/api/item", params={"id": item["id"]}, headers=h).json()
    assert got["answer"]["reasons"]["motion"] == "<img src=x onerror=alert(1)>" and got["history_index"] == 0
    assert store.answers()[0].tags == {"B": ["flicker"]}
    # an answered item cannot be skipped; the next one can, and goes to someone else
    assert client.post("/api/skip", json={"item": item["id"]}, headers=h).status_code == 409
    nxt = client.get("/api/next", headers=h).json()
    assert client.post("/api/skip", json={"item": nxt["id"]}, headers=h).status_code == 200
    assert client.get("/api/next", headers=h).json()["id"] != nxt["id"]
    assert client.get("/api/next", headers=bearer(tokens["bob"])).json()["id"] == item["id"]


def test_a_reset_token_replaces_the_old_one(app):
    client, tokens, store = app
    assert client.get("/api/me", headers=bearer(tokens["bob"])).status_code == 200
    new = store.add_user("bob", reset=True)
    assert client.get("/api/me", headers=bearer(tokens["bob"])).status_code == 401
    assert client.get("/api/me", headers=bearer(new)).json()["name"] == "bob"
    for bad in ("", "a:b", "x" * 65, "two\nlines"):
        with pytest.raises(Exception, match="add-user"):
            store.add_user(bad)
