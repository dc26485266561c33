"""Executors of fusion plans: the NumPy interpreter (the reference), numba loops, and CUDA.

Stage: backends, the last stage. Each backend exposes ``run(plan, env)``: ``env`` maps buffer
leaves, jit parameters and already-materialised nodes to values, and ``run`` adds a value for
every node the plan stores.
"""
