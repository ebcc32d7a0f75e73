"""The /api/check client: caching, sharing of calls, outages and credentials.

Most tests script SharingHub with ``httpx.MockTransport``; the outage tests that
depend on real sockets (a refused connection, a server that never answers) use
loopback. Cache expiry is driven by a fake clock, never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from mlflow_sharinghub import sharinghub
from mlflow_sharinghub.errors import Unavailable
from mlflow_sharinghub.shared_answers import SharedAnswers
from mlflow_sharinghub.sharinghub import (
    ANONYMOUS,
    Credential,
    CredentialKind,
    ProjectAccess,
    Refusal,
    SharingHubClient,
)

T = TypeVar("T")
Respond = Callable[[httpx.Request], Awaitable[httpx.Response]]

BASE_URL = "http://sharinghub.test"
FLOOD = "eo/flood-model"
CROPS = "eo/crop-classifier"
TOKEN_SECRET = "glpat-Sup3rS3cretT0ken"
ALICE = Credential(CredentialKind.TOKEN, TOKEN_SECRET)
BOB = Credential(CredentialKind.TOKEN, "glpat-b0b")
BROWSER = Credential(CredentialKind.COOKIE, "signed.session.value")
SESSION_COOKIE = "hub-session"
FLOOD_BODY = {
    "id": 42,
    "name": "Flood Model",
    "path": FLOOD,
    "categories": ["ai-model"],
    "access_level": 3,
}
FLOOD_ACCESS = ProjectAccess(42, "Flood Model", FLOOD, ("ai-model",), 3)


def run(scenario: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(scenario)


class Clock:
    """Time as the caches see it, moved forward by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(sharinghub, "monotonic", fake)
    return fake


class Upstream:
    """A scripted SharingHub that records every request it is sent."""

    def __init__(self, respond: Respond | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.respond = respond or grant

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.respond(request)

    @property
    def calls(self) -> int:
        return len(self.requests)

    def client(
        self,
        *,
        cache_ttl: float = 30.0,
        timeout: float = 2.0,
        shared: Path | None = None,
    ) -> SharingHubClient:
        return SharingHubClient(
            BASE_URL,
            timeout=timeout,
            cache_ttl=cache_ttl,
            session_cookie=SESSION_COOKIE,
            transport=httpx.MockTransport(self.handle),
            shared_answers=shared,
        )


async def grant(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json=FLOOD_BODY)


def answer(status: int, body: Any = None, **kwargs: Any) -> Respond:
    async def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body, **kwargs)

    return respond


def fail(error: type[httpx.TransportError]) -> Respond:
    async def respond(request: httpx.Request) -> httpx.Response:
        raise error("scripted failure", request=request)

    return respond


def carries(request: httpx.Request, credential: Credential) -> bool:
    """Whether ``request`` presents ``credential`` the way SharingHub reads it."""
    token = request.headers.get("X-Gitlab-Token")
    cookie = request.headers.get("Cookie")
    if credential.kind is CredentialKind.TOKEN:
        return token == credential.secret and cookie is None
    if credential.kind is CredentialKind.COOKIE:
        return cookie == f"{SESSION_COOKIE}={credential.secret}" and token is None
    return token is None and cookie is None


async def checks(client: SharingHubClient, *calls: tuple[Credential, str]) -> list[Any]:
    """Run checks one after the other, then close the client."""
    try:
        return [
            await client.check(credential, project) for credential, project in calls
        ]
    finally:
        await client.aclose()


async def outcome(
    client: SharingHubClient, credential: Credential, project: str
) -> Any:
    """The answer of one check, or the Unavailable it raised."""
    try:
        return await client.check(credential, project)
    except Unavailable as error:
        return error


# What SharingHub answers, and what the client makes of it.


def test_a_grant_is_read_from_the_check_answer() -> None:
    upstream = Upstream()

    [result] = run(checks(upstream.client(), (ALICE, FLOOD)))

    assert result == FLOOD_ACCESS


def test_the_project_is_asked_for_by_its_encoded_path_with_info() -> None:
    upstream = Upstream()

    run(checks(upstream.client(), (ALICE, FLOOD), (ALICE, "42")))

    first, second = upstream.requests
    assert first.method == "GET"
    assert first.url.raw_path == b"/api/check/eo%2Fflood-model?info=true"
    assert second.url.raw_path == b"/api/check/42?info=true"


