"""The commands: eventseam_relay, eventseam_worker and eventseam_flags, wrapping the `eventseam` CLI's entry points."""

from __future__ import annotations
