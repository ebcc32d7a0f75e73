"""The settings registry: every knob of the server, in one place.

Each setting is a field of :class:`Settings` with its type, default, help text
and environment variable (the field's alias). ``mlflow-sharinghub server``
derives one command-line flag per setting from this class, so a setting is
declared once and read the same way from the environment or the command line.

Secrets (``SECRET_KEY``, passwords in store URIs) never appear in ``repr`` or
in log lines: use :func:`mask_uri` before logging a URI.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mlflow_sharinghub.errors import ConfigurationError

# MLflow's own default host allowlist: loopback and private networks.
_LOCAL_HOSTS = ["localhost", "127.0.0.1", "[::1]", "0.0.0.0"]  # noqa: S104
_PRIVATE_HOST_PATTERNS = ["10.*", "192.168.*", *(f"172.{n}.*" for n in range(16, 32))]


class Settings(BaseSettings):
    """All settings of mlflow-sharinghub, read from the environment."""

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    def __repr_args__(self) -> Iterator[tuple[str | None, Any]]:
        # Store URIs and artifact destinations may carry passwords.
        for name, value in super().__repr_args__():
            yield name, mask_uri(value) if isinstance(value, str) else value

    sharinghub_url: str = Field(
        alias="SHARINGHUB_URL",
        description="Base URL of SharingHub, e.g. https://sharinghub.example.com",
    )
    sharinghub_stac_collection: str = Field(
        "ai-model",
        alias="SHARINGHUB_STAC_COLLECTION",
        description="STAC collection whose projects may use MLflow",
    )
    sharinghub_auth_default_token: bool = Field(
        False,
        alias="SHARINGHUB_AUTH_DEFAULT_TOKEN",
        description="SharingHub has a default token: anonymous callers may read",
    )
    sharinghub_session_cookie: str = Field(
        "sharinghub-session",
        alias="SHARINGHUB_SESSION_COOKIE",
        description="Name of SharingHub's session cookie",
    )
    sharinghub_timeout: float = Field(
        5.0,
        gt=0,
        le=60,
        alias="SHARINGHUB_TIMEOUT",
        description="Seconds to wait for SharingHub before answering 503",
    )
    sharinghub_cache_ttl: float = Field(
        30.0,
        ge=0,
        le=3600,
        alias="SHARINGHUB_CACHE_TTL",
        description="Seconds a SharingHub permission answer is reused",
    )
    frame_ancestors: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        alias="SHARINGHUB_FRAME_ANCESTORS",
        description="Origins allowed to frame the UI (default: SharingHub's origin)",
    )
    secret_key: SecretStr | None = Field(
        None,
        alias="SECRET_KEY",
        description="Secret for MLflow's Flask sessions (random per start if unset)",
    )
    data_dir: Path = Field(
        Path("data"),
        alias="MLFLOW_DATA_DIR",
        description="Directory of the default SQLite store and artifacts",
    )
    backend_store_uri: str | None = Field(
        None,
        alias="MLFLOW_BACKEND_STORE_URI",
        description="Backend store URI (default: SQLite mlflow.db in the data dir)",
    )
    artifacts_destination: str | None = Field(
        None,
        alias="MLFLOW_ARTIFACTS_DESTINATION",
        description="Where artifacts go (default: mlartifacts/ in the data dir)",
    )
    s3_endpoint_url: str | None = Field(
        None,
        alias="MLFLOW_S3_ENDPOINT_URL",
        description="S3 endpoint for s3:// artifact destinations",
    )
    host: str = Field(
        "127.0.0.1", alias="MLFLOW_HOST", description="Address to listen on"
    )
    port: int = Field(
        5000, ge=1, le=65535, alias="MLFLOW_PORT", description="Port to listen on"
    )
    workers: int = Field(
        4, ge=1, le=64, alias="MLFLOW_WORKERS", description="Server worker processes"
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        alias="MLFLOW_SERVER_ALLOWED_HOSTS",
        description="Extra Host header values accepted (comma-separated patterns)",
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["*"],
        alias="MLFLOW_TRUSTED_PROXIES",
        description="Peers whose X-Script-Name/X-Forwarded-* are honoured (* = any)",
    )
    log_level: str = Field(
        "INFO", alias="LOG_LEVEL", description="Log level of the server"
    )

    @field_validator("sharinghub_url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                "expected an http(s) URL such as https://sharinghub.example.com"
            )
        return value.rstrip("/")

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_optional_url(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError("expected an http(s) URL")
        return value

    @field_validator(
        "frame_ancestors", "allowed_hosts", "trusted_proxies", mode="before"
    )
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        for item in value:
            if item != "*":
                ipaddress.ip_network(item, strict=False)
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        if value.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR")
        return value.upper()

    @field_validator("sharinghub_stac_collection", "sharinghub_session_cookie")
    @classmethod
    def _check_not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("expected a non-empty value")
        return value.strip()

    @property
    def sharinghub_origin(self) -> str:
        parts = urlsplit(self.sharinghub_url)
        return urlunsplit((parts.scheme, parts.netloc, "", "", ""))

    @property
    def store_uri(self) -> str:
        if self.backend_store_uri:
            return self.backend_store_uri
        return f"sqlite:///{(self.data_dir / 'mlflow.db').resolve()}"

    @property
    def engine_store_uri(self) -> str:
        """The store URI handed to MLflow, with PostgreSQL's driver named.

        SQLAlchemy before 2.1 reads ``postgresql://`` as psycopg2, which is not
        installed: this product ships psycopg 3.
        """
        scheme, separator, rest = self.store_uri.partition("://")
        if scheme == "postgresql":
            return f"postgresql+psycopg{separator}{rest}"
        return self.store_uri

    @property
    def artifacts(self) -> str:
        if self.artifacts_destination:
            return self.artifacts_destination
        return str((self.data_dir / "mlartifacts").resolve())

    @property
    def frame_origins(self) -> list[str]:
        return self.frame_ancestors or [self.sharinghub_origin]

    @property
    def host_allowlist(self) -> list[str]:
        """Host headers accepted: MLflow's local defaults, SharingHub's host, extras."""
        sharinghub_host = urlsplit(self.sharinghub_url).netloc
        hosts = [*_LOCAL_HOSTS, *(f"{h}:*" for h in _LOCAL_HOSTS)]
        hosts += [*_PRIVATE_HOST_PATTERNS, sharinghub_host, *self.allowed_hosts]
        return list(dict.fromkeys(hosts))

    @property
    def origin_allowlist(self) -> list[str]:
        """Origins that may change state: SharingHub's and the allowed public hosts."""
        origins = [self.sharinghub_origin]
        for host in self.allowed_hosts:
            if "*" not in host:
                origins += [f"https://{host}", f"http://{host}"]
        return list(dict.fromkeys(origins))

    def mlflow_environment(self) -> dict[str, str]:
        """The environment MLflow's own server needs to run as this product."""
        secret = self.secret_key.get_secret_value() if self.secret_key else None
        env = {
            "MLFLOW_ENABLE_WORKSPACES": "true",
            "MLFLOW_WORKSPACE_STORE_URI": "sharinghub://",
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
            "MLFLOW_SERVER_ALLOWED_HOSTS": ",".join(self.host_allowlist),
            "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS": ",".join(self.origin_allowlist),
            "MLFLOW_SERVER_X_FRAME_OPTIONS": "NONE",
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "true",
            "MLFLOW_FLASK_SERVER_SECRET_KEY": secret or secrets.token_hex(32),
        }
        if self.s3_endpoint_url:
            env["MLFLOW_S3_ENDPOINT_URL"] = self.s3_endpoint_url
        return env


