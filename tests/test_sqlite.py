"""The default SQLite store runs in write-ahead-log mode."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from mlflow_sharinghub.sqlite import database_file, use_write_ahead_log
from servers import Server


def journal_mode(path: Path) -> str:
    with closing(sqlite3.connect(path)) as connection:
        mode: str = connection.execute("PRAGMA journal_mode").fetchone()[0]
        return mode


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sqlite:////data/mlflow.db", Path("/data/mlflow.db")),
        ("sqlite:///relative/mlflow.db", Path("relative/mlflow.db")),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("postgresql://mlflow:secret@db:5432/mlflow", None),
        ("postgresql+psycopg://mlflow@db/mlflow", None),
        ("not a uri", None),
    ],
)
def test_database_file(uri: str, expected: Path | None) -> None:
    assert database_file(uri) == expected


def test_a_new_database_starts_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new" / "mlflow.db"

    use_write_ahead_log(f"sqlite:///{path}")

    assert journal_mode(path) == "wal"


def test_an_existing_database_keeps_its_data(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    with closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("CREATE TABLE kept (value TEXT)")
        connection.execute("INSERT INTO kept VALUES ('flood')")

    use_write_ahead_log(f"sqlite:///{path}")

    with closing(sqlite3.connect(path)) as connection:
        rows = connection.execute("SELECT value FROM kept").fetchall()
    assert journal_mode(path) == "wal"
    assert rows == [("flood",)]


def test_other_stores_are_left_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("opened a SQLite database")

    monkeypatch.setattr(sqlite3, "connect", refuse)

    use_write_ahead_log("postgresql://mlflow:secret@127.0.0.1:1/mlflow")


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_the_servers_default_store_is_in_wal_mode(server: Server) -> None:
    path = Path(server.settings["MLFLOW_DATA_DIR"]) / "mlflow.db"

    assert journal_mode(path) == "wal"
