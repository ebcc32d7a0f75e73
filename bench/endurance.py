"""Endurance: 8 clients, each in its own project, log a mixed workload for minutes.

Starts on loopback the SharingHub stand-in (8 projects, a developer token
each), PostgreSQL (or SQLite with ``--sqlite``) and ``mlflow-sharinghub
server``. Each client logs, over plain HTTP with its own token and project
tracking URI: runs, metrics singly and in batches, params, tags, small
artifacts, and now and then a registered model version. It records every
acknowledged write. Server memory (RSS of its process tree) is sampled every
few seconds.

Then, at full load, the fault phase: SharingHub is stopped for 30 s and
started again, then PostgreSQL is stopped and started again. Refusals must be
clean (503 ``TEMPORARILY_UNAVAILABLE`` JSON, quickly) and fall inside the
outages; afterwards every client works again by itself, and the requests
refused during the outages are sent again, as the MLflow client's retries do.

Finally every client reads back, as itself, everything it logged, and tries
to reach the other clients' objects. Targets: zero failed requests outside
the outages, everything logged present and correct, no client sees another's
objects, and memory growth after warm-up under 10%. Exits 1 when one is
missed.

Run: ``.venv/bin/python bench/endurance.py [--minutes 10] [--clients 8]``.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from common import BIN, BenchError, Postgres, Service, free_port, tree_rss_mb

API = "api/2.0/mlflow/"
ARTIFACTS = "api/2.0/mlflow-artifacts/artifacts/"
FIRST_PROJECT = 101
SHARINGHUB_TIMEOUT = 5.0
MEMORY_LIMIT = 0.10
SAMPLE_SECONDS = 5.0
OPS_PER_RUN = 200
BATCH_KEYS = tuple(f"batch/k{i}" for i in range(10))
MIXED_KEYS = ("mixed/x0", "mixed/x1", "mixed/x2")
SINGLE_KEYS = ("loss", "accuracy")
MAX_OPS = 10_000_000


# ---------------------------------------------------------------- what was logged


@dataclass
class RunLog:
    """What a client got a 200 for, for one run."""

    run_id: str
    artifact_root: str
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, set[tuple[int, float]]] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    steps: dict[str, int] = field(default_factory=dict)
    ops: int = 0
    status: str = "RUNNING"

    def next_step(self, key: str) -> int:
        self.steps[key] = self.steps.get(key, -1) + 1
        return self.steps[key]


@dataclass(frozen=True)
class Outcome:
    """One request as a client saw it; status 0 is a transport error."""

    op: str
    began: float
    elapsed: float
    status: int
    error_code: str | None
    message: str = ""


@dataclass
class Pending:
    """A request to send; ``done`` records it once it is acknowledged."""

    op: str
    method: str
    path: str
    json: dict[str, Any] | None = None
    content: bytes | None = None
    done: Callable[[httpx.Response], None] = lambda response: None
    retry: bool = True


# ------------------------------------------------------------------ one client


class Client:
    """A client thread logging a mixed workload into its own project."""

    def __init__(self, index: int, server_url: str) -> None:
        self.index = index
        self.project = FIRST_PROJECT + index
        self.token = f"dev-{index}"
        self.model = f"endurance-model-{index}"
        self.http = httpx.Client(
            base_url=f"{server_url}/{self.project}/tracking/",
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=60,
        )
        self.random = random.Random(index)
        self.outcomes: list[Outcome] = []
        self.runs: dict[str, RunLog] = {}
        self.versions: dict[str, str] = {}
        self.experiment_id = ""
        self.run: RunLog | None = None
        self.model_made = False
        self.refused: list[Pending] = []
        self.lock = threading.Lock()

    def setup(self) -> None:
        body = {"name": f"endurance-{self.index}"}
        response = self.http.post(API + "experiments/create", json=body)
        response.raise_for_status()
        self.experiment_id = response.json()["experiment_id"]

    def work(self, until: float, stop: threading.Event) -> None:
        """Log until ``until`` (monotonic) or ``stop``; bounded by MAX_OPS."""
        for _ in range(MAX_OPS):
            if stop.is_set() or time.monotonic() >= until:
                return
            self.send(self.next_request())

    def send(self, pending: Pending) -> bool:
        began = time.monotonic()
        try:
            response = self.http.request(
                pending.method, pending.path, json=pending.json, content=pending.content
            )
        except httpx.HTTPError:
            self._note(Outcome(pending.op, began, time.monotonic() - began, 0, None))
            self._refused(pending)
            return False
        elapsed = time.monotonic() - began
        if response.status_code == 200:
            pending.done(response)
            self._note(Outcome(pending.op, began, elapsed, 200, None))
            return True
        code = _error_code(response)
        status, message = response.status_code, response.text[:300]
        self._note(Outcome(pending.op, began, elapsed, status, code, message))
        self._refused(pending)
        return False

    def _refused(self, pending: Pending) -> None:
        if pending.retry:
            self.refused.append(pending)
        time.sleep(0.05)  # a refused client does not spin

    def _note(self, outcome: Outcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)

    def next_request(self) -> Pending:
        if self.run is None or self.run.ops >= OPS_PER_RUN:
            return self._new_run()
        run = self.run
        run.ops += 1
        choice = self.random.choices(
            ["single", "batch", "mixed", "param", "tag", "artifact", "search", "model"],
            weights=[30, 25, 10, 10, 10, 6, 8, 1],
        )[0]
        make: Callable[[RunLog], Pending] = getattr(self, f"_{choice}")
        return make(run)

    def _new_run(self) -> Pending:
        if self.run is not None:
            self.send(self._finish(self.run))

        def created(response: httpx.Response) -> None:
            info = response.json()["run"]["info"]
            run = RunLog(info["run_id"], info["artifact_uri"])
            run.tags["client"] = str(self.index)
            self.runs[run.run_id] = run
            self.run = run

        body = {
            "experiment_id": self.experiment_id,
            "start_time": _now(),
            "tags": [{"key": "client", "value": str(self.index)}],
        }
        # Not sent again when refused: a second run would be made instead.
        return Pending(
            "runs/create", "POST", API + "runs/create", body, None, created, False
        )

    def _finish(self, run: RunLog) -> Pending:
        body = {"run_id": run.run_id, "status": "FINISHED", "end_time": _now()}

        def finished(_: httpx.Response) -> None:
            run.status = "FINISHED"

        return Pending("runs/update", "POST", API + "runs/update", body, done=finished)

    def _metric(self, run: RunLog, key: str) -> dict[str, Any]:
        step = run.next_step(key)
        value = round(self.random.uniform(-1e3, 1e3), 6)
        return {"key": key, "value": value, "timestamp": _now(), "step": step}

    def _record_metrics(self, run: RunLog, metrics: list[dict[str, Any]]) -> None:
        for metric in metrics:
            points = run.metrics.setdefault(metric["key"], set())
            points.add((metric["step"], metric["value"]))

    def _single(self, run: RunLog) -> Pending:
        metric = self._metric(run, self.random.choice(SINGLE_KEYS))
        body = {"run_id": run.run_id, **metric}
        return Pending(
            "log-metric",
            "POST",
            API + "runs/log-metric",
            body,
            done=lambda _: self._record_metrics(run, [metric]),
        )

    def _batch(self, run: RunLog) -> Pending:
        metrics = [self._metric(run, key) for key in BATCH_KEYS]
        body = {"run_id": run.run_id, "metrics": metrics}
        return Pending(
            "log-batch",
            "POST",
            API + "runs/log-batch",
            body,
            done=lambda _: self._record_metrics(run, metrics),
        )

    def _mixed(self, run: RunLog) -> Pending:
        metrics = [self._metric(run, key) for key in MIXED_KEYS]
        n = run.ops
        params = {f"batch-param-{n}": f"v{n}-{self.index}"}
        tags = {f"batch-tag-{n}": f"t{n}-{self.index}"}
        body = {
            "run_id": run.run_id,
            "metrics": metrics,
            "params": [{"key": k, "value": v} for k, v in params.items()],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }

        def done(_: httpx.Response) -> None:
            self._record_metrics(run, metrics)
            run.params.update(params)
            run.tags.update(tags)

        return Pending(
            "log-batch mixed", "POST", API + "runs/log-batch", body, done=done
        )

    def _param(self, run: RunLog) -> Pending:
        key, value = f"param-{run.ops}", f"{self.random.random():.12f}"
        body = {"run_id": run.run_id, "key": key, "value": value}
        return Pending(
            "log-parameter",
            "POST",
            API + "runs/log-parameter",
            body,
            done=lambda _: run.params.__setitem__(key, value),
        )

    def _tag(self, run: RunLog) -> Pending:
        key, value = f"tag-{run.ops}", f"client {self.index} op {run.ops}"
        body = {"run_id": run.run_id, "key": key, "value": value}
        return Pending(
            "set-tag",
            "POST",
            API + "runs/set-tag",
            body,
            done=lambda _: run.tags.__setitem__(key, value),
        )

    def _artifact(self, run: RunLog) -> Pending:
        name = f"files/a-{run.ops}.bin"
        content = self.random.randbytes(self.random.randint(1, 16) * 1024)
        digest = hashlib.sha256(content).hexdigest()
        return Pending(
            "artifact upload",
            "PUT",
            ARTIFACTS + _artifact_path(run, name),
            content=content,
            done=lambda _: run.artifacts.__setitem__(name, digest),
        )

    def _search(self, run: RunLog) -> Pending:
        body = {"experiment_ids": [self.experiment_id], "max_results": 50}
        return Pending("runs/search", "POST", API + "runs/search", body)

    def _model(self, run: RunLog) -> Pending:
        if not self.model_made:

            def made(_: httpx.Response) -> None:
                self.model_made = True

            body = {"name": self.model}
            return Pending(
                "registered-models/create",
                "POST",
                API + "registered-models/create",
                body,
                done=made,
                retry=False,
            )
        source = f"{run.artifact_root}/files"

        def registered(response: httpx.Response) -> None:
            self.versions[response.json()["model_version"]["version"]] = run.run_id

        body = {"name": self.model, "source": source, "run_id": run.run_id}
        return Pending(
            "model-versions/create",
            "POST",
            API + "model-versions/create",
            body,
            done=registered,
            retry=False,
        )

    def resend_refused(self) -> list[str]:
        """Send the refused requests again, once each; what still fails."""
        pending, self.refused = self.refused, []
        still = []
        for request in pending:
            if not self.send(request):
                still.append(f"{request.op} {request.path}")
        return still


def _now() -> int:
    return int(time.time() * 1000)


def _artifact_path(run: RunLog, name: str) -> str:
    return f"{run.artifact_root.split('mlflow-artifacts:/', 1)[1].strip('/')}/{name}"


def _error_code(response: httpx.Response) -> str | None:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return None
    try:
        code = response.json().get("error_code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None


# ------------------------------------------------------------------ checks


def check_client(client: Client) -> list[str]:
    """Everything the client logged, read back as the client; the differences."""
    problems = []
    http = client.http
    experiments = _post(http, "experiments/search", {"max_results": 1000})
    names = sorted(e["name"] for e in experiments.get("experiments", []))
    if names != [f"endurance-{client.index}"]:
        problems.append(f"client {client.index} sees experiments {names}")
    stored = _all_runs(http, client.experiment_id)
    for run_id, logged in client.runs.items():
        if run_id not in stored:
            problems.append(f"client {client.index}: run {run_id} is missing")
            continue
        problems += _check_run(client, logged, stored[run_id])
    extra = [r for r in stored if r not in client.runs and _has_data(stored[r])]
    if extra:
        problems.append(
            f"client {client.index}: runs with data it never logged: {extra}"
        )
    problems += _check_models(client)
    return problems


def _check_run(client: Client, logged: RunLog, stored: dict[str, Any]) -> list[str]:
    where = f"client {client.index} run {logged.run_id}"
    data = stored.get("data", {})
    params = {p["key"]: p["value"] for p in data.get("params", [])}
    tags = {
        t["key"]: t["value"]
        for t in data.get("tags", [])
        if not t["key"].startswith("mlflow.")
    }
    problems = []
    if stored["info"]["status"] != logged.status:
        problems.append(f"{where}: status {stored['info']['status']}")
    if params != logged.params:
        problems.append(
            f"{where}: params differ ({len(params)} vs {len(logged.params)})"
        )
    if tags != logged.tags:
        problems.append(f"{where}: tags differ ({len(tags)} vs {len(logged.tags)})")
    for key, points in logged.metrics.items():
        history = _history(client.http, logged.run_id, key)
        if sorted(history) != sorted(points):
            problems.append(f"{where}: metric {key} differs ({len(history)} points)")
    for name, digest in logged.artifacts.items():
        response = client.http.get(ARTIFACTS + _artifact_path(logged, name))
        if (
            response.status_code != 200
            or hashlib.sha256(response.content).hexdigest() != digest
        ):
            problems.append(
                f"{where}: artifact {name} differs ({response.status_code})"
            )
    return problems


def _check_models(client: Client) -> list[str]:
    response = client.http.get(
        API + "registered-models/search", params={"max_results": 1000}
    )
    response.raise_for_status()
    found = response.json()
    names = [m["name"] for m in found.get("registered_models", [])]
    expected = [client.model] if client.model_made else []
    problems = (
        [] if names == expected else [f"client {client.index} sees models {names}"]
    )
    for version, run_id in client.versions.items():
        params = {"name": client.model, "version": version}
        response = client.http.get(API + "model-versions/get", params=params)
        if response.status_code != 200:
            problems.append(f"client {client.index}: model version {version} missing")
        elif response.json()["model_version"].get("run_id") != run_id:
            problems.append(f"client {client.index}: model version {version} differs")
    return problems


def check_isolation(client: Client, other: Client) -> list[str]:
    """What ``client`` gets when it names ``other``'s objects; the leaks."""
    http = client.http
    run = next(iter(other.runs.values()), None)
    probes: list[tuple[str, httpx.Response]] = [
        (
            "experiments/get",
            http.get(
                API + "experiments/get", params={"experiment_id": other.experiment_id}
            ),
        ),
        (
            "registered-models/get",
            http.get(API + "registered-models/get", params={"name": other.model}),
        ),
        ("other project", other_project(client, other)),
    ]
    if run is not None:
        probes.append(
            ("runs/get", http.get(API + "runs/get", params={"run_id": run.run_id}))
        )
        probes.append(
            (
                "metrics",
                http.get(
                    API + "metrics/get-history",
                    params={"run_id": run.run_id, "metric_key": "loss"},
                ),
            )
        )
        for name in list(run.artifacts)[:1]:
            url = ARTIFACTS + _artifact_path(run, name)
            probes.append(("artifact", http.get(url)))
    return [
        f"client {client.index} reached client {other.index}'s {what}: "
        f"{response.status_code}"
        for what, response in probes
        if response.status_code < 400
    ]


