"""eventseam's engine: domain events, bounded contexts, the in-memory bus and the sync bridge."""

from __future__ import annotations
