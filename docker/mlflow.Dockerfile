# syntax=docker/dockerfile:1
#
# MLflow tracking server for the cluster: PostgreSQL backend store, gs:// artifacts, basic auth.
# The upstream image carries neither a PostgreSQL driver nor the GCS client.
#
#   docker build -f docker/mlflow.Dockerfile -t REGISTRY/kerasflow-mlflow:3.17.2 docker/

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm
FROM ${PYTHON_IMAGE}

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HOME=/home/mlflow

RUN pip install \
        "mlflow[auth]==3.17.2" \
        "psycopg2-binary==2.9.13" \
        "google-cloud-storage==3.17.1" \
    && groupadd --system --gid 10001 mlflow \
    && useradd --system --uid 10001 --gid mlflow --home-dir /home/mlflow --create-home \
        --shell /usr/sbin/nologin mlflow

WORKDIR /home/mlflow
USER 10001:10001
EXPOSE 5000
ENTRYPOINT ["mlflow"]
CMD ["server", "--host", "0.0.0.0", "--port", "5000"]
