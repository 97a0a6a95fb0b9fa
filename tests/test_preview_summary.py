"""`acmctl preview-summary` on input that is not what the pipeline writes: it names the file and
what is wrong, exit 2, and never a traceback. (Its reading of real engine output is tested
in tests/cluster/test_review_summary.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stacks.cli import main as acmctl


def write(folder: Path, name: str, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_text(text)


DIGEST = json.dumps({"steps": [], "changeSummary": {"same": 3}})


@pytest.mark.parametrize(("files", "expected"), [
    ({}, "holds no <stack>.preview.json"),
    ({"prod.preview.json": "error: preview failed\n"}, "prod.preview.json: not JSON"),
    ({"prod.preview.json": "[]"}, "a JSON object was expected"),
    ({"prod.preview.json": DIGEST}, "prod.events.jsonl: missing"),
    ({"prod.preview.json": DIGEST, "prod.events.jsonl": "{\"sequence\": 1}\nnot json\n"},
     "prod.events.jsonl, line 2: not a JSON event"),
    ({"prod.preview.json": DIGEST, "prod.events.jsonl": "", "prod.status": "failed"},
     "prod.status: 'failed' is not an exit status"),
], ids=["empty folder", "stderr in the digest", "not an object", "no event log",
        "broken event", "bad status"])
def test_bad_input_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                  files: dict[str, str], expected: str) -> None:
    folder = tmp_path / "previews"
    folder.mkdir()
    for name, text in files.items():
        write(folder, name, text)
    assert acmctl(["preview-summary", str(folder)]) == 2
    printed = capsys.readouterr()
    assert expected in printed.err
    assert "Traceback" not in printed.err and printed.out == ""


def test_a_failed_preview_without_a_violation_still_blocks(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A preview that died (the program raised, the backend refused) says nothing about policy,
    # and must not read as "no changes".
    digest = {"diagnostics": [{"severity": "error",
                               "message": "stack 'prod' has invalid configuration"}]}
    write(tmp_path, "prod.preview.json", json.dumps(digest))
    write(tmp_path, "prod.events.jsonl", "")
    write(tmp_path, "prod.status", "255\n")
    assert acmctl(["preview-summary", str(tmp_path)]) == 1
    printed = capsys.readouterr()
    assert "FAILED: the preview did not complete" in printed.out
    assert "stack 'prod' has invalid configuration" in printed.out
