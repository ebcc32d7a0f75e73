# syntax=docker/dockerfile:1

# Build: a wheel of this project and of every dependency, so the runtime
# stage installs offline and carries no build tooling.
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --wheel-dir /wheels .


FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DATA_DIR=/home/mlflow/data \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000

# uid and gid 999 are fixed: the Helm chart's securityContext and fsGroup
# rely on them.
RUN groupadd --system --gid 999 mlflow \
    && useradd --system --uid 999 --gid 999 --home-dir /home/mlflow \
        --create-home --shell /usr/sbin/nologin mlflow \
    && mkdir /home/mlflow/data \
    && chown 999:999 /home/mlflow/data

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/mlflow_sharinghub-*.whl

# Numeric, so that Kubernetes can verify runAsNonRoot: this is mlflow:mlflow.
USER 999:999
WORKDIR /home/mlflow

# SQLite store (mlflow.db) and artifacts (mlartifacts/) by default.
VOLUME /home/mlflow/data
EXPOSE 5000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MLFLOW_PORT', '5000'), timeout=4)"]

CMD ["mlflow-sharinghub", "server"]
