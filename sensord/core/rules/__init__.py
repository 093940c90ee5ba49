"""Rule engine core (issue 4, in progress): rule files, conditions, per-subject state machines."""
