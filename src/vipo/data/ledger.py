"""The run's ledger: one SQLite file recording every sample, judgment, pair and finished stage.

Stages insert with natural keys (``INSERT OR IGNORE``), so re-running a stage after a kill never duplicates work:
whatever is in the ledger is done. Each row keeps a JSON payload; :meth:`Ledger.export` writes a table as JSONL
(and Parquet where pyarrow is installed) that ``datasets.load_dataset("json", data_files=...)`` reads directly.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .. import faults
from ..errors import StageAborted
from ..io import atomic

SCHEMA = """
CREATE TABLE IF NOT EXISTS samples (
    id TEXT PRIMARY KEY, round INTEGER NOT NULL, prompt_id INTEGER NOT NULL, sample_index INTEGER NOT NULL,
    prompt TEXT NOT NULL, seed INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS judgments (
    key TEXT PRIMARY KEY, round INTEGER NOT NULL, kind TEXT NOT NULL, prompt_id INTEGER NOT NULL,
    a TEXT NOT NULL, b TEXT, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pairs (
    id TEXT PRIMARY KEY, round INTEGER NOT NULL, prompt_id INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS examples (
    id TEXT PRIMARY KEY, round INTEGER NOT NULL, prompt_id INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id TEXT PRIMARY KEY, round INTEGER NOT NULL, data TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stages (
    round INTEGER NOT NULL, stage TEXT NOT NULL, data TEXT NOT NULL, PRIMARY KEY (round, stage));
"""
TABLES = ("samples", "judgments", "pairs", "examples", "quarantine", "stages")


class Ledger:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(str(self.path), timeout=60, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Ledger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
            faults.point("write.record")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- writing -------------------------------------------------------------------------------------------------
    def add_sample(self, row: dict) -> None:
        self.db.execute(
            "INSERT OR IGNORE INTO samples VALUES (?,?,?,?,?,?,?)",
            (
                row["id"],
                row["round"],
                row["prompt_id"],
                row["sample_index"],
                row["prompt"],
                row["seed"],
                json.dumps(row),
            ),
        )

    def add_judgment(self, row: dict, replace: bool = False) -> None:
        """Insert a judgment; ``replace`` overwrites one with the same key (an unparseable answer asked again)."""
        self.db.execute(
            f"INSERT OR {'REPLACE' if replace else 'IGNORE'} INTO judgments VALUES (?,?,?,?,?,?,?)",
            (row["key"], row["round"], row["kind"], row["prompt_id"], row["a"], row.get("b"), json.dumps(row)),
        )

    def replace_rows(self, table: str, round_: int, rows: list[dict]) -> None:
        """Atomically replace a round's derived rows (pairs or KTO examples), which are recomputed, not appended."""
        assert table in ("pairs", "examples")
        with self.transaction() as db:
            db.execute(f"DELETE FROM {table} WHERE round = ?", (round_,))
            db.executemany(
                f"INSERT INTO {table} VALUES (?,?,?,?)",
                [(r["id"], round_, r["prompt_id"], json.dumps(r)) for r in rows],
            )

    def quarantine(self, round_: int, sample_id: str, reason: str) -> None:
        """Set a sample aside (corrupt or truncated video, wrong frame count, non-finite latent): no stage uses it."""
        self.db.execute(
            "INSERT OR IGNORE INTO quarantine VALUES (?,?,?)",
            (sample_id, round_, json.dumps({"id": sample_id, "round": round_, "reason": reason})),
        )

    def forget(self, round_: int, judgments=(), quarantine=()) -> None:
        """Delete judgments (by key) and quarantine entries (by sample id): a cache's answers about inputs that
        changed (``vipo judge DIR``), to be asked again. Call inside :meth:`transaction`."""
        self.db.executemany("DELETE FROM judgments WHERE round = ? AND key = ?", [(round_, k) for k in judgments])
        self.db.executemany("DELETE FROM quarantine WHERE round = ? AND id = ?", [(round_, i) for i in quarantine])

    def mark_done(self, round_: int, stage: str, info: dict | None = None) -> None:
        self.db.execute("INSERT OR REPLACE INTO stages VALUES (?,?,?)", (round_, stage, json.dumps(info or {})))

    # -- reading -------------------------------------------------------------------------------------------------
    def is_done(self, round_: int, stage: str) -> bool:
        return self.db.execute("SELECT 1 FROM stages WHERE round=? AND stage=?", (round_, stage)).fetchone() is not None

    def stage_info(self, round_: int, stage: str) -> dict | None:
        row = self.db.execute("SELECT data FROM stages WHERE round=? AND stage=?", (round_, stage)).fetchone()
        return json.loads(row[0]) if row else None

    def rows(self, table: str, round_: int | None = None, **where: Any) -> list[dict]:
        assert table in TABLES
        clauses, args = [], []
        if round_ is not None:
            clauses.append("round = ?")
            args.append(round_)
        for k, v in where.items():
            clauses.append(f"{k} = ?")
            args.append(v)
        sql = f"SELECT data FROM {table}" + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY rowid"
        return [json.loads(r[0]) for r in self.db.execute(sql, args)]

    def quarantined(self, round_: int) -> set[str]:
        return self.keys("quarantine", round_)

    def keys(self, table: str, round_: int) -> set[str]:
        col = "key" if table == "judgments" else "id"
        return {r[0] for r in self.db.execute(f"SELECT {col} FROM {table} WHERE round = ?", (round_,))}

    # -- exports -------------------------------------------------------------------------------------------------
    def export(self, table: str, round_: int, path: str | Path) -> Path:
        """Write a round's rows as JSONL (atomically); loadable with ``datasets.load_dataset("json", ...)``."""
        path = Path(path)
        lines = [json.dumps(_dataset_row(r)) for r in self.rows(table, round_)]
        atomic.write_text(path, "".join(line + "\n" for line in lines))
        return path


def check_quarantine(ledger: Ledger, round_: int, n_samples: int, limit: float, stage: str) -> None:
    """Stop a stage when more than ``limit`` (``generate.max_quarantined``) of the round's samples are quarantined."""
    bad = ledger.rows("quarantine", round_)
    if n_samples and len(bad) / n_samples > limit:
        raise StageAborted(
            f"round {round_} {stage}: {len(bad)} of {n_samples} samples quarantined (first: "
            f"{bad[0]['id']}: {bad[0]['reason']}), above generate.max_quarantined={limit}"
        )


def _dataset_row(row: dict) -> dict:
    """Nested dicts stay (datasets reads them as structs); lists of mixed types become JSON strings."""
    out = {}
    for k, v in row.items():
        if isinstance(v, list) and v and not all(isinstance(x, type(v[0])) for x in v):
            v = json.dumps(v)
        out[k] = v
    return out
