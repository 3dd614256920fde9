"""Kafka TLS/SASL settings: validation, the aiokafka keyword arguments, and secrets kept out of sight.

The bundled broker has no SASL, so SASL is checked here at the boundary eventseam owns: the
keyword arguments every aiokafka client is built with. TLS is exercised for real in
tests/broker/test_kafka_tls.py.
"""

from __future__ import annotations

import logging
import os
import ssl
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from aiokafka.abc import AbstractTokenProvider
from click.testing import CliRunner
from pydantic import ValidationError
from structlog.testing import capture_logs

from engine.cli import main
from engine.consumer import consumer_options
from engine.settings import ConsumerSettings, KafkaSettings, load_settings
from outbox.errors import KafkaSecurityError
from outbox.kafka import producer_options
from outbox.kafka_security import security_options, ssl_context

if TYPE_CHECKING:
    from pathlib import Path

SECRET = "hunter2-do-not-print"


class StaticToken(AbstractTokenProvider):  # type: ignore[misc]  # aiokafka is untyped
    """An OAUTHBEARER provider with a fixed token."""

    async def token(self) -> str:
        """The token."""
        return SECRET


def static_token_factory() -> StaticToken:
    """A factory returning a provider (the other accepted form of the dotted path)."""
    return StaticToken()


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No inherited EVENTSEAM_* variables, no eventseam.toml."""
    for name in list(os.environ):
        if name.upper().startswith("EVENTSEAM_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_password_mechanisms_become_aiokafka_sasl_arguments(mechanism: str) -> None:
    """PLAIN and SCRAM settings give aiokafka its sasl_mechanism, username and password."""
    kafka = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism=mechanism,
        sasl_username="relay",
        sasl_password=SECRET,
    )
    assert security_options(kafka) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "relay",
        "sasl_plain_password": SECRET,
    }


def test_the_password_file_is_read_at_connect_time(tmp_path: Path) -> None:
    """sasl_password_file's content (without the trailing newline) is the password, re-read each time."""
    secret = tmp_path / "password"
    secret.write_text("first\n")
    kafka = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="relay",
        sasl_password_file=secret,
    )
    assert security_options(kafka)["sasl_plain_password"] == "first"
    secret.write_text("rotated\n")
    options = security_options(kafka)
    assert options["sasl_plain_password"] == "rotated"
    assert isinstance(options["ssl_context"], ssl.SSLContext)


@pytest.mark.parametrize(
    "path",
    [
        f"{__name__}:StaticToken",
        f"{__name__}.static_token_factory",
        f"{__name__}:static_token_factory",
    ],
)
@pytest.mark.anyio
async def test_oauthbearer_loads_the_token_provider(path: str) -> None:
    """OAUTHBEARER gets the AbstractTokenProvider named by a dotted path (a class or a factory)."""
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=path
    )
    options = security_options(kafka)
    assert options["sasl_mechanism"] == "OAUTHBEARER"
    assert isinstance(options["sasl_oauth_token_provider"], StaticToken)
    assert await options["sasl_oauth_token_provider"].token() == SECRET


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("tests.unit.no_such_module:Provider", "cannot import"),
        ("os.path:sep", "is not an aiokafka"),
    ],
)
def test_a_bad_token_provider_is_a_typed_error(path: str, reason: str) -> None:
    """A provider path that cannot be imported, or names something else, raises KafkaSecurityError naming the setting."""
    kafka = KafkaSettings(
        security_protocol="SASL_SSL", sasl_mechanism="OAUTHBEARER", sasl_oauth_token_provider=path
    )
    with pytest.raises(KafkaSecurityError, match=reason) as raised:
        security_options(kafka)
    assert raised.value.setting == "kafka.sasl_oauth_token_provider"


def test_every_client_gets_the_security_options() -> None:
    """The producer's and the consumer's keyword arguments both carry the SASL settings."""
    kafka = KafkaSettings(
        bootstrap_servers="kafka:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="PLAIN",
        sasl_username="relay",
        sasl_password=SECRET,
    )
    produced = producer_options(kafka, idempotent=False)
    consumed = consumer_options(kafka, ConsumerSettings(), "group", "client")
    for options in (produced, consumed):
        assert options["sasl_mechanism"] == "PLAIN"
        assert options["sasl_plain_password"] == SECRET
        assert options["ssl_context"].verify_mode is ssl.CERT_REQUIRED


