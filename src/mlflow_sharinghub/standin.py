"""A local SharingHub stand-in that answers as the API contract says.

It serves ``/api/check``, ``/api/auth/info``, ``/api/auth/login``,
``/api/auth/logout`` and the STAC item listings from a YAML file of projects and
users (see ``demo.yaml``), so the demo and the tests run without GitLab. A
caller is identified in the contract's order: query ``gitlab_token``, header
``X-Gitlab-Token``, the signed session cookie, the default token, the empty
token in public mode. ``Authorization`` is ignored, as SharingHub ignores it.

The control API, for tests (bind the stand-in to loopback only):

- ``GET /_standin/calls``: the ``/api/check`` calls so far, oldest first, each
  ``{"credential": "token:<t>" | "cookie:<t>" | "default" | "none",
  "project": <as asked>, "at": <seconds of time.monotonic()>}``.
- ``POST /_standin/reset``: forget the recorded calls.
- ``POST /_standin/delay`` with ``{"seconds": 1.5}``: answer every
  ``/api/check`` that much later; ``0`` stops it.
- ``PUT /_standin/users/{token}`` with ``{"name": ..., "access": {"42": 3}}``:
  add or replace a user. ``DELETE /_standin/users/{token}`` revokes the token.
- ``PUT /_standin/projects/{id}`` with a project as in the YAML: add or replace.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import html
import logging
import secrets
import time
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar
from urllib.parse import parse_qs, urlsplit

import uvicorn
import yaml
from itsdangerous import BadSignature, URLSafeSerializer
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    model_validator,
)
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mlflow_sharinghub.errors import ConfigurationError

logger = logging.getLogger(__name__)

DEMO_CONFIG = Path(__file__).with_name("demo.yaml")
"""The demo projects and users shipped with the package."""

_NO_CREDENTIALS = "Missing token, either use login, or pass it as header or query"
_DEFAULT_ONLY = (
    "Not authenticated, but server default token is enabled. "
    "Missing user token, either use login, or pass it as header or query"
)
_BAD_REDIRECT = "redirect_uri must be an absolute http(s) URL or a path"
_ITEM_DATETIME = "2024-01-01T00:00:00Z"
# SharingHub links a tracking URI only from the items of its AI-model collection.
_AI_MODEL = "ai-model"
_READ_ONLY = 2
_M = TypeVar("_M", bound=BaseModel)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Project(_Model):
    """A GitLab project as SharingHub shows it."""

    id: int = Field(gt=0)
    path: str = Field(pattern=r"^[\w.-]+(/[\w.-]+)+$")
    name: str = Field(min_length=1)
    topics: tuple[str, ...] = ()
    public: bool = False
    description: str = ""


class User(_Model):
    """A GitLab user: a display name and an access level (1-4) per project id."""

    name: str = Field(min_length=1)
    access: dict[int, Annotated[int, Field(ge=1, le=4)]] = Field(default_factory=dict)


class UserEntry(User):
    """A user as written in the YAML file, with the token that identifies them."""

    token: str = Field(min_length=1)


class _Delay(_Model):
    seconds: float = Field(ge=0, le=600)


class StandinConfig(_Model):
    """The stand-in's YAML file, validated."""

    collections: dict[str, str] = Field(
        default_factory=lambda: {
            "ai-model": "sharinghub:aimodel",
            "dataset": "sharinghub:dataset",
        }
    )
    default_token: str | None = Field(None, min_length=1)
    public_mode: bool = False
    session_secret: SecretStr | None = None
    session_cookie: str = Field("sharinghub-session", pattern=r"^[\w.-]+$")
    mlflow_url: str = "http://127.0.0.1:5000"
    gitlab_url: str = "https://gitlab.example.com"
    projects: list[Project] = Field(default_factory=list)
    users: list[UserEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_references(self) -> Self:
        ids = [str(project.id) for project in self.projects]
        paths = [project.path.casefold() for project in self.projects]
        for label, values in (("project id", ids), ("project path", paths)):
            if duplicates := {value for value in values if values.count(value) > 1}:
                raise ValueError(f"duplicate {label}: {sorted(duplicates)}")

        tokens = [user.token for user in self.users]
        if clashes := [u.name for u in self.users if tokens.count(u.token) > 1]:
            raise ValueError(f"users {clashes} share one token")

        for user in self.users:
            if unknown := {str(i) for i in user.access} - set(ids):
                raise ValueError(
                    f"user {user.name} has access to unknown {sorted(unknown)}"
                )
        return self


def load_config(path: str | Path) -> StandinConfig:
    """Read and validate a stand-in YAML file; raise ConfigurationError if bad."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        return StandinConfig.model_validate(raw if raw is not None else {})
    except OSError as exc:
        raise ConfigurationError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigurationError(f"{path}: not valid YAML: {exc}") from None
    except ValidationError as exc:
        raise ConfigurationError(f"{path}: {_describe(exc)}") from None


def _describe(error: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(map(str, item['loc'])) or 'top level'}: {item['msg']}"
        for item in error.errors()
    )


class StandinState:
    """What the stand-in knows and what it has been asked, for one app.

    Handlers run on the server's single event loop and never await between
    reading and changing this state, so it needs no lock.
    """

    def __init__(self, config: StandinConfig) -> None:
        self.config = config
        self.projects = {project.id: project for project in config.projects}
        self.users = {u.token: User(name=u.name, access=u.access) for u in config.users}
        self.calls: list[dict[str, str | float]] = []
        self.delay = 0.0
        secret = config.session_secret
        key = secret.get_secret_value() if secret else secrets.token_urlsafe(32)
        self.signer = URLSafeSerializer(key, salt="sharinghub-session")

    def access_level(self, token: str, project: Project) -> int:
        """SharingHub's 0-4 access level of ``token`` on ``project``."""
        user = self.users.get(token)
        granted = user.access.get(project.id, 0) if user else 0
        return max(granted, _READ_ONLY if project.public else 0)

    def find(self, reference: str) -> Project | None:
        """The project with this numeric id or (case-insensitive) full path."""
        if reference.isascii() and reference.isdigit():
            return self.projects.get(int(reference))
        wanted = reference.casefold()
        projects = self.projects.values()
        return next((p for p in projects if p.path.casefold() == wanted), None)

    def visible(self, token: str, topic: str) -> list[tuple[Project, int]]:
        """The projects carrying ``topic`` that ``token`` sees, by path."""
        projects = sorted(self.projects.values(), key=lambda p: p.path.casefold())
        levels = [(p, self.access_level(token, p)) for p in projects]
        return [(p, level) for p, level in levels if level and topic in p.topics]

    def categories(self, project: Project) -> list[str]:
        """Ids of the collections whose topic ``project`` carries."""
        collections = self.config.collections.items()
        return [name for name, topic in collections if topic in project.topics]

    def session_token(self, cookie: str | None) -> str | None:
        """The token a session cookie holds, or None if absent or forged."""
        try:
            token = self.signer.loads(cookie) if cookie else None
        except BadSignature:
            return None
        return token if isinstance(token, str) and token else None


def _state(request: Request) -> StandinState:
    state = request.app.state.standin
    if not isinstance(state, StandinState):
        raise TypeError("the stand-in app has no StandinState")
    return state


def _credential(request: Request, state: StandinState) -> tuple[str, str] | None:
    """The caller's token and how it is recorded, or None when there is none."""
    if token := request.query_params.get("gitlab_token"):
        return token, f"token:{token}"
    if token := request.headers.get("x-gitlab-token"):
        return token, f"token:{token}"
    cookie = request.cookies.get(state.config.session_cookie)
    if token := state.session_token(cookie):
        return token, f"cookie:{token}"
    if state.config.default_token:
        return state.config.default_token, "default"
    return ("", "none") if state.config.public_mode else None


def _require_token(credential: tuple[str, str] | None, state: StandinState) -> str:
    if credential is None:
        raise HTTPException(401, _NO_CREDENTIALS)
    token = credential[0]
    if token not in ("", state.config.default_token, *state.users):
        gitlab = state.config.gitlab_url.rstrip("/")
        raise HTTPException(
            401, f"HTTP 401 | POST {gitlab}/api/graphql: 401 Unauthorized"
        )
    return token


async def _check(request: Request) -> Response:
    state = _state(request)
    reference = request.path_params["project"]
    credential = _credential(request, state)
    label = credential[1] if credential else "none"
    state.calls.append(
        {"credential": label, "project": reference, "at": time.monotonic()}
    )
    if state.delay:
        await asyncio.sleep(state.delay)

    token = _require_token(credential, state)
    if not reference:
        raise HTTPException(400)
    project = state.find(reference)
    level = state.access_level(token, project) if project else 0
    if project is None or level == 0:
        raise HTTPException(404)

    categories = state.categories(project)
    if not categories:
        raise HTTPException(500, f"Category not found in {list(project.topics)}")
    if request.query_params.get("info", "").lower() not in ("true", "1", "yes", "on"):
        return Response(status_code=200)
    body = {"id": project.id, "name": project.name, "path": project.path}
    return JSONResponse(body | {"categories": categories, "access_level": level})


async def _auth_info(request: Request) -> Response:
    state = _state(request)
    credential = _credential(request, state)
    if credential is None or credential[1] == "none":
        raise HTTPException(401, _NO_CREDENTIALS)
    if credential[0] == state.config.default_token:
        raise HTTPException(401, _DEFAULT_ONLY)
    return JSONResponse({"access_token": credential[0]})


def _safe_redirect(value: str | None) -> str:
    if not value:
        return "/"
    parts = urlsplit(value)
    web_url = parts.scheme in ("http", "https") and bool(parts.netloc)
    local_path = not parts.scheme and not parts.netloc and value.startswith("/")
    # Browsers read a backslash as a slash, so "/\evil.example" leaves the site.
    if value.isprintable() and "\\" not in value and (web_url or local_path):
        return value
    raise HTTPException(400, _BAD_REDIRECT)


def _login_page(request: Request, redirect: str, error: str = "") -> HTMLResponse:
    action = html.escape(request.url.path)
    hidden = (
        f'<input type="hidden" name="redirect_uri" value="{html.escape(redirect)}">'
    )
    buttons = "".join(
        f'<form method="post" action="{action}">{hidden}<button name="token" '
        f'value="{html.escape(token)}">Sign in as {html.escape(user.name)}</button>'
        "</form>"
        for token, user in sorted(_state(request).users.items())
    )
    alert = f'<p role="alert">{html.escape(error)}</p>' if error else ""
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        "<title>SharingHub stand-in: sign in</title></head><body>"
        f"<h1>SharingHub stand-in</h1>{alert}"
        f'<form method="post" action="{action}">{hidden}<label>GitLab token '
        '<input name="token" type="password" required></label>'
        f'<button type="submit">Sign in</button></form>{buttons}</body></html>'
    )
    return HTMLResponse(page, status_code=401 if error else 200)