REFUSALS = [
    pytest.param(answer(404, {"detail": "Not Found"}), Refusal.NOT_FOUND, id="404"),
    pytest.param(answer(400, {"detail": "Bad Request"}), Refusal.NOT_FOUND, id="400"),
    pytest.param(
        answer(401, {"detail": "Missing token"}), Refusal.BAD_CREDENTIALS, id="401"
    ),
    pytest.param(
        answer(403, {"detail": "Forbidden"}), Refusal.BAD_CREDENTIALS, id="403"
    ),
    pytest.param(
        answer(500, {"detail": "Category not found in ['ai-model']"}),
        Refusal.NO_CATEGORY,
        id="500-no-category",
    ),
]


@pytest.mark.parametrize(("respond", "refusal"), REFUSALS)
def test_refusals(respond: Respond, refusal: Refusal) -> None:
    upstream = Upstream(respond)

    [result] = run(checks(upstream.client(), (ALICE, FLOOD)))

    assert result is refusal


OUTAGES = [
    pytest.param(answer(500, {"detail": "Internal Server Error"}), id="500"),
    pytest.param(answer(502, None), id="502"),
    pytest.param(answer(503, {"detail": "Service Unavailable"}), id="503"),
    pytest.param(answer(504, None), id="504"),
    pytest.param(answer(200, {"id": 42}), id="200-incomplete"),
    pytest.param(answer(200, {**FLOOD_BODY, "access_level": 7}), id="200-bad-level"),
    pytest.param(answer(200, content=b"<html>proxy</html>"), id="200-not-json"),
    pytest.param(fail(httpx.ConnectError), id="connect-error"),
    pytest.param(fail(httpx.ReadTimeout), id="read-timeout"),
    pytest.param(fail(httpx.RemoteProtocolError), id="protocol-error"),
]


@pytest.mark.parametrize("respond", OUTAGES)
def test_an_outage_is_unavailable_and_never_cached(respond: Respond) -> None:
    upstream = Upstream(respond)

    async def scenario() -> list[Any]:
        client = upstream.client()
        first = await outcome(client, ALICE, FLOOD)
        upstream.respond = grant
        second = await outcome(client, ALICE, FLOOD)
        await client.aclose()
        return [first, second]

    first, second = run(scenario())

    assert isinstance(first, Unavailable)
    assert first.status == 503
    assert first.error_code == "TEMPORARILY_UNAVAILABLE"
    assert "SharingHub" in first.message
    assert second == FLOOD_ACCESS
    assert upstream.calls == 2


# Caching: per (credential, project), for the TTL; refusals briefly.


@asynccontextmanager
async def workers(
    upstream: Upstream, count: int, **options: Any
) -> AsyncIterator[list[SharingHubClient]]:
    """The clients of ``count`` worker processes of one server."""
    clients = [upstream.client(**options) for _ in range(count)]
    try:
        yield clients
    finally:
        for client in clients:
            await client.aclose()


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """The answers file that the workers of one server share."""
    return tmp_path / "answers.sqlite3"


def test_a_second_worker_takes_the_first_workers_answer(
    clock: Clock, shared: Path
) -> None:
    upstream = Upstream()

    async def scenario() -> list[Any]:
        async with workers(upstream, 2, shared=shared) as (first, second):
            answers = [
                await first.check(ALICE, FLOOD),
                await second.check(ALICE, FLOOD),
            ]
        return answers

    assert run(scenario()) == [FLOOD_ACCESS, FLOOD_ACCESS]
    assert upstream.calls == 1


def test_workers_asking_at_once_make_one_call(clock: Clock, shared: Path) -> None:
    release = asyncio.Event()

    async def slow_grant(request: httpx.Request) -> httpx.Response:
        await release.wait()
        return await grant(request)

    upstream = Upstream(slow_grant)

    async def scenario() -> list[Any]:
        async with workers(upstream, 4, shared=shared) as every:
            asking = [asyncio.create_task(w.check(ALICE, FLOOD)) for w in every]
            while not upstream.calls:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # the others are polling for the answer now
            release.set()
            answers = await asyncio.gather(*asking)
        return answers

    assert run(scenario()) == [FLOOD_ACCESS] * 4
    assert upstream.calls == 1


