"""What a gctxseg command may write, and how: the one rule of every writer (docs/reliability.md).

- **Owned folders.** A folder output (``predict``/``evaluate``/``synth --out``) is written into a new or empty
  folder, or over a previous output of the same command, known by the marker file :data:`MARKER` inside it
  (``{"written by": "gctxseg predict"}``); a folder holding anything else is refused with one line and the fix,
  and so is one that overlaps the command's inputs (the source, the ground-truth masks beside it).
- **Staged, then swapped.** It is written into a hidden staging folder beside the target (same parent, so the
  swap is a rename on one disk) and swapped in only when complete: a failure halfway (a full disk) leaves the
  previous output as it was and names the folder given, never the staging one.
- **One writer at a time.** While a command writes a folder it holds an ``fcntl.flock`` on a lock file beside
  it, released at exit even on errors (the kernel releases it if the process dies); a second command fails at
  once naming the folder and the process that holds it.
- **Owned files.** A single-file output (``export``'s ``.onnx``, ``compare``'s ``.png``) never replaces one of
  the command's inputs, nor an existing file the command did not write (unless ``--force``), and is written
  atomically (:func:`gctxseg.core.files.atomic_write_bytes`).
- **Plain names.** A name joined under a parent folder (``train --name``) is one plain folder name: it never
  leads out of that parent.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no advisory locks; every other rule still holds
    fcntl = None

__all__ = [
    "MARKER",
    "OutputBusyError",
    "check_output_file",
    "check_output_folder",
    "is_disk_error",
    "output_lock",
    "plain_name",
    "staged_output",
    "staging_beside",
    "written_by",
]

MARKER = ".gctxseg-output.json"  # inside every output folder: which command wrote it
# errors of the disk the output goes to: they stop a command (never "one bad input file, the rest go on")
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG, errno.EIO})


class OutputBusyError(ValueError):
    """Another process is writing the output folder now (exit 2, like any other unusable ``--out``)."""


def is_disk_error(err: BaseException) -> bool:
    """Whether ``err`` is the output disk refusing a write (full, read-only, failing), not a bad input file."""
    return isinstance(err, OSError) and err.errno in DISK_ERRNOS


def plain_name(name: str, flag: str, parent: str | Path) -> str:
    """``name`` if it is one plain folder name under ``parent``; never ``..``, ``/x``, ``a/b`` or empty.

    Raises:
        ValueError: one line naming the flag, where the name would lead and the fix.
    """
    seps = {os.sep, os.altsep} - {None}
    if not name or name in (".", "..") or any(s in name for s in seps) or name != name.strip():
        raise ValueError(f"{flag} {name!r}: not a plain folder name (it would write outside {parent}); "
                         "pass a name without '/', '..' or surrounding spaces, e.g. exp")
    return name


def written_by(folder: str | Path) -> str | None:
    """The command named by ``folder``'s marker (``"predict"``...), or None: no marker, or not one gctxseg wrote."""
    try:
        mark = json.loads((Path(folder) / MARKER).read_text())
        by = mark.get("written by", "") if isinstance(mark, dict) else ""
    except (OSError, ValueError):
        return None
    return by.removeprefix("gctxseg ") if isinstance(by, str) and by.startswith("gctxseg ") else None


def _mark(folder: Path, command: str) -> None:
    from .. import __version__

    (folder / MARKER).write_text(json.dumps({"written by": f"gctxseg {command}", "version": __version__}) + "\n")


def _foreign_entries(out: Path, command: str, entries: Collection[str], adopt_unmarked: bool) -> list[str]:
    held = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    if written_by(out) == command or (adopt_unmarked and MARKER not in held):
        return [name for name in held if name not in entries and name != MARKER]
    return held


def check_output_folder(
    out: str | Path, command: str, entries: Collection[str], *, noun: str, fix: str,
    protected: Sequence[tuple[Path, str]] = (), flag: str = "--out", adopt_unmarked: bool = False,
) -> None:  # fmt: skip
    """Refuse an ``out`` that overlaps a ``protected`` input or holds anything but a previous output of ``command``.

    Args:
        out: the folder the command would write.
        command: the command's name, as the marker stores it (``predict``).
        entries: the names the command writes into ``out`` (a previous output holds only these and the marker).
        noun: what the command writes, in messages (``predictions``).
        fix: the advice ending each message (``pass a new folder, e.g. --out x``).
        protected: ``(folder, what)`` of the inputs never to write into (``(src, "the source folder")``).
        flag: the flag that named ``out``.
        adopt_unmarked: take a folder without a marker holding only ``entries`` as the command's own (a folder
            gctxseg owns by its place: the ``eval/`` of a run folder that gctxseg 0.1.0 builds wrote before
            output folders were marked, which ``gctxseg report`` rewrites and has no ``--out`` to move).

    Raises:
        ValueError: one line naming the folder, what is wrong and ``fix``.
    """
    out = Path(out)
    dst = out.resolve()
    for folder, what in protected:
        if dst.is_relative_to(folder.resolve()):
            raise ValueError(f"{flag} {out}: inside {what} {folder}, whose files would be mixed with the {noun}; {fix}")
    for folder, what in protected:
        for entry in sorted(entries):
            if dst / entry == folder.resolve():
                raise ValueError(f"{flag} {out}: its {entry}/ is {folder}, {what}, which {noun} would overwrite; {fix}")
    for folder, what in protected:
        if folder.resolve().is_relative_to(dst):
            raise ValueError(f"{flag} {out}: holds {what} {folder}, which {noun} would overwrite; {fix}")
    if out.is_symlink() or (out.exists() and not out.is_dir()):
        raise ValueError(f"{flag} {out}: {'a link' if out.is_symlink() else 'a file'}, not a folder; {fix}")
    foreign = _foreign_entries(out, command, entries, adopt_unmarked)
    if foreign and all(name in entries for name in foreign):
        raise ValueError(f"{flag} {out}: holds {', '.join(foreign)} named like {command}'s output but no {MARKER} "
                         f"(written by hand or by an older gctxseg); {fix}, or empty it")
    if foreign:
        raise ValueError(f"{flag} {out}: already holds {len(foreign)} file(s) {command} did not write (e.g. "
                         f"{foreign[0]}); {fix}, or empty it")


