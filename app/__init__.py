"""The example monolith: three bounded contexts wired to eventseam (``python -m app demo``).

Run from the checkout; the wheel ships only ``engine`` and ``outbox``.
"""

from __future__ import annotations
