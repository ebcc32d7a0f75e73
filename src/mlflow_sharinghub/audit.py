"""The audit trail: one log line for every refusal and every write.

Lines go to the logger ``mlflow_sharinghub.audit`` as ``key=value`` pairs::

    decision=refused method=POST route=/api/2.0/mlflow/experiments/create
    project=42 caller=token:5d3bf92401c756dc action=write status=403
    reason="Permission denied: ..."

``caller`` is the fingerprint of the credential (a hash, never the token or
the cookie): SharingHub's ``/api/check`` answer names no user, and its
``/api/auth/info`` only echoes the token back. ``project`` is SharingHub's
project id once SharingHub has answered, else the path as the URL spells it.
Values that come from the request are quoted and escaped, so a path with
control characters, spaces or quotes cannot forge or split a line.
"""

from __future__ import annotations

import json
import logging
import re
from contextvars import ContextVar
from dataclasses import dataclass

from mlflow_sharinghub.errors import RequestRefused
from mlflow_sharinghub.metrics import Metrics

logger = logging.getLogger("mlflow_sharinghub.audit")

_PLAIN = re.compile(r"[A-Za-z0-9_./:@+-]{1,512}")
_MAX_FIELD = 2048


@dataclass
class Decision:
    """What is known of one request while it is being decided."""

    method: str
    route: str  # the MLflow path, or the whole path outside project URLs
    project: str = "-"
    caller: str = "-"
    action: str = "none"  # the route policy's action, once classified


current: ContextVar[Decision | None] = ContextVar("sharinghub_decision", default=None)


def note(**fields: str) -> None:
    """Add what has just been learnt (project, caller, action) to the decision."""
    decision = current.get()
    if decision is not None:
        for name, value in fields.items():
            setattr(decision, name, value)


def log_write() -> None:
    """Log an allowed request, if it writes: it is about to reach MLflow."""
    decision = current.get()
    if decision is not None and decision.action == "write":
        _log(decision, "allowed", status=None, reason="the caller may write")


def count_allowed(metrics: Metrics) -> None:
    """Count a request answered without a refusal.

    Requests that no route policy classifies (the landing page, static files,
    the probes) are public.
    """
    decision = current.get()
    if decision is not None:
        action = "public" if decision.action == "none" else decision.action
        metrics.decisions.labels("allowed", action).inc()


def refused(metrics: Metrics, refusal: RequestRefused) -> None:
    """Count and log a refusal."""
    decision = current.get()
    if decision is None:
        return
    metrics.decisions.labels("refused", decision.action).inc()
    reason = f"{refusal.error_code}: {refusal.message}"
    _log(decision, "refused", status=refusal.status, reason=reason)


def _log(decision: Decision, verdict: str, *, status: int | None, reason: str) -> None:
    logger.info(
        "decision=%s method=%s route=%s project=%s caller=%s action=%s status=%s "
        "reason=%s",
        verdict,
        field(decision.method),
        field(decision.route),
        field(decision.project),
        field(decision.caller),
        decision.action,
        "-" if status is None else status,
        json.dumps(reason),
    )


def field(value: str) -> str:
    """``value`` as is when it is plain, else quoted with every control escaped."""
    if _PLAIN.fullmatch(value):
        return value
    if len(value) > _MAX_FIELD:
        value = value[:_MAX_FIELD] + "..."
    return json.dumps(value)