@contextmanager
def output_lock(folder: str | Path, command: str) -> Iterator[Path]:
    """Hold the lock of ``folder`` (the file ``.NAME.lock`` beside it, holding this process's id) while writing it.

    Raises:
        OutputBusyError: another process holds it (one line naming the folder and that process).
    """
    folder = Path(folder)
    lock_path = folder.parent / f".{folder.name}.lock"
    if fcntl is None:
        yield lock_path
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputBusyError(f"{folder}: being written by {holder} now (lock {lock_path}); wait until it "
                                  "ends, or write to another folder") from None
        # the last holder unlinks the file as it leaves: locking that unlinked file would lock nothing
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(lock_path))
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"process {os.getpid()} (gctxseg {command})".encode())
        yield lock_path
    finally:
        lock_path.unlink(missing_ok=True)
        os.close(fd)


@contextmanager
def staged_output(
    out: str | Path, command: str, entries: Collection[str], *, noun: str, fix: str,
    protected: Sequence[tuple[Path, str]] = (), flag: str = "--out", adopt_unmarked: bool = False,
) -> Iterator[Path]:  # fmt: skip
    """Lock ``out``, check it (:func:`check_output_folder`), yield a marked staging folder beside it to write
    into, and swap it in for ``out`` when the block ends without an error; on any error the staging folder is
    removed and ``out`` is as it was. A disk error names ``out``, not the staging folder.

    Raises:
        ValueError: ``out`` is not the command's to write (:func:`check_output_folder`), or is locked.
        OSError: the disk refused a write (``filename`` is ``out``).
    """
    out = Path(out)
    checks = dict(noun=noun, fix=fix, protected=protected, flag=flag, adopt_unmarked=adopt_unmarked)
    check_output_folder(out, command, entries, **checks)
    with output_lock(out, command):
        check_output_folder(out, command, entries, **checks)  # again: it may have changed while unlocked
        previous = sorted(p.name for p in out.iterdir() if p.name != MARKER) if out.is_dir() else []
        if previous:
            print(f"{out}: holds a previous {command} output ({', '.join(previous)}); it is replaced once the new "
                  "one is complete", file=sys.stderr)
        with staging_beside(out, command) as staging:
            yield staging
            check_output_folder(out, command, entries, **checks)  # nothing foreign arrived meanwhile


@contextmanager
def staging_beside(out: str | Path, command: str) -> Iterator[Path]:
    """A marked hidden folder of a new, unique name beside ``out`` (``.NAME.XXXX.partial``: never a folder of the
    user's), put in ``out``'s place when the block ends without an error, removed on any error (``out`` then is
    as it was). An existing ``out`` is replaced whole: check it is the command's to replace first.

    Raises:
        OSError: the disk refused a write in the staging folder: ``filename`` is ``out``, not the staging folder.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".partial"))
    try:
        _mark(staging, command)
        yield staging
        _swap_in(staging, out)
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        if err.filename is not None and not Path(err.filename).is_relative_to(staging):
            raise  # about an input, not the output
        raise OSError(err.errno, err.strerror or str(err), str(out)) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _swap_in(staging: Path, out: Path) -> None:
    """Put the complete ``staging`` in ``out``'s place; a previous output is moved aside first, then removed."""
    if not out.exists():
        os.replace(staging, out)
        return
    aside = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".old"))
    os.replace(out, aside)  # a rename onto the empty folder just made
    os.replace(staging, out)
    shutil.rmtree(aside, ignore_errors=True)


def check_output_file(
    out: str | Path, command: str, *, inputs: Sequence[str | Path], suffix: str,
    is_own: Callable[[Path], bool], force: bool = False, flag: str = "--out",
) -> None:  # fmt: skip
    """Refuse a single-file output that is one of ``inputs``, or an existing file ``command`` did not write.

    An existing file is replaced only when it has ``suffix`` and ``is_own`` recognises it as an earlier output
    of ``command`` (an ONNX model with gctxseg's metadata, a PNG gctxseg drew), or with ``force``; an input never.

    Raises:
        ValueError: one line naming the file and the fix.
    """
    out = Path(out)
    fix = f"pass a new file, e.g. {flag} {out.with_name(out.stem + '_new' + suffix)}"
    if any(out.resolve() == Path(p).resolve() for p in inputs):
        raise ValueError(f"{flag} {out}: is an input of {command}, which it would overwrite; {fix}")
    if out.is_dir() or out.is_symlink():
        raise ValueError(f"{flag} {out}: {'a folder' if out.is_dir() else 'a link'}, not a file; {fix}")
    if out.exists() and not force:
        if out.suffix.lower() != suffix:
            raise ValueError(f"{flag} {out}: an existing {out.suffix or 'suffix-less'} file, not a {suffix} that "
                             f"{command} wrote; {fix}")
        if not is_own(out):
            raise ValueError(f"{flag} {out}: an existing file {command} did not write; {fix}, or pass --force to "
                             "replace it")
