"""The read side: projector runner, tracking and read models (conversation, run
metadata, memory). Built on ``ledger`` only; see DESIGN.md "Read side"."""
