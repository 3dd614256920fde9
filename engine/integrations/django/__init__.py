"""eventseam for Django: the app, settings, migrations, system checks, management commands.

    INSTALLED_APPS = [..., "engine.integrations.django"]
    EVENTSEAM = {"bounded_contexts": ["myproject.orders:orders"], "contexts": {"orders": "dual"}}

    from engine.integrations.django import publish
    with transaction.atomic():
        order = Order.objects.create(...)
        publish(OrderPlaced(aggregate_id=str(order.pk), ...))

Importing this package imports Django; nothing in ``engine`` or ``outbox`` imports it.
"""

from __future__ import annotations

from .conf import DjangoConfig as DjangoConfig
from .errors import EventSeamImproperlyConfigured as EventSeamImproperlyConfigured
from .errors import OutsideAtomicBlockError as OutsideAtomicBlockError
from .handlers import uses_django_db as uses_django_db
from .publish import apublish as apublish
from .publish import publish as publish
from .seam import get_config as get_config
from .seam import get_seam as get_seam
from .seam import reset_seam as reset_seam
from .seam import running_seam as running_seam

__all__ = [
    "DjangoConfig",
    "EventSeamImproperlyConfigured",
    "OutsideAtomicBlockError",
    "apublish",
    "get_config",
    "get_seam",
    "publish",
    "reset_seam",
    "running_seam",
    "uses_django_db",
]
