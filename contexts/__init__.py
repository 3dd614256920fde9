"""The example monolith's bounded contexts: orders, payments and shipping.

Each context is a package exporting its BoundedContext. Contexts talk only through events: a
context may import another context's ``events`` module and nothing else (``eventseam check``).
This package wires nothing; ``app.bootstrap`` does.
"""

from __future__ import annotations
