# One image for the API and the workers.
#
#   docker build -t jobcast .
#   docker run --rm -p 127.0.0.1:8000:8000 -e REDIS_URL=redis://host:6379/0 jobcast                  # API
#   docker run --rm -e REDIS_URL=redis://host:6379/0 --no-healthcheck jobcast jobcast worker  # a worker
#
# The HEALTHCHECK below is the API's; a worker container needs its own (docker-compose.yml has
# one) or `--no-healthcheck`. docs/deployment.md walks through all of it.

ARG PYTHON_IMAGE=python:3.11-slim

# -- build: install jobcast and its dependencies into a venv --------------------------------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv

WORKDIR /src
# Everything `pip install .` reads: the project file, the readme it names, and the package
# (with its package data, lua/*.lua and static/*).
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
# pip stays in the venv so that an image FROM this one can add your own job modules
# (`RUN pip install myapp`, then JOBCAST_JOB_MODULES=myapp.jobs).
RUN /opt/venv/bin/pip install .

# -- runtime: the venv, worker.py, a non-root user -----------------------------------------------
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    JOBCAST_HOST=0.0.0.0 \
    JOBCAST_PORT=8000

RUN groupadd --system --gid 10001 jobcast \
    && useradd --system --uid 10001 --gid jobcast --no-create-home --home-dir /app \
       --shell /usr/sbin/nologin jobcast

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
# `python worker.py` works here too (same as `jobcast worker`).
COPY worker.py ./

USER 10001:10001
EXPOSE 8000

# Liveness of the API process (it answers /healthz while it is up). /readyz (Redis reachable) is
# what docker-compose.yml checks instead.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % (os.environ.get('JOBCAST_PORT') or '8000'), timeout=4)"]

CMD ["jobcast", "serve"]
