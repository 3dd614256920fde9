"""AES-256-GCM for personal data: the master key, wrapped subject keys and sealed values.

The only module that imports ``cryptography`` (the ``crypto`` extra: ``pip install
'eventseam[crypto]'``); engine.personal_data and the event classes never need it.

- The master key is 32 random bytes, written as base64url (``eventseam keys generate`` prints
  one). It comes from settings (``EVENTSEAM_PERSONAL_DATA__MASTER_KEY`` or ``..._FILE``), is
  held as a SecretStr and never logged.
- Subject keys (data keys) are 32 random bytes each, stored wrapped:
  ``nonce(12) || AES-GCM(master, nonce, key, aad="eventseam-key|<subject>|<version>")``, so a
  wrapped key moved to another subject or version does not unwrap.
- A value is sealed as ``AES-GCM(subject key, nonce(12), value JSON, aad)``; the aad binds the
  event id, the wire name and the field name (``value_aad``).
"""

from __future__ import annotations

import base64
import binascii
import os
from typing import TYPE_CHECKING, Final

from .errors import CiphertextError, MasterKeyError

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise MasterKeyError(
        "personal-data encryption needs the cryptography package: pip install 'eventseam[crypto]'"
    ) from exc

from .personal_data import Sealed

if TYPE_CHECKING:
    import uuid

    from .settings import PersonalDataSettings

__all__ = ["KEY_BYTES", "MasterKey", "generate_master_key", "value_aad"]

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12


def generate_master_key() -> str:
    """A new random master key, base64url (the form the settings take)."""
    return base64.urlsafe_b64encode(os.urandom(KEY_BYTES)).decode("ascii")


def value_aad(event_id: uuid.UUID | str, event_name: str, field: str) -> bytes:
    """Additional data of one sealed value: binds it to its event and field."""
    return f"eventseam-pd1|{event_id}|{event_name}|{field}".encode()


def _key_aad(subject: str, version: int) -> bytes:
    return f"eventseam-key|{subject}|{version}".encode()


class MasterKey:
    """Wraps and unwraps subject keys; seals and opens values with unwrapped subject keys.

    Thread safe (AESGCM objects are stateless). ``repr`` never shows the key.
    """

    __slots__ = ("_aead",)

    def __init__(self, secret: str) -> None:
        """``secret``: 32 bytes as base64 (url-safe or standard); MasterKeyError otherwise."""
        try:
            raw = base64.urlsafe_b64decode(secret.strip().replace("+", "-").replace("/", "_"))
        except (binascii.Error, ValueError) as exc:
            raise MasterKeyError(f"the personal-data master key is not base64: {exc}") from exc
        if len(raw) != KEY_BYTES:
            raise MasterKeyError(
                f"the personal-data master key must be {KEY_BYTES} bytes (base64), got "
                f"{len(raw)}; make one with `eventseam keys generate`"
            )
        self._aead = AESGCM(raw)

    @classmethod
    def from_settings(cls, settings: PersonalDataSettings) -> MasterKey:
        """The master key from ``master_key`` or ``master_key_file``; MasterKeyError if neither."""
        secret = settings.master_key.get_secret_value() if settings.master_key else None
        if secret is None and settings.master_key_file is not None:
            try:
                secret = settings.master_key_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise MasterKeyError(
                    f"cannot read the personal-data master key file {settings.master_key_file}: "
                    f"{exc.strerror}"
                ) from exc
        if not secret:
            raise MasterKeyError(
                "events with PersonalData fields need a master key: set "
                "EVENTSEAM_PERSONAL_DATA__MASTER_KEY (or ..._MASTER_KEY_FILE); make one with "
                "`eventseam keys generate`"
            )
        return cls(secret)

    def __repr__(self) -> str:
        return "MasterKey(<secret>)"

    def new_wrapped_key(self, subject: str, version: int) -> tuple[bytes, bytes]:
        """A new random subject key: (the key, the key wrapped for the key table)."""
        key = AESGCM.generate_key(bit_length=KEY_BYTES * 8)
        nonce = os.urandom(NONCE_BYTES)
        return key, nonce + self._aead.encrypt(nonce, key, _key_aad(subject, version))

    def unwrap(self, subject: str, version: int, wrapped: bytes) -> bytes:
        """The subject key; MasterKeyError when this master key did not wrap it."""
        try:
            return self._aead.decrypt(
                wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], _key_aad(subject, version)
            )
        except (InvalidTag, ValueError) as exc:
            raise MasterKeyError(
                f"the personal-data master key does not unwrap key version {version} of a "
                "subject: it is not the master key the key table was written with"
            ) from exc


def seal(key: bytes, key_version: int, plaintext: bytes, aad: bytes) -> str:
    """``plaintext`` sealed with a subject key, as an envelope string."""
    nonce = os.urandom(NONCE_BYTES)
    return Sealed(key_version, nonce, AESGCM(key).encrypt(nonce, plaintext, aad)).envelope


def open_sealed(key: bytes, sealed: Sealed, aad: bytes) -> bytes:
    """The plaintext of ``sealed``; CiphertextError when authentication fails."""
    try:
        return AESGCM(key).decrypt(sealed.nonce, sealed.ciphertext, aad)
    except InvalidTag as exc:
        raise CiphertextError(
            "a personal-data value fails authentication (tampered, or moved to another "
            "event or field)"
        ) from exc
