"""The annotation app's state: one SQLite file beside the data (``DIR/.vipo-annotate.sqlite`` by default).

Users, items, who was shown what (and on which side), answers and skips. Every write is one transaction committed
before the call returns, in WAL mode with ``synchronous=FULL`` (the commit is fsynced), so an answer the server has
acknowledged survives a SIGKILL or power loss, and a killed server never leaves half of one.

- **Users** (:meth:`Store.add_user`): a token is made once, printed once, and stored only as a salted scrypt hash
  (RFC 7914; n=2**14, r=8, p=1). Tokens read ``vipo_<user id>_<secret>`` so a check costs one hash. Users imported
  from Label Studio have no token and cannot log in.
- **Assignment** (:meth:`Store.next_item`): an item goes to ``k`` distinct annotators. Being shown an item claims it;
  a claim counts toward ``k`` while it is answered or younger than ``claim_ttl_s`` (an abandoned claim frees itself).
  Each annotator takes items in the folder's order, resuming their own open claim first. Whether the pair's first
  video (A) is shown on the right is drawn per annotator and item (seeded, so reproducible) and recorded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .items import Item
from .votes import Answer

DB_NAME = ".vipo-annotate.sqlite"
SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS users (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, salt BLOB, hash BLOB, admin INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS items (
    id TEXT PRIMARY KEY, ord INTEGER NOT NULL, task TEXT NOT NULL, prompt TEXT NOT NULL, videos TEXT NOT NULL,
    active INTEGER NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS claims (
    item TEXT NOT NULL REFERENCES items(id), user INTEGER NOT NULL REFERENCES users(id), swapped INTEGER NOT NULL,
    created REAL NOT NULL, PRIMARY KEY (item, user));
CREATE TABLE IF NOT EXISTS answers (
    item TEXT NOT NULL REFERENCES items(id), user INTEGER NOT NULL REFERENCES users(id), swapped INTEGER NOT NULL,
    verdicts TEXT NOT NULL, reasons TEXT NOT NULL, tags TEXT NOT NULL, source TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL, PRIMARY KEY (item, user));
CREATE TABLE IF NOT EXISTS skips (
    item TEXT NOT NULL REFERENCES items(id), user INTEGER NOT NULL REFERENCES users(id), created REAL NOT NULL,
    PRIMARY KEY (item, user));
"""


@dataclass(frozen=True)
class User:
    id: int
    name: str
    admin: bool


def db_path(root: str | Path, db: str | Path | None = None) -> Path:
    return Path(db) if db else Path(root) / DB_NAME


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **SCRYPT)