def test_hostname_checks_follow_the_setting() -> None:
    """ssl_check_hostname=false reaches the TLS context; verification of the certificate stays on."""
    context = ssl_context(KafkaSettings(security_protocol="SSL", ssl_check_hostname=False))
    assert context.check_hostname is False
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert ssl_context(KafkaSettings(security_protocol="SSL")).check_hostname is True


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "kafka.sasl_mechanism is required"),
        ({"sasl_mechanism": "PLAIN"}, "needs security_protocol SASL_SSL or SASL_PLAINTEXT"),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN", "sasl_password": SECRET},
            "kafka.sasl_username is required",
        ),
        (
            {
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "SCRAM-SHA-256",
                "sasl_username": "u",
            },
            "kafka.sasl_password (or kafka.sasl_password_file) is required",
        ),
        (
            {"security_protocol": "SASL_SSL", "sasl_mechanism": "OAUTHBEARER"},
            "kafka.sasl_oauth_token_provider is required",
        ),
        ({"ssl_check_hostname": True, "ssl_password": SECRET}, "security_protocol is PLAINTEXT"),
        ({"security_protocol": "SSL", "ssl_password": SECRET}, "without kafka.ssl_certfile"),
    ],
)
def test_inconsistent_settings_name_the_setting_and_hide_the_input(
    values: dict[str, Any], message: str
) -> None:
    """Each inconsistency is a ValidationError naming the setting, without the secret's value."""
    with pytest.raises(ValidationError) as raised:
        KafkaSettings(**values)
    assert message in str(raised.value)
    assert SECRET not in str(raised.value)


def test_an_unknown_mechanism_and_a_missing_file_are_refused(tmp_path: Path) -> None:
    """sasl_mechanism is one of four names; TLS files must exist (the error names the field)."""
    with pytest.raises(ValidationError, match="SCRAM-SHA-512"):
        KafkaSettings(security_protocol="SASL_SSL", sasl_mechanism="GSSAPI")
    with pytest.raises(ValidationError, match="ssl_cafile"):
        KafkaSettings(security_protocol="SSL", ssl_cafile=tmp_path / "missing.pem")


def test_a_bad_ca_file_is_a_typed_error(tmp_path: Path) -> None:
    """A CA file that is not PEM raises KafkaSecurityError naming kafka.ssl_cafile."""
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(KafkaSecurityError) as raised:
        ssl_context(KafkaSettings(security_protocol="SSL", ssl_cafile=bad))
    assert raised.value.setting == "kafka.ssl_cafile"


def test_secrets_stay_out_of_reprs_dumps_and_logs(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Passwords read from the environment never show in reprs, dumps, or logged settings."""
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("EVENTSEAM_KAFKA__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("EVENTSEAM_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("EVENTSEAM_KAFKA__SASL_USERNAME", "relay")
    monkeypatch.setenv("EVENTSEAM_KAFKA__SASL_PASSWORD", SECRET)
    settings = load_settings()
    with capture_logs() as structured:
        structlog.get_logger().info("settings", kafka=settings.kafka, dumped=settings.model_dump())
    logging.getLogger("eventseam.test").info("settings %r %s", settings, settings.kafka)
    seen = repr(settings) + str(settings.model_dump_json()) + repr(structured) + caplog.text
    assert SECRET not in seen
    assert settings.kafka.sasl_password is not None


def test_config_check_masks_secrets_even_when_the_settings_are_invalid() -> None:
    """`eventseam config check` hides SASL and key passwords, valid or not (exit 2 when not)."""
    secrets = {
        "EVENTSEAM_KAFKA__SASL_PASSWORD": SECRET,
        "EVENTSEAM_KAFKA__SSL_PASSWORD": SECRET + "-key",
        "COLUMNS": "200",
    }
    invalid = CliRunner().invoke(main, ["config", "check"], env=secrets)
    assert invalid.exit_code == 2, invalid.output
    assert "kafka.ssl_password is set but security_protocol is PLAINTEXT" in invalid.output
    valid = CliRunner().invoke(
        main,
        ["config", "check"],
        env={
            **secrets,
            "EVENTSEAM_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "EVENTSEAM_KAFKA__SASL_MECHANISM": "PLAIN",
            "EVENTSEAM_KAFKA__SASL_USERNAME": "relay",
            "EVENTSEAM_KAFKA__SSL_PASSWORD": None,
        },
    )
    for result in (invalid, valid):
        assert SECRET not in result.output
    assert "kafka.sasl_mechanism" in valid.output
