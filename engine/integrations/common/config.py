"""Framework settings, read and explained: what Django's system checks and Flask's start-up share.

``import_context`` resolves ``"module:attribute"`` to a BoundedContext, ``import_middleware`` to
a handler middleware. The ``*_problems`` functions say what is wrong with a framework's eventseam
settings as Problems (code, message, hint), spelled the framework's way (``Spelling``): Django
turns them into system checks, Flask into ``flask eventseam config check`` lines and a
FlaskConfigError.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from engine.contexts import BoundedContext
from engine.errors import EngineError
from engine.modes import Mode
from engine.seam import EventSeam
from engine.settings import EventSeamSettings, load_settings, unknown_env_vars

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from engine.types import Middleware

T = TypeVar("T")

#: The framework-only setting listing the bounded contexts (spelled by each Spelling).
CONTEXTS_KEY = "bounded_contexts"

__all__ = [
    "Problem",
    "Spelling",
    "build_problems",
    "context_problems",
    "did_you_mean",
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


# -- bounded contexts ---------------------------------------------------------------------


def import_context(target: object) -> BoundedContext:
    """The BoundedContext ``target`` names (``"module:attr"``, ``"module.attr"``) or is.

    Raises ImportError, AttributeError or TypeError, with the reason.
    """
    if isinstance(target, BoundedContext):
        return target
    found = _import_named(target, "a BoundedContext")
    if not isinstance(found, BoundedContext):
        raise TypeError(f"{target!r} is a {type(found).__name__}, not a BoundedContext")
    return found


def import_middleware(target: object) -> Middleware:
    """The handler middleware (``Handler -> Handler``) ``target`` names or is.

    Raises ImportError, AttributeError or TypeError (not callable), with the reason.
    """
    found = target if callable(target) else _import_named(target, "a middleware")
    if not callable(found):
        raise TypeError(f"{target!r} is a {type(found).__name__}, not a callable middleware")
    return cast("Middleware", found)


def _import_named(target: object, what: str) -> object:
    """The attribute ``target`` (``"module:attr"`` or ``"module.attr"``) names."""
    if not isinstance(target, str) or not target.strip():
        raise TypeError(f"expected 'module:attribute' naming {what}, got {target!r}")
    path = target.strip()
    module_name, _, attribute = path.partition(":") if ":" in path else path.rpartition(".")
    if not module_name or not attribute:
        raise ImportError(f"{path!r} is not 'module:attribute'")
    return getattr(importlib.import_module(module_name), attribute)


# -- problems -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a framework's eventseam settings.

    ``code`` is ``E0xx`` (the settings cannot be used) or ``W0xx`` (they can, but look wrong):
    E002 unknown key, E003 unusable bounded contexts, E005 misspelled mode, E006 invalid value,
    E007 a setting names an unknown context, E008 the EventSeam cannot be built, E009 unusable
    middlewares, W001 an ``EVENTSEAM_*`` environment variable no setting reads, W003 a handler
    subscribed to an event no context owns. Integrations add their own codes.
    """

    code: str
    message: str
    hint: str | None = None

    @property
    def is_error(self) -> bool:
        """True for ``E`` codes."""
        return self.code.startswith("E")

    def __str__(self) -> str:
        return f"{self.code} {self.message}" + (f" (hint: {self.hint})" if self.hint else "")


def _identity(key: str) -> str:
    return key


@dataclass(frozen=True, slots=True)
class Spelling:
    """How a framework names eventseam settings in messages.

    ``owner`` holds them (``settings.EVENTSEAM``, ``app.config``); ``key`` spells a top-level
    setting there (``kafka`` / ``EVENTSEAM_KAFKA``), the bounded contexts' list included
    (``bounded_contexts`` / ``EVENTSEAM_BOUNDED_CONTEXTS``).
    """

    owner: str
    key: Callable[[str], str] = _identity

    def path(self, loc: Sequence[object]) -> str:
        """``('contexts', 'orders')`` -> ``['contexts']['orders']`` (top-level key spelled)."""
        if not loc:
            return ""
        head, *rest = loc
        return f"[{self.key(str(head))!r}]" + "".join(f"[{part!r}]" for part in rest)

    def where(self, loc: Sequence[object]) -> str:
        """``path`` prefixed with the owner: ``settings.EVENTSEAM['contexts']['orders']``."""
        return self.owner + self.path(loc)


