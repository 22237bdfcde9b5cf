# syntax=docker/dockerfile:1
#
# aliyun-cloudassistant-exporter: a small, non-root image that runs with a read-only root
# filesystem. Build:   docker build -t aliyun-cloudassistant-exporter .
# Run and deploy:      docs/deployment.md
#
# Both stages use the same base image, so the virtualenv's interpreter links stay valid when the
# venv is copied. Pin it by digest too (python:<tag>@sha256:...) when you build for production.

# --- builder: build the wheel and install it with its dependencies into /opt/venv -------------
FROM python:3.11.14-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter/ exporter/

# tests/test_deploy.py runs these same two commands in a fresh virtualenv: keep them in one
# RUN and keep /opt/venv and /src/dist as the only absolute paths.
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip wheel --no-deps --wheel-dir /src/dist . \
    && /opt/venv/bin/pip install /src/dist/*.whl
# The runtime stage's state directory, created here: the runtime stage runs nothing.
RUN mkdir /src/state

# --- runtime -----------------------------------------------------------------------------------
FROM python:3.11.14-slim-bookworm

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="aliyun-cloudassistant-exporter" \
      org.opencontainers.image.description="Prometheus exporter for Alibaba Cloud ECS Cloud Assistant invocation results" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/aliyun-cloudassistant-exporter/aliyun-cloudassistant-exporter" \
      org.opencontainers.image.documentation="https://github.com/aliyun-cloudassistant-exporter/aliyun-cloudassistant-exporter/blob/main/docs/deployment.md" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.14-slim-bookworm"

# PYTHONDONTWRITEBYTECODE: the root filesystem may be read-only (pip compiled the .pyc files in
# the builder). PYTHONUNBUFFERED: logs reach `docker logs` / kubectl at once. EXPORTER_REVISION:
# the `revision` label of aliyun_cloudassistant_exporter_build_info.
ENV PATH="/opt/venv/bin:${PATH}" \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    EXPORTER_REVISION="${REVISION}"

COPY --from=builder /opt/venv /opt/venv

# The state directory (--storage.path, default data/ under the working directory: /data), where
# counters and what was counted survive a restart. A volume, so that it stays writable under a
# read-only root filesystem; owned by the user the exporter runs as.
WORKDIR /
COPY --from=builder --chown=65532:65532 /src/state /data
VOLUME ["/data"]

# A numeric uid/gid (the "nonroot" convention): Kubernetes runAsNonRoot can verify it.
USER 65532:65532

EXPOSE 9907

# Plain HTTP on the default port. With --web.config.file (TLS or basic auth) or another
# --web.listen-address, set EXPORTER_HEALTHCHECK_URL or run with --no-healthcheck; Kubernetes
# ignores HEALTHCHECK and uses the probes in deploy/kubernetes/deployment.yaml.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; url = os.environ.get('EXPORTER_HEALTHCHECK_URL', 'http://127.0.0.1:9907/-/healthy'); sys.exit(0 if urllib.request.urlopen(url, timeout=4).status == 200 else 1)"]

ENTRYPOINT ["aliyun-cloudassistant-exporter"]
