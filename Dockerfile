# syntax=docker/dockerfile:1
# The operator's image: `wedsync-operator run -A` as uid 10001 on a read-only root filesystem.
#
#   docker build -t ghcr.io/wedsync/wedsync-operator:0.1.0 .
#
# Stage 1 builds the operator's wheel and installs it with its pinned dependencies
# (images/operator/requirements.txt, every transitive one pinned) into /opt/venv; stage 2 is
# the slim runtime with only that virtualenv. Pin PYTHON_IMAGE to a digest in CI.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
COPY images/operator/requirements.txt /src/requirements.txt
RUN /opt/venv/bin/pip install --no-deps --requirement /src/requirements.txt
COPY pyproject.toml README.md /src/
# only the operator: pyproject.toml's package discovery also looks in tools/testbed, which
# is left out of the image (the test bed is not shipped, and its changes do not rebuild it)
COPY operator/ /src/operator/
ARG VERSION=0.1.0
RUN python -m pip wheel --no-deps --wheel-dir /wheels /src \
 && /opt/venv/bin/pip install --no-deps "/wheels/wedsync_operator-${VERSION}-py3-none-any.whl" \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/wedsync-operator --version

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="wedsync-operator" \
      org.opencontainers.image.description="Kubernetes operator: calendar-driven HPA capacity, pgBackRest backups and failover for PostgreSQL" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 wedsync \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin wedsync
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
# metrics (/metrics) and liveness (/healthz)
EXPOSE 8080 8081
ENTRYPOINT ["wedsync-operator"]
CMD ["run", "-A"]
