# syntax=docker/dockerfile:1
# jitaccess: build the package into a virtualenv, then copy only that venv into a
# clean slim image that runs as a non-root user.
#
#   docker build -t ghcr.io/example/jitaccess:0.1.0 .
#   docker run --env-file .env -p 3000:3000 ghcr.io/example/jitaccess:0.1.0          # serve
#   docker run --env-file .env ghcr.io/example/jitaccess:0.1.0 db upgrade            # migrate

ARG PYTHON_IMAGE=python:3.11-slim

# --- build: install jitaccess (no dev extras) into /opt/jitaccess -----------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/jitaccess
ENV PATH=/opt/jitaccess/bin:$PATH

WORKDIR /src
# README.md is the package's long description (pyproject `readme`), so the build needs it.
# Only the product: the sandbox (sandbox/, its own distribution) is never in the image.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --upgrade pip \
 && pip install . \
 && jitaccess --help > /dev/null

# --- runtime ----------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime

ARG UID=10001
ARG GID=10001

LABEL org.opencontainers.image.title="jitaccess" \
      org.opencontainers.image.description="Just-in-time privileged access for managed applications, run from Slack" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/jitaccess/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JITACCESS_PORT=3000

RUN groupadd --system --gid "${GID}" jitaccess \
 && useradd --system --uid "${UID}" --gid "${GID}" --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin jitaccess \
 && mkdir /app \
 && chown "${UID}:${GID}" /app

# Same base image and same path as the build stage, so the venv's interpreter links hold.
COPY --from=build /opt/jitaccess /opt/jitaccess

# The working directory is writable only so the default SQLite database (one process)
# works with a plain `docker run`; on Kubernetes use PostgreSQL and a read-only root.
WORKDIR /app
USER ${UID}:${GID}

EXPOSE 3000

# Kubernetes uses its own probes (manifests/kubernetes); this serves plain Docker.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('JITACCESS_PORT', '3000'), timeout=3)" || exit 1

ENTRYPOINT ["jitaccess"]
CMD ["serve"]
