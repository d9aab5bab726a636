# syntax=docker/dockerfile:1
# linewatch operator dashboard: `linewatch-dashboard` (= `linewatch-worker dashboard`), CPU only.
#
#   docker build -f docker/dashboard.Dockerfile -t linewatch/dashboard .   (from the repository root)
#   docker run -p 8090:8090 -e LINEWATCH_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 \
#     -e LINEWATCH_DASHBOARD__USERS=olga:secret:operator linewatch/dashboard
#
# The base dependencies plus the `dashboard` extra (Starlette, uvicorn, itsdangerous): no torch,
# no models. The page's JS and CSS are package data of worker/dashboard (no CDN).

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
COPY pyproject.toml README.md constraints.txt ./
COPY common ./common
COPY producer ./producer
COPY worker ./worker
RUN pip install -c constraints.txt '.[dashboard]'

FROM ${PYTHON_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libglib2.0-0 libgomp1 tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/venv /opt/venv
RUN groupadd --system --gid 10001 linewatch \
 && useradd --system --uid 10001 --gid linewatch --home-dir /home/linewatch --create-home linewatch
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 ORT_DISABLE_TELEMETRY=1 \
    LINEWATCH_DASHBOARD__HOST=0.0.0.0 LINEWATCH_DASHBOARD__PORT=8090
USER linewatch
WORKDIR /home/linewatch
EXPOSE 8090
HEALTHCHECK --interval=15s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8090/healthz', timeout=2)"
ENTRYPOINT ["tini", "--", "linewatch-dashboard"]
CMD []
