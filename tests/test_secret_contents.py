"""Secret settings are checked for what they must be, without a value ever in a message: a PEM
certificate that has not expired, its private key, an SFTP key, known_hosts lines that parse,
nothing blank. The values here are real ones made for the test (as the engine would hand the
program decrypted secrets); the committed stacks' placeholders are left alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from stacks.config import SECRET_KEYS, StackConfigError, load_stack_config
from tests.conftest import stack_values

HOST_KEY = ("sftp.ncc.example ssh-ed25519 "
            "AAAAC3NzaC1lZDI1NTE5AAAAIHlEwnWLGPgXHXD3B1Bj4dZEIoppovDzjxA7rGMBK032\n")


def self_signed(days: int) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sip.acm.example")])
    now = datetime.now(UTC)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(days=400))
                   .not_valid_after(now + timedelta(days=days)).sign(key, hashes.SHA256()))
    return (certificate.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def real_secrets() -> dict[str, str]:
    issued = trustme.CA().issue_cert("sip.acm.example")
    sftp_key = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()).decode()
    return {
        "databasePassword": "a-real-looking-password", "grafanaAdminPassword": "another-one",
        "sipTlsCertificate": issued.cert_chain_pems[0].bytes().decode(),
        "sipTlsPrivateKey": issued.private_key_pem.bytes().decode(),
        "nccAtrsClientId": "acm-client", "nccAtrsClientSecret": "client-secret-value",
        "nccSftpPrivateKey": sftp_key, "nccSftpKnownHosts": HOST_KEY,
        "opensipsControlPassword": "Vw3-opensips_control.Pass",
        "haproxyControlPassword": "Kq8-haproxy_control.Pass",
    }


def load_with(changes: dict[str, str]) -> Any:
    values, secret_keys = stack_values("prod")
    values.update(real_secrets())
    values.update(changes)
    return load_stack_config("prod", values, secret_keys | frozenset(SECRET_KEYS))


def test_real_values_of_the_right_kind_pass() -> None:
    config = load_with({})
    assert config.secrets.ncc_sftp_known_hosts == HOST_KEY


EXPIRED_CERTIFICATE, EXPIRED_KEY = self_signed(days=-1)
OTHER_CERTIFICATE, _ = self_signed(days=30)


@pytest.mark.parametrize(("changes", "key", "reason"), [
    ({"sipTlsCertificate": "DEMO-ONLY not a certificate"}, "sipTlsCertificate",
     "is not a PEM certificate"),
    ({"sipTlsCertificate": EXPIRED_CERTIFICATE, "sipTlsPrivateKey": EXPIRED_KEY},
     "sipTlsCertificate", "has expired"),
    ({"sipTlsCertificate": OTHER_CERTIFICATE}, "sipTlsPrivateKey",
     "does not belong to sipTlsCertificate"),
    ({"sipTlsPrivateKey": "-----BEGIN PRIVATE KEY-----\nbroken\n-----END PRIVATE KEY-----\n"},
     "sipTlsPrivateKey", "is not an unencrypted PEM private key"),
    ({"nccSftpKnownHosts": "   \n"}, "nccSftpKnownHosts", "is empty"),
    ({"nccSftpKnownHosts": "sftp.ncc.example ssh-ed25519 not-base64!!\n"}, "nccSftpKnownHosts",
     "line 1 is not a known_hosts entry"),
    ({"nccSftpKnownHosts": "# only a comment\n"}, "nccSftpKnownHosts", "has no host key"),
    ({"nccSftpPrivateKey": "ssh-ed25519 AAAA a public key"}, "nccSftpPrivateKey",
     "is not an unencrypted OpenSSH or PEM private key"),
    ({"databasePassword": ""}, "databasePassword", "is empty"),
    ({"opensipsControlPassword": "short-one"}, "opensipsControlPassword",
     "at least 16 characters"),
    ({"haproxyControlPassword": 'with "quotes" and spaces'}, "haproxyControlPassword",
     "no spaces, quotes"),
], ids=["not a certificate", "expired", "key of another certificate", "broken key",
        "blank known_hosts", "known_hosts line", "no host key", "public sftp key",
        "empty password", "short control password", "control password HAProxy cannot read"])
def test_a_secret_that_cannot_be_right_is_named_without_its_value(
        changes: dict[str, str], key: str, reason: str) -> None:
    with pytest.raises(StackConfigError) as caught:
        load_with(changes)
    message = str(caught.value)
    assert f"acm-platform:{key}: " in message and reason in message, message
    for value in changes.values():
        if value.strip():
            assert value.strip() not in message
