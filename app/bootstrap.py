"""The one wiring function of the example monolith: settings -> database -> EventSeam.

    seam = bootstrap()                      # EVENTSEAM_* / eventseam.toml, SQLite by default
    seam = bootstrap(load_settings(database_url="sqlite:///demo.db"))

Nothing else in ``app`` or ``contexts`` wires itself at import time. The ``eventseam`` command
line loads this function when told to: ``eventseam --app app.bootstrap:bootstrap ...`` or
``EVENTSEAM_APP=app.bootstrap:bootstrap`` (``APP_PATH``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from contexts.orders import orders
from contexts.orders.models import Base as OrdersBase
from contexts.payments import payments
from contexts.payments.models import Base as PaymentsBase
from contexts.shipping import shipping
from contexts.shipping.models import Base as ShippingBase
from engine.seam import EventSeam
from engine.settings import EventSeamSettings, load_settings
from outbox.migrate import upgrade

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.contexts import BoundedContext
    from engine.types import Middleware

#: The example monolith's contexts, in the order of the order flow.
CONTEXTS: tuple[BoundedContext, ...] = (orders, payments, shipping)
#: Each context's declarative base; each has its own MetaData (its own tables).
CONTEXT_BASES = (OrdersBase, PaymentsBase, ShippingBase)
SQLITE_BUSY_TIMEOUT_SECONDS = 30
#: ``eventseam --app`` (or ``EVENTSEAM_APP``) naming ``bootstrap``.
APP_PATH = f"{__name__}:bootstrap"


def bootstrap(
    settings: EventSeamSettings | None = None,
    *,
    create_schema: bool | None = None,
    middlewares: Sequence[Middleware] = (),
) -> EventSeam:
    """Build the application's EventSeam (not started: ``await seam.run()`` or ``start_background``).

    ``settings`` defaults to ``load_settings()``. ``create_schema`` creates the contexts' tables
    (``create_all``) and upgrades the outbox schema; by default it does so on SQLite only (the
    embedded demo database). Elsewhere the tables are an operator's job (``eventseam db upgrade``
    for the outbox). ``middlewares`` wrap every handler (``Handler -> Handler``). Settings that
    name an unknown context raise SettingsError before the database is touched.
    """
    settings = settings if settings is not None else load_settings()
    engine = database_engine(settings.database_url)
    sessions = sessionmaker(engine, expire_on_commit=False)
    if create_schema is None:
        create_schema = engine.dialect.name == "sqlite"
    try:
        seam = EventSeam(settings, CONTEXTS, session_factory=sessions, middlewares=middlewares)
        if create_schema:
            create_tables(engine)
    except BaseException:
        engine.dispose()
        raise
    return seam


def database_engine(url: str) -> Engine:
    """A SQLAlchemy engine for ``url``; SQLite gets WAL and a long busy timeout (threads write)."""
    if not url.startswith("sqlite"):
        return create_engine(url, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def create_tables(engine: Engine) -> None:
    """Create every context's tables (if missing) and bring the outbox schema to the newest."""
    for base in CONTEXT_BASES:
        base.metadata.create_all(engine)
    upgrade(engine)


def engine_of(seam: EventSeam) -> Engine:
    """The database engine behind ``seam``'s session factory (to dispose of it at exit)."""
    factory: sessionmaker[Session] | None = seam.session_factory
    bind = factory.kw.get("bind") if factory is not None else None
    if not isinstance(bind, Engine):
        raise TypeError("this EventSeam was not built by app.bootstrap (no engine bound)")
    return bind


def _sqlite_pragmas(dbapi_connection: Any, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
