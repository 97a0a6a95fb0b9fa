"""Reading a stack's configuration: from `Pulumi.<stack>.yaml`, or from the Pulumi runtime.

Both paths produce the same thing, `(values, secret_keys)` for `load_stack_config`, so the
offline render and a real `pulumi up` validate exactly the same way.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import yaml

from stacks.config import PROJECT, StackConfigError
from stacks.passphrase import decrypt_with_key, key_from_salt

ROOT = Path(__file__).resolve().parent.parent
STACKS = ("local", "dev", "staging", "prod")


def secret_placeholder(key: str) -> str:
    """What a secret looks like in an offline render: never the value, always its name."""
    return f"<secret {PROJECT}:{key}>"


def read_stack_file(
    stack: str, root: Path = ROOT, passphrase: str | None = None
) -> tuple[dict[str, Any], frozenset[str]]:
    """The stack's values; secrets as placeholders, or decrypted when a passphrase is given."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.exists():
        raise StackConfigError(stack, [("(stack)", f"no stack file {path.name}")])
    document = yaml.safe_load(path.read_text()) or {}
    if not isinstance(document, dict):
        raise StackConfigError(stack, [("(stack)", f"{path.name} is not a YAML mapping")])
    raw_config = document.get("config") or {}
    decryption_key = None
    if passphrase is not None:
        salt = document.get("encryptionsalt")
        if not isinstance(salt, str):
            raise StackConfigError(stack, [("encryptionsalt", f"{path.name} has none")])
        try:
            decryption_key = key_from_salt(passphrase, salt)
        except ValueError as error:
            raise StackConfigError(stack, [("encryptionsalt", str(error))]) from error
    return decode_stack_values(stack, raw_config, decryption_key)


def decode_stack_values(
    stack: str, raw_config: dict[str, Any], decryption_key: bytes | None = None
) -> tuple[dict[str, Any], frozenset[str]]:
    values: dict[str, Any] = {}
    secret_keys: set[str] = set()
    problems: list[tuple[str, str]] = []
    for full_key, value in raw_config.items():
        namespace, _, key = str(full_key).partition(":")
        if namespace != PROJECT or not key:
            problems.append((str(full_key), f"is not in the {PROJECT}: namespace"))
            continue
        if isinstance(value, dict) and set(value) == {"secure"}:
            secret_keys.add(key)
            if decryption_key is None:
                values[key] = secret_placeholder(key)
                continue
            try:
                values[key] = decrypt_with_key(decryption_key, str(value["secure"]))
            except Exception as error:  # a tampered or foreign ciphertext: name the key
                problems.append((str(full_key), f"cannot be decrypted ({error or 'bad tag'})"))
        else:
            values[key] = value
    if problems:
        raise StackConfigError(stack, problems)
    return values, frozenset(secret_keys)


def runtime_values() -> tuple[dict[str, Any], frozenset[str]]:
    """The stack's config as the Pulumi engine handed it to this program."""
    from pulumi.runtime import config as runtime_config

    merged: dict[str, Any] = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    secret_keys = set(runtime_config.get_config_secret_keys_env())
    values: dict[str, Any] = {}
    prefix = f"{PROJECT}:"
    for full_key, value in merged.items():
        if not full_key.startswith(prefix):
            continue
        key = full_key[len(prefix):]
        if runtime_config.is_config_secret(full_key) or full_key in secret_keys:
            secret_keys.add(key)
        # Objects arrive JSON-encoded; secrets and plain strings stay as they are.
        if isinstance(value, str) and value[:1] in "{[" and key not in secret_keys:
            with contextlib.suppress(json.JSONDecodeError):
                value = json.loads(value)
        values[key] = value
    return values, frozenset(k for k in secret_keys if ":" not in k)
