"""Point-in-time reconstruction, diff, fork and deterministic re-execution of runs.
Built on ``ledger`` and the shared reducers; see DESIGN.md "Replay"."""
