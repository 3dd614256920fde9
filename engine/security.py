"""Consistency of the Kafka TLS/SASL settings, checked when the settings are read.

A setting that would be silently ignored is an error, because ignoring it weakens the
connection without a word: a CA file with ``security_protocol=PLAINTEXT`` would send
everything in clear. Each message names the setting to fix and never carries a secret.

    security_protocol  SSL / SASL_SSL: TLS (ssl_* settings)
                       SASL_PLAINTEXT / SASL_SSL: SASL (sasl_* settings, sasl_mechanism required)
    PLAIN, SCRAM-*     sasl_username and one of sasl_password / sasl_password_file
    OAUTHBEARER        sasl_oauth_token_provider ("package.module:attribute")

File existence is checked by the fields themselves (pydantic ``FilePath``); the files are read
when a client connects (outbox.kafka_security), so a rotated secret file is picked up then.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .settings import KafkaSettings

TLS_PROTOCOLS = frozenset({"SSL", "SASL_SSL"})
SASL_PROTOCOLS = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
PASSWORD_MECHANISMS = frozenset({"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"})
_TLS_FIELDS = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password", "ssl_password_file")
_SASL_FIELDS = (
    "sasl_username",
    "sasl_password",
    "sasl_password_file",
    "sasl_oauth_token_provider",
)
_DOTTED_PATH = re.compile(r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")


def check_settings(kafka: KafkaSettings) -> None:
    """Raise ValueError naming the first inconsistent security setting of ``kafka``."""
    for problem in _problems(kafka):
        raise ValueError(problem)


def _problems(kafka: KafkaSettings) -> list[str]:
    protocol = kafka.security_protocol
    problems: list[str] = []
    if protocol not in TLS_PROTOCOLS:
        problems += [
            f"kafka.{name} is set but security_protocol is {protocol}: use SSL or SASL_SSL"
            for name in _TLS_FIELDS
            if getattr(kafka, name) is not None
        ]
    if protocol in SASL_PROTOCOLS and kafka.sasl_mechanism is None:
        problems.append(f"kafka.sasl_mechanism is required with security_protocol {protocol}")
    if kafka.sasl_mechanism is not None and protocol not in SASL_PROTOCOLS:
        problems.append(
            f"kafka.sasl_mechanism {kafka.sasl_mechanism} needs security_protocol "
            f"SASL_SSL or SASL_PLAINTEXT (it is {protocol})"
        )
    if protocol in SASL_PROTOCOLS and kafka.sasl_mechanism is not None:
        problems += _sasl_problems(kafka, kafka.sasl_mechanism)
    problems += _pair_problems(kafka)
    return problems


def _sasl_problems(kafka: KafkaSettings, mechanism: str) -> list[str]:
    if mechanism in PASSWORD_MECHANISMS:
        missing = []
        if not kafka.sasl_username:
            missing.append(f"kafka.sasl_username is required with sasl_mechanism {mechanism}")
        if kafka.sasl_password is None and kafka.sasl_password_file is None:
            missing.append(
                f"kafka.sasl_password (or kafka.sasl_password_file) is required with "
                f"sasl_mechanism {mechanism}"
            )
        return missing
    provider = kafka.sasl_oauth_token_provider
    if not provider:
        return ["kafka.sasl_oauth_token_provider is required with sasl_mechanism OAUTHBEARER"]
    if not _DOTTED_PATH.match(provider):
        return [
            f"kafka.sasl_oauth_token_provider {provider!r} is not a dotted path "
            "like 'package.module:attribute'"
        ]
    return []


def _pair_problems(kafka: KafkaSettings) -> list[str]:
    problems = [
        f"kafka.{name} and kafka.{name}_file are both set: keep one"
        for name in ("sasl_password", "ssl_password")
        if getattr(kafka, name) is not None and getattr(kafka, f"{name}_file") is not None
    ]
    if kafka.ssl_keyfile is not None and kafka.ssl_certfile is None:
        problems.append(
            "kafka.ssl_keyfile is set without kafka.ssl_certfile (the client certificate)"
        )
    has_key_password = kafka.ssl_password is not None or kafka.ssl_password_file is not None
    if has_key_password and kafka.ssl_certfile is None:
        problems.append("kafka.ssl_password is set without kafka.ssl_certfile / ssl_keyfile")
    return problems


def unused_sasl_settings(kafka: KafkaSettings) -> list[str]:
    """SASL settings given while ``sasl_mechanism`` is unset (they are not sent anywhere)."""
    if kafka.sasl_mechanism is not None:
        return []
    return [f"kafka.{name}" for name in _SASL_FIELDS if getattr(kafka, name) is not None]
