# syntax=docker/dockerfile:1
# linewatch CPU image: `linewatch-producer` by default; the compose file also runs the alarm
# service from it (entrypoint `linewatch-alarms`), which needs no GPU.
#
#   docker build -f docker/producer.Dockerfile -t linewatch/producer .   (from the repository root)
#   docker run -e LINEWATCH_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 linewatch/producer --source synthetic --fps 5
#   docker run --entrypoint linewatch-alarms linewatch/producer --rules /etc/linewatch/alarms.yaml
#
# It installs the base dependencies only (no `worker` extra): no torch, no models. The alarm code
# lives in worker/alarms, so the worker package is copied, but `linewatch-alarms` imports nothing
# of the torch stack (`linewatch-worker` itself does not run in this image).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --upgrade pip setuptools wheel
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
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 ORT_DISABLE_TELEMETRY=1
USER linewatch
WORKDIR /home/linewatch
ENTRYPOINT ["tini", "--", "linewatch-producer"]
CMD ["--source", "synthetic", "--fps", "5"]
