"""The annotation web app: FastAPI (Starlette underneath) served by uvicorn, one static page, state in SQLite.

Why FastAPI rather than Gradio: the page needs two videos under one play/pause and one scrubber, keyboard shortcuts
for every choice and an exact say over what is sent and how it is rendered; FastAPI serves a small hand-written
page and a JSON API with nothing loaded from outside (it works offline), and its TestClient and a real browser
both drive it in tests.

Safety, as the app promises it:
- **every request needs a token** (a user's, from ``vipo annotate add-user``): the ``vipo_token`` cookie set by the
  login form (HttpOnly, SameSite=Strict) or ``Authorization: Bearer``; without one the answer is 401 (the page's
  401 carries the login form, nothing else). Writes must be JSON (a cross-site form cannot send that) and, when
  the browser names an ``Origin``, come from this server;
- **videos only from DIR**: ``/video/<file>`` serves only files the folder's items list, each resolved inside DIR
  (:func:`vipo.io.paths.confined`: no ``..``, no absolute path, no symlink out);
- **data rendered as text**: the page puts prompts, reasons and tags in the DOM with ``textContent`` only, and a
  Content-Security-Policy allows scripts from this server alone (no inline script), so even a missed spot cannot
  run injected code;
- **bounded requests**: a body over ``max_body`` bytes is refused with 413 before it is read whole; reasons and
  tags have length limits;
- **durable answers**: an answer is committed (and fsynced) in SQLite before its request returns.
"""

from __future__ import annotations

import json
import socket
import sys
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response

from ..critics.base import DIMENSIONS
from ..io.paths import OutsideFolder, confined
from .labelstudio import DEFAULT_TAGS
from .store import Store, User
from .votes import CHOICES

COOKIE = "vipo_token"
MAX_REASON = 2000
STATIC = {"app.js": "text/javascript", "app.css": "text/css"}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; media-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _static(name: str) -> str:
    return resources.files("vipo.annotate").joinpath("static", name).read_text(encoding="utf-8")


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, by its Content-Length or as it streams in."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.limit):
            return await JSONResponse({"detail": "request body too large"}, 413)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise HTTPException(413, "request body too large")
            return message

        return await self.app(scope, limited, send)


