"""Does an event name read as a past-tense fact?

A heuristic, used by the registry to flag names like ``PlaceOrder`` that read as commands:
the last word of the CamelCase name must be a regular past participle (``...ed``) or one of the
common irregular ones (``Sent``, ``Paid``, ``Built``...).
"""

from __future__ import annotations

import re

IRREGULAR_PAST_PARTICIPLES: frozenset[str] = frozenset(
    """
    arisen awoken been borne beaten become begun bent bet bid bitten blown broken brought built
    burnt bought caught chosen come cost cut dealt done drawn driven drunk eaten fallen fed felt
    fought found flown forbidden forgotten forgiven frozen got gotten given gone grown hung had
    heard hidden hit held hurt kept known laid led lent let lain lit lost made meant met paid put
    quit read rid ridden rung risen run said seen sought sold sent set shaken shed shone shot shown
    shut sung sunk sat slept slid spoken spent spun split spread stood stolen stuck struck sworn
    swept swum taken taught torn told thought thrown understood undone upset woken worn won wound
    withdrawn written overdrawn overpaid prepaid rebuilt reset resent resold rewritten withheld
    """.split()
)

_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")


def last_word(name: str) -> str:
    """The last CamelCase word of the last dotted segment of ``name``, lower-cased."""
    segment = name.rsplit(".", 1)[-1]
    words = _WORDS.findall(segment)
    return words[-1].lower() if words else ""


def reads_as_past_tense(name: str) -> bool:
    """True when the wire name's last word is a past participle (``OrderPlaced``)."""
    word = last_word(name)
    return word.endswith("ed") or word in IRREGULAR_PAST_PARTICIPLES
