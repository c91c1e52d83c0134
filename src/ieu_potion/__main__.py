"""``python -m ieu_potion`` (and the ``ieu-potion`` script of the installed package): the
project's ``kedro run``, started from the project folder (or with ``--conf-source``)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from kedro.framework.cli.utils import find_run_command
from kedro.framework.project import configure_project


def main(*args: Any, **kwargs: Any) -> Any:
    package = Path(__file__).parent.name
    configure_project(package)
    # click exits when it is done, except in an interactive session
    kwargs.setdefault("standalone_mode", not hasattr(sys, "ps1"))
    return find_run_command(package)(*args, **kwargs)


if __name__ == "__main__":
    main()
