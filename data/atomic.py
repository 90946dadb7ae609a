"""Results that are whole or absent: the one place carthema writes files atomically.

- :func:`atomic_path`: a temporary name beside a file, renamed over it on success;
- :func:`write_atomic`: bytes or text written that way (optionally fsync'ed, optionally
  left alone when the file already holds exactly that text);
- :func:`swap_folder`: a whole folder written under a temporary name beside its target
  and swapped in at the end, so that no file of an earlier result survives beside the
  new ones and a run killed midway leaves the earlier folder (or nothing) in place;
- :func:`probe_output_folder`: refuse an output folder that cannot be written, before
  any work, with a one-line :class:`InputError`;
- :func:`check_out_folder`: the output-folder contract of every command that writes a
  folder (a file, an input folder, or a non-empty folder that is not this command's own
  earlier output is refused; stale temporaries are cleaned), recognised by the
  ``run.json`` (:mod:`carthema.data.runrecord`) that :func:`swap_folder` leaves in each
  folder it writes for a command;
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
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from .errors import InputError
from .runrecord import read_run_record, run_record, write_run_record

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
def swap_folder(
    target: str | Path, command: str | None = None, *, record: Mapping | None = None
) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``target``; on success it replaces
    ``target`` as a whole (an earlier ``target`` is moved aside first and removed after
    the swap). On failure the temporary folder is removed and ``target`` is untouched.

    ``command`` (the CLI command's name) or ``record`` (a run record,
    :func:`carthema.data.runrecord.run_record`) writes ``run.json`` into the folder before
    the swap, so that the next run of that command recognises the folder as its own
    (:func:`check_out_folder`) and the folder says what made it. The temporary names
    carry this process's pid, so that a later run can tell a killed run's leftovers from a
    live run's folder."""
    target = Path(target)
    parent = target.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    mine = f".{target.name}{TMP_MARK}{os.getpid()}-"
    tmp = Path(tempfile.mkdtemp(prefix=mine, dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the result is an ordinary folder
    old: Path | None = None
    try:
        yield tmp
        if command is not None or record is not None:
            rec = dict(record) if record is not None else run_record()
            if command is not None:
                rec["subcommand"] = command
            write_run_record(tmp, rec)
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f"{mine}old-", dir=parent))
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


#: A temporary without a readable pid (an older carthema's) counts as stale after this.
STALE_TMP_S = 3600.0


def clean_stale_temporaries(target: str | Path) -> list[Path]:
    """Remove the temporaries (``.NAME.tmp-*``) that a killed run writing ``target`` left
    beside it: those of a process that no longer runs, and those of unknown owner older
    than :data:`STALE_TMP_S`. A live run's temporaries are left alone. Returns what was
    removed."""
    target = Path(target)
    parent = target.absolute().parent
    removed: list[Path] = []
    if not parent.is_dir():
        return removed
    prefix = f".{target.name}{TMP_MARK}"
    try:
        entries = [p for p in parent.iterdir() if p.name.startswith(prefix)]
    except OSError:
        return removed
    for p in entries:
        head = p.name[len(prefix) :].split("-", 1)[0]
        if head.isdigit():
            stale = int(head) != os.getpid() and not _pid_alive(int(head))
        else:
            try:
                stale = time.time() - p.lstat().st_mtime > STALE_TMP_S
            except OSError:
                continue
        if not stale:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                p.unlink()
        if not p.exists():
            removed.append(p)
    return removed


def _within(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_out_folder(
    out: str | Path,
    command: str,
    *,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    own_markers: Iterable[str] = (),
    option: str = "--out",
) -> Path:
    """The output-folder contract of every command that writes a folder, checked before
    any work (one-line :class:`InputError`, exit 2):

    - a plain file is refused;
    - a folder that is, or holds, one of ``inputs`` (the files and folders the command
      reads) is refused even with ``overwrite``: the result would replace its own input;
    - an existing non-empty folder is refused unless it is ``command``'s own earlier
      output (its ``run.json`` names ``command``, or, for folders written before
      the record existed, it holds one of ``own_markers``) or ``overwrite`` is given;
    - a place that cannot be written is refused (:func:`probe_output_folder`);
    - temporaries a killed run left beside ``out`` are removed
      (:func:`clean_stale_temporaries`).

    The folder is then written by :func:`swap_folder` with ``command``, which replaces it
    as a whole and leaves the record. Returns ``out`` as a :class:`Path`."""
    p = Path(out)
    fix_new = f"choose a new {option} folder, or pass --overwrite to replace it as a whole."
    if p.exists() and not p.is_dir():
        raise InputError(
            "exists and is a file, not a folder.",
            file=str(out),
            fix=f"give {option} a folder path (it is created if missing).",
        )
    here = p.resolve()
    for given in inputs:
        if given is None or str(given).startswith("example:"):
            continue
        src = Path(given).resolve()
        if _within(src, here):
            what = "is" if src == here else f"holds {given}, which"
            raise InputError(
                f"the output folder {what} is an input of this command; writing the result "
                "there would replace it.",
                file=str(out),
                fix=f"choose a {option} folder outside the inputs (e.g. a new subfolder).",
            )
    clean_stale_temporaries(p)
    if p.is_dir() and not overwrite:
        try:
            entries = list(p.iterdir())
        except OSError as exc:
            raise InputError(
                f"cannot read the folder ({exc.strerror or exc}).",
                file=str(out),
                fix=f"choose a {option} folder you can read and write.",
            ) from None
        if entries:
            held = read_run_record(p)
            by_cmd = held.get("subcommand") if isinstance(held, dict) else None
            ours = by_cmd == command or any((p / m).exists() for m in own_markers)
            if not ours:
                by = f" (written by `carthema {by_cmd}`)" if by_cmd else ""
                raise InputError(
                    f"the output folder exists, is not empty and is not the output of an "
                    f"earlier `carthema {command}`{by}.",
                    file=str(out),
                    fix=fix_new,
                )
    return probe_output_folder(p, option)


#: Name of the lock file :class:`FolderLock` keeps in a folder.
LOCK_NAME = ".carthema.lock"

#: An empty lock file older than this (seconds) was left by a run killed between
#: creating and writing it, and is taken over.
STALE_EMPTY_LOCK_S = 60.0


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
    no longer runs on this host (a killed run) is taken over, and so is an empty lock
    file older than a minute (killed between creating and writing it)."""

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
                    if self._unreadable_is_stale():
                        self._take_over()
                    else:
                        time.sleep(0.2)
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

    def _unreadable_is_stale(self) -> bool:
        """An unreadable lock is garbage when it holds bytes (not JSON), or when it is
        empty and older than :data:`STALE_EMPTY_LOCK_S` (a run killed between creating
        the file and writing it); a young empty lock is being written this instant."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return False
        return st.st_size > 0 or time.time() - st.st_mtime > STALE_EMPTY_LOCK_S

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
