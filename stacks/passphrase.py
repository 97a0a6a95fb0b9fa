"""Pulumi's passphrase secrets provider, so secure stack values can be sealed without the CLI.

Same format as the Pulumi CLI (`v1` state: PBKDF2-SHA256 with 1,000,000 iterations, then
AES-256-GCM): a stack file sealed here is read by `pulumi` with the same passphrase, and the
other way round.
"""

from __future__ import annotations

import base64
import hashlib
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_ITERATIONS = 1_000_000
_CHECK_PLAINTEXT = "pulumi"


def _key(passphrase: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", passphrase.encode(), salt, _ITERATIONS, dklen=32)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def encrypt_with_key(key: bytes, plaintext: str) -> str:
    nonce = os.urandom(12)
    sealed = AESGCM(key).encrypt(nonce, plaintext.encode(), None)
    return f"v1:{_b64(nonce)}:{_b64(sealed)}"


def decrypt_with_key(key: bytes, value: str) -> str:
    version, nonce, sealed = value.split(":", 2)
    if version != "v1":
        raise ValueError(f"unknown secret version {version!r}")
    return AESGCM(key).decrypt(base64.b64decode(nonce), base64.b64decode(sealed), None).decode()


def new_encryption_salt(passphrase: str) -> tuple[str, bytes]:
    """A stack's `encryptionsalt` and the key it unlocks."""
    salt = os.urandom(8)
    key = _key(passphrase, salt)
    return f"v1:{_b64(salt)}:{encrypt_with_key(key, _CHECK_PLAINTEXT)}", key


def key_from_salt(passphrase: str, encryption_salt: str) -> bytes:
    """The key for a stack's `encryptionsalt`; ValueError when the passphrase is wrong."""
    version, salt, check = encryption_salt.split(":", 2)
    if version != "v1":
        raise ValueError(f"unknown encryptionsalt version {version!r}")
    key = _key(passphrase, base64.b64decode(salt))
    try:
        plaintext = decrypt_with_key(key, check)
    except Exception as error:
        raise ValueError("incorrect passphrase") from error
    if plaintext != _CHECK_PLAINTEXT:
        raise ValueError("incorrect passphrase")
    return key
