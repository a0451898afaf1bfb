# The MLflow tracking server, with the PostgreSQL driver for its backend store.
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 MLFLOW_DISABLE_TELEMETRY=true
RUN pip install --no-cache-dir "mlflow==3.17.2" "psycopg[binary]==3.2.10" \
    && useradd --create-home --uid 1000 mlflow \
    && mkdir -p /mlartifacts && chown mlflow:mlflow /mlartifacts

USER mlflow
EXPOSE 5000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=5 \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:5000/health', timeout=4)" || exit 1
# MLFLOW_BACKEND_STORE_URI comes from the environment (compose reads it from .env); never baked in.
CMD ["sh", "-c", "exec mlflow server --host 0.0.0.0 --port 5000 --backend-store-uri \"$MLFLOW_BACKEND_STORE_URI\" --artifacts-destination /mlartifacts --serve-artifacts"]
