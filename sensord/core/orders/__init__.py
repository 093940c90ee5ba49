"""Work orders (issue 5, started): the pure state machine. Not wired into the daemon yet."""
