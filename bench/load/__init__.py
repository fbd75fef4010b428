"""Load generation for like throughput and latency: separate processes, keep-alive HTTP, HDR histograms.

Two modes, both sending requests of one shape (``LoadSpec.shape``) spread over a list of base URLs:
``like`` (``PUT /v1/items/{type}/{id}/likes/{user}``, the default), ``zipf`` (likes of Zipf-popular
items and unlikes of earlier likes), ``counts`` (``POST /v1/counts``) or ``batch`` (``POST /v1/batch``):

- **closed loop** (``mode="closed"``): ``connections`` requests are always outstanding; each answer
  sends the next one. This finds the maximum rate a system sustains; latency is answer time minus
  send time, so it includes the queueing that concurrency causes.
- **open loop** (``mode="open"``): requests are scheduled at a fixed offered ``rate`` whatever the
  answers do, and latency runs from each request's *intended* send time, not from when it was
  actually sent. A server (or client) stall therefore shows up in the percentiles instead of
  silently pausing the clock ("coordinated omission").

Each worker is its own process (``spawn``: no copy of the caller's loop or state), optionally pinned
to given CPUs, running uvloop, with its keep-alive connections opened before the clock starts. The
client is ``raw`` by default: a minimal HTTP/1.1 client (one request at a time per connection, no
pipelining, curl's headers) because ``aiohttp``'s client costs more CPU per request than the no-op
server it loads, so one load core could not saturate one server core and every system would look as
fast as the client.
``client="aiohttp"`` uses an ``aiohttp`` session instead, for cross-checks.

Latencies go into an ``HdrHistogram`` (microseconds, 3 significant digits) per worker; the parent
merges them. A warm-up period runs the same load but records nothing. Every worker is bounded in
time (``warmup + seconds``, then at most ``timeout`` for the last answers) and in count
(``max_requests`` over all workers). Users are distinct per request (``user_base + worker *
USER_STRIDE + i``), so every like is new work for the server; items cycle over ``items`` ids.

An open-loop load that falls ``timeout`` seconds behind its schedule stops sending: the requests
left count as errors (``NOT_SENT``), as do those still unanswered when it ends (``ABANDONED``).

Each worker also tallies, per item, the net count change its answers acknowledged (``changed``) and
the write operations whose request failed: what the servers must hold afterwards, to the operation.

Errors are counted by kind: ``http <status>`` or the exception's class name. A 200 whose body does
not say ``changed: true`` counts as ``unchanged``: with distinct users it means the server did not
do the work it was asked to.

Modules: ``spec`` (what a load offers, its bounds), ``plan`` (what each request is), ``channels``
(the connections), ``worker`` (one process's share) with ``dispatch`` (the raw client's open loop),
and ``parent`` (starting the workers, merging their figures).
"""

from __future__ import annotations

from bench.load.parent import merge, pinning_possible, run_load
from bench.load.plan import ZipfPlan, populated_count
from bench.load.spec import NO_CONNECTION, UNLIKE_LAG, LoadSpec

__all__ = [
    "NO_CONNECTION",
    "UNLIKE_LAG",
    "LoadSpec",
    "ZipfPlan",
    "merge",
    "pinning_possible",
    "populated_count",
    "run_load",
]
