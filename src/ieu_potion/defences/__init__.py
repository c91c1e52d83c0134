"""Defence algorithms (torch only, no Kedro); importing the package registers the
defences of the baselines pipeline (``registry.DEFENCES``)."""

from ieu_potion.defences import abl, attnblock, ibau, undefended  # noqa: F401  (registers)
