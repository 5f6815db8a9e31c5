"""SQLite cache of judge replies, keyed by judge model, template version, query and answer(s).

Only replies that parsed are stored, so a rerun costs nothing for those and retries the rest.
Schema changes are named, ordered migrations applied through ``PRAGMA user_version``.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

MIGRATIONS: tuple[tuple[str, str], ...] = (
    (
        "create replies",
        """CREATE TABLE replies (
            key TEXT PRIMARY KEY,
            judge TEXT NOT NULL,
            template TEXT NOT NULL,
            reply TEXT NOT NULL,
            created REAL NOT NULL
        )""",
    ),
    ("index by judge and template", "CREATE INDEX replies_judge_template ON replies (judge, template)"),
)


def cache_key(judge: str, template: str, *parts: str) -> str:
    digest = hashlib.sha256()
    for part in (judge, template, *parts):
        data = part.encode("utf-8")
        digest.update(len(data).to_bytes(8, "big") + data)  # length-prefixed: no ambiguity between parts
    return digest.hexdigest()


class JudgeCache:
    """A thread-safe cache in one SQLite file (WAL mode, so readers never wait on the writer)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()
        self._migrate()

    def _migrate(self) -> None:
        with self._lock:
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            for number, (_name, statement) in enumerate(MIGRATIONS[version:], start=version + 1):
                self._db.execute("BEGIN")
                self._db.execute(statement)
                self._db.execute(f"PRAGMA user_version = {number}")
                self._db.execute("COMMIT")

    def get(self, key: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def put(self, key: str, *, judge: str, template: str, reply: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO replies (key, judge, template, reply, created) VALUES (?, ?, ?, ?, ?)",
                (key, judge, template, reply, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()
