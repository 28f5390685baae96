"""The ``gctxseg`` command's process: its exit code, its output and the libraries' exit handlers survive the
skipped interpreter teardown (``gctxseg/__main__.py``)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

# a command that, as a library imported during it would, registers an exit handler and leaves output unflushed; an
# object whose finalizer would print at the interpreter's teardown tells whether the teardown ran
_COMMAND = textwrap.dedent("""
    import atexit, pathlib, sys
    import gctxseg.__main__ as entry
    import gctxseg.cli as cli

    class Torn:
        def __del__(self):
            sys.stderr.write("torn down")

    kept = Torn()

    def main():
        atexit.register(lambda: pathlib.Path(sys.argv[1]).write_text("ran"))
        print("said", end="")
        return int(sys.argv[2])

    cli.main = main
    entry.command_line()
""")


def _run(tmp_path: Path, code: int) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _COMMAND, str(tmp_path / "handler"), str(code)],
                          capture_output=True, text=True, timeout=300)


def test_the_exit_code_output_and_exit_handlers_remain_without_the_teardown(tmp_path):
    done = _run(tmp_path, 3)
    assert done.returncode == 3, done.stderr
    assert done.stdout == "said"  # flushed though the pipe buffers it
    assert (tmp_path / "handler").read_text() == "ran"  # registered after the command's own: ran before it
    assert "torn down" not in done.stderr  # the teardown was skipped
    assert _run(tmp_path, 0).returncode == 0


def test_argparse_exits_keep_their_codes():
    help_ = subprocess.run([sys.executable, "-m", "gctxseg", "--help"], capture_output=True, text=True, timeout=300)
    assert help_.returncode == 0 and "usage: gctxseg" in help_.stdout
    wrong = subprocess.run([sys.executable, "-m", "gctxseg", "train", "--no-such-flag"], capture_output=True,
                           text=True, timeout=300)
    assert wrong.returncode == 2 and "unrecognized arguments: --no-such-flag" in wrong.stderr