async def _login(request: Request) -> Response:
    state = _state(request)
    if request.method == "GET":
        redirect = _safe_redirect(request.query_params.get("redirect_uri"))
        return _login_page(request, redirect)

    form = parse_qs((await request.body()).decode("utf-8", "replace"))
    redirect = _safe_redirect(form.get("redirect_uri", [""])[0])
    token = form.get("token", [""])[0]
    user = state.users.get(token)
    if user is None:
        return _login_page(request, redirect, "Unknown token.")

    logger.info("stand-in session opened for user %s", user.name)
    response = RedirectResponse(redirect, status_code=303)
    cookie = state.config.session_cookie
    response.set_cookie(
        cookie, state.signer.dumps(token), httponly=True, samesite="lax"
    )
    return response


async def _logout(request: Request) -> Response:
    redirect = _safe_redirect(request.query_params.get("redirect_uri"))
    response = RedirectResponse(redirect, status_code=303)
    response.delete_cookie(_state(request).config.session_cookie, httponly=True)
    return response


def _cursor(path: str) -> str:
    return base64.urlsafe_b64encode(path.casefold().encode()).decode()


def _uncursor(cursor: str) -> str:
    try:
        return base64.b64decode(cursor, altchars=b"-_", validate=True).decode()
    except ValueError:
        raise HTTPException(400) from None


