# syntax=docker/dockerfile:1
#
# The connector service image.
#   builder: build a wheel from pyproject.toml, install it (with pinned dependencies) into a venv
#   runtime: the same slim Python, the venv copied in, a non-root user; no compilers
#
# Every dependency ships manylinux wheels, so neither stage needs a compiler. The base image is
# pinned to an exact Python patch release; to pin it bit for bit, add its digest, e.g.
#   docker build --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest> .
# (`docker buildx imagetools inspect python:3.11.14-slim-bookworm` prints the digest).
#
#   docker build -t connector:1.0.0 .
#   docker run --rm --read-only --tmpfs /tmp -p 9464:9464 \
#     -e CONNECTOR_API_URL=wss://... -e CONNECTOR_REDIS_URL=redis://... connector:1.0.0

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# The venv gets no pip of its own: the base image's pip installs into it (pip --python).
RUN python -m venv --without-pip /opt/venv
COPY deploy/docker/constraints.txt /tmp/constraints.txt
COPY pyproject.toml README.md ./
COPY connector ./connector
RUN python -m pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && python -m pip --python /opt/venv/bin/python install \
        --constraint /tmp/constraints.txt /tmp/wheels/connector-*.whl \
    && /opt/venv/bin/connector --version

FROM ${PYTHON_IMAGE} AS runtime
ARG PYTHON_IMAGE
ARG VERSION=1.0.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title="connector" \
      org.opencontainers.image.description="Market-data connector: Trading API WebSocket session into Redis Streams, with Prometheus metrics." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.base.name="docker.io/library/${PYTHON_IMAGE}"

# A fixed UID/GID (10001) so Kubernetes' runAsNonRoot can check it and volumes can be shared.
RUN groupadd --system --gid 10001 connector \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin connector

COPY --from=builder /opt/venv /opt/venv
COPY --chmod=0755 deploy/docker/healthcheck.py /usr/local/bin/connector-healthcheck

# Read-only root file system: nothing is written at run time (bytecode was compiled at install,
# logs go to stderr). PROMETHEUS_DISABLE_CREATED_SERIES drops the *_created series, which halve
# the scrape size and are used by nothing in deploy/.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONFAULTHANDLER=1 \
    PROMETHEUS_DISABLE_CREATED_SERIES=True

USER 10001:10001
EXPOSE 9464
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["connector-healthcheck", "/healthz"]
ENTRYPOINT ["connector"]
CMD ["run"]
