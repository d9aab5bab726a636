# syntax=docker/dockerfile:1
# linewatch GPU worker: `linewatch-worker serve` (and any other linewatch-worker command).
#
#   docker build -f docker/worker.Dockerfile -t linewatch/worker .      (from the repository root)
#   docker run --gpus all -v "$PWD/models:/models:ro" -e LINEWATCH_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 linewatch/worker
#
# No model weights are baked in: mount them read-only at /models (layout: docs/start/models.md).
# The PyPI torch wheels bring their own CUDA 12 user-space libraries; the CUDA base image supplies the
# NVIDIA container-toolkit wiring (NVIDIA_VISIBLE_DEVICES, driver capabilities) and cuDNN.

ARG CUDA_IMAGE=nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

# ---------------------------------------------------------------- build: a virtualenv with the project
FROM ${CUDA_IMAGE} AS build
ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 ORT_DISABLE_TELEMETRY=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY producer ./producer
COPY worker ./worker
# IS-Net runs on the GPU: onnxruntime-gpu replaces the CPU build the worker extra brings (both are the
# `onnxruntime` module; the reinstall restores the files the uninstall of the CPU build removed).
RUN pip install --upgrade pip setuptools wheel && pip install '.[worker,gpu]' \
 && pip uninstall -y onnxruntime \
 && pip install --force-reinstall --no-deps 'onnxruntime-gpu==1.31.1' \
 && python3 -c "__import__('onnxruntime').get_device() == 'GPU' or exit('onnxruntime is not the GPU build')"

# ---------------------------------------------------------------- runtime
FROM ${CUDA_IMAGE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 libglib2.0-0 libgomp1 ca-certificates tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv

# Non-root: the worker needs no privileges; models are read-only input.
RUN groupadd --system --gid 10001 linewatch \
 && useradd --system --uid 10001 --gid linewatch --home-dir /home/linewatch --create-home linewatch \
 && mkdir -p /models \
 && chown linewatch:linewatch /models

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    LINEWATCH_MODELS__MODELS_DIR=/models \
    LINEWATCH_MODELS__DEVICE=cuda \
    LINEWATCH_WORKER__HEALTH_PORT=8080 \
    HF_HOME=/models/huggingface \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    XDG_CACHE_HOME=/home/linewatch/.cache

VOLUME ["/models"]
USER linewatch
WORKDIR /home/linewatch
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=120s --retries=3 \
  CMD python3 -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('LINEWATCH_WORKER__HEALTH_PORT', '8080'), timeout=2)"

ENTRYPOINT ["tini", "--", "linewatch-worker"]
CMD ["serve"]
