"""The README's recipe for SharingHub's catalog, run exactly as written.

SharingHub 0.4 builds a model's STAC assets with two calls (see
``shared/spec/sharinghub-contract.md``): the registered-models search, then
``get-artifact`` of the latest version's ``MLmodel``, which must have a
``python_function`` flavour naming its ``model_path`` or ``data``.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
import yaml

from servers import FLOOD, Server, as_user

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

README = Path(__file__).parent.parent / "README.md"
FENCED_PYTHON = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)


def catalog_recipe() -> str:
    """The README's Python block that registers a model for the catalog."""
    for indent, block in FENCED_PYTHON.findall(README.read_text()):
        if "register_model(" in block and "log_artifacts(" in block:
            lines = block.splitlines()
            return "\n".join(line.removeprefix(indent) for line in lines) + "\n"
    pytest.fail("README.md has no recipe that logs and registers a model")


def test_readme_recipe_puts_the_model_in_sharinghubs_catalog(
    server: Server, backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = catalog_recipe()
    name = re.findall(r'register_model\(.*, "([^"]+)"\)', recipe)[-1]
    monkeypatch.chdir(tmp_path)
    with as_user(server.uri(FLOOD), "dev-a"):
        exec(compile(recipe, str(README), "exec"), {"__name__": "readme"})  # noqa: S102

    # What SharingHub calls, with a reader's token, to list the model's files.
    reader = {"Authorization": "Bearer rep-a"}
    search = httpx.get(
        server.uri(FLOOD) + "api/2.0/mlflow/registered-models/search", headers=reader
    )
    assert search.status_code == 200, search.text
    models = {m["name"]: m for m in search.json()["registered_models"]}
    latest = models[name]["latest_versions"][0]
    assert "/artifacts/" in latest["source"]
    path = latest["source"].split("/artifacts/", 1)[1]
    mlmodel = httpx.get(
        server.uri(FLOOD) + "get-artifact",
        params={"path": f"{path}/MLmodel", "run_uuid": latest["run_id"]},
        headers=reader,
    )
    assert mlmodel.status_code == 200, mlmodel.text
    pyfunc = yaml.safe_load(mlmodel.text)["flavors"]["python_function"]
    assert pyfunc.get("model_path") or pyfunc.get("data")
