"""The small world of the personal-data tests: a ``crm`` context whose events carry an email.

``crm`` owns CustomerRegistered (email is personal data of ``customer_id``) and PlanChanged (no
personal data); ``mailing`` handles CustomerRegistered (``remember_customer``, which records what
it received in RECEIVED, and ``reject_customer``, which always raises when enabled).
"""

from __future__ import annotations

import threading
from collections import defaultdict
from typing import TYPE_CHECKING, Annotated, Any

from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

from engine.contexts import BoundedContext
from engine.crypto import generate_master_key
from engine.events import DomainEvent
from engine.modes import Mode
from engine.personal_data import Erased, PersonalData
from engine.seam import EventSeam
from engine.settings import EventSeamSettings, PersonalDataSettings
from outbox.migrate import upgrade

if TYPE_CHECKING:
    from sqlalchemy import Engine

EMAIL = "ann.example@shop.test"
MASTER_KEY = generate_master_key()


class CustomerRegistered(DomainEvent, name="crm.CustomerRegistered", version=1):
    """A customer signed up; ``email`` is personal data of the customer."""

    customer_id: str
    email: Annotated[str | Erased, PersonalData(subject="customer_id")]
    plan: str = "free"


class PlanChanged(DomainEvent, name="crm.PlanChanged", version=1):
    """A customer changed plan (no personal data)."""

    customer_id: str
    plan: str


class MailingRefusedError(RuntimeError):
    """Raised by reject_customer while REJECT is set."""


crm = BoundedContext("crm", owns=[CustomerRegistered, PlanChanged])
mailing = BoundedContext("mailing", owns=[])
#: What each mailing handler received, by handler name (thread safe through LOCK).
RECEIVED: defaultdict[str, list[CustomerRegistered]] = defaultdict(list)
LOCK = threading.Lock()
REJECT = {"on": False}


@mailing.handler(CustomerRegistered, name="remember_customer")
def remember_customer(event: CustomerRegistered) -> None:
    """Record the event as the handler sees it."""
    with LOCK:
        RECEIVED["remember_customer"].append(event)


@mailing.handler(CustomerRegistered, name="reject_customer")
def reject_customer(event: CustomerRegistered) -> None:
    """Raise while REJECT is on (the dead-letter test), else record the event."""
    if REJECT["on"]:
        raise MailingRefusedError(f"mailing refused customer {event.customer_id}")
    with LOCK:
        RECEIVED["reject_customer"].append(event)


def customer(customer_id: str, *, email: str = EMAIL, plan: str = "free") -> CustomerRegistered:
    """A CustomerRegistered (aggregate = the customer)."""
    return CustomerRegistered(
        aggregate_id=customer_id, customer_id=customer_id, email=email, plan=plan
    )


def crm_settings(
    database_url: str,
    *,
    master_key: str | None = MASTER_KEY,
    mode: Mode = Mode.BROKER,
    **values: Any,
) -> EventSeamSettings:
    """Settings of the world: crm in ``mode``, the given master key."""
    return EventSeamSettings(
        database_url=database_url,
        contexts={"crm": mode},
        personal_data=PersonalDataSettings(master_key=master_key),
        **values,
    )


def crm_seam(
    database_url: str,
    *,
    engine: Engine | None = None,
    master_key: str | None = MASTER_KEY,
    **values: Any,
) -> EventSeam:
    """An EventSeam of crm + mailing on ``database_url`` (schema upgraded to head)."""
    engine = engine or create_engine(database_url)
    upgrade(engine)
    settings = crm_settings(database_url, master_key=master_key, **values)
    return EventSeam(settings, [crm, mailing], session_factory=sessionmaker(engine))


def engine_of(seam: EventSeam) -> Engine:
    """The engine behind the seam's session factory."""
    assert seam.session_factory is not None
    bind = seam.session_factory.kw["bind"]
    assert bind is not None
    return bind  # type: ignore[no-any-return]
