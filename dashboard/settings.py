"""Django settings, read from the environment.

Every variable is documented in the README. With ``DJANGO_DEBUG`` unset the settings are the
production ones: they refuse to start without a real ``DJANGO_SECRET_KEY`` and
``FIELD_ENCRYPTION_KEYS``, and ``manage.py check --deploy`` is clean.
"""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import dj_database_url
import django_stubs_ext
from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured
from django.utils.csp import CSP

from dashboard.env import env_bool, env_choice, env_int, env_list, env_str

# Lets model fields and forms be subscripted for type checking (TextField[...], ModelForm[...]).
django_stubs_ext.monkeypatch()

BASE_DIR = Path(__file__).resolve().parent.parent
# Runtime state of the embedded setup (SQLite file, broker folders, written manifests).
STATE_DIR = Path(env_str("STATE_DIR") or BASE_DIR / "var")

DEBUG = env_bool("DJANGO_DEBUG", default=False)

_DEV_SECRET_KEY = "dev-insecure-only-for-local-development-do-not-deploy"
SECRET_KEY = env_str("DJANGO_SECRET_KEY")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY is not set. Generate one with "
            "`python -c 'import secrets; print(secrets.token_urlsafe(50))'` "
            "or set DJANGO_DEBUG=true for local development."
        )
    SECRET_KEY = _DEV_SECRET_KEY
elif not DEBUG and (SECRET_KEY == _DEV_SECRET_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY must be a random value of at least 50 characters."
    )


def _development_encryption_key(secret_key: str) -> str:
    # Only for DEBUG: a stable key derived from the secret key, so a local database stays
    # readable across restarts without any setup.
    digest = hashlib.sha256(f"field-encryption:{secret_key}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()


# Fernet keys, newest first: values are encrypted with the first and decrypted with any.
FIELD_ENCRYPTION_KEYS = env_list("FIELD_ENCRYPTION_KEYS")
if not FIELD_ENCRYPTION_KEYS:
    if not DEBUG:
        raise ImproperlyConfigured(
            "FIELD_ENCRYPTION_KEYS is not set. Generate a key with `python -c "
            "'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`."
        )
    FIELD_ENCRYPTION_KEYS = [_development_encryption_key(SECRET_KEY)]
for _index, _key in enumerate(FIELD_ENCRYPTION_KEYS, start=1):
    try:
        Fernet(_key)
    except ValueError:
        raise ImproperlyConfigured(
            f"FIELD_ENCRYPTION_KEYS entry #{_index} is not a valid Fernet key "
            "(32 url-safe base64-encoded bytes)."
        ) from None

ALLOWED_HOSTS = env_list(
    "DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django_htmx",
    # Only for its Swagger UI template and assets, served from our own static files.
    "ninja",
    "networking",
    "dashboard",
    "api",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # An open page's poll answered from the cache when nothing changed: before the session.
    "dashboard.middleware.LivePollMiddleware",
    "dashboard.middleware.InboxPollMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "dashboard.middleware.WorkerQueueMiddleware",
    "dashboard.middleware.ConcurrentChangeMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django.middleware.csp.ContentSecurityPolicyMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    # Last: the page it draws in place of an empty 405 still gets the CSP and frame headers.
    "dashboard.middleware.MethodNotAllowedPageMiddleware",
]

ROOT_URLCONF = "dashboard.urls"
WSGI_APPLICATION = "dashboard.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.template.context_processors.csp",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "dashboard.context_processors.cluster",
            ],
        },
    },
]

DATABASE_URL = env_str("DATABASE_URL")
if DATABASE_URL:
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60, minimum=0)
        )
    }
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
    if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
        # Django's, with a health check that makes no round trip while the socket is quiet.
        DATABASES["default"]["ENGINE"] = "dashboard.postgresql"
