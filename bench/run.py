"""Throughput and latency of mlflow-sharinghub against plain ``mlflow server``.

Starts, on loopback, with the same MLflow, store type and worker count
(SQLite files by default; with ``--postgresql``, a database each in one
throw-away PostgreSQL cluster; artifacts in a local directory):

- ``plain``: ``mlflow server`` with its defaults: uvicorn on asyncio's event
  loop and the pure-Python h11 parser, which is what ``pip install mlflow``
  gives (its uvicorn comes without uvloop and httptools; this virtualenv has
  them for mlflow-sharinghub, so the plain server is told not to use them);
- ``plain-gunicorn``: ``mlflow server`` under gunicorn with threaded workers,
  the fastest plain configuration found on this kind of machine;
- ``sharinghub``: ``mlflow-sharinghub server`` with the SharingHub stand-in,
  every permission check on, through a project tracking URI and a token.

Each operation runs with 1 and 8 client threads on every server in turn, in
alternating rounds, so that drift of a shared machine hits all alike. Prints
throughput, p50 and p99 per server, the ratio sharinghub / plain (and, to
the fastest, the mean of the rounds' ratios with twice its standard error),
the start time of each server started alone (median of three), memory
after the load, and the stand-in's calls per (token, project).

Run: ``.venv/bin/python bench/run.py`` (``--help`` for the options).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
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
from common import BIN, BenchError, Postgres, free_port, tree_rss_mb

# The server's default, said here so that the calls can be counted per TTL.
CACHE_TTL = 30

STANDIN_CONFIG = """
projects:
  - {id: 42, path: bench/model, name: Bench Model, topics: [sharinghub:aimodel]}
users:
  - {token: bench-token, name: bench, access: {42: 3}}
