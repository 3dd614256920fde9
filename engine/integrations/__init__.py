"""Host-framework integrations (``engine.integrations.django``...).

Each integration imports its framework itself; nothing here is imported by ``engine``, so the
engine imports and runs without any web framework installed.
"""

from __future__ import annotations
