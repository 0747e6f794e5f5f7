# syntax=docker/dockerfile:1.7
# The serving gateway image: `slm serve` (FastAPI on uvicorn) in front of the vLLM Deployment
# (k8s/serving/). Build from the repository root:
#
#   docker build -f docker/gateway.Dockerfile -t REGISTRY/slm-gateway:$(git rev-parse --short HEAD) .
#
# The same image runs the vLLM pod's init container, which fetches and verifies the base model
# from the artifact store (k8s/serving/vllm.yaml).
#
# torch: nothing under slm_platform.serving imports it (checked with an import blocker on
# slm_platform.cli, slm_platform.serving.* and slm_platform.models), but pyproject.toml lists
# torch as a hard dependency, so `pip install .` would pull it anyway: it is installed first,
# pinned, exactly as the Makefile does (torch==2.13.0 is the CPU build on the project's index; an
# unpinned torch pulls gigabytes of CUDA wheels). A `serving` extra without torch would shrink
# the image; that is a pyproject.toml change, not made here.
#
# pip install lines are checked against the Makefile's by tests/test_k8s_manifests.py: the
# Makefile is the one source of truth for how the project is installed.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: a virtualenv with the project (no dev extra) ----------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY slm_platform ./slm_platform
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -q --upgrade pip \
 && pip install -q torch==2.13.0 \
 && pip install -q . \
 && python -c "import slm_platform.serving.server"

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Domain folders: routes, contracts, prompts and oracles the gateway serves (a config change is a
# new image; a release is not: the release pointer lives in the artifact store).
COPY domains ./domains
RUN groupadd --gid 10001 slm \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin slm \
 && mkdir -p /var/lib/slm && chown 10001:10001 /var/lib/slm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SLM_ENV=prod \
    SLM_HOME=/var/lib/slm \
    SLM_DOMAINS=/app/domains \
    SLM_ARTIFACT_CACHE=/var/lib/slm/artifact-cache \
    HOME=/tmp \
    HF_HOME=/tmp/hf \
    HF_HUB_OFFLINE=1
USER 10001:10001
EXPOSE 8000
# No ENTRYPOINT: the Deployment sets the args; this is what `docker run` does. Without an API key
# (SLM_GATEWAY_API_KEYS or SLM_GATEWAY_API_KEYS_FILE) `slm serve` refuses to bind 0.0.0.0.
CMD ["slm", "serve", "--host", "0.0.0.0", "--port", "8000"]
