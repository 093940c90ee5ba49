"""The one table of process exit codes, for the daemon and every command."""

from __future__ import annotations

OK = 0
FAILED = 1  # a command refused or failed; the daemon hit a fatal error
USAGE = 2  # a command's arguments or input were invalid
SCHEMA_BEHIND = 2  # the daemon found migrations pending: run `sensord migrate`
# sysexits EX_CONFIG: the systemd unit lists it in RestartPreventExitStatus, since
# restarting cannot fix a bad configuration, rule file or dispatch policy.
CONFIG = 78