def other_project(client: Client, other: Client) -> httpx.Response:
    url = f"{client.http.base_url}".replace(f"/{client.project}/", f"/{other.project}/")
    return client.http.post(url + API + "experiments/search", json={"max_results": 10})


def _post(http: httpx.Client, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    response = http.post(API + endpoint, json=body)
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def _all_runs(http: httpx.Client, experiment_id: str) -> dict[str, dict[str, Any]]:
    runs: dict[str, dict[str, Any]] = {}
    body: dict[str, Any] = {"experiment_ids": [experiment_id], "max_results": 1000}
    for _ in range(1000):
        page = _post(http, "runs/search", body)
        runs |= {r["info"]["run_id"]: r for r in page.get("runs", [])}
        if not page.get("next_page_token"):
            break
        body["page_token"] = page["next_page_token"]
    return runs


def _history(http: httpx.Client, run_id: str, key: str) -> list[tuple[int, float]]:
    points: list[tuple[int, float]] = []
    params: dict[str, Any] = {"run_id": run_id, "metric_key": key, "max_results": 25000}
    for _ in range(1000):
        response = http.get(API + "metrics/get-history", params=params)
        response.raise_for_status()
        page = response.json()
        points += [(int(m["step"]), float(m["value"])) for m in page.get("metrics", [])]
        if not page.get("next_page_token"):
            break
        params["page_token"] = page["next_page_token"]
    return points


def _has_data(run: dict[str, Any]) -> bool:
    data = run.get("data", {})
    tags = [t for t in data.get("tags", []) if not t["key"].startswith("mlflow.")]
    return bool(
        data.get("params")
        or data.get("metrics")
        or [t for t in tags if t["key"] != "client"]
    )


# ------------------------------------------------------------------ memory


class MemorySampler:
    """RSS of the server's process tree, every few seconds, in a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stopping.is_set():
            self.samples.append((time.monotonic(), tree_rss_mb(self.pid)))
            self.stopping.wait(SAMPLE_SECONDS)

    def between(self, start: float, end: float) -> list[float]:
        return [mb for at, mb in self.samples if start <= at <= end]


# ------------------------------------------------------------------ the run


@dataclass
class Outage:
    name: str
    start: float
    end: float = 0.0


@dataclass
class Stack:
    """The servers of one run."""

    workdir: Path
    clients: int
    sqlite: bool
    standin: Service = field(init=False)
    server: Service = field(init=False)
    postgres: Postgres | None = None
    standin_url: str = ""
    server_url: str = ""

    def start(self, workers: int) -> float:
        config = self.workdir / "standin.yaml"
        config.write_text(standin_config(self.clients))
        port = free_port()
        self.standin_url = f"http://127.0.0.1:{port}"
        self.standin = Service(
            "stand-in",
            [
                str(BIN / "mlflow-sharinghub"),
                "standin",
                "--config",
                str(config),
                "--port",
                str(port),
            ],
            {},
            self.workdir / "standin.log",
        )
        self.standin.start(f"{self.standin_url}/_standin/calls")
        env = {
            "SHARINGHUB_URL": self.standin_url,
            "SHARINGHUB_TIMEOUT": str(SHARINGHUB_TIMEOUT),
            "MLFLOW_DATA_DIR": str(self.workdir / "data"),
            "MLFLOW_WORKERS": str(workers),
            "LOG_LEVEL": "WARNING",
        }
        if not self.sqlite:
            self.postgres = Postgres()
            self.postgres.create()
            env["MLFLOW_BACKEND_STORE_URI"] = self.postgres.add_database("endurance")
        server_port = free_port()
        env["MLFLOW_PORT"] = str(server_port)
        self.server_url = f"http://127.0.0.1:{server_port}"
        self.server = Service(
            "mlflow-sharinghub",
            [str(BIN / "mlflow-sharinghub"), "server"],
            env,
            self.workdir / "server.log",
        )
        return self.server.start(f"{self.server_url}/ready")

    def stop(self) -> None:
        for service in (getattr(self, "server", None), getattr(self, "standin", None)):
            if service is not None:
                service.stop()
        if self.postgres is not None:
            self.postgres.remove()


def standin_config(clients: int) -> str:
    lines = ["projects:"]
    for i in range(clients):
        pid = FIRST_PROJECT + i
        lines.append(
            f"  - {{id: {pid}, path: endurance/client-{i}, name: Client {i}, "
            "topics: [sharinghub:aimodel]}"
        )
    lines.append("users:")
    for i in range(clients):
        lines.append(
            f"  - {{token: dev-{i}, name: dev-{i}, access: {{{FIRST_PROJECT + i}: 3}}}}"
        )
    return "\n".join(lines) + "\n"


RECOVERY_SECONDS = 20.0
# The fault phase's clients stop once the faults are over, or after this.
FAULT_PHASE_LIMIT = 3600.0


def run_load(
    clients: list[Client], seconds: float, during: Callable[[], None] | None = None
) -> None:
    """Every client logs for ``seconds``, or until ``during`` has returned."""
    stop = threading.Event()
    until = time.monotonic() + seconds
    with ThreadPoolExecutor(len(clients)) as pool:
        futures = [pool.submit(c.work, until, stop) for c in clients]
        try:
            if during is not None:
                during()
                stop.set()
            for future in futures:
                future.result()
        finally:
            stop.set()


def fault_phase(
    stack: Stack, clients: list[Client], outage_seconds: float, db_down_seconds: float
) -> list[Outage]:
    """SharingHub stopped and started again, then PostgreSQL, under load.

    An outage lasts from the stop until the service answers again, so it
    includes the restart. The load goes on for RECOVERY_SECONDS after each.
    """
    outages: list[Outage] = []

    def down(
        name: str, stop: Callable[[], None], start: Callable[[], None], seconds: float
    ) -> None:
        outage = Outage(name, time.monotonic())
        outages.append(outage)
        stop()
        time.sleep(seconds)
        start()
        outage.end = time.monotonic()
        time.sleep(RECOVERY_SECONDS)

    def faults() -> None:
        time.sleep(RECOVERY_SECONDS / 2)
        standin = stack.standin
        down(
            f"SharingHub stopped for {outage_seconds:.0f} s",
            standin.stop,
            lambda: standin.start(f"{stack.standin_url}/_standin/calls"),
            outage_seconds,
        )
        if stack.postgres is not None:
            postgres = stack.postgres
            down(
                f"PostgreSQL stopped for {db_down_seconds:.0f} s",
                lambda: postgres.stop("fast"),
                postgres.start,
                db_down_seconds,
            )

    run_load(clients, FAULT_PHASE_LIMIT, faults)
    return outages


@dataclass
class Report:
    """The figures and the missed targets of one run."""

    lines: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        self.lines.append(line)
        print(line, flush=True)

    def target(self, ok: bool, what: str) -> None:
        self.say(f"  [{'ok' if ok else 'MISSED'}] {what}")
        if not ok:
            self.missed.append(what)


def steady_report(
    report: Report,
    clients: list[Client],
    start: float,
    end: float,
    sampler: MemorySampler,
) -> None:
    outcomes = [o for c in clients for o in c.outcomes if start <= o.began <= end]
    failed = [o for o in outcomes if o.status != 200]
    report.say(
        f"steady load: {end - start:.0f} s, {len(outcomes)} requests, "
        f"{len(outcomes) / (end - start):.1f} req/s, {len(failed)} failed"
    )
    by_op: dict[str, int] = {}
    for outcome in outcomes:
        by_op[outcome.op] = by_op.get(outcome.op, 0) + 1
    report.say("  " + ", ".join(f"{op} {n}" for op, n in sorted(by_op.items())))
    report.target(
        not failed, f"zero failed requests ({len(failed)} failed: {_codes(failed)})"
    )

    warmup_end = start + min(120.0, (end - start) * 0.2)
    warm = sampler.between(warmup_end - 3 * SAMPLE_SECONDS, warmup_end)
    final = sampler.between(end - 3 * SAMPLE_SECONDS, end)
    if not warm or not final:
        report.target(False, "memory sampled after warm-up and at the end")
        return
    warm_mb, final_mb = statistics.median(warm), statistics.median(final)
    growth = final_mb / warm_mb - 1
    peak = max(mb for _, mb in sampler.samples)
    report.say(
        f"memory (server tree RSS): warm-up {warm_mb:.0f} MiB, "
        f"final {final_mb:.0f} MiB, peak {peak:.0f} MiB"
    )
    report.target(
        growth < MEMORY_LIMIT,
        f"memory growth after warm-up {growth:+.1%} < {MEMORY_LIMIT:.0%}",
    )


def fault_report(
    report: Report, clients: list[Client], start: float, outages: list[Outage]
) -> None:
    outcomes = [o for c in clients for o in c.outcomes if o.began >= start]
    failed = [o for o in outcomes if o.status != 200]
    report.say(
        f"fault phase: {len(outcomes)} requests, "
        f"{len(failed)} refused during the outages"
    )
    for outage in outages:
        inside = [o for o in failed if _during(o, outage)]
        slowest = max((o.elapsed for o in inside), default=0.0)
        report.say(
            f"  {outage.name}, back after {outage.end - outage.start:.0f} s: "
            f"{len(inside)} refused ({_codes(inside)}), slowest {slowest:.2f} s"
        )
    outside = [o for o in failed if not any(_during(o, w) for w in outages)]
    report.target(
        not outside,
        f"no refusal outside the outages ({len(outside)}: {_codes(outside)})",
    )
    unclean = [
        o
        for o in failed
        if (o.status, o.error_code) != (503, "TEMPORARILY_UNAVAILABLE")
    ]
    for outcome in unclean[:5]:
        report.say(f"    {outcome.op}: {outcome.status} {outcome.message}")
    report.target(
        not unclean,
        "every refusal is 503 TEMPORARILY_UNAVAILABLE JSON "
        f"({len(unclean)} not: {_codes(unclean)})",
    )
    slow = [o for o in failed if o.elapsed >= SHARINGHUB_TIMEOUT]
    report.target(
        not slow,
        f"every refusal quicker than SHARINGHUB_TIMEOUT={SHARINGHUB_TIMEOUT:.0f}s "
        f"({len(slow)} not)",
    )
    last_end = max((w.end for w in outages), default=start)
    recovered = [
        c.index
        for c in clients
        if any(o.status == 200 and o.began > last_end for o in c.outcomes)
    ]
    report.target(
        len(recovered) == len(clients),
        f"every client works again after the outages ({len(recovered)}/{len(clients)})",
    )


def _during(outcome: Outcome, outage: Outage) -> bool:
    return (
        outcome.began + outcome.elapsed >= outage.start and outcome.began <= outage.end
    )


def _codes(outcomes: list[Outcome]) -> str:
    counts: dict[str, int] = {}
    for o in outcomes:
        name = f"{o.status} {o.error_code or ''}".strip()
        counts[name] = counts.get(name, 0) + 1
    return ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())) or "none"


def verify(report: Report, clients: list[Client]) -> None:
    still = [f"client {c.index}: {r}" for c in clients for r in c.resend_refused()]
    report.target(
        not still, f"refused requests succeed when sent again ({len(still)} still fail)"
    )
    with ThreadPoolExecutor(len(clients)) as pool:
        problems = [p for found in pool.map(check_client, clients) for p in found]
        pairs = [(c, clients[(i + 1) % len(clients)]) for i, c in enumerate(clients)]
        leaks = [
            p
            for found in pool.map(lambda pair: check_isolation(*pair), pairs)
            for p in found
        ]
    totals = _totals(clients)
    report.say(
        "logged and read back: "
        + ", ".join(f"{n} {what}" for what, n in totals.items())
    )
    for problem in problems[:20]:
        report.say(f"    {problem}")
    report.target(
        not problems,
        f"everything logged is present and correct ({len(problems)} differences)",
    )
    for leak in leaks[:20]:
        report.say(f"    {leak}")
    report.target(
        not leaks, f"no client reaches another's objects ({len(leaks)} leaks)"
    )


def _totals(clients: list[Client]) -> dict[str, int]:
    runs = [r for c in clients for r in c.runs.values()]
    return {
        "runs": len(runs),
        "metric points": sum(len(p) for r in runs for p in r.metrics.values()),
        "params": sum(len(r.params) for r in runs),
        "tags": sum(len(r.tags) for r in runs),
        "artifacts": sum(len(r.artifacts) for r in runs),
        "model versions": sum(len(c.versions) for c in clients),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10, help="steady load")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--workers", type=int, default=4, help="server workers")
    parser.add_argument("--sqlite", action="store_true", help="SQLite, not PostgreSQL")
    parser.add_argument("--outage-seconds", type=float, default=30)
    parser.add_argument("--db-down-seconds", type=float, default=5)
    parser.add_argument("--no-faults", action="store_true", help="skip the fault phase")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="endurance-"))
    stack = Stack(workdir, args.clients, args.sqlite)
    report = Report()
    try:
        started = stack.start(args.workers)
        store = "SQLite" if args.sqlite else "PostgreSQL"
        report.say(
            f"server up in {started:.1f} s: {args.workers} workers, {store}, "
            f"{args.clients} clients"
        )
        clients = [Client(i, stack.server_url) for i in range(args.clients)]
        for client in clients:
            client.setup()
        sampler = MemorySampler(stack.server.pid)
        sampler.thread.start()
        start = time.monotonic()
        run_load(clients, args.minutes * 60)
        end = time.monotonic()
        steady_report(report, clients, start, end, sampler)
        if not args.no_faults:
            outages = fault_phase(
                stack, clients, args.outage_seconds, args.db_down_seconds
            )
            fault_report(report, clients, end, outages)
        sampler.stopping.set()
        verify(report, clients)
    except BenchError as exc:
        report.target(False, str(exc))
    finally:
        stack.stop()
        if args.keep:
            print(f"work directory: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        "\nall targets met"
        if not report.missed
        else f"\n{len(report.missed)} target(s) missed"
    )
    return 1 if report.missed else 0


if __name__ == "__main__":
    sys.exit(main())
