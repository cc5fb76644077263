"""``ledger verify --export`` on an auditor's laptop, given a hostile export directory.

Each row edits a real export (of a real store, through the real CLI) the way someone
trying to fool, hang or crash the verifier would, and states the one right outcome:
exit 1 naming the first bad line where the export was tampered with, exit 2 with one
clear line where the directory is not a usable export. Never a hang, never a traceback,
never a file read from outside the directory, never an escape code on the terminal.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import pytest

import ledger
from ledger.export import EVENTS_FILE, MANIFEST_FILE, ExportedEvent
from tests.test_cli import ledger_cli
from tests.test_export import export, offline_verify, record_runs

Edit = Callable[[Path], object]


class Case(NamedTuple):
    edit: Edit
    exit_code: int
    says: str  # on stderr: the line named, or what is wrong
    against: bool = False  # also check against the digest kept at export time


def events(out: Path) -> list[bytes]:
    return (out / EVENTS_FILE).read_bytes().splitlines(keepends=True)


def write_events(out: Path, body: bytes, *, reseal: bool = False) -> None:
    """Write events.jsonl; with ``reseal`` also the manifest's sha256 of it (a forger
    who rewrites both, so only what the manifest cannot vouch for is left to find)."""
    (out / EVENTS_FILE).write_bytes(body)
    if reseal:
        edit_manifest(out, events_sha256=hashlib.sha256(body).hexdigest())


def manifest(out: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((out / MANIFEST_FILE).read_text())
    return loaded


def edit_manifest(out: Path, **changes: Any) -> None:
    (out / MANIFEST_FILE).write_text(json.dumps({**manifest(out), **changes}))


def link(name: str, target: Callable[[Path], str]) -> Edit:
    def edit(out: Path) -> None:
        to = target(out)
        (out / name).unlink()
        os.symlink(to, out / name)

    return edit


def a_copy_outside(out: Path) -> str:
    copy = out.parent / "elsewhere.jsonl"
    copy.write_bytes((out / EVENTS_FILE).read_bytes())
    return str(copy)


def a_fifo(out: Path) -> None:
    (out / EVENTS_FILE).unlink()
    os.mkfifo(out / EVENTS_FILE)


def a_directory(out: Path) -> None:
    (out / EVENTS_FILE).unlink()
    (out / EVENTS_FILE).mkdir()


def rewritten(edit: Callable[[ExportedEvent], ExportedEvent], line: int) -> Edit:
    """Line ``line`` decoded, changed and encoded as the exporter encodes (so only its
    content differs), with the manifest's file hash resealed."""

    def apply(out: Path) -> None:
        rows = events(out)
        decoded = msgspec.json.decode(rows[line - 1], type=ExportedEvent)
        rows[line - 1] = msgspec.json.encode(edit(decoded)) + b"\n"
        write_events(out, b"".join(rows), reseal=True)

    return apply


def forged_data(event: ExportedEvent) -> ExportedEvent:
    assert event.data is not None
    return msgspec.structs.replace(event, data={**event.data, "content": "I agree to it all"})


def key_given_twice(out: Path) -> None:
    """A line whose ``data`` is given twice: parsers disagree on which one counts."""
    rows = events(out)
    rows[1] = rows[1].rstrip(b"\n")[:-1] + b',"data":{"content":"forged"}}\n'
    write_events(out, b"".join(rows), reseal=True)


def escape_in_a_run_id(out: Path) -> None:
    rows = events(out)
    event = msgspec.json.decode(rows[0], type=ExportedEvent)
    rows[0] = msgspec.json.encode(msgspec.structs.replace(event, run_id="\x1b[2Jok")) + b"\n"
    write_events(out, b"".join(rows))


def interleaved(out: Path) -> None:
    rows = events(out)  # two runs of 6 events: 3 of the first, 3 of the second, ...
    write_events(out, b"".join(rows[0:3] + rows[6:9] + rows[3:6] + rows[9:]))


