"""Run-folder locks: one process at a time writes a run folder (a run, or a sweep point).

``train`` takes the lock of its ``--out-dir`` (a second process gets an error); a sweep takes each point's
lock before deciding whether to run it, so several sweep processes on one results folder run each point
exactly once. This module needs only the standard library and ``filelock`` (a test loads it by path).

Two kinds, both non-blocking (a folder held elsewhere is refused or skipped, never waited for):

* ``RunLock(path)``: an OS lock (``filelock.FileLock``: ``flock``/``fcntl``). The kernel drops it when
  the holder dies, even by SIGKILL, so a killed holder never leaves a stale lock. Works on local disks
  and on NFS with working locks. The holder's pid, host and start time go to ``<path>.owner`` (shown in
  messages; never trusted for exclusion).
* ``RunLock(path, soft=True)``: for shared filesystems without working locks. The lock is the file
  itself, created atomically with its owner inside (write a temporary file, then ``os.link`` it, which
  fails if the lock exists). A lock whose owner is on this host and whose pid is dead is stale and is
  broken; so is one older than ``stale_after`` seconds when ``stale_after`` is set (for holders on other
  hosts: set it longer than any run).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["RunLock", "lock_path_for", "pid_alive"]


def lock_path_for(run_dir: str | Path) -> Path:
    """The lock file of a run folder: a hidden sibling ``.<name>.lock`` (the run folder holds only run files)."""
    run_dir = Path(run_dir)
    return run_dir.parent / f".{run_dir.name}.lock"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host (a zombie counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _owner_record() -> dict[str, Any]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time(), "token": uuid.uuid4().hex}


class RunLock:
    """A non-blocking, exclusive lock on one run folder.

    Example:
        >>> lock = RunLock(lock_path_for(run_dir))
        >>> if lock.acquire():
        ...     try:
        ...         ...  # write the run folder
        ...     finally:
        ...         lock.release()
        ... else:
        ...     print("running elsewhere:", lock.owner())
    """

    def __init__(self, path: str | Path, soft: bool = False, stale_after: float | None = None) -> None:
        self.path, self.soft, self.stale_after = Path(path), soft, stale_after
        self._record: dict[str, Any] | None = None
        self._flock = None

    @property
    def held(self) -> bool:
        return self._record is not None

    def owner(self) -> dict[str, Any] | None:
        """The recorded holder (pid, host, time), if any."""
        src = self.path if self.soft else Path(f"{self.path}.owner")
        try:
            data = json.loads(src.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self) -> bool:
        """Take the lock if it is free (or stale); False if a live holder has it."""
        if self.held:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return self._acquire_soft() if self.soft else self._acquire_os()

    def held_elsewhere(self) -> bool:
        """Whether another holder has the lock now; never takes it or creates a file (a read-only probe)."""
        if self.held or not self.path.exists():
            return False
        if self.soft:
            return not self._is_stale(self.owner())
        from filelock import FileLock, Timeout

        probe = FileLock(str(self.path), timeout=0, is_singleton=False)
        try:
            probe.acquire()
        except Timeout:
            return True
        except OSError:  # e.g. a read-only results folder: nobody can be writing it
            return False
        probe.release()
        return False

    def release(self) -> None:
        if not self.held:
            return
        if self.soft:
            if (self.owner() or {}).get("token") == self._record["token"]:
                self.path.unlink(missing_ok=True)
        else:
            Path(f"{self.path}.owner").unlink(missing_ok=True)
            self._flock.release()
            self._flock = None
        self._record = None

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    # ------------------------------------------------------------ OS lock
    def _acquire_os(self) -> bool:
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path), timeout=0, is_singleton=False)
        try:
            lock.acquire()
        except Timeout:
            return False
        self._flock, self._record = lock, _owner_record()
        owner = Path(f"{self.path}.owner")
        tmp = owner.with_name(f"{owner.name}.{self._record['token']}.tmp")
        tmp.write_text(json.dumps(self._record))
        os.replace(tmp, owner)
        return True

    # ------------------------------------------------------------ lock file
    def _acquire_soft(self) -> bool:
        for _ in range(3):  # a stale lock broken by us, then a race lost: give up after a few rounds
            record = _owner_record()
            tmp = self.path.with_name(f"{self.path.name}.{record['token']}.tmp")
            tmp.write_text(json.dumps(record))
            try:
                os.link(tmp, self.path)  # atomic: fails if the lock exists
                self._record = record
                return True
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
            if not self._break_if_stale():
                return False
        return False

    def _is_stale(self, owner: dict[str, Any] | None) -> bool:
        if owner is None:  # unreadable: only its age can tell
            return self._older_than(self.stale_after if self.stale_after is not None else 60.0)
        if owner.get("host") == socket.gethostname() and isinstance(owner.get("pid"), int):
            if not pid_alive(owner["pid"]):
                return True
        return self.stale_after is not None and self._older_than(self.stale_after)

    def _older_than(self, seconds: float) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime > seconds
        except FileNotFoundError:
            return True

    def _break_if_stale(self) -> bool:
        """Remove a stale lock; True if the lock is gone (by us or its holder) and acquiring may be retried."""
        owner = self.owner()
        if not self._is_stale(owner):
            return False
        # Move it aside first: of two processes breaking the same stale lock, one rename wins.
        aside = self.path.with_name(f"{self.path.name}.stale.{uuid.uuid4().hex}")
        try:
            os.rename(self.path, aside)
        except FileNotFoundError:
            return True
        moved = None
        try:
            moved = json.loads(aside.read_text())
        except (OSError, ValueError):
            pass
        if owner is not None and (moved or {}).get("token") != owner.get("token"):
            # we moved a fresh lock taken between our read and our rename: put it back
            try:
                os.link(aside, self.path)
            except FileExistsError:
                pass
        aside.unlink(missing_ok=True)
        return True
