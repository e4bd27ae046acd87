"""Which instance this process is: the name its outbox leases carry, kept across restarts.

A restarted instance takes back its previous run's leases at once (they were in flight when it was
killed), so the name must survive a restart; two live processes must never share it, or one would take
back the other's live leases. The name is kept in the data directory and claimed with an exclusive lock
for as long as the process runs; a second process on the same directory gets a fresh name of its own.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9_-]{1,16}")


@dataclass
class InstanceClaim:
    """This process's instance name, and the lock that keeps it ours until release (or exit)."""

    name: str
    _lock: IO[str] | None = None

    def release(self) -> None:
        """Let another process (or a later start in this one) claim the name."""
        lock, self._lock = self._lock, None
        if lock is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()


def claim_instance_id(data_dir: Path, configured: str | None = None) -> InstanceClaim:
    """Return this process's instance name: the configured one, else the one kept in `data_dir`."""
    if configured is not None:
        return InstanceClaim(configured)
    lock = _try_lock(data_dir / "instance.lock")
    if lock is None:
        log.warning("another running jarchy uses this data directory; this one takes a name of its own")
        return InstanceClaim(secrets.token_hex(8))
    path = data_dir / "instance-id"
    with contextlib.suppress(OSError):
        name = path.read_text(encoding="ascii").strip()
        if _NAME.fullmatch(name):
            return InstanceClaim(name, lock)
    name = secrets.token_hex(8)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(name, encoding="ascii")
    os.replace(temporary, path)
    return InstanceClaim(name, lock)


class DataDirInUse(Exception):
    """Another process holds this data directory's transient keys."""


def lock_transient_keys(data_dir: Path) -> IO[str]:
    """Hold the lock that makes this process the only one turning the transient keys over.

    Two processes rotating epochs in one file would overwrite each other's live keys (and lose the rows
    sealed under them), so a second bot on the same data directory is refused, whatever its instance name.
    `jarchy rotate-key` takes the same lock.
    """
    lock = _try_lock(data_dir / "transient.lock")
    if lock is None:
        raise DataDirInUse(
            f"another jarchy process runs on {data_dir}; stop it first (each instance needs a data "
            "directory of its own)"
        )
    return lock


def _try_lock(path: Path) -> IO[str] | None:
    """Open and exclusively lock `path` (created if missing), or return None if another process holds it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.open("a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        return None
    return lock