class Store:
    """One SQLite connection shared by the server's threads behind a lock (SQLite serialises writers anyway)."""

    def __init__(self, path: str | Path, claim_ttl_s: float = 3600.0):
        self.path = Path(path)
        self.claim_ttl_s = claim_ttl_s
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._verified: dict[bytes, tuple[int, bytes]] = {}
        try:
            self.db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as e:
            raise UserError(f"{self.path}: not a vipo annotation database ({e})") from None

    def close(self) -> None:
        self.db.close()

    def _tx(self, fn):
        """Run ``fn(cursor)`` in one IMMEDIATE transaction, committed (and fsynced) before returning."""
        with self._lock:
            cur = self.db.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                out = fn(cur)
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            cur.execute("COMMIT")
            return out

    def _q(self, sql: str, args=()) -> list[tuple]:
        with self._lock:
            return self.db.execute(sql, args).fetchall()

    # -- settings ---------------------------------------------------------------------------------------------------
    def meta(self, key: str, default: str | None = None) -> str | None:
        rows = self._q("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0][0] if rows else default

    def set_meta(self, **values) -> None:
        self._tx(
            lambda c: c.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)", [(k, str(v)) for k, v in values.items()]
            )
        )

    # -- users ------------------------------------------------------------------------------------------------------
    def add_user(self, name: str, admin: bool = False, reset: bool = False) -> str:
        """Create ``name`` (or give it a new token with ``reset``) and return its token, which is not kept."""
        name = name.strip()
        if not name or len(name) > 64 or any(ch.isspace() and ch != " " for ch in name) or ":" in name:
            raise UserError(f"annotate add-user: {name!r}: a name is 1-64 characters, no ':' or line breaks")
        secret, salt = secrets.token_urlsafe(24), secrets.token_bytes(16)
        digest = _hash(secret, salt)

        def run(c):
            row = c.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()
            if row and not reset:
                raise UserError(f"annotate add-user: {name} exists (--reset gives them a new token)")
            if row:
                c.execute(
                    "UPDATE users SET salt = ?, hash = ?, admin = ? WHERE id = ?", (salt, digest, int(admin), row[0])
                )
                return row[0]
            c.execute(
                "INSERT INTO users (name, salt, hash, admin, created) VALUES (?, ?, ?, ?, ?)",
                (name, salt, digest, int(admin), time.time()),
            )
            return c.lastrowid

        uid = self._tx(run)
        return f"vipo_{uid}_{secret}"

    def external_user(self, name: str) -> int:
        """The id of a user who cannot log in (answers imported from elsewhere), created if new."""

        def run(c):
            c.execute("INSERT OR IGNORE INTO users (name, admin, created) VALUES (?, 0, ?)", (name, time.time()))
            return c.execute("SELECT id FROM users WHERE name = ?", (name,)).fetchone()[0]

        return self._tx(run)

    def authenticate(self, token: str | None) -> User | None:
        if not token or len(token) > 200:
            return None
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "vipo" or not parts[1].isdigit():
            return None
        rows = self._q("SELECT id, name, salt, hash, admin FROM users WHERE id = ?", (int(parts[1]),))
        if not rows or rows[0][3] is None:
            return None
        uid, name, salt, digest, admin = rows[0]
        key = hashlib.sha256(token.encode()).digest()
        if self._verified.get(key) != (uid, digest):  # scrypt once per token and stored hash, then cached
            if not hmac.compare_digest(_hash(parts[2], salt), digest):
                return None
            self._verified[key] = (uid, digest)
        return User(uid, name, bool(admin))

    def users(self) -> list[User]:
        return [User(i, n, bool(a)) for i, n, a in self._q("SELECT id, name, admin FROM users ORDER BY id")]

    # -- items ------------------------------------------------------------------------------------------------------
    def sync_items(self, items: list[Item], deactivate_others: bool = True) -> int:
        """Make ``items`` the served set (new ones added in order, answers to ones no longer listed kept but not
        served); returns how many were new."""

        def run(c):
            known = {r[0]: r[1] for r in c.execute("SELECT id, ord FROM items")}
            top = max(known.values(), default=-1)
            new = 0
            if deactivate_others:
                c.execute("UPDATE items SET active = 0")
            for it in items:
                if it.id in known:
                    c.execute("UPDATE items SET active = 1, prompt = ? WHERE id = ?", (it.prompt, it.id))
                else:
                    top += 1
                    new += 1
                    c.execute(
                        "INSERT INTO items (id, ord, task, prompt, videos, active) VALUES (?, ?, ?, ?, ?, 1)",
                        (it.id, top, it.task, it.prompt, json.dumps(list(it.videos))),
                    )
            return new

        return self._tx(run)

    @staticmethod
    def _item(row) -> Item:
        return Item(row[0], row[1], row[2], tuple(json.loads(row[3])))

    def items(self, active_only: bool = False) -> list[Item]:
        where = "WHERE active = 1" if active_only else ""
        return [self._item(r) for r in self._q(f"SELECT id, task, prompt, videos FROM items {where} ORDER BY ord")]

    def item(self, item_id: str) -> Item | None:
        rows = self._q("SELECT id, task, prompt, videos FROM items WHERE id = ?", (item_id,))
        return self._item(rows[0]) if rows else None

    # -- assignment -------------------------------------------------------------------------------------------------
    def _swap(self, user: int, item: str) -> bool:
        seed = self.meta("seed", "0")
        return random.Random(f"{seed}\x00{user}\x00{item}").random() < 0.5

    def next_item(self, user: User, k: int) -> tuple[Item, bool] | None:
        """The user's open claim, else a new claim on the first active item with fewer than ``k`` live claims that
        they have neither answered, claimed nor skipped; None when nothing is left for them."""

        def run(c):
            now = time.time()
            row = c.execute(
                "SELECT cl.item, cl.swapped FROM claims cl JOIN items i ON i.id = cl.item WHERE cl.user = ? AND "
                "i.active = 1 AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.item = cl.item AND a.user = cl.user) "
                "ORDER BY i.ord LIMIT 1",
                (user.id,),
            ).fetchone()
            if row:
                c.execute("UPDATE claims SET created = ? WHERE item = ? AND user = ?", (now, row[0], user.id))
                return row[0], bool(row[1])
            row = c.execute(
                self._OPEN + " ORDER BY i.ord LIMIT 1", (user.id, user.id, user.id, now - self.claim_ttl_s, k)
            ).fetchone()
            if row is None:
                return None
            swapped = self._swap(user.id, row[0])
            c.execute("INSERT INTO claims VALUES (?, ?, ?, ?)", (row[0], user.id, int(swapped), now))
            return row[0], swapped

        got = self._tx(run)
        return None if got is None else (self.item(got[0]), got[1])

    # items a user could still take: active, not theirs in any way, fewer than k live claims (answered or fresh)
    _OPEN = (
        "SELECT i.id FROM items i WHERE i.active = 1 "
        "AND NOT EXISTS (SELECT 1 FROM claims x WHERE x.item = i.id AND x.user = ?) "
        "AND NOT EXISTS (SELECT 1 FROM answers x WHERE x.item = i.id AND x.user = ?) "
        "AND NOT EXISTS (SELECT 1 FROM skips x WHERE x.item = i.id AND x.user = ?) "
        "AND (SELECT COUNT(*) FROM claims x WHERE x.item = i.id AND (x.created > ? OR EXISTS "
        "(SELECT 1 FROM answers a WHERE a.item = x.item AND a.user = x.user))) < ?"
    )

    def shown(self, user: User, item_id: str) -> bool | None:
        """The recorded side (``swapped``) of an item the user was given, or None if it is not theirs."""
        rows = self._q("SELECT swapped FROM claims WHERE item = ? AND user = ?", (item_id, user.id))
        return bool(rows[0][0]) if rows else None

    def answer(self, user: User, item_id: str, verdicts: dict, reasons: dict, tags: dict) -> None:
        """Record (or change) the user's answer to an item they were given; committed before returning."""
        item = self.item(item_id)
        swapped = self.shown(user, item_id)
        if item is None or swapped is None:
            raise PermissionError(f"{item_id}: not an item you were given")
        Answer(item_id, user.name, item.task, verdicts, reasons, swapped, tags)  # validates the verdicts
        now = time.time()
        self._tx(
            lambda c: c.execute(
                "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, 'app', ?, ?) ON CONFLICT (item, user) DO UPDATE SET "
                "verdicts = excluded.verdicts, reasons = excluded.reasons, tags = excluded.tags, updated = excluded.updated",
                (item_id, user.id, int(swapped), json.dumps(verdicts), json.dumps(reasons), json.dumps(tags), now, now),
            )
        )

    def skip(self, user: User, item_id: str) -> None:
        """Give an unanswered item back (it is offered to others, not again to this user)."""

        def run(c):
            if c.execute("SELECT 1 FROM answers WHERE item = ? AND user = ?", (item_id, user.id)).fetchone():
                raise PermissionError(f"{item_id}: already answered (change the answer instead)")
            if not c.execute("SELECT 1 FROM claims WHERE item = ? AND user = ?", (item_id, user.id)).fetchone():
                raise PermissionError(f"{item_id}: not an item you were given")
            c.execute("DELETE FROM claims WHERE item = ? AND user = ?", (item_id, user.id))
            c.execute("INSERT OR IGNORE INTO skips VALUES (?, ?, ?)", (item_id, user.id, time.time()))

        self._tx(run)

    def my_answer(self, user: User, item_id: str) -> dict | None:
        rows = self._q("SELECT verdicts, reasons, tags FROM answers WHERE item = ? AND user = ?", (item_id, user.id))
        if not rows:
            return None
        return {"verdicts": json.loads(rows[0][0]), "reasons": json.loads(rows[0][1]), "tags": json.loads(rows[0][2])}

    def history(self, user: User) -> list[str]:
        """The items the user answered, in the order they first answered them."""
        return [
            r[0]
            for r in self._q(
                "SELECT a.item FROM answers a JOIN items i ON i.id = a.item WHERE a.user = ? "
                "AND i.active = 1 ORDER BY a.created, i.ord",
                (user.id,),
            )
        ]

    def progress(self, user: User, k: int) -> dict:
        """``done`` answered, ``open`` claimed and unanswered, ``skipped``, ``available`` still to take;
        ``assigned`` = done + open + available."""
        uid = user.id
        done = self._q(
            "SELECT COUNT(*) FROM answers a JOIN items i ON i.id = a.item WHERE a.user = ? AND i.active = 1", (uid,)
        )[0][0]
        open_ = self._q(
            "SELECT COUNT(*) FROM claims c JOIN items i ON i.id = c.item WHERE c.user = ? AND "
            "i.active = 1 AND NOT EXISTS (SELECT 1 FROM answers a WHERE a.item = c.item AND "
            "a.user = c.user)",
            (uid,),
        )[0][0]
        skipped = self._q("SELECT COUNT(*) FROM skips WHERE user = ?", (uid,))[0][0]
        available = self._q(f"SELECT COUNT(*) FROM ({self._OPEN})", (uid, uid, uid, time.time() - self.claim_ttl_s, k))[
            0
        ][0]
        return {
            "done": done,
            "open": open_,
            "skipped": skipped,
            "available": available,
            "assigned": done + open_ + available,
        }

    def overview(self, k: int) -> dict:
        """The admin view: items complete (>= k answers) / in progress / untouched, and each annotator's progress."""
        counts = [
            n
            for (n,) in self._q(
                "SELECT (SELECT COUNT(*) FROM answers a WHERE a.item = i.id) FROM items i WHERE i.active = 1"
            )
        ]
        people = []
        for u in self.users():
            last = self._q("SELECT MAX(updated) FROM answers WHERE user = ?", (u.id,))[0][0]
            people.append({"name": u.name, "admin": u.admin, **self.progress(u, k), "last_answer": last})
        return {
            "k": k,
            "items": len(counts),
            "complete": sum(n >= k for n in counts),
            "in_progress": sum(0 < n < k for n in counts),
            "untouched": sum(n == 0 for n in counts),
            "annotators": people,
        }

    # -- answers out and in -----------------------------------------------------------------------------------------
    def answers(self) -> list[Answer]:
        rows = self._q(
            "SELECT a.item, u.name, i.task, a.verdicts, a.reasons, a.swapped, a.tags FROM answers a "
            "JOIN users u ON u.id = a.user JOIN items i ON i.id = a.item ORDER BY i.ord, a.created"
        )
        return [
            Answer(item, name, task, json.loads(v), json.loads(r), bool(s), json.loads(t))
            for item, name, task, v, r, s, t in rows
        ]

    def import_answers(self, answers: list[Answer], source: str) -> int:
        """Insert or replace answers made elsewhere (their annotators become users without a token)."""
        ids = {name: self.external_user(name) for name in {a.annotator for a in answers}}

        def run(c):
            now = time.time()
            for a in answers:
                args = (
                    a.item,
                    ids[a.annotator],
                    int(a.swapped),
                    json.dumps(a.verdicts),
                    json.dumps(a.reasons),
                    json.dumps(a.tags),
                    source,
                    now,
                    now,
                )
                c.execute(
                    "INSERT INTO answers VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (item, user) DO UPDATE "
                    "SET verdicts = excluded.verdicts, reasons = excluded.reasons, tags = excluded.tags, "
                    "swapped = excluded.swapped, source = excluded.source, updated = excluded.updated",
                    args,
                )
                c.execute(
                    "INSERT OR IGNORE INTO claims VALUES (?, ?, ?, ?)", (a.item, ids[a.annotator], int(a.swapped), now)
                )
            return len(answers)

        return self._tx(run)