def env_name(field: str) -> str:
    """The environment variable of a setting, e.g. ``SHARINGHUB_URL``."""
    return Settings.model_fields[field].alias or field.upper()


def load_settings(**overrides: Any) -> Settings:
    """Read the settings; a bad or missing value raises one readable line."""
    values = {env_name(k): v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            name = env_name(field) if field in Settings.model_fields else field
            explained = _explain(error, field, secret=field == "secret_key")
            problems.append(f"{name}: {explained}")
        raise ConfigurationError("invalid settings: " + "; ".join(problems)) from None


def _explain(error: Any, field: str, *, secret: bool) -> str:
    if error["type"] == "missing":
        info = Settings.model_fields.get(field)
        expected = f" ({info.description})" if info and info.description else ""
        return f"required, not set{expected}"
    message = str(error["msg"]).removeprefix("Value error, ")
    value = error.get("input")
    if isinstance(value, str) and not secret:
        return f"{message} (got {mask_uri(value)!r})"
    return message


def mask_uri(uri: str) -> str:
    """The URI with any password replaced by ``***``."""
    try:
        parts = urlsplit(uri)
        password = parts.password
    except ValueError:
        # Not parseable as a URI: hide whatever might be userinfo.
        return "***" if "@" in uri else uri
    if password is None:
        return uri
    userinfo = f"{parts.username}:***" if parts.username else ":***"
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit((parts.scheme, f"{userinfo}@{host}", *parts[2:]))
