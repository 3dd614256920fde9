"""Create eventseam_flags and eventseam_inbox (Alembic revision 0003)."""

from __future__ import annotations

from django.db import migrations

from engine.integrations.django.schema import RunAlembicRevision


class Migration(migrations.Migration):
    """The runtime routing flags and the handler inbox (+ its retention index)."""

    dependencies = [("eventseam", "0001_outbox")]  # noqa: RUF012  (Django reads these class attributes)
    operations = [RunAlembicRevision("0003")]  # noqa: RUF012  (Django reads these class attributes)
