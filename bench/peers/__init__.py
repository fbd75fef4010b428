"""The systems our node is compared with (issue 5), each a standalone aiohttp process:

- ``noop``: the like route with nothing behind it, the ceiling of one Python HTTP process;
- ``redis_queue``: the usual design, one Redis Lua call per like and MySQL written behind a queue;
- ``mysql_upsert``: one MySQL transaction per like.

Run one with ``python -m bench.peers.<name> --port P [...]``; ``bench.compare`` starts them in turn.
This package imports none of them: a package that imported its submodules would make ``python -m``
warn that the module it runs was imported twice.
"""

__all__ = ["mysql_upsert", "noop", "redis_queue"]
