"""Model versions may only be made from the project's own runs and files.

MLflow 3.17 checks a new model version's ``source`` only partly: a
``runs:/<run id>/...`` source is accepted when it repeats the request's
``run_id``, without looking the run up, and a source in the artifact store's
own scheme (``s3://<bucket>/workspaces/p-<other>/...``) is accepted as it is,
after which ``model-versions/get-artifact`` serves whatever it names with the
server's own store credentials. So, before MLflow sees a
``model-versions/create`` body, the guard requires:

- a ``source`` that is a ``models:/`` URI (MLflow resolves it inside the
  workspace), a ``runs:/<run id>/`` URI of a run of this project, a hostless
  ``mlflow-artifacts:/workspaces/<this workspace>/...`` URI, or one of the
  placeholders MLflow's prompt registry stores in place of a source;
- a ``run_id`` (or its JSON spelling ``runId``), when given, that names a run
  of this project.

Whether a run belongs to the project is asked of MLflow itself, with an
internal ``runs/get`` inside the project's workspace.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote, urlencode, urlsplit

from starlette.types import Message, Receive, Scope

from mlflow_sharinghub.errors import RequestRefused, Unavailable
from mlflow_sharinghub.paths import is_unsafe

_CREATE = re.compile(r"^/(?:api|ajax-api)/2\.0/mlflow/model-versions/create/?$")
# MLflow's prompt registry stores these in place of a source (mlflow.prompt.constants).
PROMPT_PLACEHOLDERS = frozenset({"dummy-source", "prompt-template"})
_MAX_BODY = 4 * 1024 * 1024

RunExists = Callable[[str], Awaitable[bool]]


class InvalidModelSource(RequestRefused):
    status = 400
    error_code = "INVALID_PARAMETER_VALUE"


def creates_model_version(method: str, mlflow_path: str) -> bool:
    """Whether the request is a ``model-versions/create`` whose body needs checking."""
    return method == "POST" and _CREATE.match(mlflow_path) is not None


async def checked_body(
    receive: Receive, *, workspace: str, run_exists: RunExists
) -> Receive:
    """Read and check a ``model-versions/create`` body; a receive that replays it."""
    body = await _read_body(receive)
    request = _parse(body)
    source = request.get("source")
    if isinstance(source, str):
        await _check_source(source, workspace=workspace, run_exists=run_exists)
    for key in ("run_id", "runId"):
        run_id = request.get(key)
        if isinstance(run_id, str) and run_id and not await run_exists(run_id):
            raise _foreign(f"run_id {run_id!r} is not a run of this project.")
    return _replay(body, receive)


async def _check_source(source: str, *, workspace: str, run_exists: RunExists) -> None:
    if source in PROMPT_PLACEHOLDERS:
        return
    try:
        parts = urlsplit(source)
    except ValueError:
        raise _foreign(f"source {source!r} is not a URI.") from None
    scheme = parts.scheme.lower()
    if scheme == "models" and not parts.netloc:
        return
    if scheme == "runs" and not parts.netloc:
        run_id = _decoded(parts.path).lstrip("/").split("/", 1)[0]
        if run_id and await run_exists(run_id):
            return
        raise _foreign(f"source {source!r} is not a run of this project.")
    if scheme == "mlflow-artifacts" and not parts.netloc:
        if _inside(_decoded(parts.path), workspace):
            return
        raise _foreign(f"source {source!r} is outside this project's artifacts.")
    raise _foreign(
        f"source {source!r} is not allowed: use a runs:/, models:/ or "
        "mlflow-artifacts: URI of this project."
    )


def _inside(path: str, workspace: str) -> bool:
    """Whether ``path`` lies under ``workspaces/<workspace>/`` without climbing out."""
    relative = path.lstrip("/")
    return relative.startswith(f"workspaces/{workspace}/") and not is_unsafe(
        relative, workspace
    )


def _decoded(value: str) -> str:
    """``value`` percent-decoded until it no longer changes, as MLflow compares it."""
    while (decoded := unquote(value)) != value:
        value = decoded
    return value


def _parse(body: bytes) -> dict[str, Any]:
    """The request object, as MLflow reads it (a JSON string is decoded once more)."""
    try:
        request = json.loads(body) if body.strip() else {}
        if isinstance(request, str):
            request = json.loads(request)
    except ValueError:
        request = None
    if not isinstance(request, dict):
        raise InvalidModelSource("model-versions/create takes a JSON object as body.")
    return request


def _foreign(detail: str) -> InvalidModelSource:
    return InvalidModelSource(
        f"Invalid model version source: {detail} A model version can only be made "
        "from this project's own runs, logged models and artifacts."
    )


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > _MAX_BODY:
            raise InvalidModelSource("model-versions/create body is too large.")
        chunks.append(chunk)
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def run_in_workspace(
    app: Callable[[Scope, Receive, Any], Awaitable[None]],
    scope: Scope,
    *,
    workspace_header: tuple[bytes, bytes],
    run_id: str,
) -> bool:
    """Whether MLflow finds run ``run_id`` in the workspace, asked in-process."""
    host = [(k, v) for k, v in scope["headers"] if k == b"host"]
    path = "/api/2.0/mlflow/runs/get"
    inner: Scope = {
        "type": "http",
        "asgi": scope.get("asgi", {"version": "3.0"}),
        "http_version": "1.1",
        "method": "GET",
        "scheme": scope.get("scheme", "http"),
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": urlencode({"run_id": run_id}).encode(),
        "headers": [*host, workspace_header],
        "client": scope.get("client"),
        "server": scope.get("server"),
    }
    status = 0

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(inner, receive, send)
    if status >= 500:
        # MLflow could not look the run up: an outage of the store, which a
        # retry may get past, not a run of another project.
        raise Unavailable("The backend store is not answering. Try again in a moment.")
    return status == 200
