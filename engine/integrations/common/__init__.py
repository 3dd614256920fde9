"""What the host-framework integrations (Django, Flask) share; no web framework is imported here.

* ``config``: ``import_context`` resolves ``"module:attribute"`` to a BoundedContext; the
  ``*_problems`` functions explain what is wrong with a framework's eventseam settings as
  Problems (code, message, hint), spelled the framework's way (``Spelling``).
* ``process``: ``ProcessSeam``, one EventSeam per process, built on first use (again in a forked
  child), its bus started on demand after fork and stopped at exit; ``build_seam``.
"""

from __future__ import annotations

from .config import Problem as Problem
from .config import Spelling as Spelling
from .config import build_problems as build_problems
from .config import context_problems as context_problems
from .config import did_you_mean as did_you_mean
from .config import env_problems as env_problems
from .config import import_context as import_context
from .config import import_middleware as import_middleware
from .config import load_with_problems as load_with_problems
from .config import middleware_problems as middleware_problems
from .config import unknown_context_problems as unknown_context_problems
from .config import unknown_key_problems as unknown_key_problems
from .config import unowned_subscription_problems as unowned_subscription_problems
from .config import validation_problems as validation_problems
from .process import SQLITE_BUSY_TIMEOUT_SECONDS as SQLITE_BUSY_TIMEOUT_SECONDS
from .process import ProcessSeam as ProcessSeam
from .process import build_seam as build_seam
from .process import engine_of as engine_of

__all__ = [
    "SQLITE_BUSY_TIMEOUT_SECONDS",
    "Problem",
    "ProcessSeam",
    "Spelling",
    "build_problems",
    "build_seam",
    "context_problems",
    "did_you_mean",
    "engine_of",
    "env_problems",
    "import_context",
    "import_middleware",
    "load_with_problems",
    "middleware_problems",
    "unknown_context_problems",
    "unknown_key_problems",
    "unowned_subscription_problems",
    "validation_problems",
]
