"""Create the relay's slot lease and membership tables (Alembic revision 0004)."""

from __future__ import annotations

from django.db import migrations

from engine.integrations.django.schema import RunAlembicRevision


class Migration(migrations.Migration):
    """Relay slot leases and relay membership, so several relays share the outbox in order."""

    dependencies = [("eventseam", "0002_flags_inbox")]  # noqa: RUF012  (Django reads these class attributes)
    operations = [RunAlembicRevision("0004")]  # noqa: RUF012  (Django reads these class attributes)
