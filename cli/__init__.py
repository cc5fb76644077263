"""The ``ledger`` command: parses, calls ledger/projections/replay, prints."""
