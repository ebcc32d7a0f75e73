"""The audit trail and the metrics, read from a server of their own.

A server of its own (SQLite, one worker), so that its log holds only this
module's requests: each request leaves exactly the lines it should.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from mlflow_sharinghub.audit import field
from servers import CROPS, FLOOD, Server, Standin, running, unique

AUDIT = re.compile(r"^INFO:mlflow_sharinghub\.audit:(.*)$", re.MULTILINE)
SEARCH = "api/2.0/mlflow/experiments/search"
CREATE = "api/2.0/mlflow/experiments/create"


@pytest.fixture(scope="module")
def audited(
    tmp_path_factory: pytest.TempPathFactory, standin: Standin
) -> Iterator[Server]:
    with running(
        Server(tmp_path_factory.mktemp("audited-server"), standin)
    ) as instance:
        yield instance


def fresh_token(standin: Standin, access: dict[int, int]) -> str:
    token = f"audit-{uuid.uuid4().hex[:12]}"
    standin.put_user(token, access)
    return token


def audit_lines(server: Server, marker: str) -> list[str]:
    """The audit lines whose fields mention ``marker``."""
    log = server.process.log.read_text(errors="replace")
    return [line for line in AUDIT.findall(log) if marker in line]


def fields(line: str) -> dict[str, str]:
    pairs = re.findall(r'(\w+)=("(?:[^"\\]|\\.)*"|\S+)', line)
    return dict(pairs)


def fingerprint(server: Server, token: str, marker: str) -> str:
    """The caller field of the lines of ``token``'s requests."""
    lines = audit_lines(server, marker)
    assert lines, f"no audit line for {marker}"
    return fields(lines[0])["caller"]


def test_a_write_leaves_one_line(audited: Server, standin: Standin) -> None:
    token = fresh_token(standin, {42: 3})
    name = unique("audited")

    created = httpx.post(
        audited.uri(FLOOD) + CREATE,
        json={"name": name},
        headers={"Authorization": f"Bearer {token}"},
    )
    marker = f"{CREATE.split('/', 1)[1]}"
    lines = [
        line
        for line in audit_lines(audited, marker)
        if fields(line)["caller"].startswith("token:")
        and fields(line).get("decision") == "allowed"
    ]
    line = fields(lines[-1])

    assert created.status_code == 200, created.text
    assert line["decision"] == "allowed"
    assert line["method"] == "POST"
    assert line["route"] == "/" + CREATE
    assert line["project"] == "42"
    assert line["action"] == "write"
    assert token not in log_text(audited)


def test_reads_leave_no_line(audited: Server, standin: Standin) -> None:
    token = fresh_token(standin, {42: 2})
    marker = unique("read-marker")

    read = httpx.get(
        audited.uri(FLOOD) + "api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": marker},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert read.status_code == 404  # MLflow's answer: allowed, nothing found
    assert audit_lines(audited, "get-by-name") == []


def log_text(server: Server) -> str:
    return server.process.log.read_text(errors="replace")


def refusals(server: Server, route: str, status: str) -> list[dict[str, str]]:
    found = [fields(line) for line in AUDIT.findall(log_text(server))]
    return [
        f
        for f in found
        if f.get("route") == route
        and f.get("status") == status
        and f.get("decision") == "refused"
    ]


@pytest.mark.parametrize(
    ("token", "project", "path", "status", "reason"),
    [
        ("rep-a", FLOOD, CREATE, "403", "PERMISSION_DENIED"),
        ("dev-b", FLOOD, CREATE, "404", "RESOURCE_DOES_NOT_EXIST"),
        ("not-a-gitlab-token", FLOOD, CREATE, "401", "UNAUTHENTICATED"),
        ("dev-b", CROPS, "api/3.0/mlflow/workspaces", "403", "PERMISSION_DENIED"),
    ],
    ids=["reporter writes", "stranger", "rejected token", "refused route"],
)
def test_each_refusal_leaves_exactly_one_line(
    audited: Server, token: str, project: str, path: str, status: str, reason: str
) -> None:
    before = len(refusals(audited, "/" + path, status))

    response = httpx.post(
        audited.uri(project) + path,
        json={"name": unique("refused")},
        headers={"Authorization": f"Bearer {token}"},
    )

    assert response.status_code == int(status), response.text
    lines = refusals(audited, "/" + path, status)
    assert len(lines) == before + 1, log_text(audited)[-3000:]
    line = lines[-1]
    assert line["method"] == "POST"
    assert line["reason"].startswith(f'"{reason}')
    assert line["caller"].startswith("token:")
    assert token not in line["caller"]
    if status != "401":
        assert line["project"] in ("42", "43", project)


def test_control_characters_in_paths_are_escaped(audited: Server) -> None:
    marker = uuid.uuid4().hex[:8]
    # A newline would forge a second, innocent-looking audit line.
    target = f"/{marker}%0AINFO:mlflow_sharinghub.audit:decision=allowed%1B[31m"

    with httpx.Client(base_url=audited.url) as client:
        request = client.build_request("GET", "/")
        request.url = request.url.copy_with(raw_path=target.encode())
        response = client.send(request)

    lines = audit_lines(audited, marker)
    assert response.status_code == 404
    assert len(lines) == 1, lines
    assert "\\n" in lines[0]
    assert "\\u001b" in lines[0]
    assert "\x1b" not in log_text(audited)


