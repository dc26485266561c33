"""CUDA headers included by generated kernels (installed as package data)."""
