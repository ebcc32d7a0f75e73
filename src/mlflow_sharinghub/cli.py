"""The ``mlflow-sharinghub`` command.

- ``server``: MLflow's own ``mlflow server`` with this product's settings:
  the ``sharinghub`` app, workspaces on, artifacts proxied, the job runner off.
  Every setting has a flag, derived from the settings registry; a flag wins
  over the environment variable of the same setting.
- ``standin``: the local SharingHub stand-in, from a YAML file.
- ``demo``: the stand-in with demo projects and users, and the server.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import threading
from collections.abc import Sequence

from mlflow_sharinghub.app import (
    WORKSPACE_STORE_URI,
    configure_logging,
    prepare_mlflow_environment,
)
from mlflow_sharinghub.errors import ConfigurationError
from mlflow_sharinghub.metrics import fresh_directory, remove_directory
from mlflow_sharinghub.settings import Settings, env_name, load_settings, mask_uri
from mlflow_sharinghub.sqlite import use_write_ahead_log
from mlflow_sharinghub.workspaces import BACKEND_STORE_ENV

logger = logging.getLogger("mlflow_sharinghub.app")


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for field, info in Settings.model_fields.items():
        parser.add_argument(
            "--" + field.replace("_", "-"),
            dest=field,
            metavar="VALUE",
            help=f"{info.description} [{env_name(field)}]",
        )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mlflow-sharinghub", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    server = commands.add_parser("server", help="run the MLflow server")
    _add_setting_flags(server)

    standin = commands.add_parser("standin", help="run the local SharingHub stand-in")
    standin.add_argument(
        "--config", required=True, help="YAML file of projects and users"
    )
    standin.add_argument("--host", default="127.0.0.1")
    standin.add_argument("--port", type=int, default=8000)

    demo = commands.add_parser(
        "demo", help="run the stand-in with demo data, and the server"
    )
    demo.add_argument(
        "--port", type=int, default=5000, help="port of the MLflow server"
    )
    demo.add_argument("--standin-port", type=int, default=8000)
    demo.add_argument(
        "--data-dir", default="data", help="where the demo keeps its data"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        if args.command == "server":
            overrides = {f: getattr(args, f) for f in Settings.model_fields}
            serve(overrides)
        elif args.command == "standin":
            from mlflow_sharinghub.standin import run

            run(args.config, host=args.host, port=args.port)
        else:
            demo(port=args.port, standin_port=args.standin_port, data_dir=args.data_dir)
    except ConfigurationError as exc:
        sys.exit(f"mlflow-sharinghub: {exc}")


def serve(overrides: dict[str, str | None]) -> None:
    """Check the settings, log them, and hand over to ``mlflow server``."""
    for field, value in overrides.items():
        if value is not None:
            os.environ[env_name(field)] = value
    settings = load_settings()
    configure_logging(settings.log_level)
    if not settings.backend_store_uri or not settings.artifacts_destination:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    prepare_mlflow_environment(settings)
    use_write_ahead_log(settings.store_uri)
    # MLflow builds its stores before it exports this variable to its workers,
    # and the workspace provider reads it there too.
    os.environ[BACKEND_STORE_ENV] = settings.engine_store_uri

    logger.info(
        "SharingHub integration enabled: %s, collection %s",
        settings.sharinghub_url,
        settings.sharinghub_stac_collection,
    )
    logger.info("Backend store: %s", mask_uri(settings.store_uri))
    logger.info("Artifacts destination: %s", mask_uri(settings.artifacts))
    logger.info("Listening on http://%s:%d/", settings.host, settings.port)

    from mlflow.cli import cli

    # Shared by the workers that MLflow starts; emptied at each start.
    metrics_directory = fresh_directory()
    try:
        cli.main(args=mlflow_server_arguments(settings), prog_name="mlflow")
    finally:
        remove_directory(metrics_directory)


def mlflow_server_arguments(settings: Settings) -> list[str]:
    """The ``mlflow server`` command line that runs this product."""
    return [
        "server",
        "--app-name=sharinghub",
        f"--backend-store-uri={settings.engine_store_uri}",
        f"--artifacts-destination={settings.artifacts}",
        "--serve-artifacts",
        "--enable-workspaces",
        f"--workspace-store-uri={WORKSPACE_STORE_URI}",
        f"--host={settings.host}",
        f"--port={settings.port}",
        f"--workers={settings.workers}",
        f"--allowed-hosts={','.join(settings.host_allowlist)}",
        f"--cors-allowed-origins={','.join(settings.origin_allowlist)}",
        "--x-frame-options=NONE",
    ]


def demo(*, port: int, standin_port: int, data_dir: str) -> None:
    """Run the stand-in with the demo projects in a thread, then the server."""
    from mlflow_sharinghub.standin import DEMO_CONFIG, load_config, run

    config = load_config(DEMO_CONFIG)
    standin_url = f"http://127.0.0.1:{standin_port}"
    thread = threading.Thread(
        target=run, args=(DEMO_CONFIG,), kwargs={"port": standin_port}, daemon=True
    )
    thread.start()

    server_url = f"http://127.0.0.1:{port}"
    lines = [
        f"SharingHub stand-in: {standin_url}",
        f"Browser login: {standin_url}/api/auth/login",
        "Tracking URIs (export MLFLOW_TRACKING_URI=...):",
    ]
    for project in config.projects:
        lines.append(f"  {server_url}/{project.path}/tracking/   ({project.name})")
    lines.append("Tokens (export MLFLOW_TRACKING_TOKEN=...):")
    for user in config.users:
        rights = ", ".join(
            f"project {p}: level {lvl}" for p, lvl in user.access.items()
        )
        lines.append(f"  {user.token}   ({user.name}: {rights})")
    print("\n".join(lines), flush=True)

    serve(
        {
            "sharinghub_url": standin_url,
            "sharinghub_auth_default_token": "true",
            "port": str(port),
            "data_dir": data_dir,
            "workers": "2",
        }
    )
