"""SQLite: eventseam_outbox.seq never reused (Alembic revision 0009)."""

from __future__ import annotations

from django.db import migrations

from engine.integrations.django.schema import RunAlembicRevision


class Migration(migrations.Migration):
    """eventseam_outbox.seq becomes INTEGER PRIMARY KEY AUTOINCREMENT on SQLite (table rebuilt)."""

    dependencies = [("eventseam", "0007_dlq_sent")]  # noqa: RUF012  (Django reads these class attributes)
    operations = [RunAlembicRevision("0009")]  # noqa: RUF012  (Django reads these class attributes)
