"""Project A's objects, and what must never reach anyone outside project A.

A developer of A (dev-a) creates, once per server, one of every kind of MLflow
object: an experiment, a run with metrics, params, tags, artifacts and an
input dataset, a logged model, a registered model with versions and an alias,
a trace with an assessment, an evaluation dataset and a prompt. Every value
stored in them carries a random mark, so a response that holds any of them
is a leak, whatever route produced it.
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx
import mlflow
import pandas as pd
from mlflow.genai.datasets import create_dataset

from servers import FLOOD, as_user

ARTIFACT_FILE = "notes.txt"
METRIC = "rmse"
PARAM = "alpha"
TAG = "team"


class Echo(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    def predict(
        self, context: Any, model_input: list[Any], params: Any = None
    ) -> list[Any]:
        return model_input


@dataclass(frozen=True)
class ProjectA:
    """Ids of A's objects (to fill requests with) and A's secret values."""

    uri: str
    experiment_id: str
    experiment_name: str
    run_id: str
    artifact_uri: str  # mlflow-artifacts:/workspaces/p-42/<experiment>/<run>/artifacts
    logged_model_id: str
    model_name: str
    alias: str
    trace_id: str
    assessment_id: str
    dataset_id: str
    dataset_name: str
    prompt_name: str
    # Values only A's readers may ever see.
    secrets: tuple[str, ...] = field(repr=False)

    @property
    def artifact_path(self) -> str:
        """The run's artifact root as the artifact proxy names it."""
        return self.artifact_uri.split("mlflow-artifacts:/", 1)[1].lstrip("/")

    @property
    def names(self) -> tuple[str, ...]:
        """Ids and names: a leak when a response holds one the request did not."""
        return (
            self.experiment_name,
            self.run_id,
            self.logged_model_id,
            self.model_name,
            self.alias,
            self.trace_id,
            self.assessment_id,
            self.dataset_id,
            self.dataset_name,
            self.prompt_name,
        )


@cache
def project_a(server_url: str) -> ProjectA:
    """A's objects on the server at ``server_url``, created once per session."""
    with TemporaryDirectory() as folder:
        return _create(f"{server_url}/{FLOOD}/tracking/", Path(folder))


def _create(uri: str, folder: Path) -> ProjectA:
    mark = uuid.uuid4().hex[:10]
    # A metric value nobody else would log, written the way JSON prints it.
    metric = round(random.uniform(0.1, 0.9), 9) + 1e-10  # noqa: S311
    metric_text = repr(metric)
    secrets = {
        name: f"{name}-{mark}"
        for name in (
            "exptag",
            "param",
            "runtag",
            "artifact",
            "modeldesc",
            "versiondesc",
            "lmparam",
            "lmmeta",
            "traceout",
            "tracetag",
            "feedback",
            "record",
            "inputset",
            "prompttext",
        )
    }
    (folder / ARTIFACT_FILE).write_text(secrets["artifact"])
    (folder / "MLmodel").write_text(f"flavors: {{}}\nmark: {secrets['artifact']}\n")

    with as_user(uri, "dev-a") as client:
        experiment_name = f"attack-experiment-{mark}"
        experiment_id = mlflow.create_experiment(
            experiment_name, tags={TAG: secrets["exptag"]}
        )
        mlflow.set_experiment(experiment_id=experiment_id)
        with mlflow.start_run() as run:
            mlflow.log_param(PARAM, secrets["param"])
            mlflow.log_metric(METRIC, metric, step=0)
            mlflow.set_tag(TAG, secrets["runtag"])
            mlflow.log_artifact(str(folder / ARTIFACT_FILE))
            mlflow.log_artifact(str(folder / "MLmodel"), "model")
            frame = pd.DataFrame({"x": [1.0, 2.0]})
            mlflow.log_input(
                mlflow.data.from_pandas(frame, name=secrets["inputset"]), "training"
            )
            logged = mlflow.pyfunc.log_model(
                name=f"logged-{mark}",
                python_model=Echo(),
                pip_requirements=[],
                params={PARAM: secrets["lmparam"]},
                metadata={"mark": secrets["lmmeta"]},
            )

        model_name = f"attack-model-{mark}"
        client.create_registered_model(model_name, description=secrets["modeldesc"])
        client.create_model_version(
            model_name, logged.model_uri, model_id=logged.model_id
        )
        client.create_model_version(
            model_name,
            run.info.artifact_uri,
            run_id=run.info.run_id,
            description=secrets["versiondesc"],
        )
        alias = f"alias-{mark}"
        client.set_registered_model_alias(model_name, alias, "2")

        @mlflow.trace(name=f"span-{mark}")
        def answer(question: str) -> str:
            return secrets["traceout"]

        answer("where is the flood?")
        trace_id = mlflow.get_last_active_trace_id()
        if trace_id is None:
            raise RuntimeError("the trace was not recorded")
        client.set_trace_tag(trace_id, TAG, secrets["tracetag"])
        assessment = mlflow.log_feedback(
            trace_id=trace_id, name="quality", value=secrets["feedback"]
        )

        dataset_name = f"evalset-{mark}"
        dataset = create_dataset(name=dataset_name, experiment_id=experiment_id)
        dataset.merge_records([{"inputs": {"question": secrets["record"]}}])

        prompt_name = f"attack-prompt-{mark}"
        mlflow.genai.register_prompt(
            name=prompt_name, template=secrets["prompttext"] + " {{x}}"
        )
        # The client links the prompt to the active experiment in a thread:
        # let it finish while the token is still set.
        for thread in threading.enumerate():
            if thread.name.startswith("link_prompt_to_experiment"):
                thread.join()

    return ProjectA(
        uri=uri,
        experiment_id=experiment_id,
        experiment_name=experiment_name,
        run_id=run.info.run_id,
        artifact_uri=run.info.artifact_uri,
        logged_model_id=logged.model_id,
        model_name=model_name,
        alias=alias,
        trace_id=trace_id,
        assessment_id=assessment.assessment_id,
        dataset_id=dataset.dataset_id,
        dataset_name=dataset_name,
        prompt_name=prompt_name,
        secrets=(*secrets.values(), metric_text),
    )


