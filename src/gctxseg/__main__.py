"""The ``gctxseg`` command: ``python -m gctxseg``, ``torchrun -m gctxseg train ...`` and the console script."""

import atexit
import os
import sys
from typing import NoReturn

_exit_code = 1  # the process's exit code where the command raised instead of returning one (a traceback)


def _end_process() -> None:
    """The last exit handler: the console flushed, the process ends without the interpreter's teardown."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (``| head``) or stream: nothing more can reach it
            pass
    os._exit(_exit_code)


def command_line() -> NoReturn:
    """Run :func:`gctxseg.cli.main` on ``sys.argv`` and end the process with its exit code.

    ``_end_process`` is registered before torch and the other libraries are imported, so it is the exit handler that
    runs last: theirs (logging, multiprocessing's children, temporary folders, torch.distributed's process group)
    run first, as at any exit. What it skips is Python's teardown of every imported module and object, which after
    importing torch, torchvision, monai and timm takes 0.6-1.7 s (docs/time-budget.md): seconds of every command's
    wall time, a time budget's included, spent after its last file is written. gctxseg closes and renames each file
    it writes as it writes it, so none waits for that teardown."""
    global _exit_code
    atexit.register(_end_process)
    from .cli import main

    try:
        _exit_code = main()
    except SystemExit as stop:  # argparse's --help (0) and usage errors (2): Python prints a message code first
        _exit_code = 0 if stop.code is None else stop.code if isinstance(stop.code, int) else 1
        raise
    sys.exit(_exit_code)


if __name__ == "__main__":
    command_line()
