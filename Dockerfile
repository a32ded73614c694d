# syntax=docker/dockerfile:1
# Two images from one source tree:
#   docker build --target operator -t tmo-operator .   (the control plane: `tmo operator`)
#   docker build --target runtime  -t tmo-runtime  .   (model pods: fetch, TorchServe, gateway)
# Both run as non-root users with a read-only root filesystem (the chart and the rendered
# Deployments mount emptyDirs for what must be written).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY runtimes ./runtimes

FROM base AS operator
# The operator needs no torch: only the base dependencies.
RUN pip install --no-cache-dir . && rm -rf /src
USER 65532:65532
ENTRYPOINT ["tmo"]
CMD ["operator"]

FROM base AS runtime
# TorchServe 0.12 runs on Java 17. Debian's stable security updates are taken as they come.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/*
# Set PIP_EXTRA_INDEX_URL to a CPU-only torch index for a smaller CPU image.
ARG PIP_EXTRA_INDEX_URL=""
# This installs the local source tree; its dependencies' bounds live in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --no-cache-dir ".[runtime]" && rm -rf /src
# The uid the rendered Deployments run model pods as (runAsUser), HOME on an emptyDir there.
USER 1000:1000
ENV HOME=/tmp
ENTRYPOINT []
CMD ["python", "-m", "tmo_runtime", "--help"]
