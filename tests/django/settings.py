"""Settings of the Django test project: alias ``default`` is SQLite, alias ``pg`` PostgreSQL.

tests/django/conftest.py sets the ES_DJANGO_TEST_* variables (fresh database names) before Django
starts; subprocesses (the relay command) inherit them.
"""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy.engine import make_url

_pg = make_url(
    os.environ.get("ES_DJANGO_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
)

SECRET_KEY = "eventseam-tests-only"
DEBUG = False
ALLOWED_HOSTS = ["testserver"]
USE_TZ = True
TIME_ZONE = "UTC"
ROOT_URLCONF = "tests.django.urls"
MIDDLEWARE: list[str] = []
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = ["engine.integrations.django", "tests.django.shop"]

DATABASES: dict[str, dict[str, Any]] = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("ES_DJANGO_TEST_SQLITE", "eventseam-django-test.db"),
        "OPTIONS": {"timeout": 30},
    },
    "pg": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": os.environ.get("ES_DJANGO_TEST_PG_NAME", "eventseam_django_test"),
        "USER": _pg.username or "",
        "PASSWORD": _pg.password or "",
        "HOST": _pg.host or "",
        "PORT": str(_pg.port or ""),
    },
}

EVENTSEAM: dict[str, Any] = {
    "bounded_contexts": [
        "tests.django.shop.events:orders",
        "tests.django.shop.events:audit",
        "tests.django.shop.events.billing",
    ],
    "contexts": {"billing": "broker"},
    "bus": {"max_attempts": 1},
}
