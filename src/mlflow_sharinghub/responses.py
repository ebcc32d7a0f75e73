"""What the guard changes in MLflow's answers before they reach the caller.

- Every answer carries this server's framing policy
  (``Content-Security-Policy: frame-ancestors``, SharingHub's origin) in place
  of MLflow's ``X-Frame-Options``.
- Two successful answers are rewritten for the UI: the UI page gets this
  package's tags (:func:`mlflow_sharinghub.ui.inject_ui`), and the UI's
  ``server-info`` says that the server has no workspaces and no gateway, so
  the UI shows one project and offers nothing this server refuses.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from starlette.types import Message, Send

from mlflow_sharinghub.ui import inject_ui

Rewrite = Callable[[bytes], bytes]

UI_SERVER_INFO = "/ajax-api/3.0/mlflow/server-info"
# A rewritten body has a new length and is no longer the resource they describe.
_VALIDATORS = frozenset({b"content-length", b"etag", b"last-modified"})
_FRAMING = (b"x-frame-options", b"content-security-policy")


def is_ui_page(method: str, mlflow_path: str) -> bool:
    """Whether the request asks for the UI's own page."""
    return method == "GET" and mlflow_path == "/"


def rewrite_for(method: str, mlflow_path: str) -> Rewrite | None:
    """How the answer to this MLflow request is changed, if it is."""
    if mlflow_path.rstrip("/") == UI_SERVER_INFO:
        return single_project_info
    if is_ui_page(method, mlflow_path):
        return inject_ui
    return None


def single_project_info(body: bytes) -> bytes:
    """MLflow's server-info as the UI should see it: one project, no gateway."""
    try:
        info = json.loads(body)
        info["workspaces_enabled"] = False
        info.setdefault("features_enabled", {})["gateway"] = False
        return json.dumps(info).encode()
    except (ValueError, TypeError, AttributeError):
        return body


def framed_sender(send: Send, frame_policy: bytes, rewrite: Rewrite | None) -> Send:
    """``send`` with the framing policy set; ``rewrite`` changes a 200's body."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def sender(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            headers = [
                (k, v)
                for k, v in message.get("headers", [])
                if k.lower() not in _FRAMING
            ]
            headers.append((b"content-security-policy", frame_policy))
            message = {**message, "headers": headers}
            if rewrite is not None and message["status"] == 200:
                start = message
                return
        elif start is not None and message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if message.get("more_body"):
                return
            await _send_rewritten(send, start, rewrite, b"".join(chunks))
            return
        await send(message)

    return sender


async def _send_rewritten(
    send: Send, start: Message, rewrite: Rewrite | None, body: bytes
) -> None:
    encoded = any(k.lower() == b"content-encoding" for k, _ in start["headers"])
    if rewrite is not None and not encoded:
        body = rewrite(body)
    headers = [(k, v) for k, v in start["headers"] if k.lower() not in _VALIDATORS]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({**start, "headers": headers})
    await send({"type": "http.response.body", "body": body})
