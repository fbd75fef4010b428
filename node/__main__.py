"""``python -m node``: the ``likes`` command, for when the console script is not on PATH."""

from node.cli import main

raise SystemExit(main())
