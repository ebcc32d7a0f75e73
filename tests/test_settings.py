"""The settings registry: each setting from its variable, and readable failures."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from mlflow_sharinghub.errors import ConfigurationError
from mlflow_sharinghub.settings import Settings, env_name, load_settings, mask_uri

URL = "https://sharinghub.example.com"
SECRET = "hunter2-do-not-print"
COMMAND = str(Path(sys.executable).with_name("mlflow-sharinghub"))
FIELDS = {env_name(field): field for field in Settings.model_fields}
SETTING_VARIABLES = sorted(FIELDS)

# The autouse fixture below only clears the environment, which no example changes.
SHARED_ENVIRONMENT = hypothesis_settings(
    suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@pytest.fixture(autouse=True)
def _no_settings_in_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from an environment that sets none of the settings."""
    for name in SETTING_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def _refusal(monkeypatch: pytest.MonkeyPatch, **environment: str) -> str:
    """The message of the ConfigurationError that ``environment`` provokes."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    return str(error.value)


# (variable, value in the environment, value read)
READ_FROM_ENVIRONMENT = [
    ("SHARINGHUB_URL", "https://hub.example.org/", "https://hub.example.org"),
    ("SHARINGHUB_STAC_COLLECTION", " models ", "models"),
    ("SHARINGHUB_AUTH_DEFAULT_TOKEN", "true", True),
    ("SHARINGHUB_SESSION_COOKIE", "hub-session", "hub-session"),
    ("SHARINGHUB_TIMEOUT", "2.5", 2.5),
    ("SHARINGHUB_CACHE_TTL", "0", 0.0),
    (
        "SHARINGHUB_FRAME_ANCESTORS",
        "https://a.example, https://b.example",
        ["https://a.example", "https://b.example"],
    ),
    ("SECRET_KEY", SECRET, SECRET),
    ("MLFLOW_DATA_DIR", "/srv/mlflow", Path("/srv/mlflow")),
    ("MLFLOW_BACKEND_STORE_URI", "postgresql://db/mlflow", "postgresql://db/mlflow"),
    ("MLFLOW_ARTIFACTS_DESTINATION", "s3://bucket/mlflow", "s3://bucket/mlflow"),
    ("MLFLOW_S3_ENDPOINT_URL", "http://minio:9000", "http://minio:9000"),
    ("MLFLOW_HOST", "192.0.2.10", "192.0.2.10"),
    ("MLFLOW_PORT", "8080", 8080),
    ("MLFLOW_WORKERS", "2", 2),
    (
        "MLFLOW_SERVER_ALLOWED_HOSTS",
        "mlflow.example.org,*.example.net",
        ["mlflow.example.org", "*.example.net"],
    ),
    ("MLFLOW_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1", ["10.0.0.0/8", "127.0.0.1"]),
    ("LOG_LEVEL", "debug", "DEBUG"),
]


def test_every_setting_is_covered_by_the_table() -> None:
    # A new setting must come with a line in READ_FROM_ENVIRONMENT.
    assert sorted(row[0] for row in READ_FROM_ENVIRONMENT) == SETTING_VARIABLES


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    READ_FROM_ENVIRONMENT,
    ids=[row[0] for row in READ_FROM_ENVIRONMENT],
)
def test_each_setting_is_read_from_its_variable(
    monkeypatch: pytest.MonkeyPatch,
    variable: str,
    raw: str,
    expected: Any,
) -> None:
    monkeypatch.setenv("SHARINGHUB_URL", URL)
    monkeypatch.setenv(variable, raw)

    value = getattr(load_settings(), FIELDS[variable])

    if variable == "SECRET_KEY":
        value = value.get_secret_value()
    assert value == expected


@pytest.mark.parametrize(
    ("variable", "expected"),
    [
        ("SHARINGHUB_STAC_COLLECTION", "ai-model"),
        ("SHARINGHUB_AUTH_DEFAULT_TOKEN", False),
        ("SHARINGHUB_SESSION_COOKIE", "sharinghub-session"),
        ("SHARINGHUB_TIMEOUT", 5.0),
        ("SHARINGHUB_CACHE_TTL", 30.0),
        ("SHARINGHUB_FRAME_ANCESTORS", []),
        ("SECRET_KEY", None),
        ("MLFLOW_DATA_DIR", Path("data")),
        ("MLFLOW_BACKEND_STORE_URI", None),
        ("MLFLOW_ARTIFACTS_DESTINATION", None),
        ("MLFLOW_S3_ENDPOINT_URL", None),
        ("MLFLOW_HOST", "127.0.0.1"),
        ("MLFLOW_PORT", 5000),
        ("MLFLOW_WORKERS", 4),
        ("MLFLOW_SERVER_ALLOWED_HOSTS", []),
        ("MLFLOW_TRUSTED_PROXIES", ["*"]),
        ("LOG_LEVEL", "INFO"),
    ],
)
def test_defaults(
    monkeypatch: pytest.MonkeyPatch, variable: str, expected: Any
) -> None:
    monkeypatch.setenv("SHARINGHUB_URL", URL)

    assert getattr(load_settings(), FIELDS[variable]) == expected


@pytest.mark.parametrize("raw", ["true", "True", "1", "yes", "on"])
def test_boolean_spellings_for_true(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SHARINGHUB_URL", URL)
    monkeypatch.setenv("SHARINGHUB_AUTH_DEFAULT_TOKEN", raw)

    assert load_settings().sharinghub_auth_default_token is True


@pytest.mark.parametrize("raw", ["false", "False", "0", "no", "off"])
def test_boolean_spellings_for_false(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("SHARINGHUB_URL", URL)
    monkeypatch.setenv("SHARINGHUB_AUTH_DEFAULT_TOKEN", raw)

    assert load_settings().sharinghub_auth_default_token is False


def test_store_and_artifacts_default_into_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHARINGHUB_URL", URL)
    monkeypatch.setenv("MLFLOW_DATA_DIR", str(tmp_path / "state"))

    settings = load_settings()

    data_dir = (tmp_path / "state").resolve()
    assert settings.store_uri == f"sqlite:///{data_dir / 'mlflow.db'}"
    assert settings.artifacts == str(data_dir / "mlartifacts")


def test_default_data_dir_is_relative_to_the_working_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHARINGHUB_URL", URL)
    monkeypatch.chdir(tmp_path)

    settings = load_settings()

    assert settings.store_uri == f"sqlite:///{tmp_path.resolve() / 'data/mlflow.db'}"
    assert settings.artifacts == str(tmp_path.resolve() / "data/mlartifacts")


def test_explicit_store_and_artifacts_win_over_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SHARINGHUB_URL", URL)
    monkeypatch.setenv("MLFLOW_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", "postgresql://db.internal/mlflow")
    monkeypatch.setenv("MLFLOW_ARTIFACTS_DESTINATION", "s3://models/mlflow")

    settings = load_settings()

    assert settings.store_uri == "postgresql://db.internal/mlflow"
    assert settings.artifacts == "s3://models/mlflow"


def test_overrides_win_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARINGHUB_URL", URL)
    monkeypatch.setenv("MLFLOW_PORT", "5001")
    monkeypatch.setenv("MLFLOW_WORKERS", "3")

    settings = load_settings(port="6000", workers=None)

    assert settings.port == 6000
    assert settings.workers == 3  # an override of None leaves the variable in charge


def test_env_name_is_the_variable_of_a_setting() -> None:
    assert env_name("port") == "MLFLOW_PORT"
    assert env_name("sharinghub_url") == "SHARINGHUB_URL"
    assert env_name("secret_key") == "SECRET_KEY"


# (variable, malformed value, what the message says is expected)
MALFORMED = [
    ("SHARINGHUB_URL", "sharinghub.example.com", "http(s) URL"),
    ("SHARINGHUB_URL", "ftp://sharinghub.example.com", "http(s) URL"),
    ("SHARINGHUB_URL", "https://", "http(s) URL"),
    ("SHARINGHUB_URL", "", "http(s) URL"),
    ("MLFLOW_PORT", "0", "greater than or equal to 1"),
    ("MLFLOW_PORT", "-1", "greater than or equal to 1"),
    ("MLFLOW_PORT", "70000", "less than or equal to 65535"),
    ("MLFLOW_PORT", "abc", "valid integer"),
    ("MLFLOW_PORT", "50.5", "valid integer"),
    ("MLFLOW_PORT", "", "valid integer"),
    ("MLFLOW_WORKERS", "0", "greater than or equal to 1"),
    ("MLFLOW_WORKERS", "65", "less than or equal to 64"),
    ("MLFLOW_WORKERS", "many", "valid integer"),
    ("SHARINGHUB_TIMEOUT", "-1", "greater than 0"),
    ("SHARINGHUB_TIMEOUT", "0", "greater than 0"),
    ("SHARINGHUB_TIMEOUT", "61", "less than or equal to 60"),
    ("SHARINGHUB_TIMEOUT", "soon", "valid number"),
    ("SHARINGHUB_CACHE_TTL", "-5", "greater than or equal to 0"),
    ("SHARINGHUB_CACHE_TTL", "3601", "less than or equal to 3600"),
    ("SHARINGHUB_AUTH_DEFAULT_TOKEN", "maybe", "valid boolean"),
    ("SHARINGHUB_AUTH_DEFAULT_TOKEN", "2", "valid boolean"),
    ("SHARINGHUB_STAC_COLLECTION", "   ", "non-empty"),
    ("SHARINGHUB_SESSION_COOKIE", "", "non-empty"),
    ("MLFLOW_S3_ENDPOINT_URL", "minio:9000", "http(s) URL"),
    ("MLFLOW_TRUSTED_PROXIES", "10.0.0.0/8,proxy.internal", "IPv4 or IPv6 network"),
    ("LOG_LEVEL", "LOUD", "one of DEBUG, INFO, WARNING, ERROR"),
]


@pytest.mark.parametrize(
    ("variable", "raw", "expected"),
    MALFORMED,
    ids=[f"{variable}={raw!r}" for variable, raw, _ in MALFORMED],
)
def test_a_malformed_value_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str, expected: str
) -> None:
    message = _refusal(monkeypatch, **{"SHARINGHUB_URL": URL, variable: raw})

    assert len(message.splitlines()) == 1
    assert f"{variable}: " in message
    assert expected in message
    assert repr(raw) in message  # the operator sees what was read


@pytest.mark.parametrize(
    ("variable", "raw"),
    [("SHARINGHUB_URL", "http://[sharinghub"), ("MLFLOW_PORT", "http://[5000")],
)
def test_an_unparseable_url_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str
) -> None:
    message = _refusal(monkeypatch, **{"SHARINGHUB_URL": URL, variable: raw})

    assert len(message.splitlines()) == 1
    assert f"{variable}: " in message


def test_a_missing_sharinghub_url_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refusal(monkeypatch)

    assert message == "invalid settings: SHARINGHUB_URL: required, not set"


def test_several_problems_share_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refusal(monkeypatch, MLFLOW_PORT="abc", MLFLOW_WORKERS="0")

    assert len(message.splitlines()) == 1
    assert re.search(r"SHARINGHUB_URL: .*; MLFLOW_PORT: .*; MLFLOW_WORKERS: ", message)


@SHARED_ENVIRONMENT
@given(raw=st.text(alphabet=st.characters(exclude_characters="["), max_size=40))
def test_any_port_value_is_read_or_refused_in_one_line(raw: str) -> None:
    # Brackets are left out: see test_an_unparseable_url_is_refused_in_one_line.
    try:
        settings = load_settings(sharinghub_url=URL, port=raw)
    except ConfigurationError as error:
        message = str(error)
    else:
        assert 1 <= settings.port <= 65535
        return
    assert len(message.splitlines()) == 1
    assert "MLFLOW_PORT: " in message


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("SHARINGHUB_URL", f"ftp://admin:{SECRET}@sharinghub.example.com"),
        ("MLFLOW_S3_ENDPOINT_URL", f"minio://key:{SECRET}@minio:9000"),
    ],
)
def test_a_password_in_a_refused_value_is_masked(
    monkeypatch: pytest.MonkeyPatch, variable: str, raw: str
) -> None:
    message = _refusal(monkeypatch, **{"SHARINGHUB_URL": URL, variable: raw})

    assert SECRET not in message
    assert ":***@" in message


def test_secret_key_is_never_in_a_refusal(monkeypatch: pytest.MonkeyPatch) -> None:
    message = _refusal(monkeypatch, SECRET_KEY=SECRET, MLFLOW_PORT="abc")

    assert "MLFLOW_PORT" in message
    assert SECRET not in message


def test_secret_key_is_not_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHARINGHUB_URL", URL)
    monkeypatch.setenv("SECRET_KEY", SECRET)

    settings = load_settings()

    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)
    assert settings.secret_key is not None
    assert settings.secret_key.get_secret_value() == SECRET


def test_a_store_password_is_not_in_repr_or_str(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SHARINGHUB_URL", URL)
    monkeypatch.setenv("MLFLOW_BACKEND_STORE_URI", f"postgresql://mlflow:{SECRET}@db/m")

    settings = load_settings()

    assert SECRET not in repr(settings)
    assert SECRET not in str(settings)


@pytest.mark.parametrize(
    ("uri", "masked"),
    [
        ("postgresql://mlflow:pw@db/mlflow", "postgresql://mlflow:***@db/mlflow"),
        (
            "postgresql+psycopg://mlflow:p%40ss@db.internal:5432/mlflow?sslmode=require",
            "postgresql+psycopg://mlflow:***@db.internal:5432/mlflow?sslmode=require",
        ),
        ("https://:token@host/path", "https://:***@host/path"),
        ("https://user:a@b@host/", "https://user:***@host/"),
        ("postgresql://mlflow@db/mlflow", "postgresql://mlflow@db/mlflow"),
        ("postgresql://db/mlflow", "postgresql://db/mlflow"),
        ("sqlite:////srv/data/mlflow.db", "sqlite:////srv/data/mlflow.db"),
        ("s3://bucket/prefix", "s3://bucket/prefix"),
        ("/srv/data/mlartifacts", "/srv/data/mlartifacts"),
    ],
)
def test_mask_uri(uri: str, masked: str) -> None:
    assert mask_uri(uri) == masked


@SHARED_ENVIRONMENT
@given(
    user=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_", min_size=1),
    password=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.~", min_size=1),
)
def test_mask_uri_replaces_any_password(
    monkeypatch: pytest.MonkeyPatch, user: str, password: str
) -> None:
    uri = f"postgresql://{user}:{password}@db.internal:5432/mlflow"

    assert mask_uri(uri) == f"postgresql://{user}:***@db.internal:5432/mlflow"


def _environment(monkeypatch: pytest.MonkeyPatch, **variables: str) -> dict[str, str]:
    for name, value in {"SHARINGHUB_URL": URL, **variables}.items():
        monkeypatch.setenv(name, value)
    return load_settings().mlflow_environment()


def test_mlflow_environment_turns_this_product_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = _environment(monkeypatch)

    assert environment["MLFLOW_ENABLE_WORKSPACES"] == "true"
    assert environment["MLFLOW_WORKSPACE_STORE_URI"] == "sharinghub://"
    assert environment["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert environment["MLFLOW_SERVER_X_FRAME_OPTIONS"] == "NONE"
    assert environment["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert environment["DO_NOT_TRACK"] == "true"
    assert "MLFLOW_S3_ENDPOINT_URL" not in environment


def test_mlflow_environment_allows_sharinghub_and_the_extra_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = _environment(
        monkeypatch, MLFLOW_SERVER_ALLOWED_HOSTS="mlflow.example.org"
    )

    hosts = environment["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")
    assert {"sharinghub.example.com", "mlflow.example.org", "localhost"} <= set(hosts)
    assert "127.0.0.1:*" in hosts
    assert len(hosts) == len(set(hosts))
    origins = environment["MLFLOW_SERVER_CORS_ALLOWED_ORIGINS"].split(",")
    assert origins == [URL, "https://mlflow.example.org", "http://mlflow.example.org"]


def test_mlflow_environment_passes_the_secret_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = _environment(monkeypatch, SECRET_KEY=SECRET)

    assert environment["MLFLOW_FLASK_SERVER_SECRET_KEY"] == SECRET


def test_mlflow_environment_invents_a_secret_key_when_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    key = _environment(monkeypatch)["MLFLOW_FLASK_SERVER_SECRET_KEY"]

    assert re.fullmatch(r"[0-9a-f]{64}", key)
    assert key != _environment(monkeypatch)["MLFLOW_FLASK_SERVER_SECRET_KEY"]


def test_mlflow_environment_passes_the_s3_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    environment = _environment(monkeypatch, MLFLOW_S3_ENDPOINT_URL="http://minio:9000")

    assert environment["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"SHARINGHUB_URL": URL, "MLFLOW_PORT": "abc"}, "MLFLOW_PORT"),
        ({}, "SHARINGHUB_URL"),
    ],
    ids=["malformed-port", "missing-url"],
)
def test_the_server_command_stops_with_one_line(
    tmp_path: Path, variables: dict[str, str], named: str
) -> None:
    started = time.monotonic()
    result = subprocess.run(
        [COMMAND, "server"],
        env={**os.environ, **variables},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode != 0
    assert time.monotonic() - started < 30
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mlflow-sharinghub: invalid settings: ")
    assert f"{named}: " in lines[0]
    assert result.stdout == ""
    assert list(tmp_path.iterdir()) == []  # nothing was started or created
