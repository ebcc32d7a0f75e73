"""The guard in front of MLflow: one request, step by step.

1. Public routes (health, readiness, version, static UI files) answer at once.
2. The project is read from the URL; a malformed one is a 404.
3. The route policy classifies the MLflow route; refused routes stop here.
4. The caller's credential (Bearer token, else session cookie, else none)
   and SharingHub's answer for the project give an access level.
5. The level must allow the route's action.
6. MLflow gets the request with the prefix stripped and the project's
   workspace set by this server, never by the client. A route of MLflow's
   Flask app goes the short way, straight to Flask (``wsgi.py``); only
   FastAPI's own routes pass through MLflow's FastAPI app.

Every refusal is an MLflow-format JSON error, except that a browser without a
session is sent to SharingHub's login. Every refusal and every write leaves
one line in the audit log (``audit.py``), and every decision is counted in
the metrics served at ``/metrics`` (``metrics.py``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import quote, urlencode

import anyio.to_thread
from mlflow.server.security_utils import (
    is_allowed_host_header,
    should_block_cors_request,
)
from starlette.requests import cookie_parser
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Receive, Scope, Send

from mlflow_sharinghub import audit
from mlflow_sharinghub.access import effective_level, require
from mlflow_sharinghub.errors import (
    EndpointNotFound,
    NotFound,
    PermissionDenied,
    RequestRefused,
    Unauthenticated,
    Unavailable,
)
from mlflow_sharinghub.metrics import Metrics
from mlflow_sharinghub.pages import home_page, landing_page
from mlflow_sharinghub.paths import check_artifact_paths
from mlflow_sharinghub.policy import Action, classify
from mlflow_sharinghub.projects import ProjectRoute, split_project_path, workspace_name
from mlflow_sharinghub.responses import framed_sender, is_ui_page, rewrite_for
from mlflow_sharinghub.settings import Settings
from mlflow_sharinghub.sharinghub import (
    ANONYMOUS,
    Credential,
    CredentialKind,
    ListedProject,
    ProjectAccess,
    Refusal,
    SharingHubClient,
)
from mlflow_sharinghub.sources import (
    checked_body,
    creates_model_version,
    run_in_workspace,
)
from mlflow_sharinghub.ui import (
    CONTEXT_PATH,
    OWN_ROOT,
    asset,
    auth_url,
    project_context,
    ui_answer,
)
from mlflow_sharinghub.urls import ProxyTrust
from mlflow_sharinghub.workspaces import SharingHubWorkspaceStore

WORKSPACE_HEADER = b"x-mlflow-workspace"
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Dropped from requests for the UI page, so MLflow always sends a body to
# inject into, never a 304 or a range of the original.
_CONDITIONAL = frozenset(
    {b"if-none-match", b"if-modified-since", b"if-range", b"range"}
)
_LOGIN_HINT = "Set MLFLOW_TRACKING_TOKEN to a GitLab token (or log in to SharingHub)."

Readiness = Callable[[], Awaitable[Response]]
# The request's credential, or why it has no usable one: the refusal that a
# route needing a credential raises.
Caller = Credential | Unauthenticated


def _audit_name(caller: Caller, headers: dict[bytes, bytes]) -> str:
    """Who the audit log names: the credential's fingerprint, never the secret."""
    if isinstance(caller, Credential):
        return caller.fingerprint
    # No usable credential: none at all, or not a Bearer token.
    return "anonymous" if b"authorization" not in headers else "malformed"


