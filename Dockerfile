# The fleet_pipelines code location: this project installed, served over gRPC on port 3030 as
# Dagster's Helm chart expects of a user code deployment (deploy/helm/values.yaml). The same
# image runs the runs the K8sRunLauncher starts and the Celery workers their steps go to
# (deploy/k8s/celery-workers.yaml), so every process has the same code and the same dbt project.
# Settings come from the environment only (docs/configuration.md, docs/deploy.md): no .env and
# no secret is baked in.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home

WORKDIR /opt/fleet

# The dependencies first, read from pyproject.toml: a change of code alone reuses this layer.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Editable, so that the dbt project stays beside the package (pipelines/dbt.py finds it there).
COPY pipelines ./pipelines
COPY dbt_models ./dbt_models
COPY workspace.yaml ./
COPY deploy/dagster.yaml deploy/celery.yaml ./deploy/
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 fleet \
    && mkdir -p "$DAGSTER_HOME" \
    && chown -R fleet:fleet /opt/fleet "$DAGSTER_HOME"

USER fleet
# dbt's manifest is parsed once here, not by every pod at start-up.
RUN python -c "from pipelines.dbt import ensure_manifest; ensure_manifest()"

EXPOSE 3030
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "3030", "-m", "pipelines.definitions"]
