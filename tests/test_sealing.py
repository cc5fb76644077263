"""Sealed tokens: their format, the tokens of earlier versions, and fresh nonces.

AES-GCM under one key must never see a nonce twice; the nonces are drawn from the OS a
block at a time, so these tests hold the block to its promises across threads and a
fork.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import threading
from typing import Any

import msgspec
import pytest

import ledger
from ledger import personal
from ledger.personal import ERASED, UNREADABLE, reveal
from ledger.storable import MARKER


@pytest.fixture
def led(tmp_path: Any) -> Any:
    with ledger.connect(f"sqlite:///{tmp_path / 'ledger.db'}", encrypt=True) as opened:
        yield opened


def _stored_content(led: ledger.Ledger, user: str) -> tuple[str, str]:
    """A message sealed through the API: its stored token and the run's id."""
    run = led.tenant(user).start_run(session_id="sess_1", model="gpt-4o")
    run.message_received(role="user", content="the plain words")
    record = led.store.read_run(user, run.run_id)[-1]
    return msgspec.json.decode(record.payload)["content"], run.run_id


def test_tokens_are_written_in_v2_and_open(led: ledger.Ledger) -> None:
    token, run_id = _stored_content(led, "usr_a")
    version, key_id, blob = token[len(MARKER) :].split("/", 2)
    assert token.startswith(MARKER) and version == "v2" and key_id.startswith("k_")
    assert len(base64.b64decode(blob, validate=True)) > 12  # standard base64, padded
    assert led.tenant("usr_a").events(run_id)[-1].data["content"] == "the plain words"


def test_v1_tokens_written_before_still_open(led: ledger.Ledger) -> None:
    """A token in the format of the first release (base64url, unpadded) reads back."""
    token, _ = _stored_content(led, "usr_a")
    key_id = token[len(MARKER) :].split("/")[1]
    cipher = led.keyring.reading_key("usr_a", key_id)
    assert cipher is not None
    nonce = os.urandom(12)
    aad = f"ledger/v1\x00usr_a\x00{key_id}".encode()
    sealed = nonce + cipher.encrypt(nonce, msgspec.json.encode({"q": "old words"}), aad)
    v1 = f"{MARKER}v1/{key_id}/" + base64.urlsafe_b64encode(sealed).decode().rstrip("=")
    assert reveal({"input": v1}, "usr_a", led.keyring) == {"input": {"q": "old words"}}


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t.replace("/v2/", "/v9/"),  # a version nobody wrote
        lambda t: t[:-6] + ("A" if t[-6] != "A" else "B") + t[-5:],  # one character
        lambda t: t[:-3] + "!" + t[-2:],  # not base64
        lambda t: t[: len(t) // 2],  # cut short
    ],
)
def test_a_mangled_token_reads_as_unreadable(led: ledger.Ledger, mangle: Any) -> None:
    token, _ = _stored_content(led, "usr_a")
    assert reveal(mangle(token), "usr_a", led.keyring) == UNREADABLE


def test_a_token_of_an_unknown_key_reads_as_erased(led: ledger.Ledger) -> None:
    token, _ = _stored_content(led, "usr_a")
    _, key_id, _ = token[len(MARKER) :].split("/", 2)
    assert reveal(token.replace(key_id, "k_" + "0" * 24), "usr_a", led.keyring) == ERASED


def test_input_that_starts_like_any_token_version_is_refused(led: ledger.Ledger) -> None:
    run = led.tenant("usr_a").start_run(session_id="sess_1")
    for forged in (MARKER + "v1/k_x/abc", MARKER + "v2/k_x/abc", MARKER + "anything"):
        with pytest.raises(ledger.InvalidEvent, match="seal marker"):
            run.message_received(role="user", content=forged)
    assert run.version == 1  # nothing of them was stored


@pytest.mark.parametrize("encrypt", [True, False])
def test_a_string_that_starts_like_a_token_is_refused_wherever_a_reader_would_open_it(
    tmp_path: Any, encrypt: bool
) -> None:
    """Readers open every stored string that starts with the marker, at any depth, so
    such input would read back altered (as "[erased]"): it is refused, naming where. A
    personal value that is sealed is stored whole, so what is inside it is plain data
    (as is the marker anywhere but at a string's start)."""
    forged = MARKER + "v2/k_x/AAAA"
    nested = [
        ({"name": "search", "input": {"q": forged}}, "tool_called.input.q"),
        ({"name": "search", "input": {"q": ["a", forged]}}, "tool_called.input.q[1]"),
    ]
    refused = [
        ({"name": forged}, "tool_called.name"),  # not a personal field: stored as is
        ({"name": "search", "input": forged}, "tool_called.input"),
        *([] if encrypt else nested),
    ]
    with ledger.connect(f"sqlite:///{tmp_path / 'l.db'}", encrypt=encrypt) as led:
        t = led.tenant("usr_a")
        run = t.start_run(session_id="s")
        for fields, where in refused:
            with pytest.raises(ledger.InvalidEvent, match=rf"{re.escape(where)}: .*seal marker"):
                run.tool_called(call_id="c1", **fields)
        assert run.version == 1  # nothing of them was stored
        inside = 'say \\"' + forged  # the marker after an escaped quote: not at a start
        accepted = [
            {"q": inside, "n": forged[1:]},
            *([f["input"] for f, _ in nested] if encrypt else []),
        ]
        for value in accepted:
            run.tool_called(call_id="c1", name="search", input=value)
            assert t.events(run.run_id)[-1].data["input"] == value


