# syntax=docker/dockerfile:1
# The sync server: a slim image that runs as an unprivileged user.
#   docker build -t syncserver .
#   docker run -e SYNC_DATABASE_URL=... -e SYNC_MASTER_KEY_FILE=... -p 8000:8000 syncserver
# compose.yaml shows a full deployment (PostgreSQL, Redis, two replicas, nginx).

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY protocol/ protocol/
COPY storage/ storage/
COPY pyproject.toml README.md ./
COPY syncserver/ syncserver/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install ./protocol ./storage .

FROM python:3.11-slim
RUN groupadd --system --gid 10001 sync \
 && useradd --system --uid 10001 --gid sync --home-dir /var/lib/syncserver --shell /usr/sbin/nologin sync \
 && install -d -o sync -g sync -m 0700 /var/lib/syncserver
COPY --from=build /opt/venv /opt/venv
COPY config/collections.toml /etc/syncserver/collections.toml
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SYNC_HOST=0.0.0.0 \
    SYNC_PORT=8000 \
    SYNC_DATA_DIR=/var/lib/syncserver \
    SYNC_COLLECTIONS_FILE=/etc/syncserver/collections.toml
USER 10001:10001
WORKDIR /var/lib/syncserver
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2).status != 200)"]
ENTRYPOINT ["syncserver"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