class SharingHubMiddleware:
    """An ASGI app that decides every request before MLflow sees it."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings,
        sharinghub: SharingHubClient,
        workspaces: Callable[[], SharingHubWorkspaceStore],
        readiness: Readiness,
        metrics: Metrics | None = None,
        flask: ASGIApp | None = None,
        native_prefixes: tuple[str, ...] = (),
    ) -> None:
        self.app = app
        self.flask = flask or app
        self.native_prefixes = native_prefixes
        self.metrics = metrics or Metrics()
        self.settings = settings
        self.sharinghub = sharinghub
        self.workspaces = workspaces
        self.readiness = readiness
        self.proxies = ProxyTrust(settings.trusted_proxies)
        self.host_allowlist = settings.host_allowlist
        self.origin_allowlist = settings.origin_allowlist
        ancestors = " ".join(["'self'", *settings.frame_origins])
        self.frame_policy = f"frame-ancestors {ancestors}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = dict(scope["headers"])
        caller = self._caller(headers)
        decision = audit.Decision(
            scope["method"], scope["path"], caller=_audit_name(caller, headers)
        )
        entered = audit.current.set(decision)
        try:
            await self._handle(scope, headers, caller, receive, send)
        except RequestRefused as refusal:
            audit.refused(self.metrics, refusal)
            await self._refuse(scope, headers, refusal, receive, send)
        else:
            audit.count_allowed(self.metrics)
        finally:
            audit.current.reset(entered)

    async def _handle(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        caller: Caller,
        receive: Receive,
        send: Send,
    ) -> None:
        path: str = scope["path"]
        # Probes come from the kubelet, with the pod's address as Host.
        # Prometheus scrapes the pod's address too; no project URL leads here.
        if path in ("/health", "/ready", "/metrics"):
            await self._probe(scope, path, receive, send)
            return
        self._check_host_and_origin(scope, headers)

        route = split_project_path(path)
        if route is None:
            await self._outside_projects(scope, headers, receive, send)
            return
        if not route.mlflow_path:
            # ".../tracking" needs its slash, or the UI's relative links break.
            location = route.prefix.rsplit("/", 1)[1] + "/"
            await RedirectResponse(location, status_code=308)(scope, receive, send)
            return
        if route.mlflow_path.startswith(OWN_ROOT):
            await self._own_route(scope, headers, caller, route, receive, send)
            return
        answer = ui_answer(scope["method"], route.mlflow_path, scope["query_string"])
        if answer is not None:
            await self._authorize(caller, route, Action.READ)
            await JSONResponse(answer)(scope, receive, send)
            return

        rule = classify(scope["method"], route.mlflow_path)
        audit.note(
            route=route.mlflow_path, project=route.project, action=rule.action.value
        )
        if rule.action is Action.PUBLIC:
            await self._forward(scope, route, None, receive, send)
            return
        if rule.action is Action.REFUSED:
            if not rule.known:
                raise EndpointNotFound(f"No such MLflow endpoint: {route.mlflow_path}")
            raise PermissionDenied(f"Refused: {rule.reason}.")

        _, access, _ = await self._authorize(caller, route, rule.action)
        check_artifact_paths(scope, route.mlflow_path, workspace_name(access.id))

        workspace = workspace_name(access.id)
        await self._ensure_workspace(workspace, access.path)
        if creates_model_version(scope["method"], route.mlflow_path):
            receive = await self._checked_model_version(scope, workspace, receive)
        audit.log_write()
        await self._forward(scope, route, workspace, receive, send)

    async def _probe(
        self, scope: Scope, path: str, receive: Receive, send: Send
    ) -> None:
        """Liveness, readiness and metrics: answered whatever the Host header."""
        if path == "/health":
            response: Response = JSONResponse({"status": "healthy"})
        elif path == "/ready":
            response = await self.readiness()
        elif scope["method"] in ("GET", "HEAD"):
            content, media_type = self.metrics.exposition()
            response = Response(content, media_type=media_type)
        else:
            raise EndpointNotFound("Metrics are read with GET.")
        await response(scope, receive, send)

    async def _checked_model_version(
        self, scope: Scope, workspace: str, receive: Receive
    ) -> Receive:
        """The body of a model-versions/create, refused if it names foreign data."""
        header = (WORKSPACE_HEADER, workspace.encode())

        async def run_exists(run_id: str) -> bool:
            return await run_in_workspace(
                self.app, scope, workspace_header=header, run_id=run_id
            )

        return await checked_body(receive, workspace=workspace, run_exists=run_exists)

    async def _authorize(
        self, caller: Caller, route: ProjectRoute, action: Action
    ) -> tuple[Credential, ProjectAccess, int]:
        """The caller, the project and the level they act with; raises if refused."""
        if isinstance(caller, Unauthenticated):
            raise caller
        credential = caller
        audit.note(action=action.value)
        access = await self._project_access(credential, route)
        audit.note(project=str(access.id))
        level = effective_level(
            access_level=access.access_level, anonymous=credential.is_anonymous
        )
        require(
            action, level=level, project=access.path, anonymous=credential.is_anonymous
        )
        return credential, access, level

    async def _own_route(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        caller: Caller,
        route: ProjectRoute,
        receive: Receive,
        send: Send,
    ) -> None:
        """This package's files beside the UI, and the project's context for it."""
        if scope["method"] not in ("GET", "HEAD"):
            raise EndpointNotFound(f"No such endpoint: {route.mlflow_path}")
        security = {"Content-Security-Policy": self.frame_policy.decode()}
        if route.mlflow_path == CONTEXT_PATH:
            credential, access, level = await self._authorize(
                caller, route, Action.READ
            )
            base = self.proxies.external_base(scope, headers)
            context = project_context(
                access=access,
                level=level,
                anonymous=credential.is_anonymous,
                page_url=base.url(route.prefix + "/"),
                home_url=base.url("/"),
                sharinghub_url=self.settings.sharinghub_url,
                collection=self.settings.sharinghub_stac_collection,
            )
            no_store = security | {"Cache-Control": "no-store"}
            await JSONResponse(context, headers=no_store)(scope, receive, send)
            return
        found = asset(route.mlflow_path.removeprefix(OWN_ROOT))
        if found is None:
            raise EndpointNotFound(f"No such file: {route.mlflow_path}")
        content, media_type = found
        cached = security | {"Cache-Control": "no-cache"}
        await Response(content, media_type=media_type, headers=cached)(
            scope, receive, send
        )

    def _check_host_and_origin(self, scope: Scope, headers: dict[bytes, bytes]) -> None:
        host = headers.get(b"host", b"").decode("latin-1")
        if not is_allowed_host_header(self.host_allowlist, host):
            raise PermissionDenied(
                f"Host {host!r} is not served here; an operator can add it to "
                "MLFLOW_SERVER_ALLOWED_HOSTS."
            )
        origin = headers.get(b"origin", b"").decode("latin-1")
        if should_block_cors_request(origin, scope["method"], self.origin_allowlist):
            raise PermissionDenied(
                f"Requests from origin {origin!r} may not change data."
            )

    def _caller(self, headers: dict[bytes, bytes]) -> Caller:
        """The request's credential, read once; never raises."""
        try:
            return self._credential(headers)
        except Unauthenticated as refusal:
            return refusal

    def _credential(self, headers: dict[bytes, bytes]) -> Credential:
        authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise Unauthenticated(
                    f"Use 'Authorization: Bearer <token>'. {_LOGIN_HINT}"
                )
            return Credential(CredentialKind.TOKEN, token.strip())
        if session := self._session(headers):
            return session
        if not self.settings.sharinghub_auth_default_token:
            raise Unauthenticated(f"Authentication required. {_LOGIN_HINT}")
        return ANONYMOUS

    async def _project_access(
        self, credential: Credential, route: ProjectRoute
    ) -> ProjectAccess:
        result = await self.sharinghub.check(credential, route.cache_key)
        if result is Refusal.BAD_CREDENTIALS:
            raise Unauthenticated(
                f"SharingHub rejected your credentials. {_LOGIN_HINT}"
            )
        if isinstance(result, Refusal):
            if result is Refusal.NO_CATEGORY:
                raise PermissionDenied(self._outside_collection(route.project))
            raise NotFound(
                f"Project '{route.project}' does not exist or you cannot see it."
                + ("" if not credential.is_anonymous else f" {_LOGIN_HINT}")
            )
        if self.settings.sharinghub_stac_collection not in result.categories:
            raise PermissionDenied(self._outside_collection(result.path))
        return result

    def _outside_collection(self, project: str) -> str:
        collection = self.settings.sharinghub_stac_collection
        return (
            f"Project '{project}' is not in SharingHub's '{collection}' collection, "
            "so it has no MLflow tracking server."
        )

    async def _ensure_workspace(self, name: str, project_path: str) -> None:
        store = self.workspaces()
        if not store.is_known(name):
            await anyio.to_thread.run_sync(store.ensure, name, project_path)

    async def _forward(
        self,
        scope: Scope,
        route: ProjectRoute,
        workspace: str | None,
        receive: Receive,
        send: Send,
    ) -> None:
        ui_page = is_ui_page(scope["method"], route.mlflow_path)
        dropped = {WORKSPACE_HEADER, *(_CONDITIONAL if ui_page else ())}
        headers = [(k, v) for k, v in scope["headers"] if k not in dropped]
        if workspace is not None:
            headers.append((WORKSPACE_HEADER, workspace.encode()))
        raw_path: bytes = scope.get("raw_path") or b""
        raw_prefix = route.prefix.encode()
        inner = dict(scope)
        inner["path"] = route.mlflow_path
        inner["raw_path"] = (
            raw_path[len(raw_prefix) :]
            if raw_path.startswith(raw_prefix)
            else quote(route.mlflow_path).encode()
        )
        inner["headers"] = headers
        rewrite = rewrite_for(scope["method"], route.mlflow_path)
        sender = framed_sender(send, self.frame_policy, rewrite)
        await self._mlflow_for(route.mlflow_path)(inner, receive, sender)

    def _mlflow_for(self, path: str) -> ASGIApp:
        """FastAPI's own routes go through MLflow's FastAPI app; Flask's, straight."""
        return self.app if path.startswith(self.native_prefixes) else self.flask

    async def _outside_projects(
        self, scope: Scope, headers: dict[bytes, bytes], receive: Receive, send: Send
    ) -> None:
        path: str = scope["path"]
        if path == "/" and scope["method"] in ("GET", "HEAD"):
            page = await self._home(scope, headers)
            response = HTMLResponse(
                page,
                headers={
                    "Content-Security-Policy": self.frame_policy.decode(),
                    "Cache-Control": "no-store",
                    "Vary": "Cookie, Accept",
                },
            )
            await response(scope, receive, send)
            return
        if path in ("/version",) or path.startswith("/static-files/"):
            await self._mlflow_for(path)(scope, receive, send)
            return
        raise EndpointNotFound(
            "This server has one MLflow per SharingHub project: use the project's "
            "tracking URI, <server>/<group>/<project>/tracking/, as "
            "MLFLOW_TRACKING_URI."
        )

    async def _home(self, scope: Scope, headers: dict[bytes, bytes]) -> str:
        """A browser's list of its projects, or the landing page explaining URIs."""
        base = self.proxies.external_base(scope, headers)
        base_url = base.url("").rstrip("/")
        hub = self.settings.sharinghub_url
        collection = self.settings.sharinghub_stac_collection
        home_url = base.url("/")
        login = auth_url(hub, "login", home_url)
        session = self._session(headers)
        browser = b"text/html" in headers.get(b"accept", b"")
        if session is None or not browser:
            return landing_page(
                base_url=base_url,
                sharinghub_url=hub,
                collection=collection,
                login_url=login if browser else None,
            )
        projects: list[ListedProject] | Refusal | Unavailable
        try:
            projects = await self.sharinghub.list_projects(session, collection)
        except Unavailable as outage:
            projects = outage
        return home_page(
            base_url=base_url,
            sharinghub_url=hub,
            collection=collection,
            projects=projects,
            login_url=login,
            logout_url=auth_url(hub, "logout", home_url),
        )

    def _session(self, headers: dict[bytes, bytes]) -> Credential | None:
        cookie_header = headers.get(b"cookie")
        if not cookie_header:
            return None
        cookies = cookie_parser(cookie_header.decode("latin-1"))
        session = cookies.get(self.settings.sharinghub_session_cookie)
        return Credential(CredentialKind.COOKIE, session) if session else None

    async def _refuse(
        self,
        scope: Scope,
        headers: dict[bytes, bytes],
        refusal: RequestRefused,
        receive: Receive,
        send: Send,
    ) -> None:
        if self._wants_login(scope, headers, refusal):
            base = self.proxies.external_base(scope, headers)
            query = scope.get("query_string", b"").decode("latin-1")
            page = base.url(scope["path"], query)
            login = f"{self.settings.sharinghub_url}/api/auth/login?" + urlencode(
                {"redirect_uri": page}
            )
            await RedirectResponse(login, status_code=302)(scope, receive, send)
            return
        response = Response(
            refusal.body(),
            status_code=refusal.status,
            media_type="application/json",
            headers=refusal.headers,
        )
        await response(scope, receive, send)

    def _wants_login(
        self, scope: Scope, headers: dict[bytes, bytes], refusal: RequestRefused
    ) -> bool:
        """A browser page request without a session that SharingHub could fix."""
        if scope["method"] != "GET" or b"text/html" not in headers.get(b"accept", b""):
            return False
        if isinstance(refusal, Unauthenticated):
            return True
        anonymous = b"authorization" not in headers and (
            self.settings.sharinghub_session_cookie.encode()
            not in headers.get(b"cookie", b"")
        )
        return (
            anonymous
            and isinstance(refusal, NotFound)
            and split_project_path(scope["path"]) is not None
        )
