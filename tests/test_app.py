"""The app factory's changes to MLflow's process, each checked in a fresh one."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path


def run_python(code: str, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=os.environ | (env or {}),
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_search_runs_no_longer_runs_the_basic_auth_module_each_time() -> None:
    out = run_python(
        """
        from mlflow_sharinghub.app import block_basic_auth_app

        def attempt():
            try:
                from mlflow.server import auth  # as MLflow's search handler does
            except ImportError as error:
                return f"{type(error).__name__}: {error}"
            return "imported"

        print(attempt())
        block_basic_auth_app()
        print(attempt())
        """
    )
    before, after = out.splitlines()

    # Before: MLflow's module ran until it found Flask-WTF missing.
    assert "Flask-WTF" in before
    # After: refused at once, without running any of it.
    assert after == (
        "ModuleNotFoundError: import of mlflow.server.auth halted; None in sys.modules"
    )


def test_a_worker_keeps_its_lasting_objects_out_of_collections(
    tmp_path: Path,
) -> None:
    out = run_python(
        """
        import gc
        from mlflow_sharinghub.app import create_app

        create_app()
        print(gc.get_freeze_count(), len(gc.get_objects()))
        """,
        # Nothing is asked of SharingHub while the app is built.
        env={"SHARINGHUB_URL": "http://127.0.0.1:9", "MLFLOW_DATA_DIR": str(tmp_path)},
    )
    frozen, tracked = (int(count) for count in out.split())

    assert frozen > 100_000
    assert tracked < frozen // 10