CASES: dict[str, Case] = {
    "manifest not JSON": Case(
        lambda out: (out / MANIFEST_FILE).write_text("{nope"), 2, "not a ledger export manifest"
    ),
    "manifest of the wrong shape": Case(
        lambda out: (out / MANIFEST_FILE).write_text("[]"), 2, "got `array`"
    ),
    "manifest missing a key": Case(
        lambda out: (out / MANIFEST_FILE).write_text(
            json.dumps({k: v for k, v in manifest(out).items() if k != "digest"})
        ),
        2,
        "missing required field `digest`",
    ),
    "manifest with an extra key": Case(
        lambda out: edit_manifest(out, verified_by="an auditor", files=["../../etc/passwd"]),
        2,
        "unknown field `verified_by`",
    ),
    "manifest with a negative count": Case(
        lambda out: edit_manifest(out, counts={"runs": -1, "events": 12}), 2, "`$.counts.runs`"
    ),
    "manifest with an absurd count": Case(
        lambda out: edit_manifest(out, counts={"runs": 10**30, "events": 12}),
        1,
        "counts 1000000000000000000000000000000 runs",
    ),
    "manifest time without a zone": Case(
        lambda out: edit_manifest(out, exported_at="2025-01-01T00:00:00"), 2, "timezone"
    ),
    "manifest user with a terminal escape": Case(
        lambda out: edit_manifest(out, user_id="\x1b]0;ok\x07\x1b[2J"), 2, "control characters"
    ),
    "manifest of another format": Case(
        lambda out: edit_manifest(out, format="ledger-export-v9"), 2, "unsupported export format"
    ),
    "manifest a link to /dev/zero": Case(
        link(MANIFEST_FILE, lambda out: "/dev/zero"), 2, "manifest.json is a symbolic link"
    ),
    "events a link to /etc/passwd": Case(
        link(EVENTS_FILE, lambda out: "/etc/passwd"), 2, "events.jsonl is a symbolic link"
    ),
    "events a link to a good copy outside": Case(
        link(EVENTS_FILE, a_copy_outside), 2, "events.jsonl is a symbolic link"
    ),
    "events a link to /dev/zero": Case(
        link(EVENTS_FILE, lambda out: "/dev/zero"), 2, "events.jsonl is a symbolic link"
    ),
    "events a named pipe": Case(a_fifo, 2, "events.jsonl is not a regular file"),
    "events a directory": Case(a_directory, 2, "events.jsonl is a directory"),
    "events missing": Case(lambda out: (out / EVENTS_FILE).unlink(), 2, "events.jsonl is missing"),
    "last line truncated": Case(
        lambda out: write_events(out, b"".join(events(out))[:-40], reseal=True), 2, "line 12:"
    ),
    "CRLF line endings": Case(
        lambda out: write_events(out, b"".join(events(out)).replace(b"\n", b"\r\n"), reseal=True),
        1,
        "line 1: not written as 'ledger audit export' writes it",
    ),
    "a byte order mark": Case(
        lambda out: write_events(out, b"\xef\xbb\xbf" + b"".join(events(out))), 2, "line 1:"
    ),
    "a NUL byte": Case(
        lambda out: write_events(out, b"".join(events(out)[:3]) + b"\x00\n"), 2, "line 4:"
    ),
    "invalid UTF-8": Case(
        lambda out: write_events(out, events(out)[0][:30] + b"\xff" + events(out)[0][30:]),
        2,
        "line 1: Invalid UTF-8",
    ),
    "an enormous line": Case(
        lambda out: write_events(out, b'{"a":"' + b"x" * 50_000_000 + b'"}\n'),
        2,
        "line 1: Object contains unknown field `a`",
    ),
    "an event given twice": Case(
        lambda out: write_events(out, b"".join(events(out)[:4] + events(out)[3:]), reseal=True),
        1,
        "line 5: version gap: expected version 5, found 4",
    ),
    "runs interleaved": Case(interleaved, 1, "line 7: the run's events are not together"),
    "readable data forged, file hash resealed": Case(
        rewritten(forged_data, line=2),
        1,
        "line 2: data is not what the stored payload reads as",
        against=True,
    ),
    "a key given twice, file hash resealed": Case(
        key_given_twice, 1, "line 2: not written as", against=True
    ),
    "a run id with a terminal escape": Case(escape_in_a_run_id, 2, "control characters"),
    "manifest with a terminal escape in an unknown key": Case(
        lambda out: edit_manifest(out, **{"\x1b[2Jx\ny": 1}), 2, "unknown field `\\x1b[2Jx\\ny`"
    ),
    "a line with a terminal escape in an unknown key": Case(
        lambda out: write_events(out, b'{"\\u001b]0;ok\\u0007\\nz":1}\n'),
        2,
        "line 1: 'Object contains unknown field `\\x1b]0;ok\\x07\\nz`'",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_a_hostile_export_is_found_or_refused(case: Case, sqlite_url: str, tmp_path: Path) -> None:
    record_runs(sqlite_url, "usr_a", runs=2, turns=1)
    out = tmp_path / "export"
    export(sqlite_url, "usr_a", out)
    kept = manifest(out)["digest"]
    case.edit(out)

    result = offline_verify(out, *(["--against", kept] if case.against else []))
    assert result.returncode == case.exit_code, result.stderr
    assert "Traceback" not in result.stderr and "\x1b" not in result.stdout + result.stderr
    assert case.says in result.stderr, result.stderr
    if case.exit_code == 2:
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_an_encrypted_export_proves_its_plain_data_and_forget_leaves_none(
    pg_url: str, tmp_path: Path
) -> None:
    """On Postgres personal content is sealed: the verifier checks every plain part of
    ``data`` against the payload, and after ``ledger forget`` an export holds no content
    and still verifies."""
    with ledger.connect(pg_url) as led:
        run = led.tenant("usr_a").start_run(session_id="sess_a")
        run.message_received(content="my secret diagnosis", role="user")
    before = tmp_path / "before"
    export(pg_url, "usr_a", before)
    assert b"my secret diagnosis" in (before / EVENTS_FILE).read_bytes()  # data, opened
    assert offline_verify(before, "--against", manifest(before)["digest"]).returncode == 0

    def forged_role(event: ExportedEvent) -> ExportedEvent:  # a plain field: provable
        assert event.data is not None
        return msgspec.structs.replace(event, data={**event.data, "role": "assistant"})

    rewritten(forged_role, line=2)(before)
    forged = offline_verify(before, "--against", manifest(before)["digest"])
    assert forged.returncode == 1 and "line 2: data is not what" in forged.stderr

    forget = ledger_cli(pg_url, "forget", "--user", "usr_a")
    assert forget.returncode == 0, forget.stderr
    after = tmp_path / "after"
    export(pg_url, "usr_a", after)
    files = (after / EVENTS_FILE).read_bytes() + (after / MANIFEST_FILE).read_bytes()
    assert b"my secret diagnosis" not in files and b"[erased]" in files
    checked = offline_verify(after, "--against", manifest(after)["digest"])
    assert checked.returncode == 0, checked.stderr
