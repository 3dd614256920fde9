"""Create eventseam_dead_letter and eventseam_dlq_resolved (Alembic revision 0006)."""

from __future__ import annotations

from django.db import migrations

from engine.integrations.django.schema import RunAlembicRevision


class Migration(migrations.Migration):
    """The bus's persisted dead letters and the Kafka dead letters operators resolved."""

    dependencies = [("eventseam", "0004_outbox_notify")]  # noqa: RUF012  (Django reads these class attributes)
    operations = [RunAlembicRevision("0006")]  # noqa: RUF012  (Django reads these class attributes)
