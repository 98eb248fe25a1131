"""Package discovery (the rest of the configuration is in pyproject.toml).

Every package under ``lightning_split/`` is found by ``find_packages``; the top-level ``callbacks/`` folder
and any subpackage of it ship as ``lightning_split.callbacks`` (``package-dir`` in pyproject.toml).
"""

from setuptools import find_packages, setup

setup(
    packages=[
        *find_packages(include=["lightning_split", "lightning_split.*"]),
        *(f"lightning_split.{name}" for name in find_packages(include=["callbacks", "callbacks.*"])),
    ]
)