else:
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(STATE_DIR / "db.sqlite3"),
            # Web server and worker share the file: wait for the other's write lock instead
            # of failing with "database is locked".
            "OPTIONS": {"timeout": 20, "transaction_mode": "IMMEDIATE"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
# Passed to redis-py's connection pool. The cache only holds small sign-in counters, answered in
# milliseconds; when Redis is down or unreachable, sign-in goes on without them (dashboard/auth.py)
# after waiting at most this long, instead of redis-py's default of 5 seconds per attempt.
REDIS_CACHE_OPTIONS = {"socket_connect_timeout": 1, "socket_timeout": 1}
CACHES: dict[str, dict[str, Any]]
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": "stackblaze",
            "OPTIONS": REDIS_CACHE_OPTIONS,
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# -- The cluster -------------------------------------------------------------------------------
# "manifests" writes YAML under MANIFESTS_DIR (no cluster needed); "kubernetes" applies to the
# cluster from KUBECONFIG / ~/.kube/config, or the in-cluster service account.
CLUSTER_BACKEND = env_choice("CLUSTER_BACKEND", ("manifests", "kubernetes"), "manifests")
MANIFESTS_DIR = Path(env_str("MANIFESTS_DIR") or STATE_DIR / "manifests")
KUBECONFIG = env_str("KUBECONFIG")
KUBE_CONTEXT = env_str("KUBE_CONTEXT")
KUBE_REQUEST_TIMEOUT = env_int("KUBE_REQUEST_TIMEOUT", 10, minimum=1)
# Requests of one pass made at once (a new project's objects, its deletions, its workloads).
KUBE_APPLY_CONCURRENCY = env_int("KUBE_APPLY_CONCURRENCY", 8, minimum=1)
# A 429's Retry-After up to this long is waited out in the pass; longer, the task retries later.
KUBE_RETRY_AFTER_MAX_SECONDS = env_int("KUBE_RETRY_AFTER_MAX_SECONDS", 10, minimum=0)
# The label the platform's deploy system puts on each service's pods, with the service's name.
WORKLOAD_LABEL = env_str("WORKLOAD_LABEL") or "stackblaze.cloud/service"
# Public web services accept traffic from this namespace (the ingress controller's); empty: none.
INGRESS_NAMESPACE = env_str("INGRESS_NAMESPACE", "ingress-nginx")
# Beat looks this often for projects that are behind (a lost message, a failed pass) and
# re-reads the RESYNC_VERIFY_PROJECTS verified longest ago in full; drift is the watcher's.
RESYNC_SECONDS = env_int("RESYNC_SECONDS", 300, minimum=10)
RESYNC_VERIFY_PROJECTS = env_int("RESYNC_VERIFY_PROJECTS", 5, minimum=0)
# The watcher reopens each watch after this long (the API server may close it sooner).
WATCH_SECONDS = env_int("WATCH_SECONDS", 240, minimum=10)
# Transient cluster errors are retried this many times, with exponential backoff and jitter.
RECONCILE_MAX_RETRIES = env_int("RECONCILE_MAX_RETRIES", 6, minimum=0)
RECONCILE_RETRY_BASE_SECONDS = float(env_str("RECONCILE_RETRY_BASE_SECONDS") or 2)
RECONCILE_RETRY_MAX_SECONDS = float(env_str("RECONCILE_RETRY_MAX_SECONDS") or 300)
# A reconcile holds its project by a lease it renews every third of this while the pass runs,
# so a killed worker's claim lapses within this long; beat then hands the project to another
# worker within half of it more (networking/cluster/reconcile.py explains the whole design).
RECONCILE_LEASE_SECONDS = env_int("RECONCILE_LEASE_SECONDS", 10, minimum=1)

# Shared-secret rotation: how long the old value stays accepted once nobody sends it, and how
# often a worker looks at rollouts in progress.
ROTATION_GRACE_SECONDS = env_int("ROTATION_GRACE_SECONDS", 900, minimum=0)
ROTATION_POLL_SECONDS = env_int("ROTATION_POLL_SECONDS", 5, minimum=1)
# A rotation whose phase has waited this long on a workload's rollout is told to the project's
# members in the header's notifications, once per phase.
ROTATION_STUCK_AFTER_SECONDS = env_int("ROTATION_STUCK_AFTER_SECONDS", 600, minimum=1)
# Mutual TLS (networking/mtls.py): how long a service certificate lives (renewed two thirds in),
# how long the kubelet may take to refresh a mounted Secret in every pod (its sync period plus
# its Secret cache's TTL; a CA rotation waits this long after each phase is applied), and the
# most services a project with mutual TLS may have (their files share one Secret of at most
# 1 MiB).
MTLS_CERTIFICATE_HOURS = env_int("MTLS_CERTIFICATE_HOURS", 168, minimum=1)
MTLS_PROPAGATION_SECONDS = env_int("MTLS_PROPAGATION_SECONDS", 150, minimum=0)
MTLS_MAX_SERVICES = env_int("MTLS_MAX_SERVICES", 400, minimum=1)
# The header's notifications are kept this long (those of a condition still going on, longer).
NOTIFICATION_RETENTION_DAYS = env_int("NOTIFICATION_RETENTION_DAYS", 90, minimum=1)
# After a change restarts workloads, watch their rollout this long before leaving it to resync.
ROLLOUT_WATCH_SECONDS = env_int("ROLLOUT_WATCH_SECONDS", 600, minimum=0)

# "Test connection": the probe image (deploy/probe; build and push it where your nodes pull
# from) and when nodes pull it. deploy/rbac.yaml's admission policy names the same image.
CONNECTION_TEST_IMAGE = env_str("CONNECTION_TEST_IMAGE") or "stackblaze-probe:1"
CONNECTION_TEST_PULL_POLICY = env_choice(
    "CONNECTION_TEST_PULL_POLICY", ("IfNotPresent", "Always", "Never"), "IfNotPresent"
)

# -- The HTTP API -----------------------------------------------------------------------------
# Requests per minute for each API token (or signed-in user) before answering 429.
API_THROTTLE_PER_MINUTE = env_int("API_THROTTLE_PER_MINUTE", 600, minimum=1)

# -- Celery ------------------------------------------------------------------------------------
# Redis when REDIS_URL is set; otherwise a broker on the local filesystem that needs no server.
CELERY_BROKER_URL = REDIS_URL or "filesystem://"
if REDIS_URL:
    _VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 600, minimum=1)
    CELERY_BROKER_TRANSPORT_OPTIONS: dict[str, Any] = {
        # An unacknowledged task (its worker died) is handed to another worker after this long.
        "visibility_timeout": _VISIBILITY_TIMEOUT,
        # Look for such tasks every tenth of that (at most every 10 s).
        "unacked_restore_interval": max(1, min(10, _VISIBILITY_TIMEOUT // 10)),
        "unacked_restore_throttle": 1,
    }
else:
    _BROKER_DIR = STATE_DIR / "broker"
    for _folder in ("queue", "processed", "control"):
        (_BROKER_DIR / _folder).mkdir(parents=True, exist_ok=True)
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(_BROKER_DIR / "queue"),
        "data_folder_out": str(_BROKER_DIR / "queue"),
        "processed_folder": str(_BROKER_DIR / "processed"),
        "control_folder": str(_BROKER_DIR / "control"),
        "store_processed": False,
    }
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Celery's Django fixup closes every database connection before and after each task unless
# this is set, and reconnecting to PostgreSQL costs more than a whole reconcile pass. Django's
# own rules (DATABASE_CONN_MAX_AGE, health checks) decide instead: dashboard/celery.py applies
# them around each task as Django does around each request.
CELERY_DB_REUSE_MAX = 2**31
CELERY_BEAT_SCHEDULE = {
    "resync-every-project": {
        "task": "networking.tasks.resync_all_projects",
        "schedule": float(RESYNC_SECONDS),
    },
    "requeue-abandoned-reconciles": {
        "task": "networking.tasks.requeue_abandoned_reconciles",
        "schedule": RECONCILE_LEASE_SECONDS / 2,
    },
    "start-scheduled-secret-rotations": {
        "task": "networking.tasks.rotate_due_secrets",
        "schedule": 3600.0,
    },
    "send-pending-notifications": {
        "task": "networking.tasks.send_pending_notifications",
        "schedule": 60.0,
    },
    "expire-peering-requests": {
        "task": "networking.tasks.expire_peering_requests",
        "schedule": 3600.0,
    },
    "expire-old-hostnames": {
        "task": "networking.tasks.expire_service_aliases",
        "schedule": 60.0,
    },
    "renew-service-certificates": {
        "task": "networking.tasks.renew_certificates",
        "schedule": 600.0,
    },
    "forget-old-notifications": {
        "task": "networking.tasks.forget_old_notifications",
        "schedule": 3600.0,
    },
    "forget-idempotency-keys": {
        "task": "api.tasks.forget_idempotency_keys",
        "schedule": 3600.0,
    },
}
# Beat keeps its schedule in memory: every entry is an interval of idempotent work, so after a
# restart each simply runs one interval later. No schedule file means nothing to lock or corrupt
# (Python 3.13's shelve, sqlite3 underneath, failed with "locking protocol" when two processes
# shared one).
CELERY_BEAT_SCHEDULER = "celery.beat:Scheduler"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
# Sign-in throttling (dashboard/auth.py): failures allowed per account and per address within
# the lockout window, after which sign-in is refused until the window passes.
SIGNIN_MAX_FAILURES_PER_ACCOUNT = env_int("SIGNIN_MAX_FAILURES_PER_ACCOUNT", 5, minimum=1)
SIGNIN_MAX_FAILURES_PER_ADDRESS = env_int("SIGNIN_MAX_FAILURES_PER_ADDRESS", 20, minimum=1)
SIGNIN_LOCKOUT_SECONDS = env_int("SIGNIN_LOCKOUT_SECONDS", 900, minimum=1)
# Behind a proxy that appends the caller's address to X-Forwarded-For, trust its last hop.
TRUST_X_FORWARDED_FOR = env_bool("DJANGO_TRUST_X_FORWARDED_FOR", default=False)
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = STATE_DIR / "static"
STATICFILES_DIRS = [BASE_DIR / "static"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": (
            "django.contrib.staticfiles.storage.StaticFilesStorage"
            if DEBUG
            else "whitenoise.storage.CompressedManifestStaticFilesStorage"
        )
    },
}

