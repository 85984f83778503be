# The connector service image.
#   builder: a venv with exactly the locked runtime dependencies (requirements/runtime.txt, with
#            hashes: the versions the test suite ran against), then the connector's own wheel,
#            built without isolation from the locked setuptools
#   runtime: the same Python base, the venv copied in, tini as PID 1, a non-root user; no pip,
#            no compiler, no benchmark harness
#
# Plain `docker build` works with BuildKit and with the classic builder (Debian 12's docker.io
# without buildx), and needs no registry but the base image's:
#   docker build -t connector:1.0.0 .
#   docker run --rm --read-only --cap-drop ALL -p 9464:9464 \
#     -e CONNECTOR_API_URL=wss://... -e CONNECTOR_REDIS_URL=redis://... connector:1.0.0
# The base is pinned to an exact Python patch release; pin it bit for bit with its digest:
#   docker build --build-arg PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm@sha256:<digest> .
# Any other Debian-based Python 3.11+ works as PYTHON_IMAGE too (the image's base.name label
# then names it).

ARG PYTHON_IMAGE=docker.io/library/python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# tini, from the base's own (stable) Debian release; only its static binary goes on.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*
# Dependencies first (their layer survives source changes). The runtime venv gets no pip of its
# own: the build venv's pip installs into it (pip --python).
COPY requirements/build.txt requirements/runtime.txt /tmp/requirements/
RUN python -m venv /opt/build \
    && /opt/build/bin/pip install --require-hashes -r /tmp/requirements/build.txt \
    && python -m venv --without-pip /opt/venv \
    && /opt/build/bin/pip --python /opt/venv/bin/python install \
        --require-hashes -r /tmp/requirements/runtime.txt
COPY pyproject.toml README.md LICENSE ./
COPY connector ./connector
RUN /opt/build/bin/pip wheel --no-deps --no-build-isolation --wheel-dir /tmp/wheels . \
    && /opt/build/bin/pip --python /opt/venv/bin/python install --no-deps /tmp/wheels/connector-*.whl \
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
      org.opencontainers.image.base.name="${PYTHON_IMAGE}"

# A fixed UID/GID (10001) so Kubernetes' runAsNonRoot can check it and volumes can be shared.
# Nothing installs packages at run time: the base's pip (and ensurepip's bundled wheels) go.
RUN groupadd --system --gid 10001 connector \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin connector \
    && python -c "import ensurepip, pip, pathlib, shutil; [shutil.rmtree(p) for m in (pip, ensurepip) for p in [pathlib.Path(m.__file__).parent, *pathlib.Path(m.__file__).parent.parent.glob(m.__name__ + '-*.dist-info')]]" \
    && rm -rf /usr/local/bin/pip* /usr/bin/pip* /usr/share/python-wheels

COPY --from=builder /usr/bin/tini-static /usr/bin/tini
COPY --from=builder /opt/venv /opt/venv
COPY deploy/docker/healthcheck.py /usr/local/bin/connector-healthcheck

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
# The check follows the command the container runs (run: /healthz of the ops port; simulate:
# the simulator's /health); see deploy/docker/healthcheck.py.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
    CMD ["connector-healthcheck"]
# tini as PID 1: it forwards a stop signal from the first instant (a Python PID 1 ignores
# signals it has no handler for yet, so a stop right after start was lost). -e 143: a SIGTERM
# that ends the connector before it even installed its handlers is a clean stop too.
ENTRYPOINT ["tini", "-e", "143", "--", "connector"]
CMD ["run"]
