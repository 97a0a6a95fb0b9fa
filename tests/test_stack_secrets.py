"""Stack secrets belong to the Pulumi CLI: the committed stack files decrypt with it, `pulumi config
set --secret` seals new values, and the offline render never holds a value."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from stacks.config import SECRET_KEYS
from stacks.render import render_stack
from stacks.stack_files import STACKS, read_stack_file, secret_placeholder
from tests.engine import REPO, Engine

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    engine = Engine(tmp_path_factory.mktemp("pulumi-state"), kubeconfig=None)
    for stack in STACKS:
        engine.stack(stack)
    yield engine


@pytest.mark.parametrize("stack", STACKS)
def test_the_committed_secrets_decrypt_with_the_real_cli(engine: Engine, stack: str) -> None:
    shown = engine.cli("config", "--stack", stack, "--show-secrets", "--json")
    assert shown.returncode == 0, shown.stderr
    values = json.loads(shown.stdout)
    for key in SECRET_KEYS:
        entry = values[f"acm-platform:{key}"]
        assert entry["secret"] is True, key
        assert entry["value"].strip(), key
    assert values["acm-platform:databasePassword"]["value"].startswith("DEMO-ONLY")
    assert values["acm-platform:sipTlsCertificate"]["value"].startswith("-----BEGIN CERTIFICATE")


def test_config_set_secret_seals_and_the_render_never_sees_it(engine: Engine,
                                                             tmp_path: Path) -> None:
    stack_file = tmp_path / "Pulumi.local.yaml"
    shutil.copy(REPO / "Pulumi.local.yaml", stack_file)
    value = "s3cret-for-this-test"
    sealed = engine.cli("config", "set", "--secret", "--stack", "local", "--config-file",
                        str(stack_file), "acm-platform:databasePassword", value)
    assert sealed.returncode == 0, sealed.stderr
    assert value not in stack_file.read_text()
    read_back = engine.cli("config", "get", "--stack", "local", "--config-file",
                           str(stack_file), "acm-platform:databasePassword")
    assert read_back.stdout.strip() == value
    values, secret_keys = read_stack_file("local", tmp_path)
    assert "databasePassword" in secret_keys
    assert values["databasePassword"] == secret_placeholder("databasePassword")
    offline = render_stack("local", tmp_path)
    password = offline.get("Secret", "acm-database")["stringData"]["password"]
    assert password == secret_placeholder("databasePassword")


def test_a_wrong_stack_secret_reads_nothing(engine: Engine, tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-demo-secret\n")
    engine.env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(wrong)
    try:
        shown = engine.cli("config", "--stack", "local", "--show-secrets", "--json")
    finally:
        engine.env["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(REPO / "stacks" / "demo-stack-secret")
    assert shown.returncode != 0
    assert "incorrect passphrase" in shown.stderr.lower(), shown.stderr
    assert "DEMO-ONLY" not in shown.stdout
