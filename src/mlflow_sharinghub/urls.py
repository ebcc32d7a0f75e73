"""The URL a browser sees, rebuilt behind a proxy.

The reference ingress strips ``/mlflow`` from the path and sends
``X-Script-Name: /mlflow``, with ``X-Forwarded-Proto`` and
``X-Forwarded-Host``. Those headers are honoured only from peers listed in
``MLFLOW_TRUSTED_PROXIES`` (``*``, the default, trusts every peer, which is
right when the server is reachable only through its ingress). They shape the
URLs the server builds for browsers (login redirects, links); they never
change who the caller is or which project a request reaches.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote

from starlette.types import Scope

_PREFIX = re.compile(r"(/[A-Za-z0-9._~-]+)*")
_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")


@dataclass(frozen=True)
class ExternalBase:
    """Scheme, host and path prefix of the server as the browser reaches it."""

    scheme: str
    host: str
    prefix: str

    def url(self, path: str, query: str = "") -> str:
        quoted = quote(path, safe="/:@-._~!$&()*+,;=")
        full = f"{self.scheme}://{self.host}{self.prefix}{quoted}"
        return f"{full}?{query}" if query else full


class ProxyTrust:
    """Which peers' ``X-Script-Name`` and ``X-Forwarded-*`` headers count."""

    def __init__(self, trusted: list[str]) -> None:
        self._everyone = "*" in trusted
        self._networks = [
            ipaddress.ip_network(n, strict=False) for n in trusted if n != "*"
        ]

    def trusts(self, peer: str | None) -> bool:
        if self._everyone:
            return True
        try:
            address = ipaddress.ip_address(peer or "")
        except ValueError:
            return False
        return any(address in network for network in self._networks)

    def external_base(self, scope: Scope, headers: dict[bytes, bytes]) -> ExternalBase:
        scheme = str(scope.get("scheme", "http"))
        host = _first(headers.get(b"host"))
        prefix = ""
        client = scope.get("client")
        if self.trusts(client[0] if client else None):
            proto = _first(headers.get(b"x-forwarded-proto")).lower()
            scheme = proto if proto in ("http", "https") else scheme
            host = _first(headers.get(b"x-forwarded-host")) or host
            script_name = _first(headers.get(b"x-script-name")).rstrip("/")
            prefix = script_name if _PREFIX.fullmatch(script_name) else ""
        if not _HOST.fullmatch(host):
            server = scope.get("server") or ("localhost", None)
            host = server[0] if server[1] is None else f"{server[0]}:{server[1]}"
        return ExternalBase(scheme, host, prefix)


def _first(value: bytes | None) -> str:
    """The first of a comma-separated header value, decoded leniently."""
    if not value:
        return ""
    return value.decode("latin-1").split(",", 1)[0].strip()
