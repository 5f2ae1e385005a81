"""Settings for the test suite: the production settings with test-only secrets.

PostgreSQL and Redis are used whenever DATABASE_URL / REDIS_URL are set (CI sets both).
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SECRET_KEY", "test-secret-key-" + "x" * 40)
# Two keys, so decryption with a non-primary key is exercised all the time.
os.environ.setdefault(
    "FIELD_ENCRYPTION_KEYS",
    "aAi78yinRBymqOIBmCbBG8-8-9xj9UzpUIMxFxePadY=,Tp7KPOkPtvqsttQs3FUp_FUxDoWdyXHBmQwTlWNMAx0=",
)
os.environ.setdefault("DJANGO_SECURE_SSL_REDIRECT", "false")

from dashboard.settings import *  # noqa: F403

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
