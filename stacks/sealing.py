"""`acmctl seal`: store a secret in a stack file, encrypted like `pulumi config set --secret`."""

from __future__ import annotations

from pathlib import Path

import yaml

from stacks.config import PROJECT, SECRET_KEYS
from stacks.passphrase import encrypt_with_key, key_from_salt, new_encryption_salt


def seal(stack_file: Path, key: str, value: str, passphrase: str) -> None:
    if key not in SECRET_KEYS:
        raise ValueError(
            f"{key!r} is not a secret setting; secret settings: {', '.join(SECRET_KEYS)}"
        )
    document = yaml.safe_load(stack_file.read_text()) or {}
    salt = document.get("encryptionsalt")
    if salt:
        encryption_key = key_from_salt(passphrase, salt)
    else:
        salt, encryption_key = new_encryption_salt(passphrase)
        document = {"encryptionsalt": salt, **document}
    document.setdefault("config", {})[f"{PROJECT}:{key}"] = {
        "secure": encrypt_with_key(encryption_key, value)
    }
    stack_file.write_text(yaml.safe_dump(document, sort_keys=False, width=100))
