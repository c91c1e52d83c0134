"""The project's command line, over Kedro's own commands.

- ``kedro run``: Kedro's, except that a user's mistake (a parameter out of range or of the
  wrong type, an unknown name, a data set that is missing or in the wrong layout, a second
  run in a data folder that a live run holds) ends
  with its message and where to look, without a Python traceback. Anything else is a bug
  and still shows one.
- ``kedro ipython``: Kedro's, started with this environment's Python (Kedro's own starts
  the first ``ipython`` on the PATH, which outside an activated virtual environment is
  not the one that has Kedro and this project).
"""

from __future__ import annotations

import os
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run
from kedro.framework.cli.utils import python_call

from ieu_potion.config import ParameterError
from ieu_potion.data.errors import DataLayoutError
from ieu_potion.io import FolderBusyError
from ieu_potion.training.setup import WeightsUnavailableError

# A user's mistake -> where its fix is described.
USER_ERRORS = {
    ParameterError: "docs/parameters.md lists every parameter with its type and range",
    DataLayoutError: "docs/data.md describes each data set's layout and catalog entry",
    FolderBusyError: "docs/scaling.md: concurrent runs need a data_root each",
    WeightsUnavailableError: "docs/parameters.md, model.weights: the weight sources",
}


@click.group(name="ieu-potion")
def cli() -> None:
    """Commands of the ieu-potion project (Kedro's, with friendlier errors)."""


def _run(**options: Any) -> Any:
    try:
        return kedro_run.callback(**options)
    except tuple(USER_ERRORS) as exc:
        hint = next(text for kind, text in USER_ERRORS.items() if isinstance(exc, kind))
        raise click.ClickException(f"{exc}\n({hint})") from None


run = click.Command("run", params=kedro_run.params, callback=_run, help=kedro_run.help)
cli.add_command(run)


@cli.command(context_settings={"ignore_unknown_options": True})
@click.option("--env", "-e", default=None, help="Kedro configuration environment name.")
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def ipython(env: str | None, args: tuple[str, ...]) -> None:
    """IPython with the project's catalog, context, pipelines and session defined."""
    if env:
        os.environ["KEDRO_ENV"] = env
    python_call("IPython", ["--ext", "kedro.ipython", *args])
