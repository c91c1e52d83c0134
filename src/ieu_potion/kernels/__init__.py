"""Hot loops behind one interface.

The rest of the code calls only the functions exported here.  Each has a pure-torch
reference (``reference.py``, the executable specification); the Triton kernels and the
dispatch between the two are their own piece of work (see the kernels issue), so for now
every call runs the reference.
"""

from ieu_potion.kernels.reference import accumulate_importance, dampen, masked_cross_entropy

__all__ = ["accumulate_importance", "dampen", "masked_cross_entropy"]