def test_nonces_are_never_handed_out_twice_across_threads() -> None:
    nonces = personal._Nonces()
    taken: list[list[bytes]] = [[] for _ in range(8)]

    def take(mine: list[bytes]) -> None:
        for _ in range(2_000):
            mine.append(nonces.take())

    threads = [threading.Thread(target=take, args=(mine,)) for mine in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [n for mine in taken for n in mine]
    assert len(every) == 16_000 and len(set(every)) == len(every)
    assert {len(n) for n in every} == {12}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
# Python 3.12+ warns about forking a process with threads (earlier tests leave pool
# workers behind); the child here only takes nonces and exits, which is safe.
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_a_forked_child_never_reuses_its_parents_nonces() -> None:
    """The block a parent drew is still in the child's memory after fork: the child must
    draw its own, or parent and child would seal with the same nonces."""
    nonces = personal._Nonces()
    nonces.take()  # the parent now holds a block of unused nonces
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the nonces it would use, then leave at once
        try:
            os.write(write, b"".join(nonces.take() for _ in range(8)))
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        child = pipe.read()
    os.waitpid(pid, 0)
    parent = {nonces.take() for _ in range(300)}  # more than a block: all it held
    child_nonces = {child[i : i + 12] for i in range(0, len(child), 12)}
    assert len(child_nonces) == 8 and not child_nonces & parent


def test_reveal_opens_tokens_at_any_depth_and_copies_only_what_changed(
    led: ledger.Ledger,
) -> None:
    from collections import OrderedDict

    from pydantic import BaseModel

    class Inner(BaseModel):
        text: str
        n: int = 1

    class Outer(BaseModel):
        items: list[Inner]
        data: dict[str, Any]

    token, _ = _stored_content(led, "usr_a")
    plain = Outer(items=[Inner(text="a")], data={"k": [1, "b", {"c": None}]})
    assert reveal(plain, "usr_a", led.keyring) is plain  # nothing to open: not copied

    sealed = Outer(
        items=[Inner(text="a"), Inner(text=token)],
        data={"k": [1, token], "d": OrderedDict(x=token)},
    )
    opened = reveal(sealed, "usr_a", led.keyring)
    assert opened.items[1].text == "the plain words"
    assert opened.data == {"k": [1, "the plain words"], "d": {"x": "the plain words"}}
    assert opened.items[0] is sealed.items[0]  # untouched parts are shared
    assert sealed.items[1].text == token  # the input is not changed


def test_without_fork_hooks_the_ledger_still_imports_and_seals(tmp_path: Any) -> None:
    """Windows has no ``os.register_at_fork`` (nor fork): the embedded default must
    still import, seal and read there. Run in a fresh interpreter without it."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import os
        del os.fork, os.register_at_fork
        import ledger
        with ledger.connect("sqlite:///{tmp_path / "w.db"}", encrypt=True) as led:
            run = led.tenant("usr_a").start_run(session_id="s")
            run.message_received(role="user", content="hello")
            print(led.tenant("usr_a").events(run.run_id)[-1].data["content"])
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello"


def test_reads_open_sealed_content_wherever_it_is_and_leave_plain_models_alone(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Encryption turned on for a store with plain history: every read model opens what
    is sealed, whether it sits in the stored document or in events folded on top of it
    (read your writes); a model with nothing sealed is not walked for tokens at all."""
    from projections import read_side
    from projections.catalog import default_projectors
    from projections.runner import ProjectorRunner

    walked: list[object] = []
    real_reveal = read_side.reveal

    def counting_reveal(model: Any, user_id: str, keyring: Any) -> Any:
        walked.append(model)
        return real_reveal(model, user_id, keyring)

    monkeypatch.setattr(read_side, "reveal", counting_reveal)
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with ledger.connect(url, encrypt=False) as plain:
        t = plain.tenant("usr_a")
        run = t.start_run(session_id="sess_1", model="gpt-4o")
        run.message_received(content="plain words")
        run.memory_written(namespace="prefs", key="tone", value="plain memory")
        ProjectorRunner(plain, default_projectors(), owner="test").catch_up()
        assert [m["content"] for m in t.conversation("sess_1").messages] == ["plain words"]
        assert [m.value for m in t.memories()] == ["plain memory"]
        assert t.run_metadata(run.run_id).status == "running" and len(t.runs()) == 1
        assert walked == []  # nothing sealed anywhere: no walk
    with ledger.connect(url, encrypt=True) as sealing:
        t = sealing.tenant("usr_a")
        run = t.run(run.run_id)
        run.message_received(content="sealed words")
        run.memory_written(namespace="prefs", key="tone", value="sealed memory")

        def read_all() -> None:
            conversation = t.conversation("sess_1")
            assert [m["content"] for m in conversation.messages] == [
                "plain words",
                "sealed words",
            ]
            assert [m.value for m in t.memories()] == ["sealed memory"]
            assert [m.value for m in t.memories("prefs")] == ["sealed memory"]
            assert t.run_metadata(run.run_id).version == 5
            assert [m.run_id for m in sealing.auditor().runs_metadata()] == [run.run_id]

        read_all()  # sealed events folded on the plain stored documents
        assert walked
        applied = ProjectorRunner(sealing, default_projectors(), owner="test").catch_up()
        assert applied == 2 * 3  # two events, three read models
        stored = sealing.store.read_run("usr_a", run.run_id)[-1]
        assert stored.key_id is not None
        read_all()  # now the stored documents hold the tokens


def test_opened_tokens_are_kept_per_user_and_never_outlive_their_key(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reads keep what they opened (an agent reads its conversation on every call),
    but serve it only once the token's key is found live, only to its own user, and
    drop it when the user is forgotten."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    with ledger.connect(url, encrypt=True) as reader, ledger.connect(url, encrypt=True) as admin:
        token, run_id = _stored_content(reader, "usr_a")
        assert reader.tenant("usr_a").events(run_id)[-1].data["content"] == "the plain words"
        opened: list[str] = []
        real = personal._token_bytes

        def counting(version: str, blob: str) -> bytes:
            opened.append(blob)
            return real(version, blob)

        monkeypatch.setattr(personal, "_token_bytes", counting)
        assert reveal(token, "usr_a", reader.keyring) == "the plain words"
        assert opened == []  # from what the read above opened
        # The same token in another user's data never opens from here.
        assert reveal(token, "usr_b", reader.keyring) in (ERASED, UNREADABLE)
        # Erased by another process: the next read finds the key gone, cache or not.
        admin.forget("usr_a")
        assert reveal(token, "usr_a", reader.keyring) == ERASED
        assert reader.tenant("usr_a").events(run_id)[-1].data["content"] == ERASED
    with ledger.connect(url, encrypt=True) as led:  # forgotten here: nothing kept of them
        token, _ = _stored_content(led, "usr_c")
        assert reveal(token, "usr_c", led.keyring) == "the plain words"
        assert led.keyring.opened.get("usr_c", token) is not None
        led.forget("usr_c")
        assert led.keyring.opened.get("usr_c", token) is None
        assert reveal(token, "usr_c", led.keyring) == ERASED


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork on this platform")
def test_a_child_forked_while_a_key_cache_lock_is_held_does_not_hang(sqlite_url: str) -> None:
    """fork copies only the calling thread: a cache lock another thread held at that
    instant would stay held in the child for good (``ledger.forksafe``)."""
    with ledger.connect(sqlite_url, encrypt=True) as led:
        t = led.tenant("usr_a")
        run = t.start_run(session_id="s")
        run.message_received(content="sealed before the fork")
        assert t.conversation("s").messages[0]["content"] == "sealed before the fork"
        keyring, auditor = led.keyring, led.auditor()
        held, release = threading.Event(), threading.Event()

        def hold_both() -> None:
            with keyring._lock, keyring.opened._lock:
                held.set()
                release.wait()

        holder = threading.Thread(target=hold_both)
        holder.start()
        held.wait()
        pid = os.fork()
        if pid == 0:  # pragma: no cover (the child's exit status is the assertion)
            code = 1
            try:
                signal.alarm(20)  # a hang is a failure, not a stuck test run
                run.message_received(content="sealed in the child")
                contents = [m["content"] for m in t.conversation("s").messages]
                assert contents == ["sealed before the fork", "sealed in the child"]
                assert auditor.events(run.run_id)[-1].data["content"] == "sealed in the child"
                code = 0
            finally:
                os._exit(code)
        release.set()
        holder.join()
        assert os.waitpid(pid, 0)[1] == 0
