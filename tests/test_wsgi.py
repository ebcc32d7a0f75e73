"""The short way to MLflow's Flask routes: ``FlaskBridge`` and the route split.

The bridge is driven in-process with plain ASGI messages, on the event loop
and in real worker threads; the whole server is driven through it by every
other test module.
"""

from __future__ import annotations

import asyncio
import contextvars
import re
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from starlette.types import Message

from mlflow_sharinghub import wsgi
from mlflow_sharinghub.wsgi import FlaskBridge, build_environ, native_route_prefixes

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

request_value: contextvars.ContextVar[str] = contextvars.ContextVar(
    "request_value", default="unset"
)


def scope(
    path: str = "/api/2.0/mlflow/runs/get",
    *,
    method: str = "GET",
    query: bytes = b"",
    headers: list[tuple[bytes, bytes]] | None = None,
    root_path: str = "",
) -> dict[str, Any]:
    return {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": root_path,
        "query_string": query,
        "headers": headers if headers is not None else [(b"host", b"mlflow.test")],
        "server": ("127.0.0.1", 5000),
        "client": ("127.0.0.1", 40000),
    }


@pytest.fixture(params=[False, True], ids=["in-threads", "on-loop"])
def on_loop(request: pytest.FixtureRequest) -> bool:
    """Both ways of running the app, for what must hold in either."""
    return bool(request.param)


@contextmanager
def bridged(
    app: Callable[[Environ, StartResponse], Iterable[bytes]],
    *,
    threads: int,
    on_loop: bool = False,
) -> Iterator[FlaskBridge]:
    """A bridge to ``app`` whose threads are gone once the block ends."""
    bridge = FlaskBridge(app, threads=threads, on_loop=on_loop)
    try:
        yield bridge
    finally:
        bridge.executor.shutdown()


def serve(
    app: Callable[[Environ, StartResponse], Iterable[bytes]],
    *,
    body: list[bytes] | None = None,
    threads: int = 4,
    request: dict[str, Any] | None = None,
    send: Callable[[Message], Any] | None = None,
    on_loop: bool = False,
) -> list[Message]:
    """The messages the bridge sends for one request to ``app``."""
    sent: list[Message] = []
    parts = [*(body or [b""])]

    async def receive() -> Message:
        chunk = parts.pop(0)
        return {"type": "http.request", "body": chunk, "more_body": bool(parts)}

    async def record(message: Message) -> None:
        sent.append(message)
        if send is not None:
            send(message)

    with bridged(app, threads=threads, on_loop=on_loop) as bridge:
        asyncio.run(bridge(request or scope(), receive, record))
    return sent


async def no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


async def discard(message: Message) -> None:
    return None


def body_of(sent: list[Message]) -> bytes:
    bodies = [m for m in sent if m["type"] == "http.response.body"]
    return b"".join(m.get("body", b"") for m in bodies)


def test_a_short_answer_is_one_start_and_one_body(on_loop: bool) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"run":', b' "r1"}']

    sent = serve(app, on_loop=on_loop)

    assert sent == [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        },
        {"type": "http.response.body", "body": b'{"run": "r1"}', "more_body": False},
    ]


def test_a_context_variable_set_by_one_request_is_unset_for_the_next(
    on_loop: bool,
) -> None:
    # One thread serves both requests, so a value kept in the thread's own
    # context would reach the second request.
    seen: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        seen.append(request_value.get())
        request_value.set(environ["PATH_INFO"])
        start_response("204 No Content", [])
        return []

    async def two_requests() -> None:
        await bridge(scope("/first"), no_body, discard)
        await bridge(scope("/second"), no_body, discard)

    with bridged(app, threads=1, on_loop=on_loop) as bridge:
        asyncio.run(two_requests())

    assert seen == ["unset", "unset"]


