"""Publishing from Django: the outbox rows go on Django's own connection, in Django's transaction.

    with transaction.atomic():
        order = Order.objects.create(...)
        publish(OrderPlaced(aggregate_id=str(order.pk), ...))
    # committed together; handlers run after the commit, never after a rollback

Contract of ``publish(*events, using=None, context=None)``:

1. Refused (OutsideAtomicBlockError, nothing written) unless Django's connection ``using`` (default:
   ``settings.EVENTSEAM["database"]``, else ``"default"``) is inside ``transaction.atomic()``, and
   refused on a thread that runs an event loop (use ``apublish`` there).
2. The EventSeam's own pipeline prepares the events: publishing context and ownership, stamping
   (source, traceparent), sealing of personal-data fields, encoding and the size guard, the
   routing mode of each context; any error there is raised before anything is written.
   Personal-data fields (engine.personal_data) are sealed with their subjects' keys, read or
   created by engine.crypto_keys through ``cursor_sql.CursorExecutor``: on Django's cursor, in
   the same atomic block, so a rolled-back block leaves neither the rows nor a new key. The
   outbox rows carry only ciphertext; in-process handlers get the published objects.
3. The rows (``outbox.writer.build_rows``) are inserted by the writer's compiled INSERT, compiled
   for Django's vendor with ``paramstyle="format"`` and the bind processors applied, and executed
   on ``connections[using].cursor()``: the same connection and transaction as the ORM's writes.
   No SQLAlchemy engine ever touches Django's connection (measured: that silently rolls back
   Django's writes), and no separate engine is used (it would not be atomic).
4. Events of contexts that dispatch locally are handed to the bus by
   ``transaction.on_commit(..., using=using, robust=True)`` once the outermost atomic block
   commits. Django drops the callbacks of a rolled-back savepoint (nested ``atomic``) and of a
   rolled-back transaction, so those events are never dispatched. The bus runs in the bridge's
   portal, started in this process on first need (engine.integrations.django.seam).

``apublish`` is for async code (async views): it runs ``publish`` in a transaction of its own in
Django's thread-sensitive sync thread. To commit events together with async-view writes, put the
writes and ``publish`` in one sync function and run it with ``sync_to_async``::

    @sync_to_async
    @transaction.atomic
    def place_order(...) -> Order: ...   # Order.objects.create(...); publish(...)
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

from asgiref.sync import sync_to_async
from django.db import connections, transaction

from engine.bridge import in_event_loop
from outbox.writer import COLUMNS, MAX_ROWS_PER_STATEMENT, build_rows, compiled_insert

from .cursor_sql import CursorExecutor, dialect_of
from .errors import OutsideAtomicBlockError
from .seam import get_config, get_seam, running_seam

if TYPE_CHECKING:
    from collections.abc import Sequence

    from django.db.backends.base.base import BaseDatabaseWrapper

    from engine.codec import EncodedEvent
    from engine.events import DomainEvent
    from engine.modes import Mode

__all__ = ["apublish", "publish", "write_outbox_rows"]


def publish(*events: DomainEvent, using: str | None = None, context: str | None = None) -> None:
    """Write ``events`` to the outbox in Django's open atomic block on ``using``; dispatch after commit.

    ``context`` is the publishing context (checked: it must own every event); by default each
    event's owner. Raises OutsideAtomicBlockError, OwnershipError, EventTooLargeError (nothing
    written) or Django's database errors. Thread safe (each thread has its own connection).
    """
    if not events:
        return
    alias = using if using is not None else get_config().database
    if in_event_loop():
        raise OutsideAtomicBlockError(alias, in_event_loop=True)
    connection = connections[alias]
    if not connection.in_atomic_block:
        raise OutsideAtomicBlockError(alias)
    seam = get_seam()
    prepared = seam.prepare(events, context, connection=CursorExecutor(connection))
    records, modes, local = prepared.records, prepared.modes, prepared.local
    if local:
        seam = running_seam()
    write_outbox_rows(connection, records, modes)
    if local:
        transaction.on_commit(
            functools.partial(seam.deliver_committed, local), using=alias, robust=True
        )


async def apublish(
    *events: DomainEvent, using: str | None = None, context: str | None = None
) -> None:
    """``publish`` for async code: the events commit in a transaction of their own.

    Runs in Django's thread-sensitive sync thread (``sync_to_async``), so the outbox write uses
    that thread's connection; dispatch follows the commit as with ``publish``.
    """
    if events:
        await sync_to_async(_publish_atomically, thread_sensitive=True)(events, using, context)


def write_outbox_rows(
    connection: BaseDatabaseWrapper, records: Sequence[EncodedEvent], modes: Sequence[Mode]
) -> None:
    """Insert outbox rows for ``records`` on Django ``connection`` (its current transaction)."""
    dialect = dialect_of(connection)
    rows = [tuple(row[name] for name in COLUMNS) for row in build_rows(records, modes)]
    with connection.cursor() as cursor:
        for start in range(0, len(rows), MAX_ROWS_PER_STATEMENT):
            chunk = rows[start : start + MAX_ROWS_PER_STATEMENT]
            statement = compiled_insert(dialect, len(chunk), allow_unnest=False)
            cursor.execute(statement.sql, statement.parameters(chunk))


def _publish_atomically(
    events: Sequence[DomainEvent], using: str | None, context: str | None
) -> None:
    alias = using if using is not None else get_config().database
    with transaction.atomic(using=alias):
        publish(*events, using=alias, context=context)
