"""Defence algorithms (torch only, no Kedro); importing the package registers them
(``registry.DEFENCES``): the baselines pipeline's methods and IEU."""

# registered in this order (``none`` first): the order parameter docs and errors list them
from ieu_potion.defences import undefended  # noqa: F401, I001  (registers)
from ieu_potion.defences import abl, attnblock, ibau, ieu  # noqa: F401  (registers)
