# syntax=docker/dockerfile:1
# linewatch CPU image: `linewatch-producer` by default; the compose file also runs the alarm
# service from it (`linewatch-worker alarms`), which needs no GPU.
#
#   docker build -f docker/producer.Dockerfile -t linewatch/producer .   (from the repository root)
#   docker run -e LINEWATCH_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 linewatch/producer --source synthetic --fps 5
#
# The project has one dependency list, so this image installs torch too: the CPU-only build,
# from the PyTorch CPU wheel index, to keep the image small.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip setuptools wheel \
 && pip install --index-url "${TORCH_INDEX_URL}" torch torchvision
WORKDIR /src
COPY pyproject.toml README.md ./
COPY common ./common
COPY producer ./producer
COPY worker ./worker
RUN pip install .

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libglib2.0-0 libgomp1 tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 linewatch \
 && useradd --system --uid 10001 --gid linewatch --home-dir /home/linewatch --create-home linewatch
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER linewatch
WORKDIR /home/linewatch
ENTRYPOINT ["tini", "--", "linewatch-producer"]
CMD ["--source", "synthetic", "--fps", "5"]
