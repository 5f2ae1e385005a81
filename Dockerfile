# syntax=docker/dockerfile:1
# One image for every process: web (the default CMD), Celery worker, Celery beat and migrations.
#
#   docker build -t stackblaze-private-networking .
#   web:     (default CMD) gunicorn on :8000
#   worker:  celery -A dashboard worker --loglevel=INFO --concurrency=4
#   beat:    celery -A dashboard beat --loglevel=INFO
#   migrate: python manage.py migrate --no-input
#
# No secret is baked in: DJANGO_SECRET_KEY, FIELD_ENCRYPTION_KEYS, DATABASE_URL, REDIS_URL and
# DJANGO_ALLOWED_HOSTS come from the environment at run time (see README.md, Configuration).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    STATE_DIR=/app/var

WORKDIR /app

# A fixed numeric uid/gid, so Kubernetes' runAsNonRoot can verify the image's user.
RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app

# Dependencies first, exactly as locked (versions and hashes): this layer is rebuilt only when
# requirements.txt changes (`make lock` writes it from pyproject.toml).
COPY requirements.txt ./
RUN pip install --no-cache-dir --require-hashes -r requirements.txt

COPY manage.py ./
COPY api/ api/
COPY dashboard/ dashboard/
COPY networking/ networking/
COPY templates/ templates/
COPY static/ static/

# collectstatic imports the production settings, which refuse to load without a secret key and
# encryption keys: give this one step throwaway values generated here (never persisted in the
# image, which has none). The settings also create a filesystem-broker folder when REDIS_URL is
# unset; drop it. STATE_DIR stays writable by the app user (an empty manifests folder is made
# so that a named volume mounted there starts out owned by that user).
RUN DJANGO_SECRET_KEY="$(python -c 'import secrets; print(secrets.token_urlsafe(50))')" \
    FIELD_ENCRYPTION_KEYS="$(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')" \
    python manage.py collectstatic --no-input -v 0 \
    && rm -rf "$STATE_DIR/broker" \
    && mkdir -p "$STATE_DIR/manifests" \
    && chown app:app "$STATE_DIR" "$STATE_DIR/manifests" \
    && python -m compileall -q dashboard networking

USER 10001:10001

EXPOSE 8000

CMD ["gunicorn", "dashboard.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3", "--access-logfile", "-"]