# Content Security Policy: scripts only from our own static files (htmx included), no inline
# script or style, no framing.
SECURE_CSP = {
    "default-src": [CSP.SELF],
    "script-src": [CSP.SELF, CSP.NONCE],
    "style-src": [CSP.SELF],
    "img-src": [CSP.SELF, "data:"],
    "connect-src": [CSP.SELF],
    "form-action": [CSP.SELF],
    "frame-ancestors": [CSP.NONE],
    "base-uri": [CSP.SELF],
    "object-src": [CSP.NONE],
}
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_FAILURE_VIEW = "dashboard.views.csrf_failure"

if not DEBUG:
    SECURE_SSL_REDIRECT = env_bool("DJANGO_SECURE_SSL_REDIRECT", default=True)
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("DJANGO_HSTS_SECONDS", 31_536_000, minimum=0)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    if env_bool("DJANGO_TRUST_X_FORWARDED_PROTO", default=False):
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

MAILERS = {
    "default": {
        "BACKEND": env_str("EMAIL_BACKEND")
        or (
            "django.core.mail.backends.console.EmailBackend"
            if DEBUG
            else "django.core.mail.backends.smtp.EmailBackend"
        ),
        "OPTIONS": {
            key: value
            for key, value in {
                "host": env_str("EMAIL_HOST"),
                "port": env_int("EMAIL_PORT", 0, minimum=0),
                "username": env_str("EMAIL_HOST_USER"),
                "password": env_str("EMAIL_HOST_PASSWORD"),
                "use_tls": env_bool("EMAIL_USE_TLS", default=False),
            }.items()
            if value
        },
    }
}
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "Stackblaze <noreply@stackblaze.cloud>")

LOG_LEVEL = env_choice("LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "filters": {
        "refusals_without_traceback": {"()": "dashboard.logging_filters.RefusalsWithoutTraceback"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain"},
    },
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # A 403 is a refusal, not a fault: one line, no traceback (500s keep theirs).
        "django.request": {"filters": ["refusals_without_traceback"]},
        # urllib3 logs request lines; keep it quiet so no header or body can leak from it.
        "urllib3": {"level": "WARNING"},
        "kubernetes": {"level": "WARNING"},
    },
}
