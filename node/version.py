"""What version of the package runs: ``likes --version`` and the ``likes_build_info`` metric."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version() -> str:
    """The installed package's version."""
    try:
        return version("likes")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"
