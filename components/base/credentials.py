"""What the program derives from secret values without ever showing them.

- A keyed digest of the Secret contents a workload's containers read at start, printed into its
  pod template (`SECRETS_DIGEST_ANNOTATION`): a changed secret changes the template of exactly
  the workloads that read it, so `pulumi up` after `pulumi config set --secret` rolls them, with
  the same drain as a config change, and no other. HMAC-SHA256 under the stack's own key
  (`secretsDigestKey`), so the annotation says nothing about the values, not even whether two
  stacks share one.
- Mutual-TLS material for links between replicas of one part (Alertmanager's gossip): a CA
  and a certificate derived from the same key, byte-identical on every `pulumi up`.
- bcrypt hashes for the web configs of the parts that ask for a password (exporter-toolkit's
  `basic_auth_users`: Prometheus, Alertmanager), made by the program and never stored in the
  repository. bcrypt salts itself at random; a random salt would change the Secret on every
  `pulumi up` and roll the part for nothing, so the salt is keyed by the stack's key, the part
  and the password: the same password gives the same hash, a new one a new hash.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from components.base.templating import render

SECRETS_DIGEST_ANNOTATION = "acm-platform.ng/secrets-digest"
BCRYPT_COST = 10
_BCRYPT_ALPHABET = "./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_BASE64_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Derived certificates are valid for a fixed span, so that they stay byte-identical: they are
# renewed by rotating the stack's secretsDigestKey, well within it.
DERIVED_VALID_FROM = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DERIVED_VALID_UNTIL = dt.datetime(2036, 1, 1, tzinfo=dt.UTC)


def secrets_digest(key: str, contents: Mapping[str, str]) -> str:
    """HMAC-SHA256 under `key` of `contents` (name -> value, e.g. "opensips-control/password"),
    independent of their order."""
    digest = hmac.new(key.encode(), digestmod=hashlib.sha256)
    for name in sorted(contents):
        for part in (name, contents[name]):
            encoded = part.encode()
            digest.update(len(encoded).to_bytes(8, "big"))
            digest.update(encoded)
    return digest.hexdigest()


def stable_bcrypt(password: str, key: str, purpose: str) -> str:
    """bcrypt of `password` with a salt keyed by the stack's `key` and `purpose` (the part)."""
    seed = hmac.new(key.encode(), f"{purpose}\0{password}".encode(), hashlib.sha256).digest()
    salt = base64.b64encode(seed[:16]).decode().rstrip("=")
    salt = salt.translate(str.maketrans(_BASE64_ALPHABET, _BCRYPT_ALPHABET))[:22]
    return bcrypt.hashpw(password.encode(), f"$2b${BCRYPT_COST:02d}${salt}".encode()).decode()


def web_config(username: str, password: str, key: str, purpose: str) -> str:
    """exporter-toolkit's web config (Prometheus, Alertmanager): every path of the web port asks
    for the account."""
    return render("web-config.yml.j2", username=username,
                  password_hash=stable_bcrypt(password, key, purpose))


@dataclass(frozen=True)
class MutualTls:
    """A private CA and one certificate it signs, for both ends of a mutual-TLS link."""

    ca_certificate: str
    certificate: str
    private_key: str


def derived_mutual_tls(key: str, purpose: str, server_name: str) -> MutualTls:
    """A CA and a certificate for `server_name` (client and server use), derived from the
    stack's `key` and `purpose` alone: Ed25519 keys from HKDF, whose signatures are
    deterministic, and a fixed validity, so the same key gives byte-identical PEM on every
    `pulumi up` (nothing rolls) and a rotated key gives new ones. Nothing is stored."""

    def private(label: str) -> ed25519.Ed25519PrivateKey:
        seed = HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                    info=f"acm-platform/{purpose}/{label}".encode()).derive(key.encode())
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed)

    ca_key, leaf_key = private("ca"), private("leaf")
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{purpose} CA")])
    ca = (x509.CertificateBuilder()
          .subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key())
          .serial_number(1)
          .not_valid_before(DERIVED_VALID_FROM).not_valid_after(DERIVED_VALID_UNTIL)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(
              digital_signature=False, content_commitment=False, key_encipherment=False,
              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
              encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, None))
    leaf = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, server_name)]))
            .issuer_name(ca_name)
            .public_key(leaf_key.public_key())
            .serial_number(2)
            .not_valid_before(DERIVED_VALID_FROM).not_valid_after(DERIVED_VALID_UNTIL)
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name)]),
                           critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, None))
    return MutualTls(
        ca_certificate=ca.public_bytes(serialization.Encoding.PEM).decode(),
        certificate=leaf.public_bytes(serialization.Encoding.PEM).decode(),
        private_key=leaf_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()).decode())