def test_the_callers_context_reaches_the_app_and_every_later_chunk(
    on_loop: bool,
) -> None:
    seen: list[str] = []

    def app(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        start_response("200 OK", [])
        for _ in range(3):
            seen.append(request_value.get())
            yield b"x" * wsgi.BUFFERED_BYTES

    async def as_project_a() -> None:
        request_value.set("p-a")
        await bridge(scope(), no_body, discard)

    with bridged(app, threads=2, on_loop=on_loop) as bridge:
        asyncio.run(as_project_a())

    assert seen == ["p-a", "p-a", "p-a"]


class Tracked:
    """A streamed answer that records whether, and in which context, it closed."""

    def __init__(self, chunks: int) -> None:
        self.chunks = chunks
        self.closed_in: list[str] = []

    def __iter__(self) -> Iterator[bytes]:
        for index in range(self.chunks):
            yield bytes([65 + index]) * (wsgi.BUFFERED_BYTES // 2)

    def close(self) -> None:
        self.closed_in.append(request_value.get())


def test_a_long_answer_streams_in_pieces_and_closes_once(on_loop: bool) -> None:
    answer = Tracked(chunks=5)

    def app(environ: Environ, start_response: StartResponse) -> Tracked:
        request_value.set("serving")
        length = 5 * wsgi.BUFFERED_BYTES // 2
        start_response("200 OK", [("Content-Length", str(length))])
        return answer

    sent = serve(app, on_loop=on_loop)

    bodies = [m for m in sent if m["type"] == "http.response.body"]
    assert len(bodies) == 3  # 1 MiB, 1 MiB, then the last half and the end
    assert all(m["more_body"] for m in bodies[:-1])
    assert not bodies[-1]["more_body"]
    expected = b"".join(bytes([65 + i]) * (wsgi.BUFFERED_BYTES // 2) for i in range(5))
    assert body_of(sent) == expected
    assert answer.closed_in == ["serving"]


def test_an_answer_is_closed_when_the_client_hangs_up(on_loop: bool) -> None:
    answer = Tracked(chunks=6)

    def app(environ: Environ, start_response: StartResponse) -> Tracked:
        start_response("200 OK", [])
        return answer

    def hang_up(message: Message) -> None:
        if message.get("more_body"):
            raise OSError("client went away")

    with pytest.raises(OSError, match="client went away"):
        serve(app, send=hang_up, on_loop=on_loop)

    assert len(answer.closed_in) == 1


def test_a_cancelled_request_closes_its_answer_after_the_running_hop() -> None:
    in_second_hop, resume = threading.Event(), threading.Event()
    events: list[str] = []

    class Slow(Tracked):
        def __iter__(self) -> Iterator[bytes]:
            yield b"a" * wsgi.BUFFERED_BYTES
            in_second_hop.set()
            resume.wait(timeout=10)
            events.append("second chunk made")
            yield b"b"

        def close(self) -> None:
            events.append("closed")

    def app(environ: Environ, start_response: StartResponse) -> Tracked:
        start_response("200 OK", [])
        return Slow(chunks=0)

    async def cancelled_midway() -> None:
        serving = asyncio.create_task(bridge(scope(), no_body, discard))
        await asyncio.to_thread(in_second_hop.wait, 10)
        serving.cancel()
        await asyncio.sleep(0.05)
        resume.set()
        with pytest.raises(asyncio.CancelledError):
            await serving

    with bridged(app, threads=2) as bridge:
        asyncio.run(cancelled_midway())

    assert events == ["second chunk made", "closed"]


def test_a_client_that_leaves_before_its_body_is_whole_reaches_no_app(
    on_loop: bool,
) -> None:
    called: list[bool] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        called.append(True)
        start_response("200 OK", [])
        return []

    messages: list[Message] = [
        {"type": "http.request", "body": b'{"partial', "more_body": True},
        {"type": "http.disconnect"},
    ]

    async def receive() -> Message:
        return messages.pop(0)

    async def refuse(message: Message) -> None:
        raise AssertionError(f"nothing may be sent, got {message}")

    with bridged(app, threads=1, on_loop=on_loop) as bridge:
        asyncio.run(bridge(scope(method="POST"), receive, refuse))

    assert called == []


def test_the_body_arrives_whole_and_the_write_callable_is_kept(on_loop: bool) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        write = start_response("200 OK", [])
        write(b"echo:")
        return [environ["wsgi.input"].read()]

    sent = serve(app, body=[b'{"key": ', b'"loss", ', b'"value": 1}'], on_loop=on_loop)

    assert body_of(sent) == b'echo:{"key": "loss", "value": 1}'


def test_an_app_that_fails_before_answering_raises_and_sends_nothing(
    on_loop: bool,
) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        raise LookupError("store is gone")

    sent: list[Message] = []
    with pytest.raises(LookupError, match="store is gone"):
        serve(app, send=sent.append, on_loop=on_loop)
    assert sent == []


def test_an_app_that_never_starts_its_answer_is_an_error(on_loop: bool) -> None:
    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        return [b"no status"]

    with pytest.raises(RuntimeError, match="without a status"):
        serve(app, on_loop=on_loop)


def thread_of_each_request(bodies: list[bytes], *, on_loop: bool) -> list[bool]:
    """For each request body in turn, whether the app ran on the loop's thread."""
    on_loops_thread: list[bool] = []
    loops_thread: list[int] = []

    def app(environ: Environ, start_response: StartResponse) -> list[bytes]:
        on_loops_thread.append(threading.get_ident() in loops_thread)
        start_response("204 No Content", [])
        return []

    def whole(body: bytes) -> Callable[[], Awaitable[Message]]:
        async def receive() -> Message:
            return {"type": "http.request", "body": body, "more_body": False}

        return receive

    async def requests() -> None:
        loops_thread.append(threading.get_ident())
        for body in bodies:
            await bridge(scope(method="POST"), whole(body), discard)

    with bridged(app, threads=2, on_loop=on_loop) as bridge:
        asyncio.run(requests())
    return on_loops_thread


def test_with_local_stores_only_a_large_upload_leaves_the_loop() -> None:
    bodies = [b"", b"x" * wsgi.BUFFERED_BYTES, b"x" * (wsgi.BUFFERED_BYTES + 1)]

    assert thread_of_each_request(bodies, on_loop=True) == [True, True, False]


def test_with_a_store_across_the_network_every_request_takes_a_thread() -> None:
    assert thread_of_each_request([b"", b"{}"], on_loop=False) == [False, False]


def test_the_environ_follows_pep_3333() -> None:
    request = scope(
        "/mlflow/api/2.0/mlflow/runs/get",
        method="POST",
        query=b"run_id=r1&x=%C3%A9",
        root_path="/mlflow",
        headers=[
            (b"host", b"mlflow.test"),
            (b"content-type", b"application/json"),
            (b"content-length", b"2"),
            (b"x-forwarded-for", b"10.0.0.1"),
            (b"x-forwarded-for", b"10.0.0.2"),
        ],
    )

    environ = build_environ(request, b"{}")

    assert environ["REQUEST_METHOD"] == "POST"
    assert environ["SCRIPT_NAME"] == "/mlflow"
    assert environ["PATH_INFO"] == "/api/2.0/mlflow/runs/get"
    assert environ["QUERY_STRING"] == "run_id=r1&x=%C3%A9"
    assert environ["CONTENT_TYPE"] == "application/json"
    assert environ["CONTENT_LENGTH"] == "2"
    assert "HTTP_CONTENT_TYPE" not in environ
    assert environ["HTTP_HOST"] == "mlflow.test"
    assert environ["HTTP_X_FORWARDED_FOR"] == "10.0.0.1,10.0.0.2"
    assert environ["SERVER_PORT"] == "5000"
    assert environ["REMOTE_ADDR"] == "127.0.0.1"
    assert environ["wsgi.input"].read() == b"{}"


def test_a_path_outside_the_root_path_is_kept_whole() -> None:
    environ = build_environ(scope("/mlflowx/runs", root_path="/mlflow"), b"")

    assert environ["PATH_INFO"] == "/mlflowx/runs"


def test_a_non_ascii_path_reaches_flask_as_latin_1_of_its_utf_8() -> None:
    environ = build_environ(scope("/get-artifact/é"), b"")

    assert environ["PATH_INFO"].encode("latin-1").decode() == "/get-artifact/é"


def _sample(template: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", template)


def test_every_fastapi_route_keeps_the_long_way_and_flask_routes_do_not() -> None:
    from fastapi.routing import APIRoute
    from mlflow.server import app as flask_app
    from mlflow.server.fastapi_app import app as fastapi_app

    prefixes = native_route_prefixes(fastapi_app)
    native = [
        getattr(context, "path_format", None) or context.path
        for route in fastapi_app.routes
        for context in getattr(route, "effective_route_contexts", lambda: [])()
        if isinstance(context, APIRoute) or hasattr(context, "methods")
    ]

    assert len(native) > 50
    assert all(_sample(path).startswith(prefixes) for path in native)
    assert not "/".startswith(prefixes)
    flask_rules = {rule.rule for rule in flask_app.url_map.iter_rules()}
    assert "/api/2.0/mlflow/runs/log-metric" in flask_rules
    for path in ("/api/2.0/mlflow/runs/log-metric", "/ajax-api/2.0/mlflow/runs/search"):
        assert not path.startswith(prefixes)
