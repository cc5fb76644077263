"""An erasure made by another process shows at once in a long-lived one.

An agent process reads a user's conversation, memories and replays on every call, so it
holds their keys and plaintexts in its caches (``ledger.personal.Keyring``). Once
``ledger forget`` has returned, elsewhere, no read that process starts may return the
user's content: every read checks the keys it opens with against the store.
"""

from __future__ import annotations

import ledger
from ledger.personal import ERASED
from tests.test_cli import ledger_cli
from tests.test_erasure import SECRET, _everything_readable, _record
from tests.test_sealed_errors import ERASED_NOW, WRITTEN, _read_back, _record_failures


def test_a_long_lived_reader_shows_an_erasure_made_elsewhere_at_its_next_read(url: str) -> None:
    with ledger.connect(url, encrypt=True) as agent:
        run_id = _record(agent, "usr_a")
        failed = _record_failures(agent, "usr_a", "sess_2")
        # Read everything once: the agent now caches usr_a's key and the plaintexts.
        assert SECRET in _everything_readable(agent, "usr_a", run_id)
        assert _read_back(agent, "usr_a", failed) == WRITTEN
        done = ledger_cli(url, "forget", "--user", "usr_a")
        assert done.returncode == 0, done.stderr
        after = _everything_readable(agent, "usr_a", run_id)
        assert SECRET not in after and ERASED in after
        assert _read_back(agent, "usr_a", failed) == ERASED_NOW
