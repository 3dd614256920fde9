"""Install the outbox's PostgreSQL NOTIFY trigger (Alembic revision 0005)."""

from __future__ import annotations

from django.db import migrations

from engine.integrations.django.schema import RunAlembicRevision


class Migration(migrations.Migration):
    """Wake relays at once when rows are written (PostgreSQL LISTEN/NOTIFY; nothing on SQLite)."""

    dependencies = [("eventseam", "0003_relay_leases")]  # noqa: RUF012  (Django reads these class attributes)
    operations = [RunAlembicRevision("0005")]  # noqa: RUF012  (Django reads these class attributes)
