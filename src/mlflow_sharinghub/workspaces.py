"""The workspace provider: one MLflow workspace per SharingHub project.

MLflow finds this provider through the ``mlflow.workspace_provider`` entry
point, for the workspace store URI ``sharinghub://``. It keeps workspaces in
the tracking store's own database (MLflow's SQL workspace store) and adds:

- :meth:`SharingHubWorkspaceStore.ensure` creates ``p-<id>`` on first use,
  once SharingHub has allowed the caller; concurrent first requests, in one
  process or several, create it once;
- workspaces seen once are remembered by the process, so a request costs no
  workspace query;
- there is no default workspace: a request that names none reaches none.
"""

from __future__ import annotations

import logging
import os
import threading

from mlflow.entities import Workspace
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
)
from mlflow.store.workspace.sqlalchemy_store import SqlAlchemyStore
from sqlalchemy import text

_logger = logging.getLogger(__name__)

# MLflow's server passes the backend store URI to its workers in this variable.
BACKEND_STORE_ENV = "_MLFLOW_SERVER_FILE_STORE"
# ``mlflow server`` builds its stores, and so this provider, before it sets
# the variable above; it reads its --backend-store-uri from this one.
BACKEND_STORE_SETTING = "MLFLOW_BACKEND_STORE_URI"


class SharingHubWorkspaceStore(SqlAlchemyStore):
    """MLflow's SQL workspace store, with project workspaces made on demand."""

    def __init__(self, workspace_uri: str | None = None) -> None:
        db_uri = os.environ.get(BACKEND_STORE_ENV) or os.environ.get(
            BACKEND_STORE_SETTING
        )
        if not db_uri:
            raise MlflowException(
                "The sharinghub workspace provider keeps workspaces in the backend "
                f"store: set {BACKEND_STORE_SETTING}, or start the server with "
                "'mlflow-sharinghub server'."
            )
        super().__init__(db_uri)
        self._known: dict[str, Workspace] = {}
        self._lock = threading.Lock()

    def get_workspace(self, workspace_name: str) -> Workspace:
        if (known := self._known.get(workspace_name)) is not None:
            return known
        workspace: Workspace = super().get_workspace(workspace_name)
        self._known[workspace_name] = workspace
        return workspace

    def is_known(self, name: str) -> bool:
        """Whether this process has already seen workspace ``name``."""
        return name in self._known

    def ping(self) -> None:
        """Raise if the database does not answer."""
        with self._engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    def get_default_workspace(self) -> Workspace:
        raise NotImplementedError("every request names its project's workspace")

    def ensure(self, name: str, description: str) -> Workspace:
        """The workspace ``name``, created with ``description`` if it is new."""
        if (known := self._known.get(name)) is not None:
            return known
        with self._lock:
            try:
                return self.get_workspace(name)
            except MlflowException as exc:
                if exc.error_code != _code(RESOURCE_DOES_NOT_EXIST):
                    raise
            try:
                workspace: Workspace = self.create_workspace(
                    Workspace(name=name, description=description)
                )
                _logger.info("Created workspace %s for project %s", name, description)
            except MlflowException as exc:
                # Another worker process created it between our two queries.
                if exc.error_code != _code(RESOURCE_ALREADY_EXISTS):
                    raise
                workspace = super().get_workspace(name)
            self._known[name] = workspace
            return workspace


def _code(code: int) -> str:
    from mlflow.protos.databricks_pb2 import ErrorCode

    return str(ErrorCode.Name(code))
