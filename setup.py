"""Builds the Cython kernel; everything else is plain Python (see pyproject.toml)."""
import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

kernel = Extension(
    "engine._fastfilters",
    ["engine/_fastfilters.pyx"],
    include_dirs=[numpy.get_include()],
    extra_compile_args=["-O3"],
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
