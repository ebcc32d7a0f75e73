"""Faults during load: SharingHub and PostgreSQL go away while clients log.

A stand-in, a PostgreSQL cluster and a server of this module's own, so that
stopping them disturbs no other test. A few client threads log metric
batches, mixed batches and single metrics without pause, over plain HTTP and
without retries, recording every answer. Then one dependency is really
stopped (the process ends) until every client has seen a refusal, and started
again on the same port. Afterwards:

- every refusal was a clean MLflow JSON error, never a hang or an HTML page;
- everything a client got a 200 for is there, read back through the server;
- nothing is half-written: a batch's metrics are all there or none are (MLflow
  writes a batch's params, metrics and tags in one transaction each, so a
  mixed batch is checked part by part);
- the clients work again by themselves, without restarting the server;
- a model version registered while the store is down is refused as an
  outage (503), not as a run of another project.

The cache TTL is short, so that during the SharingHub outage the cached
answers run out while it lasts: cached callers keep working at first, then
get 503 like callers that need a new answer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import httpx
import pytest
from flask import Flask
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from sqlalchemy.exc import OperationalError

from mlflow_sharinghub.json_errors import answer_mlflow_errors_as_json
from servers import CROPS, FLOOD, Postgres, Server, Standin, running, unique

CACHE_TTL = 6.0
SHARINGHUB_TIMEOUT = 30.0
# A request that waited for the timeout would take this long at least.
QUICK = SHARINGHUB_TIMEOUT / 3
CLIENT_TIMEOUT = 60.0
MAX_STEPS = 20_000
WAIT = 60.0
API = "api/2.0/mlflow/"
BATCH_KEYS = tuple(f"m{i}" for i in range(10))
MIXED_KEYS = tuple(f"x{i}" for i in range(4))
CLIENTS = (("dev-a", FLOOD), ("maint-a", FLOOD), ("dev-b", CROPS))


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Standin]:
    with running(Standin(tmp_path_factory.mktemp("faults-standin"))) as instance:
        yield instance


@pytest.fixture(scope="module")
def cluster() -> Iterator[Postgres]:
    instance = Postgres()
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="module")
def guarded(
    tmp_path_factory: pytest.TempPathFactory, hub: Standin, cluster: Postgres
) -> Iterator[Server]:
    with running(
        Server(
            tmp_path_factory.mktemp("faults-server"),
            hub,
            SHARINGHUB_CACHE_TTL=str(CACHE_TTL),
            SHARINGHUB_TIMEOUT=str(SHARINGHUB_TIMEOUT),
            MLFLOW_BACKEND_STORE_URI=cluster.create_database("faults"),
        )
    ) as instance:
        yield instance


@dataclass(frozen=True)
class Answer:
    """One request as a client saw it; status 0 is a transport error."""

    what: str
    step: int
    began: float
    elapsed: float
    status: int
    error_code: str | None = None
    json_error: bool = False


@dataclass
class Logger:
    """A client thread logging to one run without pause, until told to stop."""

    client: httpx.Client
    run_id: str
    progress: threading.Condition
    answers: list[Answer] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for step in range(MAX_STEPS):
            if self.stopping.is_set():
                return
            self._send("batch" if step % 2 == 0 else "mixed", step)
            self._send("single", step)

    def _send(self, what: str, step: int) -> None:
        began = time.monotonic()
        try:
            response = self.client.post(
                API + _ENDPOINTS[what], json=self.body(what, step)
            )
            answer = _answer(what, step, began, response)
        except httpx.HTTPError:
            answer = Answer(what, step, began, time.monotonic() - began, 0)
        with self.progress:
            self.answers.append(answer)
            self.progress.notify_all()
        if answer.status != 200:
            # Pacing, not synchronisation: a refused client does not spin.
            self.stopping.wait(0.05)

    def body(self, what: str, step: int) -> dict[str, Any]:
        if what == "single":
            return {"run_id": self.run_id, **_metric("single", step)}
        if what == "batch":
            return {"run_id": self.run_id, "metrics": _metrics(BATCH_KEYS, step)}
        return {
            "run_id": self.run_id,
            "metrics": _metrics(MIXED_KEYS, step),
            "params": [{"key": f"p{step}-{i}", "value": str(step)} for i in (0, 1)],
            "tags": [{"key": f"t{step}", "value": str(step)}],
        }

    def since(self, mark: float) -> list[Answer]:
        return [a for a in self.answers if a.began >= mark]


_ENDPOINTS = {
    "single": "runs/log-metric",
    "batch": "runs/log-batch",
    "mixed": "runs/log-batch",
}


def _metric(key: str, step: int) -> dict[str, Any]:
    return {"key": key, "value": float(step), "timestamp": step, "step": step}


def _metrics(keys: tuple[str, ...], step: int) -> list[dict[str, Any]]:
    return [_metric(key, step) for key in keys]


def _answer(what: str, step: int, began: float, response: httpx.Response) -> Answer:
    elapsed = time.monotonic() - began
    if response.status_code == 200:
        return Answer(what, step, began, elapsed, 200)
    is_json = response.headers.get("content-type", "").startswith("application/json")
    try:
        code = response.json().get("error_code") if is_json else None
    except ValueError:
        code = None
    return Answer(
        what, step, began, elapsed, response.status_code, code, code is not None
    )


class Load:
    """Client threads, one run each, on the projects of ``CLIENTS``."""

    def __init__(self, server: Server) -> None:
        self.progress = threading.Condition()
        self.loggers = [self._logger(server, t, p) for t, p in CLIENTS]
        self.threads = [threading.Thread(target=lg.run) for lg in self.loggers]

    def _logger(self, server: Server, token: str, project: str) -> Logger:
        client = httpx.Client(
            base_url=server.uri(project),
            headers={"Authorization": f"Bearer {token}"},
            timeout=CLIENT_TIMEOUT,
        )
        experiment = call(client, "experiments/create", name=unique("faults"))
        run = call(client, "runs/create", experiment_id=experiment["experiment_id"])
        return Logger(client, run["run"]["info"]["run_id"], self.progress)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        for logger in self.loggers:
            logger.client.close()

    def stop(self) -> None:
        """Stop the clients; their connections stay open for reading back."""
        for logger in self.loggers:
            logger.stopping.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT * 2)

    def wait_until(self, mark: float, test: Callable[[list[Answer]], bool]) -> None:
        """Until every client's answers since ``mark`` pass ``test``; bounded."""

        def done() -> bool:
            return all(test(lg.since(mark)) for lg in self.loggers)

        with self.progress:
            if not self.progress.wait_for(done, timeout=WAIT):
                pytest.fail(
                    f"clients did not get there within {WAIT}s: {self.summary()}"
                )

    def summary(self) -> str:
        counts = [
            (sum(a.status == 200 for a in lg.answers), len(lg.answers))
            for lg in self.loggers
        ]
        return ", ".join(f"{ok}/{total} acknowledged" for ok, total in counts)


