"""Errors of the Flask integration.

engine.errors.TransactionError
└── outbox.errors.OutsideTransactionError
    └── OutsideSessionTransactionError  publish() without an app context, or db.session has no
                                        open transaction
engine.errors.SettingsError
└── FlaskConfigError                    app.config's EVENTSEAM_* keys (or the extension's
                                        arguments) cannot be used; lists every problem
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.errors import SettingsError
from outbox.errors import OutsideTransactionError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from engine.integrations.common import Problem

__all__ = ["FlaskConfigError", "OutsideSessionTransactionError"]


class OutsideSessionTransactionError(OutsideTransactionError):
    """Raised by ``publish`` with nothing written: no application context, or no open transaction.

    ``in_app_context`` is False when there was no application context (hence no ``db.session``).
    """

    def __init__(self, *, in_app_context: bool = True) -> None:
        self.in_app_context = in_app_context
        if not in_app_context:
            message = (
                "eventseam's Flask publish() needs an application context (a request, a CLI "
                "command, or `with app.app_context():`): it writes on that context's db.session"
            )
        else:
            message = (
                "eventseam's Flask publish() needs an open transaction on db.session: publish "
                "after the business write (db.session.add() or execute() begins one) or inside "
                "`with eventseam.transaction():`, then db.session.commit(); publishing alone "
                "would have no business write to commit with"
            )
        super().__init__(message)


class FlaskConfigError(SettingsError):
    """Raised by ``init_app`` (and ``get_state``) when eventseam cannot run on this Flask app.

    ``problems`` lists every error found (engine.integrations.common.Problem), each with a hint.
    """

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        self.problems = tuple(problems)
        lines = [message, *(f"  {problem}" for problem in self.problems)]
        super().__init__("\n".join(lines))
