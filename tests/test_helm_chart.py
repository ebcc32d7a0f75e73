"""The Helm chart, rendered offline by the real Helm engine (helm-python-sdk).

Every manifest is validated against the Kubernetes schemas in strict mode
(kubernetes-validate). The tests then check what an operator relies on: each
value reaches the server container as the environment variable the server
reads (``mlflow_sharinghub.settings``), secrets are referenced and never
inlined, the ingress and security contexts are those of the configuration
reference, and ``values.schema.json`` refuses malformed values.

Values are written flat, ``{"s3.endpointUrl": url}``, and expanded by
:func:`expand`; the dotted keys also name the test cases.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

from mlflow_sharinghub.settings import Settings

CHART_DIR = Path(__file__).parents[1] / "deploy" / "helm" / "mlflow-sharinghub"
REFERENCE_VALUES = Path(__file__).parent / "fixtures" / "reference-values.yaml"
APP_VERSION = yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["appVersion"]
KUBERNETES_VERSION = "1.33.0"

RELEASE = "mlflow-sharinghub"
NAMESPACE = "sharinghub"
SERVER = "mlflow-sharinghub"
DATA_DIR = "/home/mlflow/data"
HUB = "https://sharinghub.example.com"
REQUIRED = {"mlflowSharinghub.sharinghubUrl": HUB}
POD = "spec.template.spec"
CONTAINER = f"{POD}.containers.name={SERVER}"
HOST = {"host": "mlflow.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}

SETTING_NAMES = {field.alias for field in Settings.model_fields.values()}
# What the server container may get besides settings: boto3's credentials and
# the password the PostgreSQL URI is built from.
OTHER_ENV = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_POSTGRES_PASSWORD"}
SECRET_ENV = OTHER_ENV | {"SECRET_KEY", "POSTGRES_PASSWORD", "MLFLOW_DB_PASSWORD"}
MISSING = object()


# --- Helpers ------------------------------------------------------------------


@dataclass(frozen=True)
class FromSecret:
    """An env value taken from a key of a Kubernetes secret."""

    name: str
    key: str


@dataclass(frozen=True)
class Rendered:
    """The manifests and notes of one rendering of the chart."""

    manifests: list[dict[str, Any]]
    notes: str

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.manifests if m["kind"] == kind]

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = [m for m in self.all(kind) if name in (None, m["metadata"]["name"])]
        assert len(found) == 1, f"expected one {kind} {name or ''}, got {len(found)}"
        return found[0]

    @property
    def server(self) -> dict[str, Any]:
        container: dict[str, Any] = dig(self.one("Deployment"), CONTAINER)
        return container

    @property
    def env(self) -> dict[str, str | FromSecret]:
        """The server container's env values by name (names are unique)."""
        names = [entry["name"] for entry in self.server["env"]]
        assert len(names) == len(set(names)), f"duplicate env names: {names}"
        return {entry["name"]: env_value(entry) for entry in self.server["env"]}

    def containers(self) -> Iterator[dict[str, Any]]:
        """Every container and init container of every workload."""
        for workload in self.all("Deployment") + self.all("StatefulSet"):
            yield from dig(workload, POD).get("initContainers", [])
            yield from dig(workload, f"{POD}.containers")


def merged(*layers: dict[str, Any]) -> dict[str, Any]:
    """The layers deep-merged, later ones winning, as Helm's -f files do."""
    result: dict[str, Any] = {}
    for layer in layers:
        for key, value in layer.items():
            if isinstance(value, dict) and isinstance(result.get(key), dict):
                result[key] = merged(result[key], value)
            else:
                result[key] = copy.deepcopy(value)
    return result


