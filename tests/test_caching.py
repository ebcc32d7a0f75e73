"""SharingHub's answers are cached per credential, briefly, and never errors.

A server of its own with a short TTL, so that expiry can be waited for, and a
stand-in of its own, so that hanging it disturbs no other test.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from itsdangerous import URLSafeSerializer

from servers import FLOOD, Server, Standin, running

TTL = 3.0
SEARCH = "api/2.0/mlflow/experiments/search"
QUERY = {"max_results": 10}


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    with running(Standin(tmp_path_factory.mktemp("caching-standin"))) as instance:
        yield instance


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory, hub: Standin) -> Iterator[Server]:
    with running(
        Server(
            tmp_path_factory.mktemp("caching-server"),
            hub,
            SHARINGHUB_CACHE_TTL=str(TTL),
            SHARINGHUB_TIMEOUT="1",
        )
    ) as instance:
        yield instance


def fresh_token(hub: Standin, access: dict[int, int]) -> str:
    token = f"t-{uuid.uuid4().hex[:10]}"
    hub.put_user(token, access)
    return token


def search(server: Server, **kwargs: object) -> httpx.Response:
    return httpx.post(server.uri(FLOOD) + SEARCH, json=QUERY, timeout=30, **kwargs)  # type: ignore[arg-type]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def checks_for(hub: Standin, token: str) -> int:
    return sum(c["credential"] == f"token:{token}" for c in hub.calls())


def test_revoked_token_loses_access_within_the_ttl(
    guarded: Server, hub: Standin
) -> None:
    token = fresh_token(hub, {42: 3})
    assert search(guarded, headers=bearer(token)).status_code == 200

    httpx.delete(f"{hub.url}/_standin/users/{token}").raise_for_status()
    time.sleep(TTL + 0.5)

    assert search(guarded, headers=bearer(token)).status_code == 401


def test_granted_access_shows_after_a_brief_refusal(
    guarded: Server, hub: Standin
) -> None:
    token = fresh_token(hub, {})
    assert search(guarded, headers=bearer(token)).status_code == 404

    hub.put_user(token, {42: 2})
    time.sleep(TTL + 0.5)

    assert search(guarded, headers=bearer(token)).status_code == 200


def test_bad_token_never_rides_a_good_cookie(guarded: Server, hub: Standin) -> None:
    signer = URLSafeSerializer("test-session-secret", salt="sharinghub-session")
    cookies = {"sharinghub-session": signer.dumps("dev-a")}
    assert search(guarded, cookies=cookies).status_code == 200

    both = search(guarded, cookies=cookies, headers=bearer("stolen"))

    assert both.status_code == 401
    assert both.json()["error_code"] == "UNAUTHENTICATED"


def test_concurrent_first_requests_make_one_call(guarded: Server, hub: Standin) -> None:
    token = fresh_token(hub, {42: 3})
    clients = [httpx.Client(timeout=30) for _ in range(50)]
    # Connections are opened first and the requests leave together, so that
    # all 50 arrive well within the TTL even on a loaded machine.
    for client in clients:
        client.get(f"{guarded.url}/health").raise_for_status()
    start = threading.Barrier(len(clients))
    hub.reset()

    def first_request(client: httpx.Client) -> int:
        start.wait()
        url = guarded.uri(FLOOD) + SEARCH
        return client.post(url, json=QUERY, headers=bearer(token)).status_code

    with ThreadPoolExecutor(len(clients)) as pool:
        statuses = list(pool.map(first_request, clients))
    for client in clients:
        client.close()

    assert statuses == [200] * 50
    assert checks_for(hub, token) == 1


def test_hanging_sharinghub_spares_cached_callers(
    guarded: Server, hub: Standin
) -> None:
    cached = fresh_token(hub, {42: 3})
    newcomers = [fresh_token(hub, {42: 3}) for _ in range(8)]
    assert search(guarded, headers=bearer(cached)).status_code == 200

    hub.delay(30)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            waiting = [
                pool.submit(search, guarded, headers=bearer(token))
                for token in newcomers
            ]
            served = search(guarded, headers=bearer(cached))
            refused = [future.result() for future in waiting]
        elapsed = time.monotonic() - started
    finally:
        hub.delay(0)

    assert served.status_code == 200
    assert {r.status_code for r in refused} == {503}
    assert {r.json()["error_code"] for r in refused} == {"TEMPORARILY_UNAVAILABLE"}
    # Each waited for the 1 s timeout, not for SharingHub's 30 s.
    assert elapsed < 15


@pytest.fixture(scope="module")
def two_workers(
    tmp_path_factory: pytest.TempPathFactory, hub: Standin
) -> Iterator[Server]:
    with running(
        Server(tmp_path_factory.mktemp("caching-two-workers"), hub, MLFLOW_WORKERS="2")
    ) as instance:
        yield instance


def shared_lookups(server: Server) -> float:
    metrics = httpx.get(f"{server.url}/metrics", timeout=30).text
    line = 'mlflow_sharinghub_cache_lookups_total{result="shared"}'
    return sum(float(x.split()[-1]) for x in metrics.splitlines() if x.startswith(line))


def test_worker_processes_share_one_call_per_token_and_project(
    two_workers: Server, hub: Standin
) -> None:
    tokens = [fresh_token(hub, {42: 3}) for _ in range(10)]

    def first_requests(token: str) -> list[int]:
        # A connection of its own per request, so that both workers get some.
        with ThreadPoolExecutor(6) as pool:
            return list(
                pool.map(
                    lambda _: search(two_workers, headers=bearer(token)).status_code,
                    range(6),
                )
            )

    statuses = [first_requests(token) for token in tokens]

    assert statuses == [[200] * 6] * len(tokens)
    assert [checks_for(hub, token) for token in tokens] == [1] * len(tokens)
    # The other worker did take answers from the shared file.
    assert shared_lookups(two_workers) > 0
