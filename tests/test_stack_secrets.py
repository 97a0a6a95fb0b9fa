"""Stack secrets: sealed like `pulumi config set --secret`, decrypted only for a deploy."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from stacks.config import StackConfigError
from stacks.render import render_stack
from stacks.sealing import seal
from stacks.stack_files import ROOT, read_stack_file, secret_placeholder
from tests.conftest import DEMO_PASSPHRASE

pytestmark = pytest.mark.slow  # each decryption is a 1,000,000-round PBKDF2


def stack_copy(tmp_path: Path) -> Path:
    shutil.copy(ROOT / "Pulumi.local.yaml", tmp_path / "Pulumi.local.yaml")
    return tmp_path


def test_a_sealed_value_reads_back_only_with_the_passphrase(tmp_path: Path) -> None:
    root = stack_copy(tmp_path)
    seal(root / "Pulumi.local.yaml", "databasePassword", "s3cret-for-this-test", DEMO_PASSPHRASE)
    values, secret_keys = read_stack_file("local", root, DEMO_PASSPHRASE)
    assert values["databasePassword"] == "s3cret-for-this-test"
    assert "databasePassword" in secret_keys
    offline, _ = read_stack_file("local", root)
    assert offline["databasePassword"] == secret_placeholder("databasePassword")
    assert "s3cret-for-this-test" not in (root / "Pulumi.local.yaml").read_text()


def test_a_wrong_passphrase_is_named_and_nothing_is_read(tmp_path: Path) -> None:
    with pytest.raises(StackConfigError, match=r"encryptionsalt.*incorrect passphrase"):
        read_stack_file("local", stack_copy(tmp_path), "not-the-passphrase")


def test_a_tampered_secret_names_its_key(tmp_path: Path) -> None:
    root = stack_copy(tmp_path)
    path = root / "Pulumi.local.yaml"
    document = yaml.safe_load(path.read_text())
    sealed = document["config"]["acm-platform:grafanaAdminPassword"]["secure"]
    flipped = sealed[:-4] + ("AAAA" if not sealed.endswith("AAAA") else "BBBB")
    document["config"]["acm-platform:grafanaAdminPassword"]["secure"] = flipped
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    with pytest.raises(StackConfigError, match=r"acm-platform:grafanaAdminPassword.*decrypted"):
        read_stack_file("local", root, DEMO_PASSPHRASE)


def test_only_a_deployable_render_carries_secret_values() -> None:
    deployable = render_stack("local", passphrase=DEMO_PASSPHRASE)
    offline = render_stack("local")
    password = deployable.get("Secret", "acm-database")["stringData"]["password"]
    assert password.startswith("DEMO-ONLY")
    assert offline.get("Secret", "acm-database")["stringData"]["password"] == secret_placeholder(
        "databasePassword")
