"""Prometheus metrics of the guard: decisions, SharingHub calls and the cache.

They are served at ``/metrics`` at the server's root, never under a project
URL, and carry no project, caller or path: only counts by decision, action,
call and outcome.

MLflow runs several uvicorn worker processes. Each worker writes its counts
to files in one directory that all of them share (prometheus_client's
multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), and ``/metrics`` adds them
up. ``mlflow-sharinghub server`` makes a fresh directory at each start;
under ``mlflow server --app-name sharinghub`` each worker uses the directory
named after the process that started the workers. prometheus_client picks its
mode when it is first imported, so the directory must be set before that:
this module imports it only when a :class:`Metrics` is made, and
``create_app`` calls :func:`use_shared_directory` first. Without the
variable (tests that build the app in-process), each :class:`Metrics` keeps
its own registry.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from mlflow_sharinghub.shared_answers import FILE_NAME as SHARED_ANSWERS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

DIRECTORY_ENV = "PROMETHEUS_MULTIPROC_DIR"
_PREFIX = "mlflow-sharinghub-metrics-"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def fresh_directory() -> Path:
    """A new, empty metrics directory for the workers of one server start.

    The workers also share SharingHub's answers there. An operator's own
    ``PROMETHEUS_MULTIPROC_DIR`` is kept, emptied of the counts and answers
    of a previous start.
    """
    if configured := os.environ.get(DIRECTORY_ENV):
        directory = Path(configured)
        directory.mkdir(parents=True, exist_ok=True)
        answers = directory.glob(f"{SHARED_ANSWERS}*")  # with its WAL files
        for stale in [*directory.glob("*.db"), *answers]:
            stale.unlink()
    else:
        directory = Path(tempfile.mkdtemp(prefix=_PREFIX))
        os.environ[DIRECTORY_ENV] = str(directory)
    return directory


def remove_directory(directory: Path) -> None:
    """Remove a directory made by :func:`fresh_directory`, not an operator's."""
    if directory.name.startswith(_PREFIX):
        shutil.rmtree(directory, ignore_errors=True)


def use_shared_directory() -> Path:
    """The metrics directory of this worker, set in the environment if it was not.

    Workers of one server share a parent process, so they share its directory.
    """
    if configured := os.environ.get(DIRECTORY_ENV):
        directory = Path(configured)
    else:
        directory = Path(tempfile.gettempdir()) / f"{_PREFIX}{os.getppid()}"
        os.environ[DIRECTORY_ENV] = str(directory)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return directory


class Metrics:
    """The counters and histograms of one worker process."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        directory = os.environ.get(DIRECTORY_ENV)
        self._directory = Path(directory) if directory else None
        # In multiprocess mode values live in the shared files, not in a registry.
        registry = None if self._directory else CollectorRegistry()
        self._registry: CollectorRegistry | None = registry
        self.decisions = Counter(
            "mlflow_sharinghub_decisions",
            "Requests decided by the guard, by decision and by the action they need",
            ["decision", "action"],
            registry=registry,
        )
        self.sharinghub_seconds = Histogram(
            "mlflow_sharinghub_sharinghub_request_duration_seconds",
            "Time SharingHub took to answer, by call (check, listing)",
            ["call"],
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.sharinghub_errors = Counter(
            "mlflow_sharinghub_sharinghub_errors",
            "SharingHub calls that failed, by call and kind of failure",
            ["call", "kind"],
            registry=registry,
        )
        self.cache = Counter(
            "mlflow_sharinghub_cache_lookups",
            "Lookups of SharingHub's answers in the cache, by result: hit, miss, "
            "shared (a miss answered by another worker's call)",
            ["result"],
            registry=registry,
        )

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in Prometheus' text format, and its media type."""
        from prometheus_client import (
            CONTENT_TYPE_LATEST,
            CollectorRegistry,
            generate_latest,
        )
        from prometheus_client.multiprocess import MultiProcessCollector

        registry = self._registry
        if registry is None:
            registry = CollectorRegistry()
            # prometheus_client leaves this constructor unannotated.
            MultiProcessCollector(registry, path=str(self._directory))  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
