"""Defence algorithms (torch only, no Kedro); importing the package registers them
(``registry.DEFENCES``): the baselines pipeline's methods and IEU."""

from ieu_potion.defences import abl, attnblock, ibau, ieu, undefended  # noqa: F401  (registers)
