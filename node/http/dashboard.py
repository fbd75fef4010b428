"""The operator's dashboard: ``GET /dashboard`` (a page) and ``GET /v1/dashboard`` (its data).

A browser can reach only the node that served it the page, so that node gathers the cluster for it:
``GET /v1/dashboard`` asks every node of the cluster file for its ``GET /v1/cluster`` concurrently
(itself in-process), each with a short timeout; a node that does not answer in time, or answers
anything but a JSON object, is reported as down, never as an error of the dashboard. A node that
answers while its write-ahead log refuses writes is up but not ready, with the log's reason. One
gathering serves every request for ``REFRESH_INTERVAL`` seconds, so several open dashboards cost the
peers one request each per interval; nothing is gathered while nobody watches.

Each gathering is also a sample: the node keeps the last ``HISTORY_SAMPLES`` for the charts, and rates
(likes, gossip bytes) are the change of a node's running totals between two consecutive samples.

**Convergence lag.** Every node reports a fingerprint of its whole state (``LikeStore.fingerprint``);
two nodes holding the same items in the same states report the same one. The cluster *agrees* when
every node that answered reports the same fingerprint. The convergence lag is how long the answering
nodes have been seen disagreeing: 0 when they agree now, else the time since a sample last saw them
agree. Samples further apart than ``MAX_SAMPLE_GAP`` (nobody watched) start a new watch: agreement
before it is unknown, so the lag then counts from the first sample of the watch. The lag is measured at
the sampling rate (about a second), and under a steady stream of writes to several nodes it is the time
since the last sample that caught every node in the same state; with deltas pushed every
``gossip.delta_interval_ms``, a lightly loaded cluster agrees at almost every sample, and a lag that
keeps growing means a node is not catching up (a partition, a paused node, a sink of repairs).
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from importlib import resources
from typing import Any

import aiohttp
import orjson
from aiohttp import web

#: Seconds a node's ``GET /v1/cluster`` may take before the dashboard shows it as down.
FETCH_TIMEOUT = 0.5
#: A gathering younger than this (seconds) is served again instead of asking every node anew.
REFRESH_INTERVAL = 0.5
#: Samples kept for the charts: three minutes at the page's one poll a second.
HISTORY_SAMPLES = 180
#: Seconds between two samples past which agreement is no longer known to have lasted between them.
MAX_SAMPLE_GAP = 5.0
#: How often the page asks for new data, in milliseconds (told to the page in every answer).
POLL_MS = 1000

LocalStatus = Callable[[], Awaitable[Mapping[str, Any]]]


class ConvergenceWatch:
    """How long the nodes have been seen disagreeing (the module docstring defines it)."""

    def __init__(self, max_gap: float = MAX_SAMPLE_GAP) -> None:
        self._max_gap = max_gap
        self._last_agreed: float | None = None
        self._last_sample: float | None = None

    def observe(self, agree: bool, now: float) -> float:
        """Record a sample taken at ``now`` (monotonic seconds); the lag in seconds."""
        if self._last_sample is None or now - self._last_sample > self._max_gap:
            self._last_agreed = now  # a new watch: what happened before it is unknown
        self._last_sample = now
        if agree or self._last_agreed is None:
            self._last_agreed = now
        return now - self._last_agreed


class Dashboard:
    """Gathers every node's status, keeps the samples, and answers ``GET /v1/dashboard``."""

    def __init__(
        self,
        me: str,
        local_status: LocalStatus,
        member_urls: Mapping[str, str],
        *,
        fetch_timeout: float = FETCH_TIMEOUT,
        refresh_interval: float = REFRESH_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.me = me
        self._local_status = local_status
        #: name -> base HTTP URL of every node of the cluster file (this one is asked in-process).
        self.member_urls = dict(member_urls)
        self.member_urls.setdefault(me, "")
        self.fetch_timeout = fetch_timeout
        self.refresh_interval = refresh_interval
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._lock = asyncio.Lock()
        self._latest: dict[str, Any] | None = None
        self._latest_at = 0.0
        #: name -> (monotonic time, local likes, gossip bytes) of the node's last sample that answered.
        self._previous: dict[str, tuple[float, int, int]] = {}
        self._convergence = ConvergenceWatch()
        self.history: deque[dict[str, Any]] = deque(maxlen=HISTORY_SAMPLES)

    async def snapshot(self) -> dict[str, Any]:
        """The latest gathering, made anew if older than ``refresh_interval``."""
        async with self._lock:
            if self._latest is None or self._clock() - self._latest_at >= self.refresh_interval:
                self._latest = await self._gather()
                self._latest_at = self._clock()
            return self._latest

    async def close(self) -> None:
        """Close the HTTP client (at application cleanup)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- gathering --------------------------------------------------------------------------------

    async def _gather(self) -> dict[str, Any]:
        """One sample: every node asked at once, so their fingerprints are as close in time as can be."""
        names = sorted(self.member_urls)
        answers = await asyncio.gather(*(self._status_of(name) for name in names))
        now, wall = self._clock(), time.time()
        statuses = dict(zip(names, answers, strict=True))
        fingerprints = {n: s["fingerprint"] for n, (s, _) in statuses.items() if s is not None}
        majority = _majority(fingerprints, self.me)
        agree = len(set(fingerprints.values())) == 1
        lag = self._convergence.observe(agree, now)
        nodes = [self._row(name, *statuses[name], majority, now) for name in names]
        mine = statuses[self.me][0] or {}
        members = [
            {"name": str(m.get("name")), "state": str(m.get("state"))}
            for m in mine.get("members", ())
            if isinstance(m, dict)
        ]
        self.history.append(
            {
                "t": round(wall, 3),
                "agree": agree,
                "convergence_lag_s": round(lag, 3),
                "nodes": {
                    row["name"]: {
                        "up": row["up"],
                        "like_rate": row["like_rate"],
                        "gossip_bytes_rate": row["gossip_bytes_rate"],
                        "wal_fsync_p50_ms": row["wal_fsync_p50_ms"],
                        "checkpoint_lag_s": _seconds(row["checkpoint_lag_ms"]),
                    }
                    for row in nodes
                },
            }
        )
        return {
            "node": self.me,
            "time": round(wall, 3),
            "poll_ms": POLL_MS,
            "members": members,
            "alive": sum(1 for m in members if m["state"] == "alive"),
            "agree": agree,
            "convergence_lag_s": round(lag, 3),
            "nodes": nodes,
            "history": list(self.history),
        }

    async def _status_of(self, name: str) -> tuple[dict[str, Any] | None, str | None]:
        """(``GET /v1/cluster`` of node ``name``, None) or (None, why it is shown as down)."""
        if name == self.me:
            return dict(await self._local_status()), None
        url = self.member_urls[name].rstrip("/") + "/v1/cluster"
        if self._session is None:
            self._session = aiohttp.ClientSession(trust_env=False)
        try:
            timeout = aiohttp.ClientTimeout(total=self.fetch_timeout)
            async with self._session.get(url, timeout=timeout, allow_redirects=False) as response:
                if response.status != 200:
                    return None, f"answered HTTP {response.status}"
                body = await response.read()
            status = orjson.loads(body)
        except TimeoutError:
            return None, f"no answer within {self.fetch_timeout * 1000:.0f} ms"
        except aiohttp.ClientError as exc:
            return None, f"unreachable: {type(exc).__name__}"
        except orjson.JSONDecodeError:
            return None, "answered something other than JSON"
        if not isinstance(status, dict) or not isinstance(status.get("fingerprint"), str):
            return None, "answered something other than a cluster status"
        return status, None

    def _row(
        self, name: str, status: dict[str, Any] | None, error: str | None, majority: str | None, now: float
    ) -> dict[str, Any]:
        """What the page shows of one node; numbers it could not read are null."""
        url = self.member_urls[name] or _text(_get(status, "node", "url"))
        if status is None:
            self._previous.pop(name, None)
            return {"name": name, "url": url, "up": False, "error": error, **dict.fromkeys(_NUMBERS)}
        likes = _int(_get(status, "writes", "like"))  # local likes: the node's own rate
        sent = _int(_get(status, "gossip", "bytes_sent"))
        received = _int(_get(status, "gossip", "bytes_received"))
        traffic = None if sent is None or received is None else sent + received
        like_rate = bytes_rate = None
        previous = self._previous.get(name)
        if previous is not None and now > previous[0]:
            like_rate = _rate(previous[1], likes, now - previous[0])
            bytes_rate = _rate(previous[2], traffic, now - previous[0])
        self._previous[name] = (now, likes or 0, traffic or 0)
        sinks = _get(status, "checkpoint")
        checkpoint = {
            str(sink): {
                "lag_ms": _int(lane.get("lag_ms")),
                "pending_items": _int(lane.get("pending_items")),
                "errors": _int(lane.get("errors")),
                "down": bool(lane.get("down")),
            }
            for sink, lane in (sinks.items() if isinstance(sinks, dict) else ())
            if isinstance(lane, dict)
        }
        lags = [lane["lag_ms"] for lane in checkpoint.values() if lane["lag_ms"] is not None]
        members = status.get("members")
        failure = _get(status, "wal", "failure")
        return {
            "name": name,
            "url": url,
            "up": True,
            "error": None,
            "members": [
                {"name": _text(m.get("name")), "state": _text(m.get("state"))}
                for m in (members if isinstance(members, list) else ())
                if isinstance(m, dict)
            ],
            "items": _int(status.get("items")),
            "fingerprint": status["fingerprint"],
            "agrees": status["fingerprint"] == majority,
            "likes_held": _int(status.get("likes")),
            "local_likes": likes,
            "like_rate": like_rate,
            "gossip_bytes_sent": sent,
            "gossip_bytes_received": received,
            "gossip_bytes_rate": bytes_rate,
            "deltas_sent": _int(_get(status, "gossip", "deltas_sent")),
            "deltas_merged": _int(_get(status, "gossip", "deltas_merged")),
            "anti_entropy_rounds": _int(_get(status, "gossip", "anti_entropy_rounds")),
            "anti_entropy_keys_repaired": _int(_get(status, "gossip", "anti_entropy_keys_repaired")),
            "wal_records": _int(_get(status, "wal", "records")),
            "wal_fsync_p50_ms": _number(_get(status, "wal", "fsync_p50_ms")),
            # Ready: it takes writes. A node whose log failed still answers (reads), so it is up but
            # not ready, with the log's reason; a peer without these fields shows as ready.
            "ready": failure is None,
            "wal_failure": None if failure is None else str(failure),
            "wal_failed_since": _number(_get(status, "wal", "failed_since")),
            "wal_failures": _int(_get(status, "wal", "failures")),
            "wal_recoveries": _int(_get(status, "wal", "recoveries")),
            "checkpoint_lag_ms": max(lags, default=None),
            "checkpoint": checkpoint,
        }


#: The fields of a node row that are null while the node is down.
_NUMBERS = (
    "members",
    "items",
    "fingerprint",
    "agrees",
    "likes_held",
    "local_likes",
    "like_rate",
    "gossip_bytes_sent",
    "gossip_bytes_received",
    "gossip_bytes_rate",
    "deltas_sent",
    "deltas_merged",
    "anti_entropy_rounds",
    "anti_entropy_keys_repaired",
    "wal_records",
    "wal_fsync_p50_ms",
    "ready",
    "wal_failure",
    "wal_failed_since",
    "wal_failures",
    "wal_recoveries",
    "checkpoint_lag_ms",
    "checkpoint",
)


def _majority(fingerprints: Mapping[str, str], me: str) -> str | None:
    """The fingerprint most nodes report (this node's among equals), or None if nobody answered."""
    if not fingerprints:
        return None
    tally = Counter(fingerprints.values()).most_common()
    best = [fingerprint for fingerprint, count in tally if count == tally[0][1]]
    return fingerprints[me] if fingerprints.get(me) in best else best[0]


def _rate(before: int, after: int | None, seconds: float) -> float | None:
    """Per second; a total that went down (the node restarted) counts from zero."""
    if after is None:
        return None
    return round((after - before if after >= before else after) / seconds, 3)


def _get(status: Mapping[str, Any] | None, *path: str) -> object:
    """The value at ``path`` in nested objects, None if a step is missing: peers may run another
    version, and a field they lack must not break the dashboard."""
    value: object = status
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value


def _int(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _seconds(milliseconds: int | None) -> float | None:
    return None if milliseconds is None else milliseconds / 1000


# -- the page and its routes ------------------------------------------------------------------------


def _page() -> str:
    """The page with its stylesheet and script inlined: one request, no build step, nothing remote."""
    web_dir = resources.files("node.http") / "web"
    html = (web_dir / "dashboard.html").read_text(encoding="utf-8")
    css = (web_dir / "dashboard.css").read_text(encoding="utf-8")
    script = (web_dir / "dashboard.js").read_text(encoding="utf-8")
    return html.replace("/*DASHBOARD_CSS*/", css).replace("/*DASHBOARD_JS*/", script)


DASHBOARD = web.AppKey("dashboard", Dashboard)
PAGE = _page()
routes = web.RouteTableDef()


@routes.get("/dashboard")
async def dashboard_page(request: web.Request) -> web.Response:
    """The operator's page; it polls ``/v1/dashboard``."""
    return web.Response(text=PAGE, content_type="text/html")


@routes.get("/v1/dashboard")
async def dashboard_data(request: web.Request) -> web.Response:
    """Every node's status, the cluster's agreement and convergence lag, and the samples for charts."""
    body = orjson.dumps(await request.app[DASHBOARD].snapshot())
    return web.Response(body=body, content_type="application/json")


def install(
    app: web.Application, me: str, local_status: LocalStatus, member_urls: Mapping[str, str]
) -> None:
    """Serve the dashboard from ``app``: node ``me``, whose own status ``local_status`` gives, in a
    cluster whose nodes serve HTTP at ``member_urls`` (name -> base URL)."""
    app[DASHBOARD] = Dashboard(me, local_status, member_urls)
    app.add_routes(routes)

    async def close(app: web.Application) -> None:
        await app[DASHBOARD].close()

    app.on_cleanup.append(close)
