"""Create eventseam_subject_keys (Alembic revision 0007)."""

from __future__ import annotations

from django.db import migrations

from engine.integrations.django.schema import RunAlembicRevision


class Migration(migrations.Migration):
    """The per-subject keys of personal-data fields (wrapped with the master key)."""

    dependencies = [("eventseam", "0005_dead_letters")]  # noqa: RUF012  (Django reads these class attributes)
    operations = [RunAlembicRevision("0007")]  # noqa: RUF012  (Django reads these class attributes)
