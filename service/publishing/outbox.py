"""The durable outbox: what is still to be sent, on disk, so a crash loses and repeats nothing.

Publishing must never hold up the stream, yet a record's effect must survive a crash.
The consumer therefore only *writes down* what to send (`Outbox.add`, one SQLite
transaction per batch, before the Kafka offsets are committed), and a background
thread sends it later (`service.publishing.publisher.Publisher`). So:

- a crash before the transaction: the batch is not committed either, it is replayed,
  and written down then;
- a crash after it: the entries are on disk; the sender finds them on restart;
- a replayed batch writes the same entries again: each has a key unique per sink
  (``UNIQUE(sink, key)``), so the second write is ignored (de-duplication);
- an entry is marked sent only after its sink acknowledged it. The one window left is
  a crash between the acknowledgement and the mark: that entry is sent again, which
  every sink here absorbs (a Lasair annotation replaces the object's previous one, a
  topic reader keeps one record per object and candid, a digest says the same twice).

SQLite (standard library) gives the atomic, durable transaction: WAL journal and
``synchronous=FULL``. The file lives in the data directory
(``<data_dir>/publishing/outbox.db``). The same file holds the last published scores
per object (`service.publishing.changes.ScoreMemory`) and the digest candidates
(`service.publishing.digest.DigestBook`), so that what is remembered and what is to be
sent change in one transaction.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Entry", "Outbox", "Store"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sink TEXT NOT NULL,
    key TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    due_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    sent_at REAL,
    failed_at REAL,
    error TEXT,
    UNIQUE (sink, key)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (sink, sent_at, failed_at, due_at, id);
CREATE TABLE IF NOT EXISTS last_published (
    object_id TEXT PRIMARY KEY,
    candid INTEGER NOT NULL,
    scores TEXT NOT NULL,
    versions TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS digest_candidates (
    object_id TEXT PRIMARY KEY,
    candid INTEGER NOT NULL,
    rank REAL NOT NULL,
    payload TEXT NOT NULL,
    stamp BLOB,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS state (name TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


_dumps = json.JSONEncoder(separators=(",", ":")).encode


class Store:
    """The SQLite file of publishing, shared by the consumer and the sender thread.

    One connection guarded by a lock: writes are small and SQLite serialises them
    anyway; ``transaction()`` is the only way to change the file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing: ``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any error)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def read(self, sql: str, args: Sequence[Any] = ()) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def get_state(self, name: str) -> str | None:
        rows = self.read("SELECT value FROM state WHERE name = ?", (name,))
        return rows[0][0] if rows else None

    @staticmethod
    def set_state(db: sqlite3.Connection, name: str, value: str) -> None:
        db.execute("INSERT OR REPLACE INTO state (name, value) VALUES (?, ?)", (name, value))

    def close(self) -> None:
        with self._lock:
            self._db.close()


@dataclass(frozen=True)
class Entry:
    """One thing to send: its sink, its de-duplication key and a JSON payload."""

    sink: str
    key: str
    payload: dict[str, Any]
    id: int = 0
    attempts: int = 0


class Outbox:
    """Entries per sink, oldest first; added idempotently, marked sent or failed by the sender."""

    def __init__(self, store: Store) -> None:
        self.store = store

    @staticmethod
    def add(db: sqlite3.Connection, entries: Sequence[Entry], now: float | None = None) -> int:
        """Write ``entries`` inside a `Store.transaction`; returns how many were new."""
        now = time.time() if now is None else now
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO outbox (sink, key, payload, created_at, due_at) "
            "VALUES (?, ?, ?, ?, ?)",
            [(e.sink, e.key, _dumps(e.payload), now, now) for e in entries],
        )
        return db.total_changes - before

    def due(self, sink: str, limit: int, now: float | None = None) -> list[Entry]:
        """Up to ``limit`` unsent entries of ``sink`` whose time has come, oldest first.

        Stops at the first entry still waiting (a back-off), so entries leave in order.
        """
        now = time.time() if now is None else now
        rows = self.store.read(
            "SELECT id, key, payload, attempts, due_at FROM outbox "
            "WHERE sink = ? AND sent_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT ?",
            (sink, int(limit)),
        )
        out = []
        for id_, key, payload, attempts, due_at in rows:
            if due_at > now:
                break
            out.append(Entry(sink, key, json.loads(payload), id=id_, attempts=attempts))
        return out

    def mark_sent(self, entries: Sequence[Entry], now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self.store.transaction() as db:
            db.executemany(
                "UPDATE outbox SET sent_at = ?, error = NULL WHERE id = ?",
                [(now, e.id) for e in entries],
            )

    def defer(self, entries: Sequence[Entry], delay: float, error: str) -> None:
        """Try ``entries`` again in ``delay`` seconds (one more attempt counted)."""
        due = time.time() + max(0.0, delay)
        with self.store.transaction() as db:
            db.executemany(
                "UPDATE outbox SET due_at = ?, attempts = attempts + 1, error = ? WHERE id = ?",
                [(due, error, e.id) for e in entries],
            )

    def fail(self, entries: Sequence[Entry], error: str) -> None:
        """Give up on ``entries`` (the sink refused them for good); kept, with the reason."""
        now = time.time()
        with self.store.transaction() as db:
            db.executemany(
                "UPDATE outbox SET failed_at = ?, attempts = attempts + 1, error = ? WHERE id = ?",
                [(now, error, e.id) for e in entries],
            )

    def pending(self) -> dict[str, int]:
        """Unsent entries per sink (for /metrics)."""
        rows = self.store.read(
            "SELECT sink, COUNT(*) FROM outbox WHERE sent_at IS NULL AND failed_at IS NULL "
            "GROUP BY sink"
        )
        return {sink: int(n) for sink, n in rows}

    def counts(self, sink: str) -> dict[str, int]:
        """``pending``, ``sent`` and ``failed`` entries of one sink (for tests and the CLI)."""
        rows = self.store.read(
            "SELECT SUM(sent_at IS NULL AND failed_at IS NULL), SUM(sent_at IS NOT NULL), "
            "SUM(failed_at IS NOT NULL) FROM outbox WHERE sink = ?",
            (sink,),
        )
        pending, sent, failed = rows[0]
        return {"pending": int(pending or 0), "sent": int(sent or 0), "failed": int(failed or 0)}

    def prune(self, older_than_s: float) -> int:
        """Forget entries sent (or failed) more than ``older_than_s`` ago.

        Keys of sent entries are kept that long so that a batch replayed within that
        time is still recognised as written.
        """
        cutoff = time.time() - older_than_s
        with self.store.transaction() as db:
            cursor = db.execute(
                "DELETE FROM outbox WHERE COALESCE(sent_at, failed_at) < ?", (cutoff,)
            )
            return int(cursor.rowcount)
