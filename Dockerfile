# avatar-server on an NVIDIA GPU, with MuseTalk's weights mounted from the host:
#
#   docker build -t avatar-server .
#   docker run --gpus all --network host \
#     -v "$PWD/models:/app/models" -v "$PWD/avatars:/app/avatars" avatar-server
#
# --network host: WebRTC media flows over UDP ports the server picks per connection, which
# a plain -p mapping does not cover (without it, give clients a TURN server through
# WEBRTC_TURN_URLS). Without weights in models/ the server runs the demo engine.
# docker-compose.yml runs it with coturn and Caddy (README.md, "Deployment").
#
# The server runs as the unprivileged user `avatar` (uid 10001): a mounted avatars/ must be
# writable by it (chown 10001 avatars), models/ only readable. Renders (RENDERS_DIR) are
# kept in the container: they do not outlive the server.
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    MALLOC_ARENA_MAX=2 \
    PIP_NO_CACHE_DIR=1 \
    VENV=/opt/venv \
    TORCH_BUILD=cuda \
    MODELS_DIR=/app/models \
    AVATARS_DIR=/app/avatars \
    RENDERS_DIR=/app/renders

# curl: scripts/download_models.sh, and the health check; espeak-ng: text to speech.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl espeak-ng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY scripts ./scripts
COPY server ./server
RUN bash scripts/setup.sh
COPY player ./player
COPY models/README.md models/manifest.json ./models/

ARG APP_UID=10001
RUN groupadd --system --gid "$APP_UID" avatar \
    && useradd --system --uid "$APP_UID" --gid avatar --create-home --home-dir /home/avatar avatar \
    && mkdir -p "$AVATARS_DIR" "$RENDERS_DIR" \
    && chown avatar:avatar "$AVATARS_DIR" "$RENDERS_DIR"
USER avatar

EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
CMD ["/opt/venv/bin/avatar-server", "serve", "--host", "0.0.0.0", "--port", "8000"]