def _item(
    request: Request, collection: str, project: Project, level: int, mode: str
) -> dict[str, Any]:
    state = _state(request)
    root = str(request.base_url).rstrip("/")
    href = f"{root}/api/stac/collections/{collection}/items/{project.path}"
    links = [{"rel": "self", "href": href, "type": "application/geo+json"}]
    properties: dict[str, Any] = {"title": project.name}
    if mode != "reference":
        properties["description"] = project.description
        properties["datetime"] = _ITEM_DATETIME
        properties["keywords"] = list(project.topics)
    if mode == "full":
        properties["sharinghub:id"] = project.id
        properties["sharinghub:name"] = project.name
        properties["sharinghub:access-level"] = level
    if mode == "full" and _AI_MODEL in state.categories(project):
        tracking = f"{state.config.mlflow_url.rstrip('/')}/{project.path}/tracking/"
        links.append({"rel": "mlflow:tracking-uri", "href": tracking})
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": project.path,
        "collection": collection,
        "geometry": None,
        "properties": properties,
        "links": links,
        "assets": {},
    }


def _listing(request: Request) -> tuple[str, list[tuple[Project, int]], str]:
    """The collection, the caller's projects in it, and the item mode asked for."""
    state = _state(request)
    token = _require_token(_credential(request, state), state)
    collection = request.path_params["collection"]
    topic = state.config.collections.get(collection)
    if topic is None:
        raise HTTPException(404, "Collection not found")
    mode = request.query_params.get("mode", "full")
    if mode not in ("full", "preview", "reference"):
        raise HTTPException(400)
    return collection, state.visible(token, topic), mode


