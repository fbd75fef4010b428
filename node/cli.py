"""The ``likes`` command line."""

import sys


def main() -> int:
    """Entry point of the ``likes`` console script."""
    print("likes: nodes are not built yet", file=sys.stderr)
    return 1
