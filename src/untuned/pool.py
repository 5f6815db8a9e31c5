"""Kept examples: answers a person chose (as shown, or as they edited them) while chatting, gathered in named
pools and served as a many-shot prompt set (``--prompt pool:NAME``).

One SQLite file in the user's data folder (:func:`untuned.paths.data_dir`, ``pool.sqlite``), in WAL mode; every
write is one ``BEGIN IMMEDIATE`` transaction, so two processes writing at once wait for each other and a writer
killed mid-way leaves the last committed state. An example's texts are held as a ``.urial`` file reads them back
(checked on the way in), so a pool exported as ``.urial`` is the same prompt set.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from untuned.errors import UntunedError
from untuned.paths import data_dir
from untuned.prompt import PROMPT_SOURCES, Example, PromptSet, build_prompt_set

SCHEMA_VERSION = 1
POOL_FILE = "pool.sqlite"


class PoolError(UntunedError):
    """The pool refused a change (an empty text, a duplicate, an unknown id) or cannot be read."""


@dataclass(frozen=True)
class KeptExample:
    """One kept example: the query, the answer as kept (edited or not) and as the model gave it, where it came from."""

    id: int
    pool: str
    query: str
    answer: str
    original: str | None  # the model's answer before an edit (None: kept as shown)
    model: str | None
    prompt_set: str | None
    created: float  # seconds since the epoch
    position: int  # order in the pool, lowest first (new examples go first)


class Pool:
    """The pools in one SQLite file (default: the user's)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else data_dir() / POOL_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]  # before anything could change the file
            if version > SCHEMA_VERSION:
                self._db.close()
                raise PoolError(
                    f"the pool database {self.path} was made by a newer untuned (schema {version}, this one reads "
                    f"{SCHEMA_VERSION}): upgrade untuned; the file was not changed"
                )
            self._db.execute("PRAGMA journal_mode=WAL")
            if version < SCHEMA_VERSION:
                self._migrate()
        except sqlite3.DatabaseError as exc:
            raise PoolError(
                f"the pool database {self.path} cannot be read ({exc}); it was left as it is: move it aside to start "
                "a new one, or restore it from a copy"
            ) from None

    def _migrate(self) -> None:
        with self._write():
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS examples (id INTEGER PRIMARY KEY, pool TEXT NOT NULL, query TEXT NOT NULL, "
                "answer TEXT NOT NULL, original TEXT, model TEXT, prompt_set TEXT, created REAL NOT NULL, "
                "position INTEGER NOT NULL, UNIQUE (pool, query, answer))"
            )
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _write(self):
        """One write transaction, taken before reading what it changes (BEGIN IMMEDIATE)."""
        return _Transaction(self._db)

    # --- reading --------------------------------------------------------------------------------

    def pools(self) -> list[tuple[str, int]]:
        """Each pool's name and how many examples it holds."""
        return list(self._db.execute("SELECT pool, COUNT(*) FROM examples GROUP BY pool ORDER BY pool"))

    def examples(self, pool: str) -> list[KeptExample]:
        """A pool's examples in its order (new ones first, unless reordered)."""
        rows = self._db.execute("SELECT * FROM examples WHERE pool = ? ORDER BY position, id", (pool,))
        return [KeptExample(*row) for row in rows]

    def get(self, example_id: int) -> KeptExample:
        row = self._db.execute("SELECT * FROM examples WHERE id = ?", (example_id,)).fetchone()
        if row is None:
            raise PoolError(f"no kept example has id {example_id}")
        return KeptExample(*row)

    def prompt_set(self, pool: str, *, system: str = "") -> PromptSet:
        """The pool as a prompt set: ``system`` (default: the bundled ``helpful`` set's) and every example, in the
        pool's order; what :meth:`export_urial` writes reads back as this set."""
        examples = self.examples(pool)
        if not examples:
            known = ", ".join(name for name, _ in self.pools()) or "none yet"
            raise PoolError(f"the pool {pool!r} holds no examples (pools: {known}); keep answers in the page first")
        chosen = [Example(query=e.query, answer=e.answer) for e in examples]
        built = build_prompt_set(chosen, name=pool, system=system, description=f"kept examples of the pool {pool}")
        return PromptSet(built.name, built.system, built.examples, built.description, source=f"pool:{pool}")

    # --- writing --------------------------------------------------------------------------------

    def keep(
        self,
        pool: str,
        query: str,
        answer: str,
        *,
        original: str | None = None,
        model: str | None = None,
        prompt_set: str | None = None,
    ) -> KeptExample:
        """Keep an example first in ``pool``; an empty text, a text a .urial file cannot hold or an example the pool
        holds already is refused with the reason, and nothing is written."""
        example = _checked(pool, query, answer)
        original = original if original is not None and original.strip() != example.answer else None
        with self._write():
            found = self._db.execute(
                "SELECT id FROM examples WHERE pool = ? AND query = ? AND answer = ?", (pool, example.query, example.answer)
            ).fetchone()
            if found:
                raise PoolError(f"the pool {pool!r} holds this example already (id {found[0]})")
            first = self._db.execute("SELECT MIN(position) FROM examples WHERE pool = ?", (pool,)).fetchone()[0]
            cursor = self._db.execute(
                "INSERT INTO examples (pool, query, answer, original, model, prompt_set, created, position) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (pool, example.query, example.answer, original, model, prompt_set, time.time(), (first or 0) - 1),
            )
        return self.get(cursor.lastrowid)

    def check(self, pool: str, query: str, answer: str) -> None:
        """PoolError, with the reason, for an example :meth:`keep` would refuse for its texts or the pool's name."""
        _checked(pool, query, answer)

    def edit(self, example_id: int, *, query: str | None = None, answer: str | None = None) -> KeptExample:
        kept = self.get(example_id)
        example = _checked(kept.pool, query if query is not None else kept.query, answer if answer is not None else kept.answer)
        original = kept.original if kept.original is not None else kept.answer
        with self._write():
            self._db.execute(
                "UPDATE examples SET query = ?, answer = ?, original = ? WHERE id = ?",
                (example.query, example.answer, None if original == example.answer else original, example_id),
            )
        return self.get(example_id)

    def reorder(self, pool: str, ids: list[int]) -> None:
        """Put ``pool``'s examples in the order of ``ids`` (every id of the pool, each once)."""
        with self._write():
            held = {row[0] for row in self._db.execute("SELECT id FROM examples WHERE pool = ?", (pool,))}
            if sorted(ids) != sorted(held):
                raise PoolError(f"a new order of the pool {pool!r} must name each of its {len(held)} examples once")
            self._db.executemany("UPDATE examples SET position = ? WHERE id = ?", [(i, e) for i, e in enumerate(ids)])

    def remove(self, example_id: int) -> KeptExample:
        kept = self.get(example_id)
        with self._write():
            self._db.execute("DELETE FROM examples WHERE id = ?", (example_id,))
        return kept

    def close(self) -> None:
        self._db.close()


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        try:
            self.db.execute("BEGIN IMMEDIATE")  # waits up to 30 s for another process's write
        except sqlite3.OperationalError as exc:
            raise PoolError(
                f"the pool database is busy ({exc}): another process holds it; nothing was written, try again"
            ) from None

    def __exit__(self, kind, value, traceback) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def _checked(pool: str, query: str, answer: str) -> Example:
    """The example as a .urial file holds it, or PoolError saying why it cannot be kept."""
    try:
        built = build_prompt_set([Example(query=query, answer=answer)], name=pool, system="-")
    except UntunedError as exc:
        raise PoolError(f"cannot keep this example: {exc}".replace("example 1 has", "it has")) from None
    return built.examples[0]


def pool_prompt_set(name: str) -> PromptSet:
    """``--prompt pool:NAME``: the user's pool ``name`` as a prompt set."""
    pool = Pool()
    try:
        return pool.prompt_set(name)
    finally:
        pool.close()


PROMPT_SOURCES["pool"] = pool_prompt_set
