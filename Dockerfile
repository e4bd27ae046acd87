# syntax=docker/dockerfile:1
# Build: docker build -t jarchy .
# Run:   docker run -d --name jarchy -e JARCHY_BOT_TOKEN=... -v jarchy-data:/data \
#          -v /secure/jarchy.key:/run/secrets/jarchy.key:ro -e JARCHY_KEY_FILE=/run/secrets/jarchy.key jarchy

FROM python:3.11-slim AS build
WORKDIR /src
# Build a wheel (the build compiles the message catalogs), then install it with its dependencies
# into a virtualenv that the runtime stage copies whole.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY handlers ./handlers
COPY storage ./storage
COPY messages ./messages
RUN python -m venv /opt/jarchy \
 && /opt/jarchy/bin/pip install --no-cache-dir --upgrade pip \
 && /opt/jarchy/bin/pip install --no-cache-dir .

FROM python:3.11-slim
ENV PATH=/opt/jarchy/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    JARCHY_DATA_DIR=/data \
    MPLCONFIGDIR=/tmp/matplotlib
RUN groupadd --system jarchy && useradd --system --gid jarchy --home-dir /data --shell /usr/sbin/nologin jarchy \
 && mkdir -p /data && chown jarchy:jarchy /data && chmod 700 /data
COPY --from=build /opt/jarchy /opt/jarchy
USER jarchy
WORKDIR /data
VOLUME ["/data"]
# The bot touches /data/heartbeat every 30 s while its loops run.
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 CMD ["jarchy", "health"]
ENTRYPOINT ["jarchy"]
CMD ["run"]
