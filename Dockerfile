# syntax=docker/dockerfile:1
# Driftline's container image: `driftline worker`, `driftline notify` and every other command.
#   docker build -t driftline:0.1.0 .
# Two stages: wheels are built in the first (with pip's build tools), the second installs them from
# a bind mount, so neither the wheels nor a compiler end up in the image. Runs as uid 10001, never
# root; /var/lib/driftline (faust's data dir) and /var/lib/driftline-notify (the notifier's
# delivery log) are its only writable paths besides /tmp, so the root filesystem can be read-only.
#
# The base is pinned to a patch release; for reproducible builds pin it by digest in your
# registry as well (docker buildx imagetools inspect python:3.11.13-slim-bookworm).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# Dependencies first, in their own layer: rebuilt only when pyproject.toml changes, not on every
# source edit. (A stub package lets pip resolve the project; its wheel is thrown away.)
COPY pyproject.toml README.md ./
RUN mkdir streams && touch streams/__init__.py \
 && pip wheel --wheel-dir /wheels . \
 && rm -f /wheels/driftline-*.whl \
 && rm -rf streams
COPY streams ./streams
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN groupadd --system --gid 10001 driftline \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /var/lib/driftline \
      --shell /usr/sbin/nologin driftline \
 && mkdir -p /var/lib/driftline /var/lib/driftline-notify /etc/driftline/config \
 && chown 10001:10001 /var/lib/driftline /var/lib/driftline-notify
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels driftline \
 && driftline --help > /dev/null
# Numeric, so Kubernetes can check runAsNonRoot without resolving a user name.
USER 10001:10001
WORKDIR /var/lib/driftline
# HOME on /tmp: the one path that is writable for every command (the root filesystem is read-only).
ENV HOME=/tmp \
    DRIFTLINE_WEB_HOST=0.0.0.0 \
    DRIFTLINE_DATA_DIR=/var/lib/driftline
# 6066: the worker's /metrics, /healthz, /ready; 6067: the notifier's /healthz (--health-port).
EXPOSE 6066 6067
ENTRYPOINT ["driftline"]
CMD ["worker"]
