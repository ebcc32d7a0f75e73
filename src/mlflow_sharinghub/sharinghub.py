"""Asking SharingHub who may use a project, as little as possible.

One pooled HTTP client per process asks ``/api/check/<project>?info=true``.
Answers are cached per (credential fingerprint, project): a granted access
for ``SHARINGHUB_CACHE_TTL`` seconds, a refusal for a few seconds at most,
an outage never. Concurrent misses for one key share a single call, within
a process and, through :class:`SharedAnswers`, across the worker processes
of a server. The cache key holds a hash of the credential, never the
credential itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import sqlite3
import time
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property, partial
from http.cookiejar import CookieJar, DefaultCookiePolicy
from pathlib import Path
from time import monotonic
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
from cachetools import TLRUCache

from mlflow_sharinghub.errors import Unavailable
from mlflow_sharinghub.metrics import Metrics
from mlflow_sharinghub.shared_answers import SharedAnswers

_logger = logging.getLogger(__name__)

_REFUSAL_TTL = 5.0
_CACHE_SIZE = 10_000
_LISTING_PAGE = 100
_LISTING_MAX_PAGES = 20
# A worker that claimed a key keeps it this long past its call's timeout.
_CLAIM_MARGIN = 1.0
_SHARED_POLL = 0.02


class CredentialKind(Enum):
    TOKEN = "token"  # noqa: S105 - a kind of credential, not a secret
    COOKIE = "cookie"
    ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Credential:
    """What the caller presented: a GitLab token, a session cookie, or nothing."""

    kind: CredentialKind
    secret: str = field(default="", repr=False)

    @cached_property
    def fingerprint(self) -> str:
        """A short, stable, non-reversible name for logs and cache keys."""
        if self.kind is CredentialKind.ANONYMOUS:
            return "anonymous"
        digest = hashlib.sha256(f"{self.kind.value}:{self.secret}".encode())
        return f"{self.kind.value}:{digest.hexdigest()[:16]}"

    @property
    def is_anonymous(self) -> bool:
        return self.kind is CredentialKind.ANONYMOUS


ANONYMOUS = Credential(CredentialKind.ANONYMOUS)


@dataclass(frozen=True)
class ProjectAccess:
    """SharingHub's answer for a project the caller can see."""

    id: int
    name: str
    path: str
    categories: tuple[str, ...]
    access_level: int


class Refusal(Enum):
    """Why SharingHub gave no access, as this server reports it."""

    NOT_FOUND = "not found or not visible with these credentials"
    BAD_CREDENTIALS = "SharingHub rejected the credentials"
    NO_CATEGORY = "the project belongs to no SharingHub collection"


CheckResult = ProjectAccess | Refusal


@dataclass(frozen=True)
class _Kept:
    """An answer and the time (of the cache's clock) it expires."""

    result: CheckResult
    expires: float


@dataclass(frozen=True)
class ListedProject:
    """A project of the caller's collection listing: its full path and title."""

    path: str
    title: str


