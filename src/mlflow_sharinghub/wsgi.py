"""MLflow's Flask routes served from the event loop, with at most one thread hop.

MLflow mounts its Flask app inside FastAPI behind Starlette's WSGI bridge.
That bridge runs the app in a worker thread and hands every message of the
answer back to the event loop with a blocking round trip, and the request
first walks FastAPI's routing and two ``BaseHTTPMiddleware`` layers. The
guard already knows which requests are Flask's, so it sends them here:

- the request body is read in full (as MLflow's bridge does) and the app is
  called, which also drains the answer up to ``BUFFERED_BYTES``: a JSON
  answer comes back in one step;
- a longer answer (a file download) continues in further steps of that size;
- every step of one request runs in one copy of the request's context, so a
  context variable set while serving one request (MLflow's request workspace,
  Flask's own contexts) is never seen by another request served later.

Where the steps run depends on MLflow's stores. When they are on this
machine (a SQLite file, an artifact directory), the app only computes under
the GIL and touches local files: a worker thread would run nothing more at
once, and handing a request to it and back costs two thread wake-ups, about
150 µs measured here, 8% of an experiments/get. Such requests run on the
event loop itself, except those whose body is longer than ``BUFFERED_BYTES``
(artifact uploads), which take a thread so that the loop is not held while
a large file is written. When a store is across the network (PostgreSQL,
S3), every request takes a thread, and the loop serves others while it waits.
"""

from __future__ import annotations

import asyncio
import contextvars
import io
import sys
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.routing import Mount
from starlette.types import Message, Receive, Scope, Send

BUFFERED_BYTES = 1 << 20
# As many threads as anyio gives MLflow's own bridge by default.
THREADS = 40

WSGIApp = Callable[..., Iterable[bytes]]
ExcInfo = tuple[type[BaseException], BaseException, TracebackType]
_T = TypeVar("_T")


@dataclass
class _Answer:
    """What the app has produced so far, filled in by the worker thread."""

    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    headers_sent: bool = False
    chunks: list[bytes] = field(default_factory=list)
    iterable: Iterable[bytes] | None = None
    rest: Iterator[bytes] | None = None

    def start_response(
        self,
        status: str,
        headers: list[tuple[str, str]],
        exc_info: ExcInfo | None = None,
    ) -> Callable[[bytes], None]:
        if exc_info is not None and self.headers_sent:
            raise exc_info[1].with_traceback(exc_info[2])
        self.status = int(status.split(" ", 1)[0])
        self.headers = [
            (name.strip().lower().encode("latin-1"), value.strip().encode("latin-1"))
            for name, value in headers
        ]
        return self.chunks.append

    def drain(self) -> bool:
        """Take chunks until ``BUFFERED_BYTES``; True once the answer is complete."""
        if self.rest is None:
            return True
        size = 0
        for chunk in self.rest:
            self.chunks.append(chunk)
            size += len(chunk)
            if size >= BUFFERED_BYTES:
                return False
        self.close()
        return True

    def close(self) -> None:
        iterable, self.iterable, self.rest = self.iterable, None, None
        if iterable is not None and hasattr(iterable, "close"):
            iterable.close()

    def take(self) -> bytes:
        body = b"".join(self.chunks)
        self.chunks.clear()
        return body


class _Steps:
    """Runs the steps of one request's answer, each in the request's context.

    With an executor the steps run in its threads, otherwise on the event loop.
    """

    def __init__(self, executor: ThreadPoolExecutor | None) -> None:
        self.executor = executor
        self.context = contextvars.copy_context()
        self.last: Future[Any] | None = None

    async def run(self, function: Callable[[], _T]) -> _T:
        if self.executor is None:
            return self.context.run(function)
        self.last = self.executor.submit(self.context.run, function)
        return await asyncio.wrap_future(self.last)

    async def settle(self) -> None:
        """Wait for a step that cancellation cut short: it runs on in its thread."""
        if self.last is not None and not self.last.done():
            await asyncio.wait([asyncio.wrap_future(self.last)])


class FlaskBridge:
    """An ASGI app serving a WSGI app (MLflow's Flask app).

    ``on_loop`` runs the app on the event loop for requests whose body is at
    most ``BUFFERED_BYTES``; other requests, and all without it, run in
    worker threads.
    """

    def __init__(
        self, app: WSGIApp, *, threads: int = THREADS, on_loop: bool = False
    ) -> None:
        self.app = app
        self.on_loop = on_loop
        self.executor = ThreadPoolExecutor(threads, thread_name_prefix="mlflow-flask")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = await _read_body(receive)
        if body is None:
            return  # the client left before its request was whole
        environ = build_environ(scope, body)
        answer = _Answer()
        on_loop = self.on_loop and len(body) <= BUFFERED_BYTES
        steps = _Steps(None if on_loop else self.executor)

        def start() -> bool:
            answer.iterable = self.app(environ, answer.start_response)
            answer.rest = iter(answer.iterable)
            return answer.drain()

        try:
            complete = await steps.run(start)
            if not answer.status:
                raise RuntimeError("the WSGI app gave an answer without a status")
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status,
                    "headers": answer.headers,
                }
            )
            answer.headers_sent = True
            while not complete:
                await send(_body(answer.take(), more=True))
                complete = await steps.run(answer.drain)
            await send(_body(answer.take(), more=False))
        finally:
            # The answer is closed only once no step of it is running.
            await steps.settle()
            if answer.iterable is not None:
                await steps.run(answer.close)


def _body(chunk: bytes, *, more: bool) -> Message:
    return {"type": "http.response.body", "body": chunk, "more_body": more}


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    return b"".join(chunks)


def build_environ(scope: Scope, body: bytes) -> dict[str, Any]:
    """The PEP 3333 environ of an ASGI HTTP request whose body has been read."""
    root_path: str = scope.get("root_path", "")
    path: str = scope["path"]
    if path == root_path or path.startswith(root_path.rstrip("/") + "/"):
        path = path[len(root_path) :]
    server = scope.get("server") or ("localhost", 80)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "SCRIPT_NAME": root_path.encode().decode("latin-1"),
        "PATH_INFO": path.encode().decode("latin-1"),
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "SERVER_NAME": server[0],
        "SERVER_PORT": str(server[1]),
        "SERVER_PROTOCOL": f"HTTP/{scope['http_version']}",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if client := scope.get("client"):
        environ["REMOTE_ADDR"] = client[0]
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").upper().replace("-", "_")
        if name not in ("CONTENT_TYPE", "CONTENT_LENGTH"):
            name = f"HTTP_{name}"
        value = raw_value.decode("latin-1")
        environ[name] = f"{environ[name]},{value}" if name in environ else value
    return environ


def native_route_prefixes(app: Starlette) -> tuple[str, ...]:
    """The fixed start of every route FastAPI serves itself rather than Flask.

    A request that one of them matches starts with its prefix; others may
    too, and then only take the longer way.
    """
    prefixes: set[str] = set()
    for route in app.routes:
        if isinstance(route, Mount) and route.path == "":
            continue  # the catch-all mount of the Flask app
        contexts = getattr(route, "effective_route_contexts", None)
        for context in contexts() if contexts else [route]:
            path: str = getattr(context, "path_format", getattr(context, "path", ""))
            prefixes.add(path.split("{", 1)[0])
    return tuple(sorted(prefixes))
