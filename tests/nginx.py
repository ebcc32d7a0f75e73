"""nginx on loopback, configured as the reference ingress, for end-to-end tests.

The reference deployment (see ``spec/configuration-reference.md``) puts
ingress-nginx in front of the server: ``location /mlflow/`` strips the prefix
and sends ``X-Script-Name: /mlflow``, bodies up to 10 GB pass
(``proxy-body-size: 10g``), and SharingHub owns the rest of the host. This
module writes that configuration into a temporary directory and runs Debian's
nginx on it in the foreground; pid file, logs and temporary files stay in that
directory, so no root path is touched.

The forwarded headers are those ingress-nginx sends: ``Host`` and
``X-Forwarded-Host`` are the host the client asked for (``$best_http_host``),
``X-Forwarded-Proto`` its scheme, ``X-Real-IP`` and ``X-Forwarded-For`` its
address. Connections to the upstreams are HTTP/1.1 with keep-alive and the
responses are not buffered, as ingress-nginx's defaults have it.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from servers import Process, free_port

NGINX = Path("/usr/sbin/nginx")
TEMP_PATHS = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")


def nginx_path() -> Path:
    """Debian's nginx; fails the test with the install step if it is missing."""
    if not NGINX.exists() or shutil.which(str(NGINX)) is None:
        pytest.fail(
            f"nginx is not installed at {NGINX}: the sub-path tests put it in "
            "front of the server as the reference ingress. Install it with "
            "`apt-get install --no-install-recommends nginx-light` (.ci/run does it).",
            pytrace=False,
        )
    return NGINX


def _headers(script_name: str | None) -> str:
    lines = [
        "proxy_set_header Host $http_host;",
        "proxy_set_header X-Forwarded-Host $http_host;",
        "proxy_set_header X-Forwarded-Proto $scheme;",
        "proxy_set_header X-Real-IP $remote_addr;",
        "proxy_set_header X-Forwarded-For $remote_addr;",
        'proxy_set_header Connection "";',
    ]
    if script_name is not None:
        lines.append(f"proxy_set_header X-Script-Name {script_name};")
    return "\n            ".join(lines)


class Nginx:
    """nginx as the reference ingress: ``/mlflow/`` to the server, ``/`` to SharingHub.

    ``public_host`` is the ``server_name``, the host the ingress rule is for.
    """

    def __init__(self, *, server_port: int, sharinghub_port: int, public_host: str):
        self.binary = nginx_path()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Outside pytest's temporary directory, which is private to the user
        # running the tests: nginx's workers run as nobody when that is root.
        self.root = Path(tempfile.mkdtemp(prefix="mlflow-sharinghub-nginx-"))
        self.root.chmod(0o755)
        self.config = self.root / "nginx.conf"
        self.config.write_text(
            self._config(server_port, sharinghub_port, public_host), encoding="utf-8"
        )
        args = [
            str(self.binary),
            "-p",
            f"{self.root}/",
            "-c",
            str(self.config),
            "-e",
            str(self.root / "error.log"),
            "-g",
            "daemon off;",
        ]
        self.process = Process(args, {}, self.root / "stdout.log")

    def _config(self, server_port: int, sharinghub_port: int, public_host: str) -> str:
        temp_paths = "\n    ".join(
            f"{name}_temp_path {self.root / name};" for name in TEMP_PATHS
        )
        return f"""\
{_user_directive()}
worker_processes 1;
pid {self.root / "nginx.pid"};
error_log {self.root / "error.log"} notice;

events {{
    worker_connections 256;
}}

http {{
    access_log {self.root / "access.log"};
    {temp_paths}

    server {{
        listen 127.0.0.1:{self.port};
        server_name {public_host};

        location /_nginx/ready {{
            return 200 "ok";
        }}

        location /mlflow/ {{
            # The annotation proxy-body-size: 10g. The body is buffered to disk
            # before it goes upstream (proxy_request_buffering on), as
            # ingress-nginx does by default: the reference annotations do not turn
            # it off, so a 1 GB upload takes the same path as in production.
            client_max_body_size 10g;
            proxy_request_buffering on;
            proxy_buffering off;
            proxy_http_version 1.1;
            proxy_read_timeout 60s;
            proxy_send_timeout 60s;
            {_headers("/mlflow")}
            rewrite ^/mlflow/(.*)$ /$1 break;
            proxy_pass http://127.0.0.1:{server_port};
        }}

        location / {{
            proxy_buffering off;
            proxy_http_version 1.1;
            {_headers(None)}
            proxy_pass http://127.0.0.1:{sharinghub_port};
        }}
    }}
}}
"""

    def start(self) -> None:
        self.process.start(f"{self.url}/_nginx/ready")

    def stop(self) -> None:
        self.process.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _user_directive() -> str:
    """Workers as nobody when the tests run as root; nginx's default otherwise."""
    if os.geteuid() != 0:
        return ""
    nobody = pwd.getpwnam("nobody")
    return f"user {nobody.pw_name} {grp.getgrgid(nobody.pw_gid).gr_name};"


@contextmanager
def resolve(host: str, port: int, target_port: int) -> Iterator[None]:
    """Resolve ``host:port`` to ``127.0.0.1:target_port`` in this process.

    The test process's stand-in for a DNS entry of the public host name, as
    Chromium's ``--host-resolver-rules`` is the browser's: every other name
    resolves as before, and the answer is always loopback.
    """
    original = socket.getaddrinfo

    def getaddrinfo(name: Any, service: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if (
            isinstance(name, str)
            and name.lower() == host
            and service in (port, str(port))
        ):
            return original("127.0.0.1", target_port, *args, **kwargs)
        return original(name, service, *args, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield
