"""TLS and SASL for every aiokafka client eventseam builds (relay producer, admin, consumers).

``security_options(settings)`` is the one place that turns ``KafkaSettings`` into aiokafka's
``security_protocol`` / ``ssl_context`` / ``sasl_*`` keyword arguments; the producer, the admin
client, the consumer workers, ``eventseam status`` and ``eventseam parity`` all merge it in.

* TLS: a stdlib ``ssl`` context that verifies the broker (``ssl_cafile``, or the system CAs),
  checks its host name unless ``ssl_check_hostname`` is false, and presents a client
  certificate when ``ssl_certfile`` is set (``ssl_keyfile``; ``ssl_password`` or
  ``ssl_password_file`` for an encrypted key).
* SASL: PLAIN and SCRAM-SHA-256/512 with ``sasl_username`` and ``sasl_password`` (or
  ``sasl_password_file``, read at each client start, so a rotated file is picked up);
  OAUTHBEARER with ``sasl_oauth_token_provider``, the dotted path of an aiokafka
  ``AbstractTokenProvider`` subclass (instantiated without arguments), of a factory returning
  one, or of an instance.

Settings that cannot be used raise KafkaSecurityError naming the setting. aiokafka only logs why
a bootstrap connection failed, so ``diagnose_tls`` repeats the TLS handshake itself (bounded by
``request_timeout_ms``) after a failed start, to raise KafkaTLSError with the real reason
(untrusted certificate authority, host name mismatch...) instead of retrying forever.
Secrets never reach a message: only setting names, paths and the TLS library's reasons do.
"""

from __future__ import annotations

import importlib
import ssl
from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.tls import TLSStream

from engine.security import TLS_PROTOCOLS

from .errors import KafkaSecurityError, KafkaTLSError

if TYPE_CHECKING:
    from pathlib import Path

    from engine.settings import KafkaSettings

_NAME_MISMATCH = frozenset({62, 64})  # OpenSSL's X509_V_ERR_HOSTNAME/IP_ADDRESS_MISMATCH


def security_options(settings: KafkaSettings) -> dict[str, Any]:
    """aiokafka keyword arguments for TLS and SASL (KafkaSecurityError when unusable)."""
    options: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in TLS_PROTOCOLS:
        options["ssl_context"] = ssl_context(settings)
    mechanism = settings.sasl_mechanism
    if mechanism is None:
        return options
    options["sasl_mechanism"] = mechanism
    if mechanism == "OAUTHBEARER":
        options["sasl_oauth_token_provider"] = token_provider(settings)
    else:
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = sasl_password(settings)
    return options


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext:
    """A client TLS context for ``settings`` (verification always on; host names unless told)."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH,
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None,
        )
    except (OSError, ValueError) as exc:
        raise KafkaSecurityError("kafka.ssl_cafile", _reason(exc, "not a PEM CA bundle")) from exc
    context.check_hostname = settings.ssl_check_hostname
    if settings.ssl_certfile is not None:
        _load_client_certificate(context, settings)
    return context


def _load_client_certificate(context: ssl.SSLContext, settings: KafkaSettings) -> None:
    from_file = _read_secret("kafka.ssl_password_file", settings.ssl_password_file)
    password = from_file or _secret_value(settings.ssl_password)
    try:
        context.load_cert_chain(
            str(settings.ssl_certfile),
            str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
            password=password or _no_password,
        )
    except ssl.SSLError as exc:
        setting = "kafka.ssl_password" if password else "kafka.ssl_certfile / kafka.ssl_keyfile"
        raise KafkaSecurityError(
            setting,
            "cannot load the client certificate and key "
            f"({exc.reason or exc.strerror}; a wrong or missing key password, or a key "
            "that does not match the certificate)",
        ) from exc
    except OSError as exc:
        raise KafkaSecurityError("kafka.ssl_certfile", _reason(exc, "cannot be read")) from exc


def _no_password() -> str:
    """Password callback for an unencrypted key: an encrypted one fails instead of prompting."""
    raise KafkaSecurityError(
        "kafka.ssl_password", "ssl_keyfile is encrypted: set ssl_password or ssl_password_file"
    )


def sasl_password(settings: KafkaSettings) -> str | None:
    """The SASL password: ``sasl_password_file``'s content (stripped) or ``sasl_password``."""
    from_file = _read_secret("kafka.sasl_password_file", settings.sasl_password_file)
    return from_file if from_file is not None else _secret_value(settings.sasl_password)


def token_provider(settings: KafkaSettings) -> Any:
    """The aiokafka AbstractTokenProvider named by ``sasl_oauth_token_provider``."""
    from aiokafka.abc import AbstractTokenProvider

    path = settings.sasl_oauth_token_provider or ""
    target = _import(path)
    if callable(target) and not isinstance(target, AbstractTokenProvider):
        target = target()  # a provider class or a factory
    if not isinstance(target, AbstractTokenProvider):
        raise KafkaSecurityError(
            "kafka.sasl_oauth_token_provider",
            f"{path} is not an aiokafka.abc.AbstractTokenProvider (class, factory or instance)",
        )
    return target


def _import(path: str) -> Any:
    module_name, _, attribute = path.partition(":")
    if not attribute:
        module_name, _, attribute = path.rpartition(".")
    try:
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError, ValueError) as exc:
        raise KafkaSecurityError(
            "kafka.sasl_oauth_token_provider", f"cannot import {path}: {exc}"
        ) from exc
    return target


def _read_secret(setting: str, path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise KafkaSecurityError(setting, _reason(exc, "cannot be read")) from exc


def _secret_value(secret: Any) -> str | None:
    return None if secret is None else str(secret.get_secret_value())


def _reason(exc: BaseException, fallback: str) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else exc.strerror
    return f"{fallback} ({type(exc).__name__})"


async def diagnose_tls(settings: KafkaSettings) -> KafkaTLSError | None:
    """The TLS verification failure of the first bootstrap server that has one, else None.

    Called after a client failed to start: each ``host:port`` gets a TLS handshake with the
    client's own context, each bounded by ``request_timeout_ms``. Servers that cannot be
    reached or time out are passed over (an outage, not a TLS problem).
    """
    if settings.security_protocol not in TLS_PROTOCOLS or not settings.bootstrap_servers:
        return None
    context = ssl_context(settings)
    for server in settings.bootstrap_servers.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            with anyio.fail_after(settings.request_timeout_ms / 1000):
                await _handshake(host, int(port), context)
        except ssl.SSLCertVerificationError as exc:
            setting = "kafka.ssl_cafile"
            if exc.verify_code in _NAME_MISMATCH:
                setting = "kafka.bootstrap_servers (a name the certificate holds)"
            reason = f"certificate verify failed: {exc.verify_message}"
            return KafkaTLSError(
                server.strip(), reason if exc.verify_message else str(exc), setting
            )
        except ssl.SSLError as exc:
            return KafkaTLSError(server.strip(), exc.reason or str(exc))
        except (OSError, TimeoutError, ValueError):
            continue
    return None


async def _handshake(host: str, port: int, context: ssl.SSLContext) -> None:
    """Connect, complete a TLS handshake, close; the socket is closed whatever happens."""
    stream = await anyio.connect_tcp(host, port)
    try:
        tls = await TLSStream.wrap(
            stream, hostname=host, ssl_context=context, standard_compatible=False
        )
        await tls.aclose()
    finally:
        await anyio.aclose_forcefully(stream)


def first_security_error(group: BaseExceptionGroup[Any]) -> KafkaSecurityError:
    """The first KafkaSecurityError in ``group`` (task groups nest them), for a one-line report."""
    for exc in group.exceptions:
        if isinstance(exc, KafkaSecurityError):
            return exc
        if isinstance(exc, BaseExceptionGroup):
            return first_security_error(exc)
    raise group
