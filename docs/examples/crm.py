"""The README's personal-data worked example: a ``crm`` context whose event carries an email.

    python crm.py register <customer id> <email>   publish CustomerRegistered (email sealed)
    python crm.py show                             every outbox row, opened as consumers open it

Settings come from the environment (EVENTSEAM_DATABASE_URL, EVENTSEAM_PERSONAL_DATA__MASTER_KEY).
"""

from __future__ import annotations

import sys
from typing import Annotated

from sqlalchemy import create_engine, select
from sqlalchemy.orm import sessionmaker

from engine import BoundedContext, DomainEvent, Erased, EventSeam, PersonalData, load_settings
from engine.codec import decode, decode_headers
from engine.crypto_events import open_events
from outbox.table import outbox


class CustomerRegistered(DomainEvent, name="crm.CustomerRegistered", version=1):
    """A customer signed up; ``email`` is personal data of the customer."""

    customer_id: str
    email: Annotated[str | Erased, PersonalData(subject="customer_id")]


crm = BoundedContext("crm", owns=[CustomerRegistered])


def app() -> EventSeam:
    """The application: crm in broker mode on the configured database."""
    settings = load_settings(contexts={"crm": "broker"})
    return EventSeam(
        settings, [crm], session_factory=sessionmaker(create_engine(settings.database_url))
    )


def register(seam: EventSeam, customer_id: str, email: str) -> None:
    """Publish CustomerRegistered in a committed transaction."""
    with seam.transaction() as uow:
        uow.publish(
            CustomerRegistered(aggregate_id=customer_id, customer_id=customer_id, email=email)
        )


def show(seam: EventSeam) -> None:
    """Print each outbox row's customer and email, decoded and opened."""
    assert seam.session_factory is not None
    assert seam.personal_data is not None
    with seam.session_factory() as session, session.begin():
        rows = session.execute(select(outbox).order_by(outbox.c.seq)).all()
        events = [
            decode(seam.registry, r.aggregateid.encode(), r.payload, decode_headers(r.headers))
            for r in rows
        ]
        for event in open_events(seam.personal_data, session.connection(), events):
            assert isinstance(event, CustomerRegistered)
            print(event.customer_id, event.email)


if __name__ == "__main__":
    if sys.argv[1] == "register":
        register(app(), sys.argv[2], sys.argv[3])
    else:
        show(app())
