# syntax=docker/dockerfile:1
# Build: docker build -t jarchy .
# Key:   docker run --rm jarchy keygen --out - > jarchy.key && chmod 600 jarchy.key && sudo chown 10001 jarchy.key
#        or, sealed under a passphrase typed twice: docker run --rm -it -v "$PWD:/out" --user "$(id -u)" \
#          jarchy keygen --passphrase --out /out/jarchy.key (then chown 10001; start the bot with -it too, or
#          give the passphrase as a second secret and set JARCHY_KEY_PASSPHRASE_FILE=/run/secrets/...)
#        Keep the file on another disk than the data volume's.
# Run:   docker run -d --name jarchy -e JARCHY_BOT_TOKEN=... -v jarchy-data:/data \
#          -v "$PWD/jarchy.key:/run/secrets/jarchy_key:ro" jarchy
#        (compose: `secrets: {jarchy_key: {file: ./jarchy.key}}`, which mounts it at the same place)
# The key is never created in the container: without the secret the bot stops with a line saying so.

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
    JARCHY_KEY_FILE=/run/secrets/jarchy_key \
    MPLCONFIGDIR=/tmp/matplotlib
# glibc gives every thread that allocates an arena of its own (the database driver's threads among them),
# and memory freed there is seldom given back: with two arenas the 10-minute soak's RSS stayed flat over
# its second half (0.035 MB a minute; README, Performance).
ENV MALLOC_ARENA_MAX=2
# A fixed uid, so the key file given as a secret can be made readable to it (chown 10001). Its home is not
# the data volume: nothing of the key's may default to where the database lives.
RUN groupadd --system --gid 10001 jarchy \
 && useradd --system --uid 10001 --gid jarchy --home-dir /home/jarchy --create-home --shell /usr/sbin/nologin jarchy \
 && mkdir -p /data && chown jarchy:jarchy /data && chmod 700 /data
COPY --from=build /opt/jarchy /opt/jarchy
USER jarchy
WORKDIR /data
VOLUME ["/data"]
# The bot touches /data/heartbeat every 30 s while its loops run.
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 CMD ["jarchy", "health"]
ENTRYPOINT ["jarchy"]
CMD ["run"]
