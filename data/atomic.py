"""Results that are whole or absent: the one place carthema writes files atomically.

- :func:`atomic_path`: a temporary name beside a file, renamed over it on success;
- :func:`write_atomic`: bytes or text written that way (optionally fsync'ed, optionally
  left alone when the file already holds exactly that text);
- :func:`swap_folder`: a whole folder written under a temporary name beside its target
  and swapped in at the end, so that no file of an earlier result survives beside the
  new ones and a run killed midway leaves the earlier folder (or nothing) in place;
- :func:`probe_output_folder`: refuse an output folder that cannot be written, before
  any work, with a one-line :class:`InputError`;
- :class:`FolderLock`: a lock file (holder's pid and host) that keeps two runs out of
  one output folder; a lock left by a dead process on this host is taken over.

Every temporary name holds ``.tmp-`` so that readers (e.g. the cohort's resume logic)
can recognise and ignore leftovers.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import InputError

#: Marker that every temporary name carries.
TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` on success, so a
    half-written file never carries the final name (it is removed on failure)."""
    path = Path(path)
    # Process and thread in the name: two threads writing one file (e.g. two solves that
    # generate the same model's module) must not share, truncate or unlink one temporary.
    tmp = path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{threading.get_ident()}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_atomic(
    path: str | Path,
    data: bytes | str,
    *,
    fsync: bool = False,
    unless_same: bool = False,
    mkdir: bool = False,
) -> Path:
    """Write ``data`` to ``path`` atomically (temporary name, then rename).

    ``fsync`` flushes the bytes to disk before the rename (a marker that must not
    outlive a crash of the machine). ``unless_same`` leaves a file that already holds
    exactly ``data`` untouched (numba's cache index is keyed on the file's mtime).
    ``mkdir`` creates the parent folder.
    """
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    if unless_same:
        try:
            if path.read_bytes() == raw:
                return path
        except OSError:
            pass
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(raw)
            if fsync:
                fh.flush()
                os.fsync(fh.fileno())
    return path


def probe_output_folder(out: str | Path, option: str = "--out") -> Path:
    """Refuse ``out`` when it is a file or when its parent cannot hold a new folder.

    The check creates (and removes) a temporary folder beside ``out``: permission bits
    alone do not tell whether, e.g., ``/proc/x`` or a read-only mount can be written.
    """
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise InputError(
            "exists and is a file, not a folder.",
            file=str(out),
            fix=f"give {option} a folder path (it is created if missing).",
        )
    parent = p.absolute().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=f".{p.name}{TMP_MARK}probe-", dir=parent))
        probe.rmdir()
    except OSError as exc:
        raise InputError(
            f"cannot write there ({exc.strerror or exc}).",
            file=str(out),
            fix=f"choose a {option} folder in a place you can write to.",
        ) from None
    return p


@contextlib.contextmanager
def swap_folder(target: str | Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces
    ``target`` as a whole (an earlier ``target`` is moved aside first and removed after
    the swap). On failure the temporary folder is removed and ``target`` is untouched."""
    target = Path(target)
    parent = target.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_MARK}", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    old: Path | None = None
    try:
        yield tmp
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}{TMP_MARK}old-", dir=parent))
            os.replace(target, old / target.name)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not target.exists() and (old / target.name).exists():
            os.replace(old / target.name, target)  # put the earlier folder back
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


#: Name of the lock file :class:`FolderLock` keeps in a folder.
LOCK_NAME = ".carthema.lock"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class FolderLock:
    """Exclusive lock on an output folder: ``folder/.carthema.lock`` holds the holder's
    pid, host and start time; released on exit. A second holder is refused with an
    :class:`InputError` naming the holder's pid and host. A lock left by a process that
    no longer runs on this host (a killed run) is taken over."""

    def __init__(self, folder: str | Path, what: str = "run"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.what = what
        self._held = False

    def holder(self) -> dict | None:
        """The lock file's content, or None when there is no (readable) lock."""
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None

    def acquire(self) -> FolderLock:
        self.folder.mkdir(parents=True, exist_ok=True)
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "what": self.what,
        }
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                held = self.holder()
                if held is None:  # being written this instant, or garbage: look again
                    if self.path.exists() and self.path.stat().st_size > 0:
                        self._take_over()
                    continue
                if held.get("host") == me["host"] and not _pid_alive(int(held.get("pid", -1))):
                    self._take_over()
                    continue
                raise InputError(
                    f"another carthema {held.get('what', 'run')} (pid {held.get('pid')} on "
                    f"{held.get('host')}, since {held.get('since')}) is writing to this folder.",
                    file=str(self.folder),
                    fix=f"wait for it to finish, or use another --out; if that process is "
                    f"gone, remove {self.path}.",
                ) from None
            with os.fdopen(fd, "w") as fh:
                fh.write(json.dumps(me))
            self._held = True
            return self
        raise InputError(  # pragma: no cover - three races in a row
            "could not take the folder's lock.", file=str(self.path), fix="try again."
        )

    def _take_over(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def release(self) -> None:
        if self._held:
            held = self.holder()
            if held is None or held.get("pid") == os.getpid():
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
            self._held = False

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