"""
ARTIFACT_SIZE = 50 * 1024 * 1024


@dataclass
class Target:
    name: str
    command: list[str]
    env: dict[str, str]
    prefix: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    start_seconds: float = 0.0
    experiment_id: str = ""
    run_id: str = ""
    artifact_path: str = ""

    def start(self, base: str) -> float:
        """Start the server; the seconds from process start to healthy."""
        log = Path(self.env["BENCH_DIR"]) / f"{self.name}.log"
        began = time.monotonic()
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command, env=os.environ | self.env, stdout=out, stderr=out
            )
        while True:
            if self.process.poll() is not None:
                sys.exit(f"{self.name} exited; see {log}")
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        return time.monotonic() - began

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)


Operation = Callable[[httpx.Client, Target, int], httpx.Response]


def api(target: Target, endpoint: str) -> str:
    return f"{target.prefix}/api/2.0/mlflow/{endpoint}"


def log_metric(client: httpx.Client, target: Target, i: int) -> httpx.Response:
    body = {"run_id": target.run_id, "key": "m", "value": i, "timestamp": i, "step": i}
    return client.post(api(target, "runs/log-metric"), json=body)


def log_batch(client: httpx.Client, target: Target, i: int) -> httpx.Response:
    metrics = [
        {"key": f"m{k}", "value": k, "timestamp": i, "step": i} for k in range(100)
    ]
    body = {"run_id": target.run_id, "metrics": metrics}
    return client.post(api(target, "runs/log-batch"), json=body)


def get_experiment(client: httpx.Client, target: Target, i: int) -> httpx.Response:
    params = {"experiment_id": target.experiment_id}
    return client.get(api(target, "experiments/get"), params=params)


def search_runs(client: httpx.Client, target: Target, i: int) -> httpx.Response:
    body = {"experiment_ids": [target.experiment_id], "max_results": 1000}
    return client.post(api(target, "runs/search"), json=body)


PAYLOAD = os.urandom(ARTIFACT_SIZE)


def artifact_url(target: Target, name: str) -> str:
    root = f"{target.prefix}/api/2.0/mlflow-artifacts/artifacts"
    return f"{root}/{target.artifact_path}/{name}"


def upload(client: httpx.Client, target: Target, i: int) -> httpx.Response:
    url = artifact_url(target, f"upload-{threading.get_ident()}-{i}.bin")
    return client.put(url, content=PAYLOAD)


def download(client: httpx.Client, target: Target, i: int) -> httpx.Response:
    with client.stream("GET", artifact_url(target, "fixed.bin")) as response:
        for _ in response.iter_bytes(1 << 20):
            pass
    return response


OPERATIONS: dict[str, Operation] = {
    "log-metric": log_metric,
    "log-batch (100)": log_batch,
    "experiments/get": get_experiment,
    "runs/search (1000 runs)": search_runs,
    "upload 50 MB": upload,
    "download 50 MB": download,
}


def prepare(target: Target, base: str, runs: int) -> None:
    """An experiment with ``runs`` runs, and the artifact to download."""
    with httpx.Client(base_url=base, headers=target.headers, timeout=120) as client:

        def call(endpoint: str, body: dict[str, object]) -> dict[str, str]:
            response = client.post(api(target, endpoint), json=body)
            response.raise_for_status()
            result: dict[str, str] = response.json()
            return result

        experiment = call("experiments/create", {"name": f"bench-{time.time_ns()}"})
        target.experiment_id = experiment["experiment_id"]
        for _ in range(runs):
            run = call("runs/create", {"experiment_id": target.experiment_id})
        target.run_id = run["run"]["info"]["run_id"]  # type: ignore[index]
        location = client.get(
            api(target, "experiments/get"),
            params={"experiment_id": target.experiment_id},
        ).json()["experiment"]["artifact_location"]
        target.artifact_path = location.split("mlflow-artifacts:/", 1)[1].strip("/")
        client.put(
            artifact_url(target, "fixed.bin"), content=PAYLOAD
        ).raise_for_status()


def drive(
    target: Target, base: str, operation: Operation, threads: int, seconds: float
) -> tuple[int, float, list[float]]:
    """Run ``operation`` from ``threads`` threads for ``seconds``."""
    latencies: list[float] = []
    failures = 0
    deadline = time.monotonic() + seconds
    lock = threading.Lock()

    def worker() -> None:
        nonlocal failures
        with httpx.Client(base_url=base, headers=target.headers, timeout=120) as client:
            i = 0
            while time.monotonic() < deadline:
                began = time.perf_counter()
                response = operation(client, target, i)
                elapsed = time.perf_counter() - began
                with lock:
                    latencies.append(elapsed)
                    failures += response.status_code != 200
                i += 1

    began = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        for future in [pool.submit(worker) for _ in range(threads)]:
            future.result()
    return failures, time.monotonic() - began, latencies


def percentile(values: list[float], q: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else values[0]
    )


def round_ratio(ours: list[float], theirs: list[float]) -> str:
    """The mean ratio of one round to the same round of the other, ± 2 SE.

    Rounds alternate between the servers, so round ``i`` of each ran at
    nearly the same time. A ratio of single rounds moves by about ±10% on a
    shared machine; twice the standard error of their mean tells a gap from
    that noise.
    """
    ratios = [a / b for a, b in zip(ours, theirs, strict=True)]
    error = 2 * statistics.stdev(ratios) / len(ratios) ** 0.5 if len(ratios) > 1 else 0
    return f"{statistics.mean(ratios):.2f} ±{error:.2f}"


def report_calls(calls: list[dict[str, Any]]) -> None:
    """The stand-in's calls per (credential, project), and the most in one TTL."""
    times: dict[tuple[str, str], list[float]] = {}
    for call in calls:
        times.setdefault((call["credential"], call["project"]), []).append(call["at"])
    print(f"\nSharingHub stand-in calls per (credential, project), TTL {CACHE_TTL} s:")
    for (credential, project), at in sorted(times.items()):
        most = max(sum(start <= t < start + CACHE_TTL for t in at) for start in at)
        print(f"  {credential} {project}: {len(at)}, at most {most} in any TTL")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # Short rounds, many of them: a shared machine's drift then falls on
    # every server alike. For the same time in all, rounds of 1 s gave here
    # half the standard error of rounds of 2 s.
    parser.add_argument("--seconds", type=float, default=1, help="per round")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--starts", type=int, default=3, help="timed, per server")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--threads", default="1,8")
    parser.add_argument(
        "--postgresql",
        action="store_true",
        help="keep each server's store in PostgreSQL instead of SQLite",
    )
    parser.add_argument(
        "--operations",
        default=",".join(OPERATIONS),
        help="comma-separated subset of: " + ", ".join(OPERATIONS),
    )
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-"))
    postgres = Postgres() if args.postgresql else None
    try:
        if postgres is not None:
            postgres.create()
        bench(args, workdir, postgres)
    finally:
        if postgres is not None:
            postgres.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def bench(args: argparse.Namespace, workdir: Path, postgres: Postgres | None) -> None:
    """Start the stand-in and the servers, load them, print the figures."""
    thread_counts = [int(t) for t in args.threads.split(",")]
    standin_port = free_port()
    (workdir / "standin.yaml").write_text(STANDIN_CONFIG)
    standin = subprocess.Popen(
        [
            str(BIN / "mlflow-sharinghub"),
            "standin",
            "--config",
            str(workdir / "standin.yaml"),
            "--port",
            str(standin_port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    standin_url = f"http://127.0.0.1:{standin_port}"

    targets, bases = [], {}
    for name in ("plain", "plain-gunicorn", "sharinghub"):
        port, data = free_port(), workdir / name
        data.mkdir()
        env = {"BENCH_DIR": str(workdir), "MLFLOW_DISABLE_TELEMETRY": "true"}
        database = (
            postgres.add_database(name.replace("-", "_"))
            if postgres is not None
            else f"sqlite:///{data}/mlflow.db"
        )
        store = [
            "--backend-store-uri",
            database,
            "--artifacts-destination",
            str(data / "mlartifacts"),
        ]
        plain = [
            str(BIN / "mlflow"),
            "server",
            "--port",
            str(port),
            "--workers",
            str(args.workers),
            *store,
        ]
        if name == "plain":
            opts = "--loop asyncio --http h11"
            target = Target(name, [*plain, "--uvicorn-opts", opts], env)
        elif name == "plain-gunicorn":
            opts = f"--workers {args.workers} --threads 8 -k gthread"
            target = Target(name, [*plain, "--gunicorn-opts", opts], env)
        else:
            env |= {
                "SHARINGHUB_URL": standin_url,
                "MLFLOW_DATA_DIR": str(data),
                "MLFLOW_BACKEND_STORE_URI": database,
                "MLFLOW_PORT": str(port),
                "MLFLOW_WORKERS": str(args.workers),
                "SHARINGHUB_CACHE_TTL": str(CACHE_TTL),
                "LOG_LEVEL": "WARNING",
            }
            target = Target(
                name,
                [str(BIN / "mlflow-sharinghub"), "server"],
                env,
                prefix="/bench/model/tracking",
                headers={"Authorization": "Bearer bench-token"},
            )
        bases[name] = f"http://127.0.0.1:{port}"
        targets.append(target)

    try:
        # Each start is timed with no other server running: a server started
        # beside the others would share the machine with their idle work
        # (plain MLflow's job runner polls). One start moves by ±2 s here,
        # so the servers start in turn, in alternating order, and the median
        # counts.
        starts: dict[str, list[float]] = {target.name: [] for target in targets}
        for round_ in range(args.starts):
            for target in targets if round_ % 2 == 0 else targets[::-1]:
                starts[target.name].append(target.start(bases[target.name]))
                target.stop()
        for target in targets:
            target.start_seconds = statistics.median(starts[target.name])
        for target in targets:
            target.start(bases[target.name])
            prepare(target, bases[target.name], args.runs)
        print(
            f"Store: {'PostgreSQL' if postgres else 'SQLite'}, {args.workers} workers"
        )
        report(targets, bases, thread_counts, args)
        report_calls(httpx.get(f"{standin_url}/_standin/calls").json())
    finally:
        for target in targets:
            target.stop()
        standin.terminate()


def report(
    targets: list[Target],
    bases: dict[str, str],
    thread_counts: list[int],
    args: argparse.Namespace,
) -> None:
    results: dict[tuple[str, int, str], tuple[int, float, list[float]]] = {}
    round_rates: dict[tuple[str, int, str], list[float]] = {}
    operations = {name: OPERATIONS[name] for name in args.operations.split(",")}
    for op_name, operation in operations.items():
        for threads in thread_counts:
            for round_ in range(args.rounds):
                order = targets if round_ % 2 == 0 else targets[::-1]
                for target in order:
                    failures, wall, latencies = drive(
                        target, bases[target.name], operation, threads, args.seconds
                    )
                    key = (op_name, threads, target.name)
                    before = results.get(key, (0, 0.0, []))
                    results[key] = (
                        before[0] + failures,
                        before[1] + wall,
                        before[2] + latencies,
                    )
                    round_rates.setdefault(key, []).append(len(latencies) / wall)

    columns = ("req/s", "p50 ms", "p99 ms", "fail", "vs plain", "vs fast")
    print(
        f"{'operation':26} {'thr':>3} {'server':15}",
        *(f"{c:>8}" for c in columns),
        "  rounds vs fast",
    )
    for op_name in operations:
        for threads in thread_counts:
            rates = {}
            for target in targets:
                failures, wall, latencies = results[(op_name, threads, target.name)]
                rates[target.name] = len(latencies) / wall
            for target in targets:
                failures, wall, latencies = results[(op_name, threads, target.name)]
                rate = rates[target.name]
                ratios, by_round = ("", ""), ""
                if target.name == "sharinghub":
                    ratios = (
                        f"{rate / rates['plain']:.2f}",
                        f"{rate / rates['plain-gunicorn']:.2f}",
                    )
                    by_round = round_ratio(
                        round_rates[(op_name, threads, target.name)],
                        round_rates[(op_name, threads, "plain-gunicorn")],
                    )
                p50, p99 = (percentile(latencies, q) * 1000 for q in (50, 99))
                print(
                    f"{op_name:26} {threads:>3} {target.name:15} {rate:8.1f} "
                    f"{p50:8.1f} {p99:8.1f} {failures:8d} {ratios[0]:>8} {ratios[1]:>8}"
                    f"  {by_round}"
                )
    print(f"\nStart to healthy, each server alone: median of {args.starts} starts.")
    print("server           start s   memory MiB after load")
    for target in targets:
        assert target.process is not None
        memory = tree_rss_mb(target.process.pid)
        print(f"{target.name:15} {target.start_seconds:8.2f} {memory:10.0f}")


if __name__ == "__main__":
    try:
        main()
    except BenchError as error:
        sys.exit(str(error))
