"""Servers on loopback for the bench scripts: processes, PostgreSQL, memory.

Self-contained on purpose: the bench scripts do not import the test suite.
Every server binds to 127.0.0.1 on a free port and keeps its output in a log
file of the run's work directory.
"""

from __future__ import annotations

import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx

BIN = Path(sys.executable).parent
POSTGRES_ROOT = Path("/usr/lib/postgresql")


class BenchError(RuntimeError):
    """A server did not start or a command failed; the message says which."""


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants, in MiB."""
    total, pending = 0, [pid]
    while pending:
        current = pending.pop()
        try:
            status = Path(f"/proc/{current}/status").read_text()
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


class Service:
    """A command run in the background until ``stop``; restartable."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log: Path):
        self.name = name
        self.args = args
        self.env = os.environ | env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"{self.name} is not running")
        return self.process.pid

    def start(self, ready_url: str, timeout: float = 120) -> float:
        """Start and wait until ``ready_url`` answers 200; the seconds it took."""
        began = time.monotonic()
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        while time.monotonic() - began < timeout:
            if self.process.poll() is not None:
                raise BenchError(f"{self.name} exited; see {self.log}")
            try:
                if httpx.get(ready_url, timeout=2).status_code == 200:
                    return time.monotonic() - began
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise BenchError(f"{self.name} did not start within {timeout}s; see {self.log}")

    def stop(self) -> None:
        """Terminate the process (and wait for it); a no-op when it is not running."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


class Postgres:
    """A throw-away PostgreSQL cluster on a free loopback port.

    ``initdb`` refuses to run as root: as root, the cluster's directory (a
    temporary directory of its own, which ``nobody`` can reach) is given to
    ``nobody`` and the PostgreSQL commands run as that user.
    """

    user = "mlflow"

    def __init__(self) -> None:
        found = sorted(POSTGRES_ROOT.glob("*/bin/pg_ctl"), key=_major)
        if not found:
            raise BenchError(
                f"no PostgreSQL server binaries under {POSTGRES_ROOT}: install the "
                "'postgresql' package, or keep the store in SQLite"
            )
        self.binaries = found[-1].parent
        self.port = free_port()
        self.password = f"pg-{uuid.uuid4().hex}"
        self.root = Path(tempfile.mkdtemp(prefix="bench-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.owner = pwd.getpwnam("nobody") if os.geteuid() == 0 else None

    def create(self) -> None:
        """Make the cluster and start it."""
        password_file = self.root / "password"
        password_file.write_text(self.password)
        if self.owner is not None:
            for path in (self.root, password_file):
                os.chown(path, self.owner.pw_uid, self.owner.pw_gid)
        self._run(
            "initdb",
            f"--pgdata={self.data}",
            f"--username={self.user}",
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "--no-sync",
        )
        password_file.unlink()
        self.start()

    def add_database(self, database: str) -> str:
        """Create a database in the running cluster; its URI for psycopg 3."""
        self._run(
            "psql",
            f"--host={self.root}",
            f"--port={self.port}",
            f"--username={self.user}",
            "--dbname=postgres",
            f"--command=CREATE DATABASE {database}",
            env={"PGPASSWORD": self.password},
        )
        credentials = f"{self.user}:{self.password}"
        address = f"127.0.0.1:{self.port}"
        return f"postgresql+psycopg://{credentials}@{address}/{database}"

    def start(self) -> None:
        options = " ".join(
            [
                f"-p {self.port}",
                "-c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={shlex.quote(str(self.root))}",
                "-c max_connections=200",
            ]
        )
        self._run(
            "pg_ctl",
            f"--pgdata={self.data}",
            f"--log={self.log}",
            f"--options={options}",
            "--wait",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run("pg_ctl", f"--pgdata={self.data}", f"--mode={mode}", "stop")

    def remove(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def _run(self, program: str, *args: str, env: dict[str, str] | None = None) -> None:
        command = [str(self.binaries / program), *args]
        if self.owner is not None:
            command = ["runuser", "-u", self.owner.pw_name, "--", *command]
        done = subprocess.run(
            command,
            cwd=self.root,
            env=os.environ | (env or {}),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise BenchError(f"{program} failed:\n{done.stdout}{done.stderr}")


def _major(pg_ctl: Path) -> int:
    name = pg_ctl.parent.parent.name
    return int(name) if name.isdigit() else 0
