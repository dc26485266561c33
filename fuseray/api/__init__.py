"""NumPy-named functions that build graph nodes, and ``__array_function__`` dispatch.

Stage: front end. ``NAMESPACE`` maps each public name to its function; ``fuseray/__init__.py``
re-exports it, and ``array_function`` uses it so that ``np.sum(x, axis=0)`` on a fuseray array
returns a lazy fuseray array.
"""

from __future__ import annotations

from . import creation, elementwise, indexing, reductions, shape

NAMESPACE = {
    **elementwise.FUNCTIONS,
    **{alias: elementwise.FUNCTIONS[name] for alias, name in elementwise.ALIASES.items()},
    "where": elementwise.where,
    "clip": elementwise.clip,
    "round": elementwise.round,
    "around": elementwise.round,
    "divmod": elementwise.divmod,
    "astype": elementwise.astype,
    "copy": elementwise.copy,
    **{name: getattr(reductions, name) for name in (
        "sum", "prod", "mean", "var", "std", "max", "min", "amax", "amin", "any", "all",
        "argmax", "argmin")},
    **{name: getattr(shape, name) for name in (
        "reshape", "ravel", "transpose", "swapaxes", "moveaxis", "expand_dims", "squeeze",
        "broadcast_to", "broadcast_arrays", "concatenate", "stack")},
    "broadcast_shapes": shape.broadcast_shapes_,
    **{name: getattr(indexing, name) for name in (
        "take", "nonzero", "put", "place", "putmask", "copyto")},
    **{name: getattr(creation, name) for name in (
        "asarray", "array", "asnumpy", "zeros", "ones", "empty", "full", "zeros_like",
        "ones_like", "empty_like", "full_like", "arange", "linspace", "eye", "identity")},
}


def array_function(func, types, args, kwargs):
    """``ndarray.__array_function__``: NumPy functions we implement stay lazy."""
    impl = NAMESPACE.get(func.__name__)
    if impl is None:
        return NotImplemented
    return impl(*args, **kwargs)