async def _items(request: Request) -> Response:
    collection, entries, mode = _listing(request)
    params = request.query_params
    limit = params.get("limit", "12")
    if not (limit.isascii() and limit.isdigit() and 0 < int(limit) <= 1000):
        raise HTTPException(400)
    if words := params.get("q", "").casefold().split():
        entries = [
            (p, level)
            for p, level in entries
            if all(w in f"{p.path} {p.name} {p.description}".casefold() for w in words)
        ]

    keys = [project.path.casefold() for project, _ in entries]
    start, size = 0, int(limit)
    if "after" in params:
        start = bisect.bisect_right(keys, _uncursor(params["after"]))
    elif "before" in params:
        start = max(0, bisect.bisect_left(keys, _uncursor(params["before"])) - size)
    page = entries[start : start + size]

    base = request.url.remove_query_params(["after", "before"])
    links = [{"rel": "self", "href": str(request.url)}]
    if page and start + size < len(entries):
        cursor = _cursor(page[-1][0].path)
        links.append(
            {"rel": "next", "href": str(base.include_query_params(after=cursor))}
        )
    if page and start > 0:
        cursor = _cursor(page[0][0].path)
        links.append(
            {"rel": "prev", "href": str(base.include_query_params(before=cursor))}
        )

    features = [_item(request, collection, p, level, mode) for p, level in page]
    return JSONResponse(
        {
            "type": "FeatureCollection",
            "features": features,
            "links": links,
            "numberMatched": len(entries),
            "numberReturned": len(features),
        }
    )


async def _one_item(request: Request) -> Response:
    collection, entries, mode = _listing(request)
    wanted = request.path_params["path"].casefold()
    for project, level in entries:
        if project.path.casefold() == wanted:
            return JSONResponse(_item(request, collection, project, level, mode))
    raise HTTPException(404)


async def _parse(request: Request, model: type[_M]) -> _M:
    try:
        return model.model_validate_json(await request.body())
    except ValidationError as exc:
        raise HTTPException(422, _describe(exc)) from None


async def _reset(request: Request) -> Response:
    _state(request).calls.clear()
    return Response(status_code=204)


async def _delay(request: Request) -> Response:
    _state(request).delay = (await _parse(request, _Delay)).seconds
    return Response(status_code=204)


async def _calls(request: Request) -> Response:
    return JSONResponse(_state(request).calls)


async def _user(request: Request) -> Response:
    state, token = _state(request), request.path_params["token"]
    if request.method == "DELETE":
        state.users.pop(token, None)
        return Response(status_code=204)
    user = await _parse(request, User)
    state.users[token] = user
    return JSONResponse(user.model_dump())


async def _project(request: Request) -> Response:
    project = await _parse(request, Project)
    if project.id != request.path_params["id"]:
        raise HTTPException(422, "the project id in the body differs from the URL")
    _state(request).projects[project.id] = project
    return JSONResponse(project.model_dump())


async def _http_error(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        raise exc
    return JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)


def create_app(config: StandinConfig) -> Starlette:
    """Build the stand-in's ASGI app, with its own state, from a configuration."""
    routes = [
        Route("/api/check/{project:path}", _check),
        Route("/api/auth/info", _auth_info),
        Route("/api/auth/login", _login, methods=["GET", "POST"]),
        Route("/api/auth/logout", _logout),
        Route("/api/stac/collections/{collection}/items", _items),
        Route("/api/stac/collections/{collection}/items/{path:path}", _one_item),
        Route("/_standin/calls", _calls),
        Route("/_standin/reset", _reset, methods=["POST"]),
        Route("/_standin/delay", _delay, methods=["POST"]),
        Route("/_standin/users/{token}", _user, methods=["PUT", "DELETE"]),
        Route("/_standin/projects/{id:int}", _project, methods=["PUT"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.standin = StandinState(config)
    return app


def run(config_path: str | Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve the stand-in described by ``config_path`` until interrupted."""
    uvicorn.run(create_app(load_config(config_path)), host=host, port=port)
