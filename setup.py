"""The one compiled part of fuseray: the C call site for cached ``@jit`` calls.

It is optional: where no C compiler or Python headers are found the build skips it and fuseray
runs the same calls in Python (``fuseray.backends.cuda._callsite`` is then missing).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "fuseray.backends.cuda._callsite",
            ["fuseray/backends/cuda/_callsite.c"],
            optional=True,
        )
    ]
)
