"""The MLflow UI as a SharingHub project page.

MLflow's own page is served untouched except for two tags that load this
package's stylesheet and script (``static/ui.css``, ``static/ui.js``), served
beside the UI at ``<project>/tracking/sharinghub/``. The tags are constant:
nothing of the request goes into MLflow's page. The script asks
``sharinghub/context`` for the project's identity and the caller's access,
then shows them, with the links back to SharingHub, above the UI; the
stylesheet hides what this server refuses (AI gateway, MCP registry,
assistant) and, for callers who only read, the buttons that would write.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

from mlflow_sharinghub.access import LEVEL_NAMES, can_write
from mlflow_sharinghub.sharinghub import ProjectAccess

OWN_ROOT = "/sharinghub/"
CONTEXT_PATH = OWN_ROOT + "context"
STATIC_DIR = Path(__file__).with_name("static")
_ASSETS = {
    "ui.css": "text/css; charset=utf-8",
    "ui.js": "text/javascript; charset=utf-8",
}
_GATEWAY_LISTING = "/ajax-api/2.0/mlflow/gateway-proxy"
UI_TAGS = (
    b'<link rel="stylesheet" href="sharinghub/ui.css">'
    b'<script src="sharinghub/ui.js"></script>'
)


def inject_ui(page: bytes) -> bytes:
    """MLflow's index.html with this package's stylesheet and script in its head.

    The script must run before MLflow's deferred bundle, so it goes in the
    head; a page without a head is left as it is.
    """
    end = page.lower().find(b"</head>")
    if end == -1:
        return page
    return page[:end] + UI_TAGS + page[end:]


def ui_answer(method: str, path: str, query: bytes) -> dict[str, Any] | None:
    """This server's own answer to a UI request for a feature it does not offer.

    MLflow's runs page asks for the AI gateway's endpoints unprompted (for
    prompt evaluation); a refusal would greet every visit with an error
    toast, so it gets the truth instead: there are none.
    """
    if method != "GET" or path != _GATEWAY_LISTING:
        return None
    asked = parse_qs(query.decode("latin-1")).get("gateway_path")
    return {"endpoints": []} if asked == ["api/2.0/endpoints/"] else None


@cache
def asset(name: str) -> tuple[bytes, str] | None:
    """The content and media type of one of this package's UI files."""
    media_type = _ASSETS.get(name)
    if media_type is None:
        return None
    return (STATIC_DIR / name).read_bytes(), media_type


def project_context(
    *,
    access: ProjectAccess,
    level: int,
    anonymous: bool,
    page_url: str,
    home_url: str,
    sharinghub_url: str,
    collection: str,
) -> dict[str, Any]:
    """What the UI script shows: the project, the caller's access, the links.

    ``redirect_uri`` is the last parameter of the login and logout URLs, so
    the script can append the page's own route (``#/experiments/1``) to it.
    """
    read_only = anonymous or not can_write(level=level)
    project_page = f"{sharinghub_url}/#/{quote(collection)}/{quote(access.path)}"
    return {
        "project": {"id": access.id, "name": access.name, "path": access.path},
        "access_level": level,
        "access": "anonymous" if anonymous else LEVEL_NAMES.get(level, str(level)),
        "anonymous": anonymous,
        "read_only": read_only,
        "sharinghub_project_url": project_page,
        "home_url": home_url,
        "login_url": auth_url(sharinghub_url, "login", page_url),
        "logout_url": auth_url(sharinghub_url, "logout", page_url),
    }


def auth_url(sharinghub_url: str, action: str, return_to: str) -> str:
    """SharingHub's login or logout, coming back to ``return_to``."""
    query = urlencode({"redirect_uri": return_to})
    return f"{sharinghub_url}/api/auth/{action}?{query}"
