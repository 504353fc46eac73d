# Kizuna in one image: the web server and the worker are the same image with another command.
#   docker build -t kizuna .
#   docker compose up            (compose.yaml: PostgreSQL, Redis, two web servers, two workers)
FROM python:3.13-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    KIZUNA_DATA_DIR=/var/lib/kizuna

RUN useradd --system --uid 10001 --home-dir /var/lib/kizuna --create-home kizuna

WORKDIR /opt/kizuna
COPY pyproject.toml README.md ./
COPY kizuna ./kizuna
RUN pip install . && python -m compileall -q kizuna

USER kizuna
# Uploads, the generated secret key (set KIZUNA_SECRET_KEY when several containers serve) and the
# outbox journals: keep this volume across restarts.
VOLUME ["/var/lib/kizuna"]
EXPOSE 8000
# `kizuna serve` forwards SIGTERM to its web processes; `kizuna worker` finishes the task in hand.
ENTRYPOINT ["kizuna"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"]
