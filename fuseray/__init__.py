"""fuseray: NumPy-style array code, recorded lazily, fused into few kernels, run on the GPU.

This module is the public surface only: it re-exports the front end and the entry points.
"""

from numpy import e, inf, nan, newaxis, pi  # noqa: F401
from numpy.exceptions import AxisError  # noqa: F401

from . import config, cuda  # noqa: F401
from .api import NAMESPACE as _NAMESPACE
from .api import elementwise as _elementwise
from .array import ndarray  # noqa: F401
from .backends.cuda.nvrtc import CompileError  # noqa: F401
from .dtypes import SUPPORTED as _SUPPORTED
from .explain import explain, show_graph  # noqa: F401
from .jit import jit  # noqa: F401
from .runtime import compute, get_array_module, synchronize  # noqa: F401

globals().update(_NAMESPACE)
special = type("special", (), {k: staticmethod(v)
                               for k, v in _elementwise.SPECIAL_FUNCTIONS.items()})()

for _dt in _SUPPORTED:
    globals()[_dt.name] = _dt.type
bool_ = globals().pop("bool")

__version__ = "0.1.0"
