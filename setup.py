"""Builds the Cython kernel; everything else is plain Python (see pyproject.toml).

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
    "engine._fastfilters",
    ["engine/_fastfilters.pyx"],
    include_dirs=[numpy.get_include()],
    # No fused multiply-add: floating-point results are the same whatever -march is.
    extra_compile_args=["-O3", f"-march={MARCH}", "-ffp-contract=off"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
)

setup(
    packages=["engine", "engine.rules", "server", "placecheck", "placecheck.v1"],
    package_dir={"placecheck": "clients/python/placecheck"},
    ext_modules=cythonize(
        [kernel],
        include_path=["engine"],
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False},
    ),
)
