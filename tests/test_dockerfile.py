"""The Dockerfile, linted by hadolint and read, without building the image.

No Docker daemon is needed: the tests parse the instructions and check the
facts the Helm chart and the operator rely on (user and group ``mlflow`` with
uid and gid 999, the data volume, port 5000, the command), and that the image's
environment gives the server its documented defaults.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlflow_sharinghub.settings import Settings

ROOT = Path(__file__).parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HADOLINT = Path(sys.executable).with_name("hadolint")
HOME = "/home/mlflow"
DATA_DIR = f"{HOME}/data"


@dataclass(frozen=True)
class Instruction:
    keyword: str
    arguments: str

    def words(self) -> list[str]:
        """The arguments, from JSON (exec form) or shell words."""
        if self.arguments.startswith("["):
            words: list[str] = json.loads(self.arguments)
            return words
        return shlex.split(self.arguments)


def instructions(text: str) -> list[Instruction]:
    """The instructions of a Dockerfile, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            logical.append(pending.strip())
            pending = ""
    parsed = [line.partition(" ") for line in logical]
    return [Instruction(keyword.upper(), rest.strip()) for keyword, _, rest in parsed]


def stages() -> list[list[Instruction]]:
    """The build stages, each from its FROM on."""
    result: list[list[Instruction]] = []
    for instruction in instructions(DOCKERFILE.read_text()):
        if instruction.keyword == "FROM":
            result.append([])
        result[-1].append(instruction)
    return result


def runtime() -> list[Instruction]:
    return stages()[-1]


def only(keyword: str) -> Instruction:
    """The one instruction of this kind in the runtime stage."""
    found = [i for i in runtime() if i.keyword == keyword]
    assert len(found) == 1, f"expected one {keyword}, got {len(found)}"
    return found[0]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for instruction in runtime():
        if instruction.keyword == "ENV":
            env.update(word.split("=", 1) for word in instruction.words())
    return env


def commands(keyword: str) -> list[list[str]]:
    """Each shell command of the runtime stage that runs ``keyword``."""
    found = []
    for instruction in runtime():
        if instruction.keyword == "RUN":
            # RUN's own flags (--mount=...) come before the shell command.
            script = re.sub(r"^(--\S+\s+)*", "", instruction.arguments)
            for command in re.split(r"&&|;", script):
                words = shlex.split(command)
                if words and words[0] == keyword:
                    found.append(words)
    return found


def option(words: list[str], name: str) -> str:
    return words[words.index(name) + 1]


def test_hadolint_finds_nothing() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--no-color", "--failure-threshold", "style", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_is_strict() -> None:
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "style", "-"],
        input="FROM python\nRUN cd /tmp\n",
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode != 0
    assert "DL3006" in result.stdout


def test_multi_stage_on_slim_python_311() -> None:
    bases = [stage[0].words()[0] for stage in stages()]

    assert len(bases) >= 2
    assert all(re.fullmatch(r"python:3\.11-slim(-\w+)?", base) for base in bases)


def test_runtime_stage_has_no_build_tooling() -> None:
    installs = [words for words in commands("pip") if "install" in words]

    assert installs, "the runtime stage installs the wheel"
    assert all("--no-index" in words for words in installs)
    assert commands("apt-get") == []


def test_group_and_user_mlflow_with_id_999() -> None:
    (groupadd,) = commands("groupadd")
    (useradd,) = commands("useradd")

    assert (groupadd[-1], option(groupadd, "--gid")) == ("mlflow", "999")
    assert useradd[-1] == "mlflow"
    assert (option(useradd, "--uid"), option(useradd, "--gid")) == ("999", "999")
    assert option(useradd, "--home-dir") == HOME
    # A fresh volume copies the ownership of the directory it is mounted on.
    assert ["chown", "999:999", DATA_DIR] in commands("chown")


def test_runs_as_mlflow_by_number() -> None:
    # Numeric, so that Kubernetes can check runAsNonRoot against the image.
    assert only("USER").arguments == "999:999"


def test_data_volume_port_and_command() -> None:
    assert only("VOLUME").words() == [DATA_DIR]
    assert only("EXPOSE").words() == ["5000"]
    assert only("CMD").words() == ["mlflow-sharinghub", "server"]
    assert [i for i in runtime() if i.keyword == "ENTRYPOINT"] == []


def test_command_is_the_projects_script() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())

    assert "mlflow-sharinghub" in pyproject["project"]["scripts"]


def test_healthcheck_asks_the_liveness_endpoint() -> None:
    healthchecks = [i for i in runtime() if i.keyword == "HEALTHCHECK"]

    assert all("/health" in i.arguments for i in healthchecks)


def test_env_names_are_settings_the_server_reads() -> None:
    settings = {field.alias for field in Settings.model_fields.values()}
    ours = {name for name in image_env() if not name.startswith(("PYTHON", "PIP_"))}

    assert ours <= settings


def test_image_env_gives_the_documented_defaults(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for field in Settings.model_fields.values():
        monkeypatch.delenv(str(field.alias), raising=False)
    env = {**image_env(), "SHARINGHUB_URL": "https://sharinghub.example.com"}

    settings = Settings(**env)

    assert env["MLFLOW_DATA_DIR"] == DATA_DIR
    assert settings.store_uri == f"sqlite:///{DATA_DIR}/mlflow.db"
    assert settings.artifacts == f"{DATA_DIR}/mlartifacts"
    assert (settings.host, settings.port) == ("0.0.0.0", 5000)  # noqa: S104


# --- The build context ------------------------------------------------------------


def ignored(path: str, patterns: list[str]) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context.

    The last matching pattern decides; a pattern also matches everything under
    a directory it matches; ``!`` re-includes.
    """
    parents = ["/".join(path.split("/")[: n + 1]) for n in range(path.count("/") + 1)]
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        body = pattern.removeprefix("!").strip("/")
        regex = re.escape(body).replace(r"\*\*/", "(.*/)?").replace(r"\*", "[^/]*")
        if any(re.fullmatch(regex, parent) for parent in parents):
            verdict = not negated
    return verdict


@pytest.fixture(scope="module")
def dockerignore() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and line[0] != "#"]


def copied_sources() -> list[str]:
    sources = []
    for stage in stages():
        for instruction in stage:
            words = instruction.words() if instruction.keyword == "COPY" else []
            if words and not any(w.startswith("--from") for w in words):
                sources += words[:-1]
    return sources


def test_copied_files_exist_and_enter_the_context(dockerignore: list[str]) -> None:
    sources = copied_sources()

    assert "src" in sources
    for source in sources:
        path = ROOT / source
        assert path.exists(), source
        if path.is_dir():
            path = next(path.rglob("*.py"))
        assert not ignored(path.relative_to(ROOT).as_posix(), dockerignore), source


LEFT_OUT = [
    ".venv/bin/python",
    ".git/HEAD",
    "tests/test_dockerfile.py",
    "data/mlflow.db",
    "deploy/helm/mlflow-sharinghub/values.yaml",
    "src/mlflow_sharinghub/__pycache__/app.cpython-311.pyc",
]


@pytest.mark.parametrize("path", LEFT_OUT)
def test_context_leaves_out(dockerignore: list[str], path: str) -> None:
    assert ignored(path, dockerignore)