def did_you_mean(value: str, choices: Sequence[str], what: str) -> str:
    """``did you mean 'x'? known keys: ...`` (or only the known ones when nothing is close)."""
    close = difflib.get_close_matches(value, list(choices), n=1, cutoff=0.6)
    known = f"known {what}: {', '.join(choices) or 'none'}"
    return f"did you mean {close[0]!r}? {known}" if close else known


def unknown_key_problems(
    raw: Mapping[str, Any], spelling: Spelling, framework_keys: Sequence[str]
) -> list[Problem]:
    """E002 for keys no setting reads (pydantic would ignore them silently), nested ones too."""
    allowed = [*framework_keys, *EventSeamSettings.model_fields]
    spelled = [spelling.key(key) for key in allowed]
    problems = [
        Problem(
            "E002",
            f"{spelling.owner} has an unknown key {spelling.key(key)!r}",
            did_you_mean(spelling.key(key), spelled, "keys"),
        )
        for key in raw
        if key not in allowed
    ]
    for key, value in raw.items():
        if key in EventSeamSettings.model_fields and isinstance(value, dict):
            annotation = EventSeamSettings.model_fields[key].annotation
            problems += _unknown_nested((key,), value, annotation, spelling)
    return problems


def _unknown_nested(
    loc: tuple[str, ...], value: Mapping[str, Any], annotation: Any, spelling: Spelling
) -> list[Problem]:
    """Unknown keys inside a settings section (``kafka``, ``relay``...) or a per-context section."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        allowed = list(annotation.model_fields)
        return [
            Problem(
                "E002",
                f"{spelling.where(loc)} has an unknown key {key!r}",
                did_you_mean(key, allowed, "keys"),
            )
            for key in value
            if key not in allowed
        ]
    args: tuple[Any, ...] = getattr(annotation, "__args__", ())
    problems: list[Problem] = []
    if getattr(annotation, "__origin__", None) is dict and len(args) == 2:
        for name, item in value.items():
            if isinstance(item, dict):
                problems += _unknown_nested((*loc, str(name)), item, args[1], spelling)
    return problems


def context_problems(
    value: object, spelling: Spelling
) -> tuple[list[BoundedContext], list[Problem]]:
    """The bounded contexts ``value`` lists, and E003 for a missing list or an unusable entry."""
    hint = "list the BoundedContext objects as 'module:attribute', e.g. ['myproject.orders:orders']"
    where = spelling.where((CONTEXTS_KEY,))
    if not isinstance(value, list | tuple) or not value:
        return [], [Problem("E003", f"{where} must be a non-empty list", hint)]
    return _imported(value, import_context, "E003", where, hint)


def middleware_problems(
    value: object, spelling: Spelling
) -> tuple[list[Middleware], list[Problem]]:
    """The handler middlewares ``value`` lists (none when it is None), and E009 for a value
    that is not a list or an entry that is not an importable callable."""
    hint = (
        "list functions Handler -> Handler as 'module:attribute', the first one outermost, "
        "e.g. ['myproject.observability:timed']"
    )
    where = spelling.where(("middlewares",))
    if value is None:
        return [], []
    if not isinstance(value, list | tuple):
        return [], [Problem("E009", f"{where} must be a list", hint)]
    return _imported(value, import_middleware, "E009", where, hint)


def _imported(
    items: Sequence[object], importer: Callable[[object], T], code: str, where: str, hint: str
) -> tuple[list[T], list[Problem]]:
    """Each item imported by ``importer``; a Problem ``code`` naming ``where`` for each that fails."""
    found: list[T] = []
    problems: list[Problem] = []
    for item in items:
        try:
            found.append(importer(item))
        except (ImportError, AttributeError, TypeError) as exc:
            problems.append(Problem(code, f"{where} entry {item!r} is not usable: {exc}", hint))
    return found, problems


def validation_problems(exc: ValidationError, spelling: Spelling) -> list[Problem]:
    """E005 for a misspelled mode, E006 for any other value EventSeamSettings rejects."""
    problems: list[Problem] = []
    modes = [mode.value for mode in Mode]
    for error in exc.errors():
        loc = error["loc"]
        if len(loc) == 2 and loc[0] == "contexts" and error["type"] == "enum":
            problems.append(
                Problem(
                    "E005",
                    f"{spelling.where(loc)} = {error['input']!r} is not a routing mode",
                    did_you_mean(str(error["input"]).lower(), modes, "modes"),
                )
            )
            continue
        problems.append(
            Problem(
                "E006",
                f"invalid eventseam setting {spelling.path(loc) or '(root)'}: {error['msg']} "
                f"(got {error.get('input')!r})",
                f"{spelling.owner}, EVENTSEAM_* variables and eventseam.toml are validated "
                "by engine.settings.EventSeamSettings",
            )
        )
    return problems


def unknown_context_problems(
    settings: EventSeamSettings, contexts: Sequence[BoundedContext], spelling: Spelling
) -> list[Problem]:
    """E007 for a mode or topic setting naming a context no bounded context declares."""
    known = [context.name for context in contexts]
    return [
        Problem(
            "E007",
            f"{spelling.where((section,))} names unknown context {name!r}",
            did_you_mean(name, known, f"contexts (from {spelling.key(CONTEXTS_KEY)})"),
        )
        for section in ("contexts", "topics")
        for name in getattr(settings, section)
        if name not in known
    ]


def unowned_subscription_problems(
    contexts: Sequence[BoundedContext], spelling: Spelling
) -> list[Problem]:
    """W003 for each subscription to an event type none of ``contexts`` owns: nothing in this
    application may publish it, so the handler never runs (the consumer runner refuses it)."""
    owned = {event_type for context in contexts for event_type in context.owns}
    where = spelling.where((CONTEXTS_KEY,))
    return [
        Problem(
            "W003",
            f"handler {spec.name!r} subscribes to {event_type.event_name}, which no context of "
            f"{where} owns: it never runs",
            f"add the context that owns {event_type.event_name} to {where}, or drop the "
            "subscription",
        )
        for context in contexts
        for spec in context.handlers
        for event_type in spec.event_types
        if event_type not in owned
    ]


def build_problems(
    settings: EventSeamSettings, contexts: Sequence[BoundedContext], spelling: Spelling
) -> list[Problem]:
    """E008 when no EventSeam can be built from these settings (e.g. duplicate handler names)."""
    try:
        EventSeam(settings, contexts)
    except (EngineError, ValueError) as exc:
        return [
            Problem(
                "E008",
                f"the EventSeam cannot be built from {spelling.owner}: {exc}",
                "fix the bounded contexts or the settings named in the message",
            )
        ]
    return []


def env_problems() -> list[Problem]:
    """W001 for every ``EVENTSEAM_*`` environment variable that no setting reads."""
    return [
        Problem(
            "W001",
            f"environment variable {name} is not an eventseam setting and is ignored",
            "check its spelling (nested settings use a double underscore, e.g. "
            "EVENTSEAM_KAFKA__BOOTSTRAP_SERVERS)",
        )
        for name in unknown_env_vars()
    ]


def load_with_problems(
    options: Mapping[str, Any], spelling: Spelling
) -> tuple[EventSeamSettings | None, list[Problem]]:
    """``load_settings(**options)``, or None and the problems of the values it rejects."""
    try:
        return load_settings(**options), []
    except ValidationError as exc:
        return None, validation_problems(exc, spelling)
