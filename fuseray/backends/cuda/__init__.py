"""CUDA backend: fused kernels compiled with NVRTC and run through the CUDA driver API.

Stage: the last one. ``codegen.py`` turns a fusion plan into CUDA C; the runtime layer beneath it
is ``nvrtc.py`` (source to CUBIN), ``cache.py`` (memory and disk kernel cache), ``driver.py``
(init, devices, contexts, modules, launches), ``streams.py`` (current device and stream) and
``memory.py`` (stream-ordered device memory, ``DeviceArray``, host transfers and zero-copy
interop). Importing this package initialises nothing: CUDA is touched on first use only.
"""
