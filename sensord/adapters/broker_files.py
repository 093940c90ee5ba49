"""Writes the generated Mosquitto files: owner-only, replaced atomically."""

from __future__ import annotations

import os
from pathlib import Path

from sensord.core.principals import DevicePlace, Principal, acl_file, include_snippet, password_file

FILES = ("passwords", "acl", "sensord-auth.conf")


def write_broker_files(
    directory: Path, principals: list[Principal], devices: list[DevicePlace], prefix: str
) -> list[Path]:
    """Write password file, ACL and include snippet into ``directory`` (mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = {
        "passwords": password_file(principals),
        "acl": acl_file(principals, devices, prefix),
        "sensord-auth.conf": include_snippet(str(directory.resolve())),
    }
    written = []
    for name, text in texts.items():
        path = directory / name
        tmp = directory / f".{name}.tmp"
        # Created 0600 from the start: the hashes are never readable by others, not even
        # between open and chmod.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(text)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
        written.append(path)
    return written
