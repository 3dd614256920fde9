"""Create eventseam_outbox (Alembic revision 0001)."""

from __future__ import annotations

from django.db import migrations

from engine.integrations.django.schema import RunAlembicRevision


class Migration(migrations.Migration):
    """eventseam_outbox: the unique event id, the pending partial index and the status index."""

    initial = True
    dependencies = []  # noqa: RUF012  (Django reads these class attributes)
    operations = [RunAlembicRevision("0001")]  # noqa: RUF012  (Django reads these class attributes)
