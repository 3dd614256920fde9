"""Asking a local HTTP server (health probes, metrics) for a path, for tests."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any


def probe(port: int, path: str, method: str = "GET") -> tuple[int, Any]:
    """(HTTP status, JSON body) of ``path`` on 127.0.0.1:``port``: the body is None when empty
    (HEAD), and the answer (0, {}) while nothing listens yet."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    except OSError:
        return 0, {}
    return status, json.loads(body) if body else None
