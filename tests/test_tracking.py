"""The ordinary MLflow client against project tracking URIs, end to end.

Project 42 (eo/flood-model) is "A", project 43 (eo/crop-classifier) is "B";
see tests/fixtures/sharinghub-test.yaml for who may do what.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from mlflow.entities import Param, ViewType
from mlflow.exceptions import MlflowException

from servers import CROPS, FLOOD, Server, as_user, unique


class Doubler(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: Any = None
    ) -> Any:
        return model_input * 2


class Objects:
    """What a developer of A created: ids and names to look for elsewhere."""

    def __init__(self, experiment_id: str, run_id: str, model: str) -> None:
        self.experiment_id = experiment_id
        self.run_id = run_id
        self.model = model


def create_objects(uri: str, token: str, tmp_path: Path) -> Objects:
    with as_user(uri, token):
        experiment_id = mlflow.create_experiment(unique("experiment"))
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_param("alpha", "0.5")
            mlflow.log_metric("rmse", 0.25)
            notes = tmp_path / "notes.txt"
            notes.write_text("flood extent")
            mlflow.log_artifact(str(notes))
            # Files under the run, registered from there: what SharingHub lists.
            mlflow.pyfunc.save_model(
                tmp_path / "model", python_model=Doubler(), pip_requirements=[]
            )
            mlflow.log_artifacts(str(tmp_path / "model"), "model")
        model = unique("model")
        mlflow.register_model(f"runs:/{run.info.run_id}/model", model)
        return Objects(experiment_id, run.info.run_id, model)


@pytest.fixture(scope="module")
def objects_of_a(server: Server, tmp_path_factory: pytest.TempPathFactory) -> Objects:
    return create_objects(server.uri(FLOOD), "dev-a", tmp_path_factory.mktemp("a"))


def error_code(call: Callable[[], object]) -> str:
    with pytest.raises(MlflowException) as raised:
        call()
    return raised.value.error_code


@pytest.mark.parametrize("project", [FLOOD, 42], ids=["path-uri", "id-uri"])
def test_developer_uses_all_of_mlflow(
    server: Server, project: str | int, tmp_path: Path
) -> None:
    with as_user(server.uri(project), "dev-a") as client:
        experiment_id = mlflow.create_experiment(unique("experiment"))
        with mlflow.start_run(experiment_id=experiment_id) as run:
            mlflow.log_param("epochs", 3)
            for step in range(3):
                mlflow.log_metric("loss", 1.0 / (step + 1), step=step)
            report = tmp_path / "report.txt"
            report.write_text("all good")
            mlflow.log_artifact(str(report), artifact_path="reports")
            logged = mlflow.pyfunc.log_model(
                name="model", python_model=Doubler(), pip_requirements=[]
            )
        model_name = unique("model")
        version = mlflow.register_model(logged.model_uri, model_name)

        model = mlflow.pyfunc.load_model(f"models:/{model_name}/{version.version}")
        prediction = model.predict(pd.DataFrame({"x": [1, 2]}))
        runs = mlflow.search_runs([experiment_id], output_format="list")
        history = client.get_metric_history(run.info.run_id, "loss")
        downloaded = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id,
            artifact_path="reports/report.txt",
            dst_path=str(tmp_path / "download"),
        )

    assert prediction["x"].tolist() == [2, 4]
    assert [r.info.run_id for r in runs] == [run.info.run_id]
    assert runs[0].data.params == {"epochs": "3"}
    assert [m.value for m in history] == [1.0, 0.5, 1.0 / 3]
    assert Path(downloaded).read_text() == "all good"


def test_developer_records_and_reads_traces(server: Server) -> None:
    @mlflow.trace
    def segment(tile: str) -> str:
        return f"mask of {tile}"

    with as_user(server.uri(FLOOD), "dev-a"):
        experiment_id = mlflow.create_experiment(unique("traces"))
        mlflow.set_experiment(experiment_id=experiment_id)
        segment("S1A_0042")
        trace_id = mlflow.get_last_active_trace_id()
        assert trace_id is not None
        trace = mlflow.get_trace(trace_id)
        found = mlflow.search_traces(locations=[experiment_id], return_type="list")

    assert trace is not None
    assert trace.data.spans[0].outputs == "mask of S1A_0042"
    assert [t.info.trace_id for t in found] == [trace_id]


def test_reporter_reads_everything(
    server: Server, objects_of_a: Objects, tmp_path: Path
) -> None:
    with as_user(server.uri(FLOOD), "rep-a") as client:
        run = client.get_run(objects_of_a.run_id)
        experiment = client.get_experiment(objects_of_a.experiment_id)
        model = client.get_registered_model(objects_of_a.model)
        artifacts = client.list_artifacts(objects_of_a.run_id)
        notes = client.download_artifacts(
            objects_of_a.run_id, "notes.txt", str(tmp_path)
        )

    assert run.data.metrics == {"rmse": 0.25}
    assert experiment.experiment_id == objects_of_a.experiment_id
    assert model.name == objects_of_a.model
    assert [a.path for a in artifacts] == ["model", "notes.txt"]
    assert Path(notes).read_text() == "flood extent"


WRITES: dict[str, Callable[[mlflow.MlflowClient, Objects, Path], object]] = {
    "create experiment": lambda c, o, _: c.create_experiment(unique("e")),
    "rename experiment": lambda c, o, _: c.rename_experiment(o.experiment_id, "x"),
    "delete experiment": lambda c, o, _: c.delete_experiment(o.experiment_id),
    "tag experiment": lambda c, o, _: c.set_experiment_tag(o.experiment_id, "k", "v"),
    "create run": lambda c, o, _: c.create_run(o.experiment_id),
    "log metric": lambda c, o, _: c.log_metric(o.run_id, "m", 1.0),
    "log param": lambda c, o, _: c.log_param(o.run_id, "p", "1"),
    "log batch": lambda c, o, _: c.log_batch(o.run_id, params=[Param("b", "1")]),
    "set tag": lambda c, o, _: c.set_tag(o.run_id, "k", "v"),
    "end run": lambda c, o, _: c.set_terminated(o.run_id),
    "delete run": lambda c, o, _: c.delete_run(o.run_id),
    "log artifact": lambda c, o, tmp: c.log_artifact(o.run_id, str(tmp)),
    "create model": lambda c, o, _: c.create_registered_model(unique("m")),
    "rename model": lambda c, o, _: c.rename_registered_model(o.model, "x"),
    "delete model": lambda c, o, _: c.delete_registered_model(o.model),
    "tag model": lambda c, o, _: c.set_registered_model_tag(o.model, "k", "v"),
    "alias model": lambda c, o, _: c.set_registered_model_alias(o.model, "a", "1"),
    "create version": lambda c, o, _: c.create_model_version(
        o.model, f"runs:/{o.run_id}/model", o.run_id
    ),
    "delete version": lambda c, o, _: c.delete_model_version(o.model, "1"),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_reporter_is_denied_every_write(
    server: Server,
    objects_of_a: Objects,
    tmp_path: Path,
    write: Callable[[mlflow.MlflowClient, Objects, Path], object],
) -> None:
    upload = tmp_path / "upload.txt"
    upload.write_text("nope")

    for token in ("rep-a", "guest-a"):
        with (
            as_user(server.uri(FLOOD), token) as client,
            pytest.raises(Exception, match="PERMISSION_DENIED"),
        ):
            write(client, objects_of_a, upload)

    with as_user(server.uri(FLOOD), "dev-a") as client:
        assert client.get_run(objects_of_a.run_id).info.lifecycle_stage == "active"
        assert (
            client.get_registered_model(objects_of_a.model).name == objects_of_a.model
        )
        artifacts = client.list_artifacts(objects_of_a.run_id)
        assert [a.path for a in artifacts] == ["model", "notes.txt"]


def test_developer_of_b_sees_nothing_of_a(
    server: Server, objects_of_a: Objects, tmp_path: Path
) -> None:
    with as_user(server.uri(CROPS), "dev-b") as client:
        experiments = client.search_experiments(view_type=ViewType.ALL)
        models = client.search_registered_models()
        runs = client.search_runs([objects_of_a.experiment_id])
        run_error = error_code(lambda: client.get_run(objects_of_a.run_id))
        experiment_error = error_code(
            lambda: client.get_experiment(objects_of_a.experiment_id)
        )
        model_error = error_code(
            lambda: client.get_registered_model(objects_of_a.model)
        )
        with pytest.raises(MlflowException, match="RESOURCE_DOES_NOT_EXIST"):
            client.download_artifacts(objects_of_a.run_id, "notes.txt", str(tmp_path))

    assert objects_of_a.experiment_id not in [e.experiment_id for e in experiments]
    assert objects_of_a.model not in [m.name for m in models]
    assert list(runs) == []
    assert run_error == "RESOURCE_DOES_NOT_EXIST"
    assert experiment_error == "RESOURCE_DOES_NOT_EXIST"
    assert model_error == "RESOURCE_DOES_NOT_EXIST"


def test_developer_of_b_is_refused_at_a(server: Server, objects_of_a: Objects) -> None:
    for uri in (server.uri(FLOOD), server.uri(42)):
        with as_user(uri, "dev-b") as client:
            code = error_code(lambda c=client: c.get_run(objects_of_a.run_id))
            assert code == "RESOURCE_DOES_NOT_EXIST"


def test_projects_have_experiments_and_models_of_the_same_name(
    server: Server,
) -> None:
    experiment, model = unique("same-experiment"), unique("same-model")
    created = {}
    for project in (FLOOD, CROPS):
        with as_user(server.uri(project), "alice") as client:
            experiment_id = client.create_experiment(experiment)
            client.create_registered_model(model, tags={"project": project})
            created[project] = experiment_id

    for project in (FLOOD, CROPS):
        with as_user(server.uri(project), "alice") as client:
            found = client.get_experiment_by_name(experiment)
            tags = client.get_registered_model(model).tags
            assert found is not None
            assert found.experiment_id == created[project]
            assert tags == {"project": project}
    assert created[FLOOD] != created[CROPS]
