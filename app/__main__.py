"""``python -m app``: the example monolith's command line (see app.cli)."""

from __future__ import annotations

from app.cli import main

if __name__ == "__main__":
    main()