class SharingHubClient:
    """The cached, deduplicated ``/api/check`` client of one server process."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout: float,
        cache_ttl: float,
        session_cookie: str,
        transport: httpx.AsyncBaseTransport | None = None,
        metrics: Metrics | None = None,
        shared_answers: Path | None = None,
    ) -> None:
        self._base_url = base_url
        self._metrics = metrics or Metrics()
        self._timeout = timeout
        self._cache_ttl = cache_ttl
        self._session_cookie = session_cookie
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._clock = monotonic
        self._answers: TLRUCache[tuple[str, str], _Kept] = TLRUCache(
            _CACHE_SIZE, ttu=_expiry, timer=self._clock
        )
        self._inflight: dict[tuple[str, str], asyncio.Task[_Kept]] = {}
        self._shared = _open_shared(shared_answers, cache_ttl)

    def _http(self) -> httpx.AsyncClient:
        # Created on first use so that it binds to the worker's own event loop.
        if self._client is None:
            self._client = httpx.AsyncClient(
                base_url=self._base_url,
                transport=self._transport,
                timeout=self._timeout,
                limits=httpx.Limits(max_connections=100, max_keepalive_connections=20),
                headers={"Accept": "application/json"},
                # Keep no Set-Cookie of SharingHub's: the client is shared by
                # all callers, and a kept session would ride along with theirs.
                cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if self._shared is not None:
            self._shared.close()
            self._shared = None

    async def ping(self) -> bool:
        """Whether SharingHub answers at all (any answer but a server error)."""
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http().get("/api/auth/info")
        except (httpx.HTTPError, TimeoutError):
            return False
        return response.status_code < 500

    def cached(self, credential: Credential, project: str) -> CheckResult | None:
        kept = self._answers.get((credential.fingerprint, project))
        return kept.result if kept is not None else None

    async def check(self, credential: Credential, project: str) -> CheckResult:
        """SharingHub's answer for ``project``; raises Unavailable on an outage."""
        key = (credential.fingerprint, project)
        if (hit := self.cached(credential, project)) is not None:
            self._metrics.cache.labels("hit").inc()
            return hit
        self._metrics.cache.labels("miss").inc()
        task = self._inflight.get(key)
        if task is None:
            # A task of its own, so a caller that hangs up does not cancel the
            # call that other callers of the same key are waiting for.
            task = asyncio.create_task(self._fetch(credential, project))
            task.add_done_callback(partial(self._settle, key))
            self._inflight[key] = task
        return (await asyncio.shield(task)).result

    def _settle(self, key: tuple[str, str], task: asyncio.Task[_Kept]) -> None:
        del self._inflight[key]
        if task.cancelled() or task.exception() is not None:
            return
        self._answers[key] = task.result()

    async def _fetch(self, credential: Credential, project: str) -> _Kept:
        """SharingHub's answer, from another worker's call if there is one."""
        if self._shared is not None:
            try:
                return await self._fetch_shared(self._shared, credential, project)
            except sqlite3.Error as error:
                _logger.warning("Shared SharingHub answers unreadable: %s", error)
        return self._keep(await self._ask(credential, project))

    async def _fetch_shared(
        self, shared: SharedAnswers, credential: Credential, project: str
    ) -> _Kept:
        key = json.dumps([credential.fingerprint, project])
        claim_seconds = self._timeout + _CLAIM_MARGIN
        deadline = self._clock() + claim_seconds
        while True:
            now = self._clock()
            found = await asyncio.to_thread(shared.get, key, now)
            if found is not None:
                if (kept := _decode(*found)) is not None:
                    self._metrics.cache.labels("shared").inc()
                    return kept
                break  # an answer this version cannot read: ask, and replace it
            claim = partial(shared.claim, key, now, until=now + claim_seconds)
            if await asyncio.to_thread(claim):
                break
            if now >= deadline:
                raise _outage()  # the worker that claimed the key never answered
            await asyncio.sleep(_SHARED_POLL)
        try:
            kept = self._keep(await self._ask(credential, project))
        except BaseException:
            shared.release(key)  # at once, even while being cancelled
            raise
        await asyncio.to_thread(
            shared.put, key, _encode(kept.result), kept.expires, self._clock()
        )
        return kept

    def _keep(self, result: CheckResult) -> _Kept:
        ttl = self._cache_ttl
        if not isinstance(result, ProjectAccess):
            ttl = min(ttl, _REFUSAL_TTL)
        return _Kept(result, self._clock() + ttl)

    async def _ask(self, credential: Credential, project: str) -> CheckResult:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http().get(
                    f"/api/check/{quote(project, safe='')}",
                    params={"info": "true"},
                    **self._credential_args(credential),
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            _logger.warning(
                "SharingHub unreachable for project %s: %s", project, type(exc).__name__
            )
            self._metrics.sharinghub_errors.labels("check", _failure(exc)).inc()
            raise _outage() from None
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.sharinghub_seconds.labels("check").observe(elapsed)
            _logger.debug("SharingHub check of %s took %.3fs", project, elapsed)
        try:
            return _interpret(response, project)
        except Unavailable:
            self._metrics.sharinghub_errors.labels("check", "answer").inc()
            raise

    async def list_projects(
        self, credential: Credential, collection: str
    ) -> list[ListedProject] | Refusal:
        """The projects of ``collection`` that the caller sees, by path.

        Pages through SharingHub's STAC item listing in ``preview`` mode (the
        fast one). Only the ``after`` cursor of each ``next`` link is kept, so
        the listing never follows an address SharingHub did not build from its
        own base URL. Raises Unavailable on an outage; never cached.
        """
        projects: list[ListedProject] = []
        params = {"limit": str(_LISTING_PAGE), "mode": "preview"}
        for _ in range(_LISTING_MAX_PAGES):
            page = await self._listing_page(credential, collection, params)
            if isinstance(page, Refusal):
                return page
            projects += _listed(page.get("features"))
            cursor = _next_cursor(page.get("links"))
            if cursor is None:
                break
            params = {**params, "after": cursor}
        return projects

    async def _listing_page(
        self, credential: Credential, collection: str, params: dict[str, str]
    ) -> dict[str, Any] | Refusal:
        started = time.perf_counter()
        try:
            async with asyncio.timeout(self._timeout):
                response = await self._http().get(
                    f"/api/stac/collections/{quote(collection, safe='')}/items",
                    params=params,
                    **self._credential_args(credential),
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            _logger.warning("SharingHub listing failed: %s", type(exc).__name__)
            self._metrics.sharinghub_errors.labels("listing", _failure(exc)).inc()
            raise _outage() from None
        finally:
            elapsed = time.perf_counter() - started
            self._metrics.sharinghub_seconds.labels("listing").observe(elapsed)
        if response.status_code in (401, 403):
            return Refusal.BAD_CREDENTIALS
        if response.status_code == 404:
            return Refusal.NOT_FOUND
        try:
            body = response.json() if response.status_code == 200 else None
        except ValueError:
            body = None
        if not isinstance(body, dict):
            _logger.warning("SharingHub listing answered %d", response.status_code)
            self._metrics.sharinghub_errors.labels("listing", "answer").inc()
            raise _outage()
        return body

    def _credential_args(self, credential: Credential) -> dict[str, Any]:
        if credential.kind is CredentialKind.TOKEN:
            return {"headers": {"X-Gitlab-Token": credential.secret}}
        if credential.kind is CredentialKind.COOKIE:
            cookie = f"{self._session_cookie}={credential.secret}"
            return {"headers": {"Cookie": cookie}}
        return {}


def _expiry(key: tuple[str, str], kept: _Kept, now: float) -> float:
    return kept.expires


def _open_shared(path: Path | None, cache_ttl: float) -> SharedAnswers | None:
    if path is None or cache_ttl <= 0:
        return None
    try:
        return SharedAnswers(path)
    except sqlite3.Error as error:
        _logger.warning("SharingHub answers not shared between workers: %s", error)
        return None


def _encode(result: CheckResult) -> dict[str, Any]:
    if isinstance(result, Refusal):
        return {"refusal": result.name}
    return {"access": dataclasses.asdict(result)}


def _decode(answer: Any, expires: float) -> _Kept | None:
    """An answer written by :func:`_encode`, or None if it is not one."""
    try:
        if "refusal" in answer:
            return _Kept(Refusal[answer["refusal"]], expires)
        access = dict(answer["access"])
        access["categories"] = tuple(access["categories"])
        return _Kept(ProjectAccess(**access), expires)
    except (KeyError, TypeError, ValueError):
        return None


def _interpret(response: httpx.Response, project: str) -> CheckResult:
    status = response.status_code
    if status == 200:
        try:
            return _parse_access(response.json())
        except (ValueError, KeyError, TypeError):
            _logger.warning(
                "SharingHub sent a malformed answer for project %s", project
            )
            raise _outage() from None
    if status in (401, 403):
        return Refusal.BAD_CREDENTIALS
    if status in (400, 404):
        return Refusal.NOT_FOUND
    if status == 500 and _detail(response).startswith("Category not found"):
        return Refusal.NO_CATEGORY
    _logger.warning("SharingHub answered %d for project %s", status, project)
    raise _outage()


def _parse_access(body: Any) -> ProjectAccess:
    level = int(body["access_level"])
    categories = body.get("categories") or []
    if not isinstance(categories, list) or not 0 <= level <= 4:
        raise ValueError("unexpected check answer")
    return ProjectAccess(
        id=int(body["id"]),
        name=str(body.get("name", "")),
        path=str(body["path"]),
        categories=tuple(str(c) for c in categories),
        access_level=level,
    )


def _listed(features: Any) -> list[ListedProject]:
    """The projects of one listing page; items without a usable id are skipped."""
    if not isinstance(features, list):
        return []
    listed = []
    for feature in features:
        if not isinstance(feature, dict) or not isinstance(feature.get("id"), str):
            continue
        properties = feature.get("properties")
        title = properties.get("title") if isinstance(properties, dict) else None
        path = feature["id"]
        listed.append(ListedProject(path, title if isinstance(title, str) else path))
    return listed


def _next_cursor(links: Any) -> str | None:
    """The ``after`` cursor of the listing's ``next`` link, if there is one."""
    if not isinstance(links, list):
        return None
    for link in links:
        if isinstance(link, dict) and link.get("rel") == "next":
            query = dict(parse_qsl(urlsplit(str(link.get("href", ""))).query))
            return query.get("after") or None
    return None


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", "")
    except (ValueError, AttributeError):
        return ""
    return detail if isinstance(detail, str) else ""


def _failure(exc: BaseException) -> str:
    """The kind of a failed call, as the error metric counts it."""
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        return "timeout"
    return "connection"


def _outage() -> Unavailable:
    return Unavailable(
        "SharingHub, which decides who may use this project, is not answering. "
        "Try again in a moment."
    )
