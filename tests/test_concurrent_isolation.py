"""Projects stay apart while their requests interleave on the same server.

MLflow keeps the workspace of a request in ContextVars, and the server runs
requests on shared worker threads. Here developers of A and B take turns on
one keep-alive connection per client thread (the MLflow client keeps one per
host), with reads, searches and a streamed file download in the mix: every
answer must belong to the caller's own project.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from servers import CROPS, FLOOD, Server, unique

API = "api/2.0/mlflow/"
ARTIFACTS = "api/2.0/mlflow-artifacts/artifacts/"
NOTES = "notes.txt"
THREADS = 8
ROUNDS = 25


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def create_run(
    server: Server, project: str, token: str, *, notes: bool
) -> tuple[str, str]:
    """An experiment and a run in ``project``, with a file if ``notes``: ids."""
    with httpx.Client(base_url=server.uri(project), headers=bearer(token)) as client:
        created = client.post(API + "experiments/create", json={"name": unique("iso")})
        experiment_id: str = created.json()["experiment_id"]
        run = client.post(API + "runs/create", json={"experiment_id": experiment_id})
        info = run.json()["run"]["info"]
        run_id: str = info["run_id"]
        if notes:
            # A file to download: Flask streams it, a request that outlives
            # its view.
            location = info["artifact_uri"].removeprefix("mlflow-artifacts:/")
            url = f"{ARTIFACTS}{location}/{NOTES}"
            client.put(url, content=b"flood extent").raise_for_status()
    return experiment_id, run_id


@pytest.fixture(scope="module")
def runs(server: Server) -> dict[str, tuple[str, str]]:
    return {
        "a": create_run(server, FLOOD, "dev-a", notes=True),
        # No file in B: test_stores.py expects the shared bucket to hold A's only.
        "b": create_run(server, CROPS, "dev-b", notes=False),
    }


def test_interleaved_requests_never_cross_projects(
    server: Server, runs: dict[str, tuple[str, str]]
) -> None:
    (experiment_a, run_a), (_, run_b) = runs["a"], runs["b"]

    def alternate(_: int) -> list[str]:
        """One client's rounds, on one connection as the MLflow client keeps it."""
        wrong = []
        as_a, as_b = bearer("dev-a"), bearer("dev-b")
        at_a, at_b = server.uri(FLOOD) + API, server.uri(CROPS) + API
        with httpx.Client() as http:
            for _ in range(ROUNDS):
                download = http.get(
                    server.uri(FLOOD) + "get-artifact",
                    params={"path": NOTES, "run_uuid": run_a},
                    headers=as_a,
                )
                own_a = http.get(
                    at_a + "runs/get", params={"run_id": run_a}, headers=as_a
                )
                foreign_at_b = http.get(
                    at_b + "runs/get", params={"run_id": run_a}, headers=as_b
                )
                own_b = http.get(
                    at_b + "runs/get", params={"run_id": run_b}, headers=as_b
                )
                foreign_at_a = http.get(
                    at_a + "runs/get", params={"run_id": run_b}, headers=as_a
                )
                search = http.post(
                    at_b + "runs/search",
                    json={"experiment_ids": [experiment_a]},
                    headers=as_b,
                )
                if download.content != b"flood extent":
                    wrong.append(f"own file not served: {download.status_code}")
                if own_a.status_code != 200 or own_b.status_code != 200:
                    wrong.append(f"own run not served: {own_a.text} {own_b.text}")
                if foreign_at_b.status_code != 404 or foreign_at_a.status_code != 404:
                    wrong.append(f"foreign run served: {foreign_at_b.text}")
                if search.status_code != 200 or run_a in search.text:
                    wrong.append(f"A's run found from B: {search.text}")
        return wrong

    with ThreadPoolExecutor(THREADS) as pool:
        problems = [p for found in pool.map(alternate, range(THREADS)) for p in found]

    assert problems == []
