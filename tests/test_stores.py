"""The production stores, end to end: PostgreSQL for tracking, S3 for artifacts.

Only the ``postgresql`` servers run here (PostgreSQL and moto's S3, see
conftest.py). The MLflow client never talks to the stores: it has no AWS
credentials and reaches artifacts through the server, whose route policy is
the same as with local files. The tests look into the database and the bucket
with their own drivers to see what landed where.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import urlsplit

import mlflow
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.store.artifact.artifact_repository_registry import (
    get_artifact_repository,
)
from requests import HTTPError

from servers import CROPS, FLOOD, S3, Postgres, Server, as_user, unique

pytestmark = pytest.mark.parametrize("backend", ["postgresql"], indirect=True)

MB = 1024 * 1024
LARGE_ARTIFACT = 200 * MB
MEMORY_GROWTH_LIMIT = 100 * MB
WORKSPACE_A = "workspaces/p-42/"


class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(
        self, context: object, model_input: pd.DataFrame, params: object = None
    ) -> pd.DataFrame:
        return model_input * 2


def bucket_of(server: Server) -> str:
    return urlsplit(server.settings["MLFLOW_ARTIFACTS_DESTINATION"]).netloc


def database_of(server: Server) -> str:
    return urlsplit(server.settings["MLFLOW_BACKEND_STORE_URI"]).path.lstrip("/")


def test_only_the_server_holds_store_credentials(server: Server) -> None:
    keys = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    credentials = (*keys, "AWS_SESSION_TOKEN", "AWS_PROFILE")

    assert all(name in server.settings for name in keys)
    assert not [name for name in credentials if name in os.environ]
    assert "MLFLOW_S3_ENDPOINT_URL" not in os.environ
    assert not Path("~/.aws").expanduser().exists()


def test_postgresql_store_is_migrated_on_first_start(
    server: Server, postgres: Postgres
) -> None:
    with as_user(server.uri(FLOOD), "dev-a") as client:
        experiment_id = client.create_experiment(unique("in-postgres"))

    database = database_of(server)
    revisions = postgres.query(database, "SELECT version_num FROM alembic_version")
    rows = postgres.query(
        database,
        "SELECT workspace FROM experiments WHERE experiment_id = %s",
        int(experiment_id),
    )
    assert len(revisions) == 1
    assert rows == [("p-42",)]


def test_startup_log_masks_the_store_secrets(
    server: Server, postgres: Postgres, s3: S3
) -> None:
    log = server.process.log.read_text(errors="replace")

    port = postgres.port
    masked = rf"Backend store: postgresql://mlflow:\*\*\*@127\.0\.0\.1:{port}/server\n"
    assert re.search(masked, log), log[-3000:]
    assert f"Artifacts destination: s3://{bucket_of(server)}" in log
    assert postgres.password not in log
    assert s3.secret_key not in log


def test_artifacts_and_models_go_through_the_server_to_s3(
    server: Server, s3: S3, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("flood extent")
    model = unique("model")
    # Other tests share the bucket; every key this one makes must be project A's.
    before = set(s3.keys(bucket_of(server)))
    with as_user(server.uri(FLOOD), "dev-a") as client:
        experiment_id = client.create_experiment(unique("s3"))
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_artifact(str(notes), artifact_path="reports")
            logged = mlflow.pyfunc.log_model(
                name="model", python_model=Doubler(), pip_requirements=[]
            )
        version = mlflow.register_model(logged.model_uri, model)
        loaded = mlflow.pyfunc.load_model(f"models:/{model}/{version.version}")
        prediction = loaded.predict(pd.DataFrame({"x": [1, 2]}))
    run_id = run.info.run_id

    keys = set(s3.keys(bucket_of(server))) - before
    assert prediction["x"].tolist() == [2, 4]
    notes_key = next(
        k for k in keys if k.endswith(f"{run_id}/artifacts/reports/notes.txt")
    )
    assert [k for k in keys if k.endswith(f"{logged.model_id}/artifacts/MLmodel")]
    assert all(k.startswith(WORKSPACE_A) for k in keys), keys

    with as_user(server.uri(FLOOD), "rep-a") as client:
        listed = client.list_artifacts(run_id, "reports")
        read = client.download_artifacts(run_id, "reports/notes.txt", str(tmp_path))
        repository = get_artifact_repository(run.info.artifact_uri)
        with pytest.raises(HTTPError, match="PERMISSION_DENIED"):
            repository.delete_artifacts("reports/notes.txt")
        with pytest.raises(MlflowException, match="PERMISSION_DENIED"):
            client.delete_registered_model(model)
    assert [a.path for a in listed] == ["reports/notes.txt"]
    assert Path(read).read_text() == "flood extent"

    with as_user(server.uri(CROPS), "dev-b") as client:
        with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
            client.download_artifacts(run_id, "reports/notes.txt", str(tmp_path))
        with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
            client.get_registered_model(model)

    with as_user(server.uri(FLOOD), "dev-a") as client:
        get_artifact_repository(run.info.artifact_uri).delete_artifacts(
            "reports/notes.txt"
        )
        client.delete_registered_model(model)
        client.delete_logged_model(logged.model_id)
        remaining = client.list_artifacts(run_id, "reports")
        with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
            client.get_registered_model(model)
    assert remaining == []
    assert notes_key not in s3.keys(bucket_of(server))


def test_a_large_artifact_streams_through_the_server(
    server: Server, s3: S3, tmp_path: Path
) -> None:
    upload = tmp_path / "upload" / "large.bin"
    upload.parent.mkdir()
    digest = write_random_file(upload, LARGE_ARTIFACT)
    warm_up = tmp_path / "warm-up.txt"
    warm_up.write_text("warm up")

    with as_user(server.uri(FLOOD), "dev-a") as client:
        run = client.create_run(client.create_experiment(unique("large")))
        run_id = run.info.run_id
        # The server's first S3 call loads boto3: not what is measured here.
        client.log_artifact(run_id, str(warm_up))
        client.download_artifacts(run_id, "warm-up.txt", str(tmp_path / "warm"))

        before = reset_peak_memory(server.pid)
        started = time.monotonic()
        client.log_artifact(run_id, str(upload), artifact_path="data")
        uploaded = time.monotonic()
        downloaded = client.download_artifacts(
            run_id, "data/large.bin", str(tmp_path / "download")
        )
        finished = time.monotonic()
        peak = peak_memory(server.pid)

    growth = peak - before
    received = file_digest(Path(downloaded))
    upload.unlink()
    Path(downloaded).unlink()
    print(
        f"\n200 MB artifact: up {uploaded - started:.1f} s, "
        f"down {finished - uploaded:.1f} s; server memory (process tree) "
        f"{before / MB:.0f} MB before, peak {peak / MB:.0f} MB, "
        f"growth {growth / MB:.1f} MB"
    )
    keys = s3.keys(bucket_of(server), WORKSPACE_A)
    key = next(k for k in keys if k.endswith(f"{run_id}/artifacts/data/large.bin"))
    stored = s3.client().head_object(Bucket=bucket_of(server), Key=key)
    assert stored["ContentLength"] == LARGE_ARTIFACT
    assert received == digest
    assert growth < MEMORY_GROWTH_LIMIT


def write_random_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for _ in range(size // (8 * MB)):
            chunk = os.urandom(8 * MB)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as data:
        while chunk := data.read(8 * MB):
            digest.update(chunk)
    return digest.hexdigest()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (MLflow's server runs uvicorn workers)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    tree, pending = [], [pid]
    while pending:
        current = pending.pop()
        tree.append(current)
        pending += parents.get(current, [])
    return tree


def status_bytes(pids: Iterable[int], field: str) -> int:
    """The sum of one ``/proc/<pid>/status`` memory field (kB) over ``pids``."""
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            if line.startswith(f"{field}:"):
                total += int(line.split()[1]) * 1024
    return total


def reset_peak_memory(pid: int) -> int:
    """Restart the peak RSS count of the tree at ``pid``; its current RSS."""
    pids = process_tree(pid)
    for member in pids:
        # Writing 5 resets VmHWM to the current RSS (see proc(5), clear_refs).
        Path(f"/proc/{member}/clear_refs").write_text("5")
    return status_bytes(pids, "VmRSS")


def peak_memory(pid: int) -> int:
    """The sum of the peak RSS of each process of the tree at ``pid``."""
    return status_bytes(process_tree(pid), "VmHWM")
