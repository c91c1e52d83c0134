"""Several `kedro run` command lines in one Python process, each in its own project folder.

    python tests/kedro_runs.py results.json < commands.json

reads a JSON list of ``[project folder, [arguments after "kedro run"]]`` and writes to
``results.json`` a JSON list of ``{"returncode": int, "output": str}`` (stdout, stderr
and any traceback together), one per command, in order.  Each command goes through
Kedro's command line with the project's folder as the working directory, as ``python -m
kedro run`` started there would.

The command-line tests of bad input use it: each of their commands is refused during
start-up, and start-up is mostly importing torch and timm (about 8 s of a process), so
the commands share one process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback
from pathlib import Path

from kedro.framework.cli.cli import KedroCLI


def run(project: str, args: list[str]) -> dict[str, int | str]:
    os.chdir(project)
    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            KedroCLI(Path(project)).main(args=["run", *args], prog_name="kedro")
            code = 0
        except SystemExit as exc:  # click ends every command with one
            code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        except Exception:  # what `python -m kedro run` would print and exit 1 with
            traceback.print_exc()
            code = 1
    return {"returncode": code, "output": output.getvalue()}


if __name__ == "__main__":
    results = Path(sys.argv[1]).resolve()  # before the first command changes directory
    commands = json.load(sys.stdin)
    results.write_text(json.dumps([run(project, args) for project, args in commands]))