def test_field_quotes_what_is_not_plain() -> None:
    assert field("/api/2.0/mlflow/runs/get") == "/api/2.0/mlflow/runs/get"
    assert field('a b"\n') == '"a b\\"\\n"'
    assert field("é") == '"\\u00e9"'


# ------------------------------------------------------------------ metrics


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of ``name`` with exactly ``labels``."""
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        sample, value = line.rsplit(" ", 1)
        sample_name, _, rest = sample.partition("{")
        found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
        if sample_name == name and found == wanted:
            return float(value)
    return 0.0


def scrape(server: Server) -> str:
    response = httpx.get(server.url + "/metrics", headers={"Host": "10.1.2.3:5000"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def test_metrics_count_decisions_cache_and_sharinghub_calls(
    audited: Server, standin: Standin
) -> None:
    token = fresh_token(standin, {42: 2})
    headers = {"Authorization": f"Bearer {token}"}
    before = scrape(audited)

    for _ in range(3):
        httpx.post(audited.uri(FLOOD) + SEARCH, json={}, headers=headers)
    httpx.post(audited.uri(FLOOD) + CREATE, json={"name": "x"}, headers=headers)
    after = scrape(audited)

    def moved(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    decisions = "mlflow_sharinghub_decisions_total"
    assert moved(decisions, decision="allowed", action="read") >= 3
    assert moved(decisions, decision="refused", action="write") >= 1
    lookups = "mlflow_sharinghub_cache_lookups_total"
    assert moved(lookups, result="miss") >= 1
    assert moved(lookups, result="hit") >= 3
    calls = "mlflow_sharinghub_sharinghub_request_duration_seconds_count"
    assert moved(calls, call="check") >= 1
    assert token not in after


def test_sharinghub_errors_are_counted(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    hub = Standin(tmp_path_factory.mktemp("metrics-standin"))
    hub.start()
    server = Server(
        tmp_path_factory.mktemp("metrics-server"), hub, SHARINGHUB_TIMEOUT="1"
    )
    server.start()
    try:
        hub.stop()
        down = httpx.post(
            server.uri(FLOOD) + SEARCH, json={}, headers={"Authorization": "Bearer x"}
        )
        text = scrape(server)
    finally:
        server.stop()

    assert down.status_code == 503
    errors = "mlflow_sharinghub_sharinghub_errors_total"
    assert metric(text, errors, call="check", kind="connection") >= 1
    decisions = "mlflow_sharinghub_decisions_total"
    assert metric(text, decisions, decision="refused", action="read") >= 1


@pytest.mark.parametrize(
    "path", [f"{FLOOD}/tracking/metrics", "42/tracking/metrics", "mlflow/metrics"]
)
def test_metrics_are_not_reachable_through_a_project_url(
    audited: Server, path: str
) -> None:
    response = httpx.get(
        f"{audited.url}/{path}", headers={"Authorization": "Bearer dev-a"}
    )

    assert response.status_code == 404
    assert "mlflow_sharinghub_decisions" not in response.text
    assert response.json()["error_code"] == "ENDPOINT_NOT_FOUND"


def test_tokens_never_reach_the_log_or_the_metrics(
    audited: Server, standin: Standin
) -> None:
    token = fresh_token(standin, {42: 3})
    headers = {"Authorization": f"Bearer {token}"}
    cookie = {"sharinghub-session": f"cookie-{token}"}
    httpx.post(audited.uri(FLOOD) + CREATE, json={"name": unique("t")}, headers=headers)
    httpx.post(audited.uri(CROPS) + CREATE, json={"name": "t"}, headers=headers)
    httpx.post(audited.uri(FLOOD) + SEARCH, json={}, cookies=cookie)

    assert token not in log_text(audited)
    assert token not in scrape(audited)


def test_the_access_log_follows_the_log_level(
    audited: Server, standin: Standin, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """At INFO a request leaves its access line; at WARNING neither it nor ours."""
    token = fresh_token(standin, {42: 3})
    quiet = Server(
        tmp_path_factory.mktemp("quiet-server"), standin, LOG_LEVEL="WARNING"
    )
    with running(quiet):
        for server in (audited, quiet):
            written = httpx.post(
                server.uri(FLOOD) + CREATE,
                json={"name": unique("logged")},
                headers={"Authorization": f"Bearer {token}"},
            )
            assert written.status_code == 200, written.text
        quiet_log = log_text(quiet)

    access_line = re.compile(rf'INFO: .*"POST /{FLOOD}/tracking/{CREATE} ')
    assert access_line.search(log_text(audited))
    assert audit_lines(audited, CREATE)
    assert not access_line.search(quiet_log)
    assert "INFO:mlflow_sharinghub" not in quiet_log
