"""Suite-wide fixtures: the anyio backend and service availability policy.

Services a test needs are never skipped silently: outside CI a missing PostgreSQL makes its tests
skip with a loud reason; in CI (``CI=true``) it makes them fail.
"""

from __future__ import annotations

import os

import pytest

IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}


@pytest.fixture
def anyio_backend() -> str:
    """The engine runs on asyncio (aiokafka is asyncio-only)."""
    return "asyncio"


def require_service(name: str, reason: str) -> None:
    """Fail in CI, skip loudly elsewhere, when a service the test needs is missing."""
    message = f"{name} is not available: {reason}"
    if IN_CI:
        pytest.fail(message + " (CI requires it)")
    pytest.skip("SERVICE MISSING - " + message)
