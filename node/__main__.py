"""``python -m node``: the ``likes`` command, for when the console script is not on PATH."""

from node.process.cli import main

raise SystemExit(main())
