"""The default SQLite store, set up for a server with several workers.

In SQLite's default journal mode a write locks out every reader and a commit
costs several disk syncs. In write-ahead-log mode readers and the writer do
not wait for each other and a commit costs one sync of the log, with the same
durability (``synchronous`` stays ``FULL``). The mode is stored in the
database file, so it is set once, before MLflow opens the file.

WAL needs the database on a local file system (not NFS), which is where the
data volume keeps it.
"""

from __future__ import annotations

import logging
import sqlite3
from contextlib import closing
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

logger = logging.getLogger(__name__)


def database_file(store_uri: str) -> Path | None:
    """The file of a ``sqlite:///`` store URI; None for other stores and memory."""
    try:
        url = make_url(store_uri)
    except ArgumentError:
        return None
    if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
        return None
    return Path(url.database)


def use_write_ahead_log(store_uri: str) -> None:
    """Put the SQLite database of ``store_uri`` in WAL mode; other stores pass."""
    path = database_file(store_uri)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path, timeout=30)) as connection:
        mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode != "wal":
        logger.warning("SQLite store %s stays in journal mode %s", path, mode)