def bearer(token: str | None) -> dict[str, str]:
    return {} if token is None else {"Authorization": f"Bearer {token}"}


def leaks(a: ProjectA, response: str, request: str = "") -> list[str]:
    """A's values and ids in ``response`` that the request did not itself carry."""
    found = [s for s in a.secrets if s in response]
    found += [n for n in a.names if n in response and n not in request]
    try:
        body = json.loads(response)
    except ValueError:
        return found
    if a.experiment_id in _experiment_ids(body):
        found.append(f"experiment_id {a.experiment_id}")
    return found


def _experiment_ids(value: Any) -> set[str]:
    """Every value held under an experiment-id key, anywhere in a JSON body."""
    found: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key.replace("_", "").lower() in ("experimentid", "experimentids"):
                items = item if isinstance(item, list) else [item]
                found.update(str(i) for i in items if isinstance(i, str | int))
            found |= _experiment_ids(item)
    elif isinstance(value, list):
        for item in value:
            found |= _experiment_ids(item)
    return found


def snapshot(a: ProjectA) -> dict[str, Any]:
    """Everything dev-a can see of project A, for a before/after comparison."""
    client = httpx.Client(base_url=a.uri, headers=bearer("dev-a"), timeout=60)
    api = "api/2.0/mlflow/"
    calls: dict[str, tuple[str, str, dict[str, Any]]] = {
        "experiments": (
            "POST",
            api + "experiments/search",
            {"max_results": 1000, "view_type": "ALL"},
        ),
        "experiment": (
            "GET",
            api + "experiments/get",
            {"experiment_id": a.experiment_id},
        ),
        "runs": (
            "POST",
            api + "runs/search",
            {"experiment_ids": [a.experiment_id], "run_view_type": "ALL"},
        ),
        "history": (
            "GET",
            api + "metrics/get-history",
            {"run_id": a.run_id, "metric_key": METRIC},
        ),
        "artifacts": ("GET", api + "artifacts/list", {"run_id": a.run_id}),
        "model-files": (
            "GET",
            api + "artifacts/list",
            {"run_id": a.run_id, "path": "model"},
        ),
        "artifact": (
            "GET",
            "get-artifact",
            {"run_uuid": a.run_id, "path": ARTIFACT_FILE},
        ),
        "logged-models": (
            "POST",
            api + "logged-models/search",
            {"experiment_ids": [a.experiment_id]},
        ),
        "registered-models": (
            "GET",
            api + "registered-models/search",
            {"max_results": 1000},
        ),
        "versions": (
            "GET",
            api + "model-versions/search",
            {"filter": f"name='{a.model_name}'"},
        ),
        "prompt": ("GET", api + "registered-models/get", {"name": a.prompt_name}),
        "prompt-version": (
            "GET",
            api + "model-versions/get",
            {"name": a.prompt_name, "version": "1"},
        ),
        "traces": (
            "POST",
            "api/3.0/mlflow/traces/search",
            {
                "locations": [
                    {
                        "type": "MLFLOW_EXPERIMENT",
                        "mlflow_experiment": {"experiment_id": a.experiment_id},
                    }
                ]
            },
        ),
        "trace": ("GET", f"api/3.0/mlflow/traces/{a.trace_id}", {}),
        "datasets": (
            "POST",
            "api/3.0/mlflow/datasets/search",
            {"experiment_ids": [a.experiment_id]},
        ),
        "records": ("GET", f"api/3.0/mlflow/datasets/{a.dataset_id}/records", {}),
    }
    state: dict[str, Any] = {}
    with client:
        for name, (method, path, values) in calls.items():
            if method == "GET":
                response = client.get(path, params=values)
            else:
                response = client.post(path, json=values)
            if response.status_code != 200:
                raise RuntimeError(f"snapshot {name}: {response.text}")
            state[name] = response.text if name == "artifact" else response.json()
    return state
