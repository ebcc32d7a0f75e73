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


def test_mlflows_handlers_leave_the_loop_unless_every_store_is_local(
    tmp_path: Path,
) -> None:
    sqlite, postgres = f"sqlite:///{tmp_path}/mlflow.db", "postgresql://db/mlflow"
    cases = {
        "sqlite and a directory": {"backend": sqlite, "artifacts": str(tmp_path)},
        "sqlite and a file URI": {"backend": sqlite, "artifacts": f"file://{tmp_path}"},
        "postgresql": {"backend": postgres, "artifacts": str(tmp_path)},
        "s3": {"backend": sqlite, "artifacts": "s3://bucket"},
        "no artifacts named": {"backend": sqlite},
        "no store named": {"artifacts": str(tmp_path)},
        "registry elsewhere": {
            "backend": sqlite,
            "artifacts": str(tmp_path),
            "registry": postgres,
        },
    }
    out = run_python(
        f"""
        import os
        from mlflow.server import constants
        from mlflow_sharinghub.app import stores_on_this_machine

        names = {{
            "backend": constants.BACKEND_STORE_URI_ENV_VAR,
            "artifacts": constants.ARTIFACTS_DESTINATION_ENV_VAR,
            "registry": constants.REGISTRY_STORE_URI_ENV_VAR,
        }}
        for case, stores in {cases!r}.items():
            for name in names.values():
                os.environ.pop(name, None)
            for store, uri in stores.items():
                os.environ[names[store]] = uri
            print(case, "->", stores_on_this_machine())
        """
    )

    assert out.splitlines() == [
        "sqlite and a directory -> True",
        "sqlite and a file URI -> True",
        "postgresql -> False",
        "s3 -> False",
        "no artifacts named -> False",
        "no store named -> False",
        "registry elsewhere -> False",
    ]
