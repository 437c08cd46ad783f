"""Build script: declares the compiled extensions (the Cython backend).

Everything else about the package lives in pyproject.toml.
"""

from setuptools import setup

# The Cython backend's extension modules are declared here (see fastloss/backends/cython).
ext_modules: list = []

setup(ext_modules=ext_modules)
