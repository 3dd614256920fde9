"""eventseam's engine: domain events, bounded contexts, the in-memory bus and the sync bridge.

``EventSeam`` is imported on first use: ``engine.seam`` imports ``outbox.writer``, and ``outbox``
imports engine submodules, so an eager import here would be circular.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .boundaries import assert_context_boundaries as assert_context_boundaries
from .boundaries import find_violations as find_violations
from .bridge import SyncBridge as SyncBridge
from .bus import Bus as Bus
from .codec import EncodedEvent as EncodedEvent
from .codec import decode as decode
from .codec import encode as encode
from .contexts import BoundedContext as BoundedContext
from .contexts import ContextMap as ContextMap
from .contexts import HandlerSpec as HandlerSpec
from .dead_letters import DeadLetter as DeadLetter
from .dead_letters import DeadLetterStore as DeadLetterStore
from .dead_letters import InMemoryDeadLetterStore as InMemoryDeadLetterStore
from .errors import BoundaryViolationError as BoundaryViolationError
from .errors import BridgeError as BridgeError
from .errors import BusClosedError as BusClosedError
from .errors import CiphertextError as CiphertextError
from .errors import ContextError as ContextError
from .errors import DecodeError as DecodeError
from .errors import DuplicateEventError as DuplicateEventError
from .errors import EngineError as EngineError
from .errors import EventDefinitionError as EventDefinitionError
from .errors import EventNameError as EventNameError
from .errors import EventTooLargeError as EventTooLargeError
from .errors import HandlerError as HandlerError
from .errors import MasterKeyError as MasterKeyError
from .errors import OwnershipError as OwnershipError
from .errors import PersonalDataError as PersonalDataError
from .errors import RegistryError as RegistryError
from .errors import SettingsError as SettingsError
from .errors import SubscriptionError as SubscriptionError
from .errors import TransactionError as TransactionError
from .errors import UnknownContextError as UnknownContextError
from .errors import UnknownDeadLetterError as UnknownDeadLetterError
from .errors import UnknownEventError as UnknownEventError
from .errors import UpcastError as UpcastError
from .events import DomainEvent as DomainEvent
from .events import new_event_id as new_event_id
from .handler_context import HandlerContext as HandlerContext
from .modes import Mode as Mode
from .personal_data import Erased as Erased
from .personal_data import PersonalData as PersonalData
from .personal_data import is_erased as is_erased
from .registry import EventRegistry as EventRegistry
from .retry import RetryPolicy as RetryPolicy
from .settings import EventSeamSettings as EventSeamSettings
from .settings import load_settings as load_settings
from .types import Handler as Handler
from .types import Message as Message
from .types import Middleware as Middleware
from .types import Publisher as Publisher
from .types import Subscription as Subscription
from .unit_of_work import UnitOfWork as UnitOfWork

if TYPE_CHECKING:
    from .seam import EventSeam as EventSeam

__all__ = [
    "BoundaryViolationError",
    "BoundedContext",
    "BridgeError",
    "Bus",
    "BusClosedError",
    "CiphertextError",
    "ContextError",
    "ContextMap",
    "DeadLetter",
    "DeadLetterStore",
    "DecodeError",
    "DomainEvent",
    "DuplicateEventError",
    "EncodedEvent",
    "EngineError",
    "Erased",
    "EventDefinitionError",
    "EventNameError",
    "EventRegistry",
    "EventSeam",
    "EventSeamSettings",
    "EventTooLargeError",
    "Handler",
    "HandlerContext",
    "HandlerError",
    "HandlerSpec",
    "InMemoryDeadLetterStore",
    "MasterKeyError",
    "Message",
    "Middleware",
    "Mode",
    "OwnershipError",
    "PersonalData",
    "PersonalDataError",
    "Publisher",
    "RegistryError",
    "RetryPolicy",
    "SettingsError",
    "Subscription",
    "SubscriptionError",
    "SyncBridge",
    "TransactionError",
    "UnitOfWork",
    "UnknownContextError",
    "UnknownDeadLetterError",
    "UnknownEventError",
    "UpcastError",
    "assert_context_boundaries",
    "decode",
    "encode",
    "find_violations",
    "is_erased",
    "load_settings",
    "new_event_id",
]


def __getattr__(name: str) -> Any:
    if name == "EventSeam":
        from .seam import EventSeam

        return EventSeam
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
