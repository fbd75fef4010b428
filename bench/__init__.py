"""The benchmark harness (``python -m bench``), and what the tests share with it: the launcher of
real clusters (``bench.launch``) and the Redis and MySQL helper (``bench.servers``)."""
