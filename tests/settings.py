"""Settings for the test suite: the production settings with test-only secrets.

PostgreSQL and Redis are used whenever DATABASE_URL / REDIS_URL are set (CI sets both).
Worker processes started by tests import these settings too and inherit the environment
set here, so they share the run's state folder, broker queue and database.
"""

from __future__ import annotations

import os
import secrets
import tempfile

os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-" + "x" * 40)
# Two keys, so decryption with a non-primary key is exercised all the time.
os.environ.setdefault(
    "FIELD_ENCRYPTION_KEYS",
    "aAi78yinRBymqOIBmCbBG8-8-9xj9UzpUIMxFxePadY=,Tp7KPOkPtvqsttQs3FUp_FUxDoWdyXHBmQwTlWNMAx0=",
)
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")
# One state folder (SQLite file, broker folders, manifests) and one queue name per test run,
# and per test process when pytest-xdist runs several: each has its own database (xdist's
# suffix), queue, cache prefix and folder. Processes a test starts inherit them.
os.environ.setdefault("STATE_DIR", tempfile.mkdtemp(prefix="stackblaze-test-"))
os.environ.setdefault("STACKBLAZE_TEST_RUN", secrets.token_hex(4))
_xdist_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _xdist_worker and os.environ.get("STACKBLAZE_TEST_WORKER") != _xdist_worker:
    os.environ["STACKBLAZE_TEST_WORKER"] = _xdist_worker
    os.environ["STACKBLAZE_TEST_RUN"] += f"-{_xdist_worker}"
    os.environ["STATE_DIR"] = tempfile.mkdtemp(prefix=f"stackblaze-test-{_xdist_worker}-")
# Retries in tests are quick; their count and the backoff's shape are still real.
os.environ.setdefault("RECONCILE_RETRY_BASE_SECONDS", "0.05")
os.environ.setdefault("RECONCILE_RETRY_MAX_SECONDS", "0.5")

from dashboard.settings import *  # noqa: F403, E402 (after the environment above)
from dashboard.settings import CACHES, DATABASES, STATE_DIR  # noqa: E402

ALLOWED_HOSTS = ["testserver", "127.0.0.1", "localhost"]
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}
SESSION_COOKIE_SECURE = False
CSRF_COOKIE_SECURE = False
MAILERS = {"default": {"BACKEND": "django.core.mail.backends.locmem.EmailBackend"}}
# Serve static files straight from the source folders, as in development.
WHITENOISE_AUTOREFRESH = True
WHITENOISE_USE_FINDERS = True

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not memory, so worker processes started by tests see the same database.
    DATABASES["default"]["TEST"] = {"NAME": str(STATE_DIR / "test.sqlite3")}

# Tasks of this run go to their own queue, so a worker of another run never takes them, and
# its cache keys carry their own prefix, so clearing them touches nothing else in Redis.
CELERY_TASK_DEFAULT_QUEUE = f"stackblaze-test-{os.environ['STACKBLAZE_TEST_RUN']}"
CACHES["default"]["KEY_PREFIX"] = CELERY_TASK_DEFAULT_QUEUE
