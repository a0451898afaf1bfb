# The MLflow tracking server, with the PostgreSQL driver for its backend store.
# PYTHON_IMAGE: the base (default the official python:3.11-slim; docker/build-local-bases.sh makes a
# stand-in where no registry can be reached). The extra CA certificates of docker/ca-certificates/
# are used by the build stage only (see docker/Dockerfile).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PYTHONDONTWRITEBYTECODE=1
COPY docker/ca-certificates/ /tmp/build-inputs/ca/
COPY docker/wheels/ /tmp/build-inputs/wheels/
COPY docker/pip-setup.sh /tmp/build-inputs/
RUN python3 -m venv /opt/mlflow \
    && . /tmp/build-inputs/pip-setup.sh \
    && /opt/mlflow/bin/pip install -q "mlflow==3.17.2" "psycopg[binary]==3.2.10" \
    && find /opt/mlflow -name __pycache__ -prune -exec rm -rf {} +

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/mlflow/bin:$PATH PYTHONDONTWRITEBYTECODE=1 MLFLOW_DISABLE_TELEMETRY=true
RUN useradd --create-home --uid 1000 mlflow \
    && mkdir -p /mlartifacts && chown mlflow:mlflow /mlartifacts
COPY --from=build /opt/mlflow /opt/mlflow

USER mlflow
EXPOSE 5000
HEALTHCHECK --interval=5s --timeout=5s --start-period=20s --retries=10 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)" || exit 1
# The backend store (its URL holds the password) is read from MLFLOW_BACKEND_STORE_URI, set by compose
# from .env: never baked in, and never on the command line, where `ps` on the host would show it.
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", "--workers", "1", "--artifacts-destination", "/mlartifacts", "--serve-artifacts"]
