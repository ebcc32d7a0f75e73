"""Artifact paths that would leave their project are refused before MLflow."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from mlflow_sharinghub.paths import InvalidArtifactPath, check_artifact_paths

WORKSPACE = "p-1"
PROXY = "/api/2.0/mlflow-artifacts/artifacts/"


def _check(mlflow_path: str, query: str = "") -> None:
    scope = {"query_string": query.encode()}
    check_artifact_paths(scope, mlflow_path, WORKSPACE)


@pytest.mark.parametrize(
    ("mlflow_path", "query"),
    [
        (PROXY + "workspaces/p-1/1/run/artifacts/model.pkl", ""),
        ("/api/2.0/mlflow-artifacts/artifacts", "path=workspaces/p-1/1/run"),
        ("/get-artifact", "path=model/MLmodel&run_uuid=abc"),
        ("/api/2.0/mlflow/artifacts/list", "run_id=abc&path=dir/sub"),
        (
            "/ajax-api/2.0/mlflow/logged-models/m-1/artifacts/files",
            "artifact_file_path=a.txt",
        ),
        ("/api/2.0/mlflow/runs/get", "run_id=abc"),
    ],
    ids=lambda value: value or "-",
)
def test_paths_inside_the_project_pass(mlflow_path: str, query: str) -> None:
    _check(mlflow_path, query)


@pytest.mark.parametrize(
    ("mlflow_path", "query"),
    [
        (PROXY + "workspaces/p-2/1/run/artifacts/x", ""),
        (PROXY + "workspaces/p-1/../p-2/x", ""),
        (PROXY + "./workspaces/p-2/x", ""),
        (PROXY + "mpu/../workspaces/p-2/x", ""),
        ("/api/2.0/mlflow-artifacts/presigned/workspaces/p-2/x", ""),
        ("/api/2.0/mlflow-artifacts/mpu/create/workspaces/p-2/x", ""),
        ("/api/2.0/mlflow-artifacts/artifacts", "path=workspaces/p-2"),
        ("/api/2.0/mlflow-artifacts/artifacts", "path=workspaces"),
        ("/get-artifact", "path=../../p-2/x&run_uuid=abc"),
        ("/get-artifact", "path=/etc/passwd&run_uuid=abc"),
        ("/get-artifact", "path=" + quote(quote("../x"))),
        ("/get-artifact", "path=" + quote("..%2Fx")),
        ("/get-artifact", "path=a%5C..%5Cb"),
        ("/get-artifact", "path=a%00b"),
        ("/model-versions/get-artifact", "path=./MLmodel&name=m&version=1"),
        (
            "/ajax-api/2.0/mlflow/logged-models/m/artifacts/directories",
            "artifact_directory_path=..",
        ),
    ],
    ids=lambda value: value or "-",
)
def test_paths_leaving_the_project_are_refused(mlflow_path: str, query: str) -> None:
    with pytest.raises(InvalidArtifactPath) as refusal:
        _check(mlflow_path, query)

    assert refusal.value.error_code == "INVALID_PARAMETER_VALUE"
    assert refusal.value.status == 400
