"""The shipping context object: the events it owns. Handlers attach to it in handlers.py."""

from __future__ import annotations

from engine.contexts import BoundedContext

from .events import LabelCreated, LabelVoided

shipping = BoundedContext("shipping", owns=[LabelCreated, LabelVoided])
