# The `arqscale` image: the HTTP API (`arqscale api`, the default) and the exporter (`arqscale exporter`).
# Build: docker build -t arqscale:dev .   Run: docker run --rm -e REDIS_URL=redis://host:6379 arqscale:dev exporter

# --- builder: a virtualenv with arqscale and its dependencies (wheels only, no compiler needed) ---
FROM python:3.11.11-slim-bookworm AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/arqscale
COPY pyproject.toml README.md ./
COPY src ./src
RUN /opt/arqscale/bin/pip install --no-cache-dir --only-binary=:all: --no-build-isolation hatchling==1.27.0 \
 && /opt/arqscale/bin/pip install --no-cache-dir --no-build-isolation --prefer-binary '.[otel]' \
 && /opt/arqscale/bin/pip uninstall --yes hatchling pip

# --- runtime: the virtualenv, a fixed non-root user, nothing else ---
FROM python:3.11.11-slim-bookworm
# HOME is /tmp (an emptyDir in the chart): tools that write under ~ (caches, config) get a writable place.
ENV HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/arqscale/bin:$PATH
RUN groupadd --system --gid 10001 arqscale \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin arqscale
COPY --from=builder /opt/arqscale /opt/arqscale
WORKDIR /tmp
USER 10001:10001
# API, exporter /metrics + /keda, External Metrics API (HTTPS)
EXPOSE 8000 9100 6443
# Exec form: Python is PID 1 and receives SIGTERM itself (each process drains on it).
ENTRYPOINT ["arqscale"]
CMD ["api"]
