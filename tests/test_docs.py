"""Code examples in the README and docs/ are executed, so they cannot rot."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import ledger

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def examples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, code in enumerate(BLOCK.findall(doc.read_text(encoding="utf-8"))):
            found.append((f"{doc.name}#{i + 1}", code))
    return found


@pytest.mark.parametrize(("where", "code"), examples(), ids=[w for w, _ in examples()])
def test_example_runs(
    where: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    exec(compile(code, where, "exec"), {"__name__": "__doc_example__"})


def test_the_readmes_jsonl_example_appends_as_written(tmp_path: Path) -> None:
    """Copied into a file as shown, the example is valid input of `ledger append`."""
    shown = [
        line.strip()
        for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
        if line.lstrip().startswith('{"user_id"')
    ]
    assert shown, "the README shows a JSONL line"
    events = tmp_path / "events.jsonl"
    events.write_text("".join(line + "\n" for line in shown), encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'l.db'}"
    done = subprocess.run(
        [sys.executable, "-m", "cli", "--url", url, "append", str(events)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    with ledger.connect(url) as led:
        assert [e.type for e in led.tenant("usr_xyz").events("run_1")] == ["message_received"]
