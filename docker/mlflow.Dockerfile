# MLflow tracking server: PostgreSQL backend store (psycopg 3, SQLAlchemy 2's driver for
# postgresql:// URIs), gs:// or served artifacts, basic auth. The upstream image carries neither
# a PostgreSQL driver nor the GCS client.
#
#   docker build -f docker/mlflow.Dockerfile -t REGISTRY/kerasflow-mlflow:3.17.2 .
#   docker/mlflow-server.sh start      # builds it where needed and runs it on PostgreSQL
#
# Built from the repository root: MLflow's dependencies are pinned by constraints.txt, the same
# versions the component image and the tests use. Needs BuildKit (the default builder since
# Docker 23; DOCKER_BUILDKIT=1 on 18.09-22). Behind a proxy that re-signs TLS, hand pip the
# proxy's CA as a secret; it never enters a layer:
#   docker build --secret id=extra_ca,src=/path/to/proxy-ca.crt -f docker/mlflow.Dockerfile .

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

LABEL org.opencontainers.image.title="kerasflow-mlflow" \
      org.opencontainers.image.description="MLflow tracking server with PostgreSQL and GCS support" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# mlflow's version must equal constraints.txt's pin (pip refuses the install otherwise); the
# drivers the constraints do not cover are pinned here.
RUN --mount=type=bind,source=constraints.txt,target=/tmp/constraints.txt \
    --mount=type=secret,id=extra_ca \
    if [ -s /run/secrets/extra_ca ]; then \
        cat /etc/ssl/certs/ca-certificates.crt /run/secrets/extra_ca > /tmp/ca.crt \
        && export PIP_CERT=/tmp/ca.crt; \
    fi \
    && python -m venv /opt/venv \
    && pip install --constraint /tmp/constraints.txt \
        "mlflow[auth]==3.17.2" \
        "google-cloud-storage==3.17.1" \
        "psycopg[binary]==3.3.9" \
        "Flask-WTF==1.3.0" \
        "WTForms==3.3.2" \
    && pip check \
    && rm -f /tmp/ca.crt \
    && groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --home-dir /home/mlflow --create-home \
        --shell /usr/sbin/nologin mlflow \
    && chmod 1777 /home/mlflow

# `mlflow server` takes its --host and --port defaults from MLFLOW_HOST and MLFLOW_PORT. Its job
# runner (GenAI evaluation and prompt jobs, which kerasflow does not use) would start seven more
# Python processes beside the server; MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true turns it back on.
ENV HOME=/home/mlflow \
    MLFLOW_HOST=0.0.0.0 \
    MLFLOW_PORT=5000 \
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false

WORKDIR /home/mlflow
USER 10001:10001
EXPOSE 5000
# Give MLFLOW_PORT the port when the server listens on another one, so that this check follows it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('MLFLOW_PORT', '5000'), timeout=4)"]
ENTRYPOINT ["mlflow"]
CMD ["server"]
