# syntax=docker/dockerfile:1.7
# The trainer image: what the GPU pod launched by K8sTrainer (slm_platform/training/launchers.py)
# runs. Build from the repository root:
#
#   docker build -f docker/trainer.Dockerfile -t REGISTRY/slm-trainer:$(git rev-parse --short HEAD) .
#
# Use an immutable tag per commit and put it in model.trainer.image (or SLM_TRAINER_IMAGE in the
# code location's environment). The pod's command is set by the launcher
# (`python -m slm_platform.training.train_lora`); the ENTRYPOINT below is the same, for `docker run`.
#
# The CUDA base supplies the user-space libraries; the driver comes from the GPU node (on GKE the
# node pool's installed driver). PyPI torch wheels bundle their own CUDA runtime, so the base's
# CUDA minor version only has to be no newer than the node driver supports.

ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

# --- build: a virtualenv with the project and its `gpu` extra ----------------------------------
FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv python3.11-dev build-essential git \
 && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip setuptools wheel

WORKDIR /src
# dependencies first (cached while only the source changes): metadata + an empty package
COPY pyproject.toml README.md ./
RUN mkdir slm_platform && touch slm_platform/__init__.py \
 && pip install ".[gpu]" \
 && pip uninstall -y slm_platform
# then the code itself
COPY slm_platform ./slm_platform
RUN pip install --no-deps . && python -c "import slm_platform.training.train_lora"

# --- runtime ------------------------------------------------------------------------------------
FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends software-properties-common gpg-agent \
 && add-apt-repository -y ppa:deadsnakes/ppa \
 && apt-get update \
 && apt-get install -y --no-install-recommends python3.11 ca-certificates \
 && apt-get purge -y software-properties-common gpg-agent && apt-get autoremove -y \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv

# Domain folders (prompts, contracts) so `domain_dir` extras resolve inside the pod too.
WORKDIR /app
COPY domains ./domains

RUN useradd --create-home --uid 1000 trainer && mkdir -p /app/.slm && chown -R trainer /app/.slm
USER 1000
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    SLM_ENV=prod \
    SLM_HOME=/app/.slm \
    SLM_DOMAINS=/app/domains \
    HF_HOME=/home/trainer/.cache/huggingface

ENTRYPOINT ["python", "-m", "slm_platform.training.train_lora"]
