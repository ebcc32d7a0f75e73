"""Flask's own refusals, in MLflow's JSON format (unit tests of json_errors)."""

from __future__ import annotations

from flask import Flask

from mlflow_sharinghub.json_errors import answer_mlflow_errors_as_json


def flask_app() -> Flask:
    app = Flask(__name__)
    answer_mlflow_errors_as_json(app)

    @app.post("/ajax-api/2.0/mlflow/runs/search")
    def search() -> dict[str, list[str]]:
        return {"runs": []}

    @app.get("/static-files/")
    def index() -> str:
        return "<html></html>"

    return app


def test_an_unserved_route_is_mlflows_endpoint_not_found() -> None:
    response = flask_app().test_client().post("/api/2.0/mlflow/runs/search")

    assert response.status_code == 404
    assert response.mimetype == "application/json"
    assert response.json is not None
    assert response.json["error_code"] == "ENDPOINT_NOT_FOUND"


def test_a_wrong_method_keeps_its_status_and_allow_header() -> None:
    response = flask_app().test_client().get("/ajax-api/2.0/mlflow/runs/search")

    assert response.status_code == 405
    assert response.json is not None
    assert response.json["error_code"] == "ENDPOINT_NOT_FOUND"
    assert "POST" in response.headers["Allow"]


def test_routing_redirects_stay_redirects() -> None:
    response = flask_app().test_client().get("/static-files")

    assert response.status_code == 308
    assert response.headers["Location"].endswith("/static-files/")