def test_a_shared_answer_expires_when_the_first_call_does(
    clock: Clock, shared: Path
) -> None:
    # Taking the answer late must not make it live longer: a revoked token
    # loses access one TTL after SharingHub was asked, in every worker.
    upstream = Upstream()

    async def scenario() -> list[int]:
        async with workers(upstream, 2, cache_ttl=30, shared=shared) as (first, second):
            await first.check(ALICE, FLOOD)
            clock.advance(20)
            await second.check(ALICE, FLOOD)
            calls = [upstream.calls]
            clock.advance(10.1)
            await second.check(ALICE, FLOOD)
            calls.append(upstream.calls)
        return calls

    assert run(scenario()) == [1, 2]


def test_a_shared_refusal_lasts_five_seconds(clock: Clock, shared: Path) -> None:
    upstream = Upstream(answer(404, {"detail": "Not Found"}))

    async def scenario() -> list[Any]:
        async with workers(upstream, 2, shared=shared) as (first, second):
            seen = [await first.check(ALICE, FLOOD)]
            clock.advance(4.9)
            seen.append(await second.check(ALICE, FLOOD))
            seen.append(upstream.calls)
            clock.advance(0.2)
            seen.append(await second.check(ALICE, FLOOD))
            seen.append(upstream.calls)
        return seen

    not_found = Refusal.NOT_FOUND
    assert run(scenario()) == [not_found, not_found, 1, not_found, 2]


def test_a_failed_call_leaves_the_key_to_the_next_worker(
    clock: Clock, shared: Path
) -> None:
    upstream = Upstream(fail(httpx.ConnectError))

    async def scenario() -> list[Any]:
        async with workers(upstream, 2, shared=shared) as (first, second):
            seen = [await outcome(first, ALICE, FLOOD)]
            upstream.respond = grant
            seen.append(await outcome(second, ALICE, FLOOD))
        return seen

    failed, granted = run(scenario())

    assert isinstance(failed, Unavailable)
    assert granted == FLOOD_ACCESS
    assert upstream.calls == 2


def test_shared_answers_are_kept_per_credential(clock: Clock, shared: Path) -> None:
    upstream = Upstream()

    async def scenario() -> None:
        async with workers(upstream, 2, shared=shared) as (first, second):
            await first.check(ALICE, FLOOD)
            await second.check(BOB, FLOOD)
            await second.check(ANONYMOUS, FLOOD)

    run(scenario())

    assert upstream.calls == 3
    assert [
        carries(r, c)
        for r, c in zip(upstream.requests, [ALICE, BOB, ANONYMOUS], strict=True)
    ] == [True] * 3


def test_the_shared_file_holds_no_credential(clock: Clock, shared: Path) -> None:
    upstream = Upstream()

    run(checks(upstream.client(shared=shared), (ALICE, FLOOD), (BROWSER, FLOOD)))

    stored = b"".join(p.read_bytes() for p in shared.parent.glob("answers.sqlite3*"))
    assert ALICE.fingerprint.encode() in stored  # the answers are in there
    assert TOKEN_SECRET.encode() not in stored
    assert BROWSER.secret.encode() not in stored


def test_an_unreadable_shared_answer_is_asked_again_and_replaced(
    clock: Clock, shared: Path
) -> None:
    store = SharedAnswers(shared)
    key = json.dumps([ALICE.fingerprint, FLOOD])
    store.put(key, {"granted": "by an older version"}, expires=clock() + 30, now=0)
    store.close()
    upstream = Upstream()

    async def scenario() -> list[Any]:
        async with workers(upstream, 2, shared=shared) as (first, second):
            return [await first.check(ALICE, FLOOD), await second.check(ALICE, FLOOD)]

    assert run(scenario()) == [FLOOD_ACCESS, FLOOD_ACCESS]
    assert upstream.calls == 1


def test_answers_of_an_earlier_boot_are_forgotten(shared: Path) -> None:
    # time.monotonic() starts again at boot, so their times mean nothing now.
    before = SharedAnswers(shared, boot="boot-1")
    before.put("key", {"refusal": "NOT_FOUND"}, expires=10_000, now=500)
    same_boot = SharedAnswers(shared, boot="boot-1")
    assert same_boot.get("key", now=600) is not None

    after = SharedAnswers(shared, boot="boot-2")

    assert after.get("key", now=600) is None
    assert same_boot.get("key", now=600) is None
    for store in (before, same_boot, after):
        store.close()


