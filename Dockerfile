# syntax=docker/dockerfile:1
# AutoGen teams served as an OpenAI-compatible API (gunicorn + uvicorn workers).
#
#   make image         (docker build where a Docker daemon answers, else buildah; docs/image.md)
#   docker build -t autogen-service:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --rm -p 8000:8000 autogen-service:0.1.0
#
# Behind a proxy or a private index, pip gets the build host's settings from two optional build
# secrets, `pip.conf` and `pip-ca.pem` (`make image` passes them): mounted for the pip steps
# only, never stored in a layer.
#
# Checked by `make k8s-check` (hadolint, and tests/test_deploy.py for the policy points) and,
# built and run, by `make image-test`.

# --- builder: a virtualenv with the pinned dependencies and the service -----------------------
FROM python:3.11.11-slim-bookworm AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_CONFIG_FILE=/run/secrets/pip.conf \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

WORKDIR /src
RUN python -m venv "$VIRTUAL_ENV"

# Dependencies first: pyproject.toml's runtime dependencies (`[project].dependencies`, no dev
# extra), every version, transitive ones included, from requirements.lock (the constraints file
# `make serve` and `make test` install under too; `make lock` writes it), in their own layer: a
# source change does not reinstall them. Wheels only: nothing is compiled, so the builder needs
# no compiler either.
COPY pyproject.toml requirements.lock ./
RUN --mount=type=secret,id=pip.conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip-ca.pem,target=/run/secrets/pip-ca.pem \
    python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > requirements.txt \
    && pip install --no-cache-dir --only-binary=:all: --requirement requirements.txt \
        --constraint requirements.lock

# Then the service itself (its dependencies are already there).
COPY README.md ./
COPY service ./service
RUN --mount=type=secret,id=pip.conf,target=/run/secrets/pip.conf \
    --mount=type=secret,id=pip-ca.pem,target=/run/secrets/pip-ca.pem \
    pip install --no-cache-dir --no-deps . \
    && pip check

# --- runtime: the virtualenv on a clean base, no compiler, no sources, non-root --------------
FROM python:3.11.11-slim-bookworm AS runtime

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="autogen-service" \
      org.opencontainers.image.description="AutoGen AgentChat teams served as an OpenAI-compatible chat-completions API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.source="https://github.com/example/autogen-service" \
      org.opencontainers.image.base.name="docker.io/library/python:3.11.11-slim-bookworm"

# A numeric, unprivileged user with no home and no shell (Kubernetes: runAsUser 10001).
# /app/data: the Responses API's default SQLite state (DATA_DIR); mount a volume there to keep it,
# or set STATE_STORE_URI=redis://... (Kubernetes does, k8s/base/config.env).
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin app \
    && mkdir -p /app/data \
    && chown 10001:10001 /app/data

COPY --from=builder /opt/venv /opt/venv

# PROMETHEUS_MULTIPROC_DIR: prometheus_client's multiprocess files, on a writable path (an
# emptyDir in Kubernetes; the service empties it at start). The root filesystem may be
# read-only: no bytecode is written at run time (pip compiled it at install).
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=8000 \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus

WORKDIR /app
USER 10001:10001
EXPOSE 8000

# Liveness only (never the LLM): the same route as the Kubernetes liveness probe.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '8000'), timeout=4)"]

# gunicorn drains open streams on SIGTERM (GRACEFUL_TIMEOUT_S).
STOPSIGNAL SIGTERM
CMD ["autogen-service"]