def create_app(root: str | Path, store: Store, k: int, max_body: int = 65536) -> FastAPI:
    root = Path(root)
    app = FastAPI(title="vipo annotate", docs_url=None, redoc_url=None, openapi_url=None)
    tags = list(DEFAULT_TAGS)

    def known_videos() -> set[str]:
        return {v for it in store.items(active_only=True) for v in it.videos}

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    def token_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer "):
            return auth[7:].strip()
        return request.cookies.get(COOKIE)

    def user(request: Request) -> User:
        u = store.authenticate(token_of(request))
        if u is None:
            raise HTTPException(
                401, "a valid token is needed (vipo annotate add-user NAME)", headers={"WWW-Authenticate": "Bearer"}
            )
        return u

    async def json_body(request: Request) -> dict:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise HTTPException(415, "send JSON")
        origin = request.headers.get("origin")
        if origin and origin.split("://", 1)[-1] != request.headers.get("host", ""):
            raise HTTPException(403, "cross-origin write refused")
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise HTTPException(400, "not JSON") from None
        if not isinstance(body, dict):
            raise HTTPException(400, "expected a JSON object")
        return body

    def login_page(message: str = "", status: int = 401) -> HTMLResponse:
        html = _static("login.html").replace("<!--message-->", message)  # message: fixed strings, never input
        return HTMLResponse(html, status, headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)

    # -- pages ------------------------------------------------------------------------------------------------------
    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        if store.authenticate(token_of(request)) is None:
            return login_page()
        return HTMLResponse(_static("index.html"))

    @app.post("/login")
    async def login(request: Request):
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        token = (form.get("token") or [""])[0].strip()
        if store.authenticate(token) is None:
            return login_page("<p class=error>That token is not valid.</p>")
        response = RedirectResponse("/", 303)
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/", max_age=30 * 86400)
        return response

    @app.post("/logout")
    def logout():
        response = RedirectResponse("/", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    @app.get("/static/{name}")
    def static(name: str, request: Request):
        user(request)
        if name not in STATIC:
            raise HTTPException(404)
        return Response(_static(name), media_type=STATIC[name])

    @app.get("/video/{path:path}")
    def video(path: str, request: Request):
        user(request)
        try:
            real = confined(root, path, "video")
        except OutsideFolder:
            raise HTTPException(403, "outside the folder") from None
        if Path(path).as_posix() not in known_videos() or not real.is_file():
            raise HTTPException(404, "not a video of this folder")
        return FileResponse(real, media_type="video/mp4", headers={"Cache-Control": "private, max-age=3600"})

    # -- API --------------------------------------------------------------------------------------------------------
    def payload(u: User, item_id: str) -> dict:
        item = store.item(item_id)
        swapped = store.shown(u, item_id)
        if item is None or swapped is None:
            raise HTTPException(404, "not an item you were given")
        titled = [
            {"title": t, "file": f, "url": "/video/" + quote(f, safe="/")} for t, f in zip(("A", "B"), item.videos)
        ]
        if swapped:
            titled.reverse()
        history = store.history(u)
        return {
            "id": item.id,
            "task": item.task,
            "prompt": item.prompt,
            "videos": titled,
            "choices": list(CHOICES[item.task]),
            "answer": store.my_answer(u, item.id),
            "history_index": history.index(item.id) if item.id in history else None,
            "progress": store.progress(u, k),
        }

    @app.get("/api/me")
    def me(request: Request):
        u = user(request)
        return {
            "name": u.name,
            "admin": u.admin,
            "k": k,
            "dimensions": list(DIMENSIONS),
            "tags": tags,
            "progress": store.progress(u, k),
        }

    @app.get("/api/next")
    def next_item(request: Request):
        u = user(request)
        got = store.next_item(u, k)
        if got is None:
            return {"done": True, "progress": store.progress(u, k)}
        return payload(u, got[0].id)

    @app.get("/api/item")
    def get_item(id: str, request: Request):
        return payload(user(request), id)

    @app.get("/api/history")
    def history(request: Request):
        return {"items": store.history(user(request))}

    @app.post("/api/answer")
    async def answer(request: Request):
        u = user(request)
        body = await json_body(request)
        item = store.item(str(body.get("item", "")))
        if item is None:
            raise HTTPException(404, "no such item")
        verdicts, reasons, tagged = body.get("verdicts"), body.get("reasons"), body.get("tags") or {}
        if not isinstance(verdicts, dict) or not isinstance(reasons, dict) or not isinstance(tagged, dict):
            raise HTTPException(400, "verdicts, reasons and tags must be objects")
        missing = [d for d in DIMENSIONS if verdicts.get(d) not in CHOICES[item.task]]
        if missing:
            raise HTTPException(400, f"choose {', '.join(missing)}")
        if set(verdicts) - set(DIMENSIONS) or set(reasons) - set(DIMENSIONS):
            raise HTTPException(400, "unknown dimension")
        if any(not isinstance(reasons.get(d), str) or not reasons[d].strip() for d in DIMENSIONS):
            raise HTTPException(400, "a reason is required for every dimension")
        if any(len(reasons[d]) > MAX_REASON for d in DIMENSIONS):
            raise HTTPException(400, f"a reason is at most {MAX_REASON} characters")
        sides = ("A", "B") if item.task == "pairwise" else ("A",)
        if set(tagged) - set(sides) or any(
            not isinstance(v, list) or set(v) - set(tags) or len(v) != len(set(v)) for v in tagged.values()
        ):
            raise HTTPException(400, f"tags are lists of {', '.join(tags)} per video ({'/'.join(sides)})")
        try:
            store.answer(
                u,
                item.id,
                {d: verdicts[d] for d in DIMENSIONS},
                {d: reasons[d] for d in DIMENSIONS},
                {s: v for s, v in tagged.items() if v},
            )
        except PermissionError as e:
            raise HTTPException(403, str(e)) from None
        return {"ok": True, "progress": store.progress(u, k)}

    @app.post("/api/skip")
    async def skip(request: Request):
        u = user(request)
        body = await json_body(request)
        try:
            store.skip(u, str(body.get("item", "")))
        except PermissionError as e:
            raise HTTPException(409, str(e)) from None
        return {"ok": True, "progress": store.progress(u, k)}

    @app.get("/api/admin")
    def admin(request: Request):
        if not user(request).admin:
            raise HTTPException(403, "admins only (vipo annotate add-user NAME --admin)")
        return store.overview(k)

    app.add_middleware(BodyLimit, limit=max_body)
    return app


def run_server(
    root: str | Path, store: Store, k: int, host: str = "127.0.0.1", port: int = 8765, max_body: int = 65536
) -> None:
    """Serve until interrupted; the bound address is printed first (``--port 0`` picks a free port)."""
    import uvicorn

    app = create_app(root, store, k, max_body)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        from ..errors import UserError

        raise UserError(f"annotate serve: cannot bind {host}:{port} ({e.strerror})") from None
    sock.listen(128)  # connections wait in the backlog until uvicorn accepts: the printed address works at once
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(f"vipo annotate: serving on http://{shown}:{bound}/ (Ctrl-C stops)", flush=True)
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(
            f"vipo annotate: bound to {host}: reachable from other machines over plain HTTP; put it behind "
            "HTTPS (a reverse proxy) outside a trusted network",
            file=sys.stderr,
            flush=True,
        )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    server.run(sockets=[sock])