def expand(flat: dict[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1}`` as ``{"a": {"b": 1}}``; values are taken as they are."""
    layers = []
    for dotted, value in flat.items():
        for key in reversed(dotted.split(".")):
            value = {key: value}
        layers.append(value)
    return merged(*layers)


def with_required(flat: dict[str, Any]) -> dict[str, Any]:
    return expand({**REQUIRED, **flat})


def case_id(flat: dict[str, Any]) -> str:
    return "+".join(flat) or "defaults"


def by_values(cases: list[tuple[dict[str, Any], Any]]) -> list[Any]:
    """Cases of (flat values, expectation), each named by its values."""
    return [pytest.param(flat, expected, id=case_id(flat)) for flat, expected in cases]


def by_name(items: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [item for item in items if item.get("name") == name]
    assert len(found) == 1, f"expected one item named {name}"
    return found[0]


def dig(obj: Any, path: str) -> Any:
    """Follow a dotted path; ``name=x`` picks the list item named x."""
    for part in path.split("."):
        if isinstance(obj, list) and part.startswith("name="):
            obj = by_name(obj, part.removeprefix("name="))
        elif isinstance(obj, list):
            obj = obj[int(part)]
        elif isinstance(obj, dict) and part in obj:
            obj = obj[part]
        else:
            return MISSING
    return obj


def env_value(entry: dict[str, Any]) -> str | FromSecret:
    if "value" in entry:
        return str(entry["value"])
    ref = entry["valueFrom"]["secretKeyRef"]
    return FromSecret(ref["name"], ref["key"])


def validate(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


Render = Callable[..., Rendered]


@pytest.fixture(scope="module")
def chart() -> Iterator[helm.Chart]:
    with helm.Chart.load(CHART_DIR) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def render(chart: helm.Chart) -> Render:
    """Render values and validate every manifest; each rendering done once."""
    cache: dict[str, Rendered] = {}

    def render_values(values: dict[str, Any], release: str = RELEASE) -> Rendered:
        key = json.dumps([values, release], sort_keys=True)
        if key not in cache:
            files = chart.render(values, name=release, namespace=NAMESPACE)
            notes = files.pop(f"{CHART_DIR.name}/templates/NOTES.txt", "")
            manifests = [
                doc
                for text in files.values()
                for doc in yaml.safe_load_all(text)
                if doc
            ]
            for manifest in manifests:
                validate(manifest)
            cache[key] = Rendered(manifests, notes)
        return cache[key]

    return render_values


@pytest.fixture(scope="module")
def defaults(render: Render) -> Rendered:
    return render(with_required({}))


@pytest.fixture(scope="module")
def reference(render: Render) -> Rendered:
    return render(yaml.safe_load(REFERENCE_VALUES.read_text()))


# --- The chart itself -----------------------------------------------------------


def test_chart_needs_nothing_downloaded(chart: helm.Chart) -> None:
    assert chart.metadata["apiVersion"] == "v2"
    assert "dependencies" not in chart.metadata
    assert chart.dependencies == []


def test_helm_lint_finds_nothing() -> None:
    report = helm.lint(
        CHART_DIR,
        with_required({}),
        strict=True,
        kube_version=f"v{KUBERNETES_VERSION}",
    )

    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_validation_is_strict(defaults: Rendered) -> None:
    deployment = copy.deepcopy(defaults.one("Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["envv"] = []

    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)


def test_notes_name_the_secrets_to_create(reference: Rendered) -> None:
    assert "mlflow-sharinghub: secret-key" in reference.notes
    assert "mlflow-sharinghub-postgres: password, postgres-password" in reference.notes
    assert "mlflow-sharinghub-s3: access-key-id, secret-access-key" in reference.notes
    assert "https://sharinghub.example.com/mlflow/health" in reference.notes


# --- Which objects are rendered -------------------------------------------------

DEFAULT_KINDS = {
    "Deployment": 1,
    "Service": 1,
    "PersistentVolumeClaim": 1,
    "ServiceAccount": 1,
    "Ingress": 0,
    "StatefulSet": 0,
    "ConfigMap": 0,
    "Secret": 0,
}
KIND_CASES = [
    ({}, DEFAULT_KINDS),
    ({"persistence.enabled": False}, {"PersistentVolumeClaim": 0}),
    ({"persistence.existingClaim": "mlflow-data"}, {"PersistentVolumeClaim": 0}),
    ({"serviceAccount.create": False}, {"ServiceAccount": 0}),
    ({"postgresql.enabled": True}, {"StatefulSet": 1, "Service": 2, "ConfigMap": 1}),
    ({"ingress.enabled": True, "ingress.hosts": [HOST]}, {"Ingress": 1}),
]


@pytest.mark.parametrize(("flat", "counts"), by_values(KIND_CASES))
def test_rendered_objects(
    render: Render, flat: dict[str, Any], counts: dict[str, int]
) -> None:
    rendered = render(with_required(flat))

    assert {kind: len(rendered.all(kind)) for kind in counts} == counts


def test_reference_example_renders(reference: Rendered) -> None:
    assert sorted(m["kind"] for m in reference.manifests) == [
        "ConfigMap",
        "Deployment",
        "Ingress",
        "Service",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]


# --- Values reach the server as the settings it reads ---------------------------


def postgres_uri(user: str = "mlflow", database: str = "mlflow") -> str:
    """The bundled PostgreSQL's store URI; the kubelet fills in the password."""
    host = f"{RELEASE}-postgresql:5432"
    return f"postgresql://{user}:$(MLFLOW_POSTGRES_PASSWORD)@{host}/{database}"


S3_URL = "https://s3.eu-west-3.amazonaws.com"
PG_PASSWORD = FromSecret("mlflow-sharinghub-postgres", "password")
S3_KEYS = {
    "AWS_ACCESS_KEY_ID": FromSecret("mlflow-sharinghub-s3", "access-key-id"),
    "AWS_SECRET_ACCESS_KEY": FromSecret("mlflow-sharinghub-s3", "secret-access-key"),
}
DEFAULT_ENV: dict[str, str | FromSecret | None] = {
    "SHARINGHUB_URL": HUB,
    "SHARINGHUB_STAC_COLLECTION": "ai-model",
    "SHARINGHUB_AUTH_DEFAULT_TOKEN": "false",
    "SECRET_KEY": FromSecret("mlflow-sharinghub", "secret-key"),
    "MLFLOW_HOST": "0.0.0.0",  # noqa: S104
    "MLFLOW_PORT": "5000",
    "MLFLOW_DATA_DIR": DATA_DIR,
    "MLFLOW_BACKEND_STORE_URI": None,
    "MLFLOW_ARTIFACTS_DESTINATION": None,
    "MLFLOW_S3_ENDPOINT_URL": None,
    "AWS_ACCESS_KEY_ID": None,
    "AWS_SECRET_ACCESS_KEY": None,
    "MLFLOW_SERVER_ALLOWED_HOSTS": None,
}
OTHER_HOST = {**HOST, "host": "sharinghub.example.com"}
OTHER_HUB = "https://hub.example.org/sh"

# Each option on its own, and the env it gives the server (None: not set).
ENV_CASES: list[tuple[dict[str, Any], dict[str, str | FromSecret | None]]] = [
    ({}, DEFAULT_ENV),
    ({"mlflowSharinghub.sharinghubUrl": OTHER_HUB}, {"SHARINGHUB_URL": OTHER_HUB}),
    (
        {"mlflowSharinghub.sharinghubStacCollection": "eo-models"},
        {"SHARINGHUB_STAC_COLLECTION": "eo-models"},
    ),
    (
        {"mlflowSharinghub.sharinghubAuthDefaultToken": True},
        {"SHARINGHUB_AUTH_DEFAULT_TOKEN": "true"},
    ),
    (
        {"mlflowSharinghub.artifactsDestination": "s3://mlflow-artifacts"},
        {"MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow-artifacts"},
    ),
    (
        {"mlflowSharinghub.backendStoreUriSecret": True},
        {
            "MLFLOW_BACKEND_STORE_URI": FromSecret(
                "mlflow-sharinghub", "backend-store-uri"
            ),
            "MLFLOW_POSTGRES_PASSWORD": None,
        },
    ),
    (
        {
            "mlflowSharinghub.secretName": "mlops",
            "mlflowSharinghub.backendStoreUriSecret": True,
        },
        {
            "SECRET_KEY": FromSecret("mlops", "secret-key"),
            "MLFLOW_BACKEND_STORE_URI": FromSecret("mlops", "backend-store-uri"),
        },
    ),
    (
        {"s3.enabled": True, "s3.endpointUrl": S3_URL},
        {**S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": S3_URL},
    ),
    ({"s3.enabled": True}, {**S3_KEYS, "MLFLOW_S3_ENDPOINT_URL": None}),
    (
        {"s3.endpointUrl": S3_URL},
        {"AWS_ACCESS_KEY_ID": None, "MLFLOW_S3_ENDPOINT_URL": None},
    ),
    (
        {"s3.enabled": True, "s3.secretName": "minio"},
        {"AWS_SECRET_ACCESS_KEY": FromSecret("minio", "secret-access-key")},
    ),
    (
        {"postgresql.enabled": True},
        {
            "MLFLOW_POSTGRES_PASSWORD": PG_PASSWORD,
            "MLFLOW_BACKEND_STORE_URI": postgres_uri(),
        },
    ),
    (
        {
            "postgresql.enabled": True,
            "postgresql.auth.username": "tracker",
            "postgresql.auth.database": "tracking",
            "postgresql.auth.existingSecret": "pg",
        },
        {
            "MLFLOW_POSTGRES_PASSWORD": FromSecret("pg", "password"),
            "MLFLOW_BACKEND_STORE_URI": postgres_uri("tracker", "tracking"),
        },
    ),
    (
        {"ingress.enabled": True, "ingress.hosts": [OTHER_HOST, HOST]},
        {"MLFLOW_SERVER_ALLOWED_HOSTS": "sharinghub.example.com,mlflow.example.com"},
    ),
    ({"ingress.hosts": [HOST]}, {"MLFLOW_SERVER_ALLOWED_HOSTS": None}),
    (
        {
            "extraEnv": [
                {"name": "SHARINGHUB_CACHE_TTL", "value": "60"},
                {"name": "LOG_LEVEL", "value": "DEBUG"},
            ]
        },
        {"SHARINGHUB_CACHE_TTL": "60", "LOG_LEVEL": "DEBUG"},
    ),
]
# The reference example and every option on its own, for checks on them all.
SCENARIOS = [
    pytest.param(yaml.safe_load(REFERENCE_VALUES.read_text()), id="reference"),
    *(pytest.param(with_required(flat), id=case_id(flat)) for flat, _ in ENV_CASES),
]


@pytest.mark.parametrize(("flat", "expected"), by_values(ENV_CASES))
def test_value_reaches_the_server_env(
    render: Render, flat: dict[str, Any], expected: dict[str, Any]
) -> None:
    env = render(with_required(flat)).env

    assert {name: env.get(name) for name in expected} == expected


def test_reference_example_env(reference: Rendered) -> None:
    assert reference.env == {
        **{name: value for name, value in DEFAULT_ENV.items() if value is not None},
        **S3_KEYS,
        "MLFLOW_POSTGRES_PASSWORD": PG_PASSWORD,
        "MLFLOW_BACKEND_STORE_URI": postgres_uri(),
        "MLFLOW_ARTIFACTS_DESTINATION": "s3://mlflow-artifacts",
        "MLFLOW_S3_ENDPOINT_URL": S3_URL,
        "MLFLOW_SERVER_ALLOWED_HOSTS": "sharinghub.example.com",
    }


@pytest.mark.parametrize("values", SCENARIOS)
def test_env_names_are_settings_the_server_reads(
    render: Render, values: dict[str, Any]
) -> None:
    assert set(render(values).env) - SETTING_NAMES - OTHER_ENV == set()


def kubelet_env(rendered: Rendered) -> dict[str, str]:
    """The server's environment as the kubelet builds it.

    A secret key stands for itself (``name.key``); ``$(NAME)`` is expanded
    only from the entries before it, as Kubernetes does.
    """
    env: dict[str, str] = {}
    for name, value in rendered.env.items():
        if isinstance(value, FromSecret):
            env[name] = f"{value.name}.{value.key}"
        else:
            env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)
    return env


SETTINGS_CASES = [
    pytest.param(
        "defaults",
        {
            "sharinghub_url": HUB,
            "sharinghub_stac_collection": "ai-model",
            "sharinghub_auth_default_token": False,
            "secret_key": "mlflow-sharinghub.secret-key",
            "store_uri": f"sqlite:///{DATA_DIR}/mlflow.db",
            "artifacts": f"{DATA_DIR}/mlartifacts",
            "s3_endpoint_url": None,
            "host": "0.0.0.0",  # noqa: S104
            "port": 5000,
            "allowed_hosts": [],
        },
        id="defaults",
    ),
    pytest.param(
        "reference",
        {
            "store_uri": "postgresql://mlflow:mlflow-sharinghub-postgres.password"
            "@mlflow-sharinghub-postgresql:5432/mlflow",
            "artifacts": "s3://mlflow-artifacts",
            "s3_endpoint_url": S3_URL,
            "allowed_hosts": ["sharinghub.example.com"],
        },
        id="reference",
    ),
]


@pytest.fixture
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the test process leaks into the server's settings."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(("scenario", "expected"), SETTINGS_CASES)
def test_server_settings_from_the_chart(
    request: pytest.FixtureRequest,
    clean_environ: None,
    scenario: str,
    expected: dict[str, Any],
) -> None:
    rendered: Rendered = request.getfixturevalue(scenario)

    settings = Settings(**kubelet_env(rendered))

    actual = {field: getattr(settings, field) for field in expected}
    if actual.get("secret_key") is not None:
        actual["secret_key"] = actual["secret_key"].get_secret_value()
    assert actual == expected


@pytest.mark.parametrize("values", SCENARIOS)
def test_the_server_accepts_the_env(
    render: Render, values: dict[str, Any], clean_environ: None
) -> None:
    env = kubelet_env(render(values))

    assert [name for name, value in env.items() if "$(" in value] == []
    Settings(**env)


@pytest.mark.parametrize("values", SCENARIOS)
def test_secrets_are_referenced_never_inlined(
    render: Render, values: dict[str, Any]
) -> None:
    rendered = render(values)

    assert rendered.all("Secret") == []
    for container in rendered.containers():
        for entry in container.get("env", []):
            if entry["name"] in SECRET_ENV:
                assert entry["valueFrom"].keys() == {"secretKeyRef"}, entry
                assert "value" not in entry, entry
    store = rendered.env.get("MLFLOW_BACKEND_STORE_URI")
    if isinstance(store, str):
        assert re.match(r"postgresql://\w+:\$\(MLFLOW_POSTGRES_PASSWORD\)@", store)


def test_sharinghub_url_is_required(chart: helm.Chart) -> None:
    with pytest.raises(helm.HelmValuesError, match="sharinghubUrl"):
        chart.render({}, name=RELEASE, namespace=NAMESPACE)


def test_backend_store_choices_exclude_each_other(chart: helm.Chart) -> None:
    values = with_required(
        {"mlflowSharinghub.backendStoreUriSecret": True, "postgresql.enabled": True}
    )

    with pytest.raises(helm.HelmRenderError, match="exclude each other"):
        chart.render(values, name=RELEASE, namespace=NAMESPACE)


# --- Other values, each on its own ----------------------------------------------

PG_CONTAINER = f"{POD}.containers.name=postgresql"
PG_CLAIM = "spec.volumeClaimTemplates.0.spec"
CLAIM = f"{POD}.volumes.name=data.persistentVolumeClaim.claimName"
PG = {"postgresql.enabled": True}
TOLERATION = {"key": "mlops", "operator": "Exists", "effect": "NoSchedule"}
AFFINITY = {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": []}}
LIMITS = {"limits": {"cpu": "1000m", "memory": "2Gi"}}
POD_CONTEXT = {"runAsUser": 999, "runAsGroup": 999, "runAsNonRoot": True}

# For each kind of object: values, a path in the object, what is found there.
OPTION_CASES: dict[str, list[tuple[dict[str, Any], str, Any]]] = {
    "Deployment": [
        ({}, f"{CONTAINER}.image", f"eoepca/mlflow-sharinghub:{APP_VERSION}"),
        (
            {"image.repository": "x.example.com/mlflow"},
            f"{CONTAINER}.image",
            f"x.example.com/mlflow:{APP_VERSION}",
        ),
        (
            {"image.tag": "1.2.3"},
            f"{CONTAINER}.image",
            "eoepca/mlflow-sharinghub:1.2.3",
        ),
        ({"image.pullPolicy": "Always"}, f"{CONTAINER}.imagePullPolicy", "Always"),
        (
            {"imagePullSecrets": [{"name": "hub"}]},
            f"{POD}.imagePullSecrets",
            [{"name": "hub"}],
        ),
        ({"replicaCount": 3}, "spec.replicas", 3),
        ({}, "spec.strategy.type", "Recreate"),
        ({"persistence.enabled": False}, "spec.strategy", MISSING),
        ({}, CLAIM, "mlflow-sharinghub-data"),
        ({}, f"{CONTAINER}.volumeMounts.name=data.mountPath", DATA_DIR),
        ({"persistence.existingClaim": "mlflow-data"}, CLAIM, "mlflow-data"),
        ({"persistence.enabled": False}, f"{POD}.volumes.name=data.emptyDir", {}),
        ({"resources": LIMITS}, f"{CONTAINER}.resources", LIMITS),
        (
            {"podSecurityContext.fsGroup": 2000},
            f"{POD}.securityContext",
            {**POD_CONTEXT, "fsGroup": 2000},
        ),
        ({"nodeSelector": {"pool": "mlops"}}, f"{POD}.nodeSelector", {"pool": "mlops"}),
        ({"tolerations": [TOLERATION]}, f"{POD}.tolerations", [TOLERATION]),
        ({"affinity": AFFINITY}, f"{POD}.affinity", AFFINITY),
        (
            {"podAnnotations": {"a.example.com/b": "c"}},
            "spec.template.metadata.annotations",
            {"a.example.com/b": "c"},
        ),
        ({"serviceAccount.create": False}, f"{POD}.serviceAccountName", "default"),
        ({"serviceAccount.name": "mlops"}, f"{POD}.serviceAccountName", "mlops"),
        (
            {**PG, "postgresql.image.tag": "16"},
            f"{POD}.initContainers.name=wait-for-postgresql.image",
            "postgres:16",
        ),
    ],
    "PersistentVolumeClaim": [
        ({}, "spec.resources.requests.storage", "10Gi"),
        ({"persistence.size": "100Gi"}, "spec.resources.requests.storage", "100Gi"),
        ({}, "spec.storageClassName", MISSING),
        ({"persistence.storageClass": "fast"}, "spec.storageClassName", "fast"),
        (
            {"persistence.accessModes": ["ReadWriteMany"]},
            "spec.accessModes",
            ["ReadWriteMany"],
        ),
    ],
    "Service": [
        ({"service.type": "NodePort"}, "spec.type", "NodePort"),
        ({"service.port": 8080}, "spec.ports.name=http.port", 8080),
    ],
    "ServiceAccount": [
        (
            {"serviceAccount.annotations": {"a.example.com/b": "c"}},
            "metadata.annotations",
            {"a.example.com/b": "c"},
        ),
    ],
    "StatefulSet": [
        (PG, f"{PG_CONTAINER}.image", "postgres:17"),
        (PG, f"{PG_CLAIM}.resources.requests.storage", "8Gi"),
        (
            {**PG, "postgresql.primary.persistence.size": "20Gi"},
            f"{PG_CLAIM}.resources.requests.storage",
            "20Gi",
        ),
        (
            {**PG, "postgresql.primary.persistence.storageClass": "fast"},
            f"{PG_CLAIM}.storageClassName",
            "fast",
        ),
        (
            {**PG, "postgresql.primary.persistence.enabled": False},
            f"{POD}.volumes.name=data.emptyDir",
            {},
        ),
        ({**PG, "postgresql.primary.persistence.existingClaim": "pg"}, CLAIM, "pg"),
        (
            {**PG, "postgresql.primary.resources": LIMITS},
            f"{PG_CONTAINER}.resources",
            LIMITS,
        ),
    ],
    "Ingress": [
        (
            {"ingress.enabled": True, "ingress.hosts": [HOST]},
            "spec.ingressClassName",
            MISSING,
        ),
        (
            {
                "ingress.enabled": True,
                "ingress.hosts": [HOST],
                "ingress.className": "x",
            },
            "spec.ingressClassName",
            "x",
        ),
        (
            {
                "ingress.enabled": True,
                "ingress.hosts": [HOST],
                "ingress.tls": [{"hosts": ["mlflow.example.com"]}],
            },
            "spec.tls",
            [{"hosts": ["mlflow.example.com"]}],
        ),
    ],
}


@pytest.mark.parametrize(
    ("flat", "kind", "path", "expected"),
    [
        pytest.param(flat, kind, path, expected, id=f"{case_id(flat)}:{path}")
        for kind, cases in OPTION_CASES.items()
        for flat, path, expected in cases
    ],
)
def test_option(
    render: Render, flat: dict[str, Any], kind: str, path: str, expected: Any
) -> None:
    assert dig(render(with_required(flat)).one(kind), path) == expected


# --- PostgreSQL -----------------------------------------------------------------


def test_release_name_names_the_postgresql_host(render: Render) -> None:
    rendered = render(with_required({"postgresql.enabled": True}), release="mlops")

    service = rendered.one("Service", "mlops-postgresql")
    assert dig(service, "spec.ports.name=postgresql.port") == 5432
    assert rendered.one("StatefulSet")["spec"]["serviceName"] == "mlops-postgresql"
    assert "@mlops-postgresql:5432/mlflow" in str(
        rendered.env["MLFLOW_BACKEND_STORE_URI"]
    )


def test_postgresql_uses_both_keys_of_its_secret(reference: Rendered) -> None:
    container = dig(reference.one("StatefulSet"), PG_CONTAINER)
    env = {entry["name"]: env_value(entry) for entry in container["env"]}
    secret = "mlflow-sharinghub-postgres"

    assert env["POSTGRES_PASSWORD"] == FromSecret(secret, "postgres-password")
    assert env["MLFLOW_DB_PASSWORD"] == FromSecret(secret, "password")
    assert (env["MLFLOW_DB_USER"], env["MLFLOW_DB_NAME"]) == ("mlflow", "mlflow")
    data = dig(container, "volumeMounts.name=data.mountPath")
    assert str(env["PGDATA"]).startswith(data + "/")


def test_postgresql_init_script_creates_the_servers_role(reference: Rendered) -> None:
    statefulset = reference.one("StatefulSet")
    configmap = reference.one("ConfigMap")
    (script,) = configmap["data"].values()

    volume = dig(statefulset, f"{POD}.volumes.name=initdb.configMap.name")
    assert volume == configmap["metadata"]["name"]
    mount = dig(statefulset, f"{PG_CONTAINER}.volumeMounts.name=initdb.mountPath")
    assert mount == "/docker-entrypoint-initdb.d"
    for variable in ("MLFLOW_DB_USER", "MLFLOW_DB_PASSWORD", "MLFLOW_DB_NAME"):
        assert f'"${variable}"' in script
    assert "CREATE ROLE" in script
    assert "CREATE DATABASE" in script


def test_selectors_keep_server_and_postgresql_apart(reference: Rendered) -> None:
    pods = {
        "server": reference.one("Deployment")["spec"]["template"]["metadata"],
        "postgresql": reference.one("StatefulSet")["spec"]["template"]["metadata"],
    }
    services = {
        "server": reference.one("Service", "mlflow-sharinghub"),
        "postgresql": reference.one("Service", "mlflow-sharinghub-postgresql"),
    }

    for service_name, service in services.items():
        selector = service["spec"]["selector"].items()
        selected = [
            name for name, pod in pods.items() if selector <= pod["labels"].items()
        ]
        assert selected == [service_name]


# --- Ingress, probes, security --------------------------------------------------


def test_ingress_is_the_reference_one(reference: Rendered) -> None:
    ingress = reference.one("Ingress")
    annotations = dict(ingress["metadata"]["annotations"])
    snippet = annotations.pop("nginx.ingress.kubernetes.io/configuration-snippet")

    assert ingress["spec"]["ingressClassName"] == "nginx"
    assert annotations == {
        "cert-manager.io/cluster-issuer": "letsencrypt-prod",
        "nginx.ingress.kubernetes.io/ssl-redirect": "true",
        "nginx.ingress.kubernetes.io/proxy-body-size": "10g",
    }
    assert snippet.splitlines() == [
        "proxy_set_header X-Script-Name /mlflow;",
        "rewrite ^/mlflow/(.*)$ /$1 break;",
    ]
    assert ingress["spec"]["tls"] == [
        {
            "secretName": "sharinghub.example.com-tls",
            "hosts": ["sharinghub.example.com"],
        }
    ]
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert rule["host"] == "sharinghub.example.com"
    assert (path["path"], path["pathType"]) == ("/mlflow/", "ImplementationSpecific")


def test_ingress_reaches_the_server_port(reference: Rendered) -> None:
    ingress = reference.one("Ingress")
    backend = dig(ingress, "spec.rules.0.http.paths.0.backend.service")
    service = reference.one("Service", backend["name"])
    target = dig(service, f"spec.ports.name={backend['port']['name']}.targetPort")

    assert dig(reference.server, f"ports.name={target}.containerPort") == 5000


@pytest.mark.parametrize(
    ("probe", "path"),
    [
        ("startupProbe", "/health"),
        ("livenessProbe", "/health"),
        ("readinessProbe", "/ready"),
    ],
)
def test_server_probes(defaults: Rendered, probe: str, path: str) -> None:
    http_get = defaults.server[probe]["httpGet"]

    assert http_get["path"] == path
    assert dig(defaults.server, f"ports.name={http_get['port']}.containerPort") == 5000


HARDENED = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


@pytest.mark.parametrize("scenario", ["defaults", "reference"])
def test_every_container_is_hardened(
    request: pytest.FixtureRequest, scenario: str
) -> None:
    rendered: Rendered = request.getfixturevalue(scenario)

    containers = list(rendered.containers())
    assert len(containers) == (1 if scenario == "defaults" else 3)
    for container in containers:
        assert container["securityContext"] == HARDENED, container["name"]


@pytest.mark.parametrize("scenario", ["defaults", "reference"])
def test_pods_run_as_999(request: pytest.FixtureRequest, scenario: str) -> None:
    rendered: Rendered = request.getfixturevalue(scenario)

    for workload in rendered.all("Deployment") + rendered.all("StatefulSet"):
        pod = dig(workload, POD)
        assert pod["securityContext"] == {**POD_CONTEXT, "fsGroup": 999}
        assert pod["automountServiceAccountToken"] is False


def test_read_only_root_keeps_tmp_and_data_writable(defaults: Rendered) -> None:
    mounts = {m["mountPath"]: m for m in defaults.server["volumeMounts"]}
    volumes = dig(defaults.one("Deployment"), f"{POD}.volumes")

    assert by_name(volumes, mounts["/tmp"]["name"])["emptyDir"] == {}
    assert mounts[DATA_DIR]["name"] == "data"
    assert not any(mount.get("readOnly") for mount in mounts.values())


# --- The schema refuses malformed values ----------------------------------------


def refusal(dotted: str, value: Any, pointer: str | None = None) -> Any:
    """Values with one malformed entry, and where the schema points at it."""
    if pointer is None:
        pointer = "/" + dotted.replace(".", "/")
    shown = json.dumps(value)
    name = f"{dotted}={shown}" if len(shown) <= 24 else dotted
    return pytest.param(with_required({dotted: value}), pointer, id=name)


MALFORMED = [
    refusal("replicas", 2, pointer=""),
    refusal("replicaCount", "2"),
    refusal("replicaCount", -1),
    refusal("image.pullPolicy", "Sometimes"),
    refusal("image.tag", 1.2),
    refusal("image.registry", "docker.io", pointer="/image"),
    refusal("mlflowSharinghub.sharinghubUrl", "sharinghub.example.com"),
    refusal("mlflowSharinghub.sharinghubStacCollection", ""),
    refusal("mlflowSharinghub.sharinghubAuthDefaultToken", "false"),
    refusal(
        "mlflowSharinghub.backendStoreUri", "sqlite:///x", pointer="/mlflowSharinghub"
    ),
    refusal("mlflowSharinghub.backendStoreUriSecret", "yes"),
    refusal("mlflowSharinghub.artifactsDestination", 3),
    refusal("mlflowSharinghub.secretName", "Bad_Name"),
    refusal("s3.enabled", "true"),
    refusal("s3.endpointUrl", "s3.amazonaws.com"),
    refusal("postgresql.enabled", 1),
    refusal("postgresql.auth.username", "postgres"),
    refusal("postgresql.auth.database", "ml-flow"),
    refusal("postgresql.auth.existingSecret", ""),
    refusal("postgresql.auth.password", "secret", pointer="/postgresql/auth"),
    refusal("postgresql.primary.persistence.size", "8 GB"),
    refusal("postgresql.primary.persistence.enabled", "yes"),
    refusal("persistence.enabled", "no"),
    refusal("persistence.size", 10),
    refusal(
        "persistence.accessModes", ["ReadWriteSometimes"], "/persistence/accessModes/0"
    ),
    refusal("persistence.accessModes", []),
    refusal("podSecurityContext.fsGroup", "999"),
    refusal("securityContext.readOnlyRootFilesystem", "true"),
    refusal("resources.limits.memory", "2 GiB"),
    refusal("resources.limit", {"memory": "2Gi"}, pointer="/resources"),
    refusal("service.type", "Public"),
    refusal("service.port", 70000),
    refusal("ingress.enabled", True, pointer="/ingress/hosts"),
    refusal("ingress.hosts", [{"paths": HOST["paths"]}], pointer="/ingress/hosts/0"),
    refusal("ingress.hosts", ["mlflow.example.com"], pointer="/ingress/hosts/0"),
    refusal(
        "ingress.hosts",
        [{**HOST, "paths": [{"path": "/", "pathType": "Regex"}]}],
        pointer="/ingress/hosts/0/paths/0/pathType",
    ),
    refusal(
        "ingress.hosts", [{**HOST, "paths": ["/mlflow/"]}], "/ingress/hosts/0/paths/0"
    ),
    refusal("ingress.annotations", {"team": True}, "/ingress/annotations/team"),
    refusal("ingress.tls", [{"secretName": "tls"}], pointer="/ingress/tls/0"),
    refusal("extraEnv", {"LOG_LEVEL": "DEBUG"}),
    refusal("extraEnv", [{"value": "DEBUG"}], pointer="/extraEnv/0"),
    refusal("extraEnv", [{"name": "MLFLOW_WORKERS", "value": 4}], "/extraEnv/0/value"),
    refusal("nodeSelector", {"pool": 1}, pointer="/nodeSelector/pool"),
    refusal("tolerations", {"key": "mlops"}),
]


@pytest.mark.parametrize(("values", "pointer"), MALFORMED)
def test_schema_refuses(
    chart: helm.Chart, values: dict[str, Any], pointer: str
) -> None:
    with pytest.raises(helm.HelmValuesError) as refused:
        chart.render(values, name=RELEASE, namespace=NAMESPACE)

    assert f"at '{pointer}':" in str(refused.value)