def call(client: httpx.Client, endpoint: str, **body: Any) -> dict[str, Any]:
    response = client.post(API + endpoint, json=body)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def succeeded(count: int) -> Callable[[list[Answer]], bool]:
    return lambda answers: sum(a.status == 200 for a in answers) >= count


def refused(answers: list[Answer]) -> bool:
    return any(a.status != 200 for a in answers)


Stored = tuple[dict[str, list[int]], dict[str, str], set[str]]


def stored(logger: Logger) -> Stored:
    """Metric steps by key, params and tag keys of the logger's run, as stored."""
    client = logger.client
    steps = {}
    for key in ("single", *BATCH_KEYS, *MIXED_KEYS):
        response = client.get(
            API + "metrics/get-history",
            params={"run_id": logger.run_id, "metric_key": key, "max_results": 25000},
        )
        response.raise_for_status()
        steps[key] = [int(m["step"]) for m in response.json().get("metrics", [])]
    response = client.get(API + "runs/get", params={"run_id": logger.run_id})
    response.raise_for_status()
    data = response.json()["run"]["data"]
    params = {p["key"]: p["value"] for p in data.get("params", [])}
    tags = {t["key"] for t in data.get("tags", [])}
    return steps, params, tags


def check_nothing_lost_or_half_written(load: Load) -> None:
    """Acknowledged requests are stored; each transaction is all there or absent."""
    for logger in load.loggers:
        steps, params, tags = stored(logger)
        assert all(len(set(s)) == len(s) for s in steps.values()), "duplicates"
        for answer in logger.answers:
            present = _parts_present(answer, steps, params, tags)
            if answer.status == 200:
                assert all(present), answer


def resend_refused(load: Load) -> None:
    """Send every refused request again, as the MLflow client's retries do."""
    for logger in load.loggers:
        for answer in [a for a in logger.answers if a.status != 200]:
            response = logger.client.post(
                API + _ENDPOINTS[answer.what],
                json=logger.body(answer.what, answer.step),
            )
            assert response.status_code == 200, response.text
            logger.answers.append(replace(answer, status=200))


def _parts_present(
    answer: Answer, steps: dict[str, list[int]], params: dict[str, str], tags: set[str]
) -> list[bool]:
    """For each transaction of the request, whether it is stored.

    MLflow writes a batch's params, its metrics and its tags in a transaction
    each. A transaction that is only partly stored fails the check.
    """
    step = answer.step
    if answer.what == "single":
        return [step in steps["single"]]
    if answer.what == "batch":
        return [_all_or_none([step in steps[k] for k in BATCH_KEYS])]
    written = [f"p{step}-{i}" for i in (0, 1)]
    return [
        _all_or_none([step in steps[k] for k in MIXED_KEYS]),
        _all_or_none([params.get(k) == str(step) for k in written]),
        f"t{step}" in tags,
    ]


