"""The sync itself: the engine (cycle, cursors, per-invoice decision), reconciliation and the
scheduler."""
