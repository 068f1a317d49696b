"""Builds the Cython kernel; everything else is plain Python (see pyproject.toml).

The repository's engine/ and server/ install as placecheck_engine and placecheck_server, names
no other distribution claims (the stubs and the client come from placecheck-client,
clients/python). The sdist carries the kernel's .pyx/.pxi sources (MANIFEST.in), not the C file
Cython makes from them.

The kernel is compiled for the building machine's vector units (-march=native: AVX2 / AVX-512
make the scans several times faster), which is right wherever it is built where it runs (make
build, pip install from source). A wheel meant for other machines is built for the baseline
x86-64 instruction set unless PLACECHECK_MARCH names another -march value, e.g.
PLACECHECK_MARCH=x86-64-v3 for AVX2 machines; PLACECHECK_MARCH also overrides the default.
"""
import os
import sys

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

MARCH = os.environ.get("PLACECHECK_MARCH", "x86-64" if "bdist_wheel" in sys.argv else "native")

kernel = Extension(
    "placecheck_engine._fastfilters",
    ["engine/_fastfilters.pyx"],
    include_dirs=[numpy.get_include()],
    # No fused multiply-add: floating-point results are the same whatever -march is.
    extra_compile_args=["-O3", f"-march={MARCH}", "-ffp-contract=off"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(
    packages=["placecheck_engine", "placecheck_engine.rules", "placecheck_server"],
    package_dir={"placecheck_engine": "engine", "placecheck_server": "server"},
    include_package_data=False,  # the wheel gets the compiled kernel, not its .pyx/.pxi sources
    ext_modules=cythonize(
        [kernel],
        include_path=["engine"],
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    ),
)