def _all_or_none(flags: list[bool]) -> bool:
    if all(flags) or not any(flags):
        return all(flags)
    raise AssertionError(f"half-written: {flags}")


def probe(server: Server, token: str, project: str) -> tuple[httpx.Response, float]:
    began = time.monotonic()
    response = httpx.post(
        server.uri(project) + API + "experiments/search",
        json={"max_results": 1},
        headers={"Authorization": f"Bearer {token}"},
        timeout=CLIENT_TIMEOUT,
    )
    return response, time.monotonic() - began


def register_version(logger: Logger, model: str) -> httpx.Response:
    body = {
        "name": model,
        "source": f"runs:/{logger.run_id}/model",
        "run_id": logger.run_id,
    }
    return logger.client.post(API + "model-versions/create", json=body)


def during(answer: Answer, stopped: float, restarted: float) -> bool:
    """Whether the request was under way while the dependency was down."""
    return answer.began + answer.elapsed >= stopped and answer.began <= restarted


def failures(load: Load) -> list[Answer]:
    return [a for lg in load.loggers for a in lg.answers if a.status != 200]


def test_sharinghub_outage_during_load(guarded: Server, hub: Standin) -> None:
    with Load(guarded) as load:
        load.wait_until(0, succeeded(5))
        assert probe(guarded, "alice", FLOOD)[0].status_code == 200

        stopped = time.monotonic()
        hub.stop()
        cached, _ = probe(guarded, "alice", FLOOD)
        uncached, uncached_seconds = probe(guarded, "alice", CROPS)
        load.wait_until(stopped, refused)
        hub.start()
        restarted = time.monotonic()
        load.wait_until(restarted, succeeded(5))
        recovered, _ = probe(guarded, "alice", CROPS)
        load.stop()
        check_nothing_lost_or_half_written(load)
        resend_refused(load)
        check_nothing_lost_or_half_written(load)

    assert cached.status_code == 200
    assert uncached.status_code == 503
    assert uncached.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert uncached_seconds < QUICK
    assert recovered.status_code == 200
    refusals = failures(load)
    assert refusals
    assert {(a.status, a.error_code) for a in refusals} == {
        (503, "TEMPORARILY_UNAVAILABLE")
    }
    assert all(during(a, stopped, restarted) for a in refusals)
    assert max(a.elapsed for a in refusals) < QUICK


def test_postgres_restart_during_load(guarded: Server, cluster: Postgres) -> None:
    with Load(guarded) as load:
        load.wait_until(0, succeeded(5))
        model = unique("model")
        call(load.loggers[0].client, "registered-models/create", name=model)

        stopped = time.monotonic()
        cluster.stop_server()
        load.wait_until(stopped, refused)
        registering = register_version(load.loggers[0], model)
        not_ready = httpx.get(guarded.url + "/ready", timeout=CLIENT_TIMEOUT)
        cluster.start_server()
        restarted = time.monotonic()
        load.wait_until(restarted, succeeded(5))
        ready = httpx.get(guarded.url + "/ready", timeout=CLIENT_TIMEOUT)
        load.stop()
        check_nothing_lost_or_half_written(load)
        resend_refused(load)
        check_nothing_lost_or_half_written(load)

    refusals = failures(load)
    assert refusals
    assert all(a.json_error for a in refusals), {a.status for a in refusals}
    assert {(a.status, a.error_code) for a in refusals} == {
        (503, "TEMPORARILY_UNAVAILABLE")
    }
    assert all(during(a, stopped, restarted) for a in refusals)
    # The run of a new model version cannot be looked up: an outage, not a
    # run of another project.
    assert registering.status_code == 503
    assert registering.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert not_ready.status_code == 503
    assert not_ready.json()["checks"]["backend_store"] == "failing"
    assert ready.status_code == 200


def test_a_lost_database_session_is_an_outage() -> None:
    """SQLAlchemy's disconnect error, escaped from MLflow's handling, is a 503."""
    app = Flask(__name__)
    answer_mlflow_errors_as_json(app)
    gone = OperationalError("ROLLBACK", None, Exception("terminating connection"))

    @app.post("/raw")
    def raw() -> None:
        raise gone

    @app.post("/wrapped")
    def wrapped() -> None:
        try:
            raise gone
        except OperationalError as exc:
            # As MLflow's log_batch does it, without "from".
            raise MlflowException(exc, INTERNAL_ERROR)  # noqa: B904

    client = app.test_client()
    for path in ("/raw", "/wrapped"):
        response = client.post(path)
        assert response.status_code == 503, path
        assert response.json == {
            "error_code": "TEMPORARILY_UNAVAILABLE",
            "message": "The backend store is not answering. Try again in a moment.",
        }