def test_a_claim_blocks_other_claims_until_it_lapses(shared: Path) -> None:
    first, second = (SharedAnswers(shared) for _ in range(2))

    assert first.claim("key", now=100, until=103)
    assert not second.claim("key", now=101, until=104)
    assert second.get("key", now=101) is None
    assert second.claim("key", now=103, until=106)
    first.close()
    second.close()


def test_an_unusable_shared_file_still_answers(
    clock: Clock, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    upstream = Upstream()
    missing = tmp_path / "no-such-directory" / "answers.sqlite3"

    [result] = run(checks(upstream.client(shared=missing), (ALICE, FLOOD)))

    assert result == FLOOD_ACCESS
    assert "not shared between workers" in caplog.text


def test_a_zero_ttl_shares_nothing(clock: Clock, shared: Path) -> None:
    upstream = Upstream()

    async def scenario() -> None:
        async with workers(upstream, 2, cache_ttl=0, shared=shared) as (first, second):
            await first.check(ALICE, FLOOD)
            await second.check(ALICE, FLOOD)

    run(scenario())

    assert upstream.calls == 2
    assert not shared.exists()


def test_a_grant_is_reused_for_the_ttl(clock: Clock) -> None:
    upstream = Upstream()

    async def scenario() -> list[int]:
        client = upstream.client(cache_ttl=30)
        calls = []
        for step in (0, 29.9, 0.2):
            clock.advance(step)
            assert await client.check(ALICE, FLOOD) == FLOOD_ACCESS
            calls.append(upstream.calls)
        await client.aclose()
        return calls

    assert run(scenario()) == [1, 1, 2]


@pytest.mark.parametrize(("respond", "refusal"), REFUSALS)
def test_a_refusal_is_reused_for_five_seconds_only(
    clock: Clock, respond: Respond, refusal: Refusal
) -> None:
    upstream = Upstream(respond)

    async def scenario() -> list[int]:
        client = upstream.client(cache_ttl=300)
        calls = []
        for step in (0, 4.9, 0.2):
            clock.advance(step)
            assert await client.check(ALICE, FLOOD) is refusal
            calls.append(upstream.calls)
        await client.aclose()
        return calls

    assert run(scenario()) == [1, 1, 2]


def test_a_refusal_never_outlives_a_shorter_ttl(clock: Clock) -> None:
    upstream = Upstream(answer(404, {"detail": "Not Found"}))

    async def scenario() -> list[int]:
        client = upstream.client(cache_ttl=2)
        calls = []
        for step in (0, 1.9, 0.2):
            clock.advance(step)
            await client.check(ALICE, FLOOD)
            calls.append(upstream.calls)
        await client.aclose()
        return calls

    assert run(scenario()) == [1, 1, 2]


def test_a_zero_ttl_asks_every_time(clock: Clock) -> None:
    upstream = Upstream()

    run(checks(upstream.client(cache_ttl=0), *[(ALICE, FLOOD)] * 3))

    assert upstream.calls == 3


def test_answers_are_cached_per_project(clock: Clock) -> None:
    upstream = Upstream()

    run(checks(upstream.client(), (ALICE, FLOOD), (ALICE, CROPS), (ALICE, FLOOD)))

    assert upstream.calls == 2


@pytest.mark.parametrize(
    ("first", "second"),
    [
        pytest.param(ALICE, BOB, id="two-tokens"),
        pytest.param(ALICE, ANONYMOUS, id="token-then-anonymous"),
        pytest.param(BROWSER, ANONYMOUS, id="cookie-then-anonymous"),
        pytest.param(
            Credential(CredentialKind.TOKEN, "same"),
            Credential(CredentialKind.COOKIE, "same"),
            id="token-and-cookie-of-the-same-value",
        ),
    ],
)
def test_answers_are_not_shared_between_credentials(
    clock: Clock, first: Credential, second: Credential
) -> None:
    async def respond(request: httpx.Request) -> httpx.Response:
        if carries(request, first):
            return httpx.Response(200, json=FLOOD_BODY)
        return httpx.Response(404, json={"detail": "Not Found"})

    upstream = Upstream(respond)

    results = run(
        checks(upstream.client(), (first, FLOOD), (second, FLOOD), (first, FLOOD))
    )

    assert results == [FLOOD_ACCESS, Refusal.NOT_FOUND, FLOOD_ACCESS]
    assert upstream.calls == 2


def test_the_cache_key_does_not_hold_the_credential() -> None:
    assert TOKEN_SECRET not in ALICE.fingerprint
    assert ALICE.fingerprint != BOB.fingerprint
    assert (
        ALICE.fingerprint == Credential(CredentialKind.TOKEN, TOKEN_SECRET).fingerprint
    )
    assert TOKEN_SECRET not in repr(ALICE)


# Concurrent checks share one call.


class Gate:
    """Holds SharingHub's answers until the test lets them through."""

    def __init__(self, respond: Respond) -> None:
        self.entered = asyncio.Event()
        self.opened = asyncio.Event()
        self.respond = respond

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.entered.set()
        await self.opened.wait()
        return await self.respond(request)


@pytest.mark.parametrize(
    ("respond", "expected"),
    [
        pytest.param(grant, FLOOD_ACCESS, id="grant"),
        pytest.param(answer(404, {"detail": "Not Found"}), Refusal.NOT_FOUND, id="404"),
        pytest.param(answer(503, None), Unavailable, id="outage"),
    ],
)
def test_fifty_concurrent_checks_make_one_call(respond: Respond, expected: Any) -> None:
    upstream = Upstream()

    async def scenario() -> list[Any]:
        gate = Gate(respond)
        upstream.respond = gate
        # No cache, so that one call can only come from sharing the call in flight.
        client = upstream.client(cache_ttl=0)
        callers = [
            asyncio.create_task(outcome(client, ALICE, FLOOD)) for _ in range(50)
        ]
        await gate.entered.wait()
        gate.opened.set()
        results = await asyncio.gather(*callers)
        await client.aclose()
        return results

    results = run(scenario())

    assert upstream.calls == 1
    assert len(results) == 50
    if expected is Unavailable:
        assert all(isinstance(result, Unavailable) for result in results)
    else:
        assert all(result == expected for result in results)


def test_concurrent_checks_of_two_credentials_make_two_calls() -> None:
    upstream = Upstream()

    async def scenario() -> None:
        gate = Gate(grant)
        upstream.respond = gate
        client = upstream.client(cache_ttl=0)
        callers = [
            asyncio.create_task(client.check(credential, FLOOD))
            for _ in range(25)
            for credential in (ALICE, BOB)
        ]
        await gate.entered.wait()
        gate.opened.set()
        await asyncio.gather(*callers)
        await client.aclose()

    run(scenario())

    assert upstream.calls == 2
    tokens = {request.headers["X-Gitlab-Token"] for request in upstream.requests}
    assert tokens == {ALICE.secret, BOB.secret}


def test_a_caller_hanging_up_does_not_cancel_the_shared_call(clock: Clock) -> None:
    upstream = Upstream()

    async def scenario() -> tuple[bool, Any, Any]:
        gate = Gate(grant)
        upstream.respond = gate
        client = upstream.client()
        leaving = asyncio.create_task(client.check(ALICE, FLOOD))
        staying = asyncio.create_task(client.check(ALICE, FLOOD))
        await gate.entered.wait()
        leaving.cancel()
        gate.opened.set()
        result = await staying
        cached = await client.check(ALICE, FLOOD)
        await client.aclose()
        return leaving.cancelled(), result, cached

    left, result, cached = run(scenario())

    assert left
    assert result == cached == FLOOD_ACCESS
    assert upstream.calls == 1


# Outages on real sockets, and how long they take.


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def silent_server() -> AsyncIterator[tuple[str, list[bytes]]]:
    """A loopback server that reads requests and never answers them."""
    received: list[bytes] = []
    hang_up = asyncio.Event()

    async def handle(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        received.append(await reader.read(65536))
        await hang_up.wait()
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        hang_up.set()
        server.close()
        await server.wait_closed()


def real_client(base_url: str, *, timeout: float) -> SharingHubClient:
    return SharingHubClient(
        base_url, timeout=timeout, cache_ttl=30, session_cookie=SESSION_COOKIE
    )


def test_a_refused_connection_is_unavailable_at_once() -> None:
    client = real_client(f"http://127.0.0.1:{free_port()}", timeout=5)

    async def scenario() -> tuple[Any, Any]:
        first = await outcome(client, ALICE, FLOOD)
        second = await outcome(client, ALICE, FLOOD)
        await client.aclose()
        return first, second

    started = time.monotonic()
    first, second = run(scenario())

    assert isinstance(first, Unavailable)
    assert isinstance(second, Unavailable)
    assert time.monotonic() - started < 2


def test_a_silent_sharinghub_is_unavailable_after_the_timeout() -> None:
    timeout = 0.5

    async def scenario() -> tuple[Any, float, int]:
        async with silent_server() as (url, received):
            client = real_client(url, timeout=timeout)
            started = time.monotonic()
            result = await outcome(client, ALICE, FLOOD)
            elapsed = time.monotonic() - started
            await outcome(client, ALICE, FLOOD)
            await client.aclose()
            return result, elapsed, len(received)

    result, elapsed, requests = run(scenario())

    assert isinstance(result, Unavailable)
    assert timeout * 0.9 <= elapsed < timeout + 1
    assert requests == 2  # the outage was not cached


def test_a_slow_answer_is_cut_at_the_timeout() -> None:
    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(30)
        return httpx.Response(200, json=FLOOD_BODY)

    upstream = Upstream(slow)

    async def scenario() -> tuple[Any, float]:
        client = upstream.client(timeout=0.3)
        started = time.monotonic()
        result = await outcome(client, ALICE, FLOOD)
        elapsed = time.monotonic() - started
        await client.aclose()
        return result, elapsed

    result, elapsed = run(scenario())

    assert isinstance(result, Unavailable)
    assert 0.25 <= elapsed < 1.3


# Credentials: what is sent upstream, and what is never written down.


@pytest.mark.parametrize(
    ("credential", "token", "cookie"),
    [
        pytest.param(ALICE, TOKEN_SECRET, None, id="token"),
        pytest.param(BROWSER, None, f"{SESSION_COOKIE}={BROWSER.secret}", id="cookie"),
        pytest.param(ANONYMOUS, None, None, id="anonymous"),
    ],
)
def test_credentials_are_sent_the_way_sharinghub_reads_them(
    credential: Credential, token: str | None, cookie: str | None
) -> None:
    upstream = Upstream()

    run(checks(upstream.client(), (credential, FLOOD)))

    [request] = upstream.requests
    assert request.headers.get("X-Gitlab-Token") == token
    assert request.headers.get("Cookie") == cookie
    assert "Authorization" not in request.headers
    assert dict(request.url.params) == {"info": "true"}


def test_a_cookie_set_by_sharinghub_is_never_sent_for_another_caller() -> None:
    async def refresh_session(request: httpx.Request) -> httpx.Response:
        # SharingHub's session middleware sets its cookie again on each answer.
        cookie = f"{SESSION_COOKIE}={BROWSER.secret}; Path=/; HttpOnly"
        return httpx.Response(200, json=FLOOD_BODY, headers={"Set-Cookie": cookie})

    upstream = Upstream(refresh_session)

    run(checks(upstream.client(), (BROWSER, FLOOD), (ANONYMOUS, CROPS), (ALICE, CROPS)))

    anonymous, token = upstream.requests[1:]
    assert "Cookie" not in anonymous.headers
    assert "Cookie" not in token.headers


def test_the_token_is_never_logged(
    caplog: pytest.LogCaptureFixture, clock: Clock
) -> None:
    caplog.set_level(logging.DEBUG)
    scripts = [grant, answer(404, None), answer(503, None), answer(200, {"id": 1})]
    scripts += [fail(httpx.ConnectError), fail(httpx.ReadTimeout)]

    async def scenario() -> None:
        for respond in scripts:
            client = Upstream(respond).client(cache_ttl=0)
            await outcome(client, ALICE, FLOOD)
            await client.aclose()

    run(scenario())

    assert any(r.name == "mlflow_sharinghub.sharinghub" for r in caplog.records)
    for record in caplog.records:
        assert TOKEN_SECRET not in record.getMessage()
        assert TOKEN_SECRET not in str(record.args)
    assert TOKEN_SECRET not in caplog.text


@pytest.mark.parametrize(
    ("respond", "alive"),
    [
        pytest.param(answer(200, {"access_token": "x"}), True, id="200"),
        pytest.param(answer(401, {"detail": "Missing token"}), True, id="401"),
        pytest.param(answer(503, None), False, id="503"),
        pytest.param(fail(httpx.ConnectError), False, id="connect-error"),
    ],
)
def test_ping(respond: Respond, alive: bool) -> None:
    upstream = Upstream(respond)

    async def scenario() -> bool:
        client = upstream.client()
        result = await client.ping()
        await client.aclose()
        return result

    assert run(scenario()) is alive
    assert upstream.requests[0].url.path == "/api/auth/info"
