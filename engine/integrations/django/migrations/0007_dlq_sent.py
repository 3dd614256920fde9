"""Create eventseam_dlq_sent (Alembic revision 0008)."""

from __future__ import annotations

from django.db import migrations

from engine.integrations.django.schema import RunAlembicRevision


class Migration(migrations.Migration):
    """The consumer runner's dead-letter marks (one dead-letter record per poison record)."""

    dependencies = [("eventseam", "0006_subject_keys")]  # noqa: RUF012  (Django reads these class attributes)
    operations = [RunAlembicRevision("0008")]  # noqa: RUF012  (Django reads these class attributes)
