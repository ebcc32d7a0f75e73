"""SharingHub's answers, shared by the worker processes of one server.

Each worker keeps SharingHub's answers in memory (``sharinghub.py``). Before
it asks SharingHub on a miss, it looks here, so that one (credential,
project) costs one call per cache TTL for the whole server rather than one
per worker. A worker about to ask claims the key first, for at most the
call's timeout; the others wait for its answer instead of asking too.

One SQLite file in the server's private runtime directory holds the answers
(by credential fingerprint, never the credential). Times are
``time.monotonic()``, one clock for all processes of a machine that starts
again at boot, so the file also names the boot it was written in and is
emptied when opened in another. The file is only a cache: a worker that
cannot use it asks SharingHub.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
from pathlib import Path
from typing import Any

_logger = logging.getLogger(__name__)

FILE_NAME = "sharinghub-answers.sqlite3"
BOOT_ID = Path("/proc/sys/kernel/random/boot_id")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    answer TEXT,
    expires REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS boot (id TEXT NOT NULL);
"""


class SharedAnswers:
    """Answers and claims in one SQLite file; every method is blocking."""

    def __init__(self, path: Path, *, boot: str | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            path, timeout=1.0, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        self._forget_other_boots(boot if boot is not None else _boot_id())

    def _forget_other_boots(self, boot: str) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            if not self._db.execute(
                "SELECT 1 FROM boot WHERE id = ?", (boot,)
            ).fetchone():
                self._db.execute("DELETE FROM answers")
                self._db.execute("DELETE FROM boot")
                self._db.execute("INSERT INTO boot (id) VALUES (?)", (boot,))
        except sqlite3.Error:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def get(self, key: str, now: float) -> tuple[Any, float] | None:
        """The answer kept for ``key`` and when it expires, if it is still good."""
        with self._lock:
            row = self._db.execute(
                "SELECT answer, expires FROM answers "
                "WHERE key = ? AND answer IS NOT NULL",
                (key,),
            ).fetchone()
        if row is None or row[1] <= now:
            return None
        try:
            return json.loads(row[0]), row[1]
        except ValueError:
            return None

    def claim(self, key: str, now: float, *, until: float) -> bool:
        """Take the right to ask SharingHub for ``key``; False if another has it."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO answers (key, answer, expires) VALUES (?, NULL, ?) "
                "ON CONFLICT (key) DO UPDATE SET answer = NULL, expires = ? "
                "WHERE answers.expires <= ?",
                (key, until, until, now),
            )
        return cursor.rowcount == 1

    def put(self, key: str, answer: Any, expires: float, now: float) -> None:
        """Keep ``answer`` for every worker until ``expires``; drop stale entries."""
        encoded = json.dumps(answer)
        try:
            with self._lock:
                self._db.execute(
                    "INSERT OR REPLACE INTO answers (key, answer, expires) "
                    "VALUES (?, ?, ?)",
                    (key, encoded, expires),
                )
                self._db.execute("DELETE FROM answers WHERE expires <= ?", (now,))
        except sqlite3.Error as error:
            _logger.warning("Shared SharingHub answers not written: %s", error)

    def release(self, key: str) -> None:
        """Give up a claim without an answer, so that another worker may ask."""
        try:
            with self._lock:
                self._db.execute(
                    "DELETE FROM answers WHERE key = ? AND answer IS NULL", (key,)
                )
        except sqlite3.Error as error:
            _logger.warning("Shared SharingHub claim not released: %s", error)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _boot_id() -> str:
    """The kernel's name for this boot; empty where there is none to read."""
    try:
        return BOOT_ID.read_text().strip()
    except OSError:
        return ""
