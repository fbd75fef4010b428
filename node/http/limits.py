"""Rate limits and bearer tokens of the HTTP API: what a request must clear before a handler runs.

**Buckets.** A token bucket of ``rate`` per second holding at most ``burst`` is kept as one float per
key, GCRA's theoretical arrival time (TAT): the moment the bucket would be full again. Taking
``cost`` tokens moves it ``cost / rate`` later; the take is refused, and changes nothing, when that
would put it more than ``burst / rate`` past now. So a check is a dict lookup, a few float
operations and a dict store, cheap enough for every like.

**Memory.** A bucket whose TAT has passed is full, exactly like no bucket at all, so a table forgets
idle keys by keeping two generations: every refill period (``burst / rate``) the current dict becomes
the old one and the old one is dropped. A key untouched for a whole period is dropped only once its
bucket is full, so this is exact. A table also rotates early once its current dict holds
``max_keys`` keys: memory stays under about ``2 * max_keys`` entries per table, and under a flood of
that many distinct keys per period a key may be forgotten early, which errs on the side of
letting a request through (the per-client limit still holds the flooder).

**Clients.** A client is the API token a request presents when ``security.api_tokens`` is set and the
token is valid, and its remote address otherwise: an unverified token never names a bucket, or a
caller could mint a fresh one per request. Tokens are compared as SHA-256 digests with
``hmac.compare_digest``, all of them every time, so timing tells nothing about which matched.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Sequence

from node.errors import InvalidValue, TooManyRequests, Unauthorized

#: Rounding allowance, in seconds: a burst of ``burst`` at one instant must not miss its last token.
_SLACK = 1e-9


class RateLimiter:
    """A table of token buckets keyed by anything hashable; see the module docstring."""

    __slots__ = ("_clock", "_current", "_max_keys", "_old", "_rotate_at", "burst", "interval", "period")

    def __init__(
        self, rate: float, burst: int, max_keys: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate <= 0 or burst < 1 or max_keys < 1:
            raise ValueError("a rate limiter needs rate > 0, burst >= 1 and max_keys >= 1")
        self.burst = burst
        #: Seconds one token takes to come back.
        self.interval = 1.0 / rate
        #: How far past now a bucket's TAT may be: a full bucket's worth of tokens.
        self.period = burst * self.interval
        self._max_keys = max_keys
        self._clock = clock
        self._current: dict[Hashable, float] = {}
        self._old: dict[Hashable, float] = {}
        self._rotate_at = clock() + self.period

    def __len__(self) -> int:
        """Buckets held (both generations; a key in both counts twice)."""
        return len(self._current) + len(self._old)

    def _now(self) -> float:
        now = self._clock()
        if now >= self._rotate_at or len(self._current) >= self._max_keys:
            # Only buckets untouched for a whole period are dropped, and those are full.
            self._old, self._current = self._current, {}
            self._rotate_at = now + self.period
        return now

    def take(self, key: Hashable, cost: int = 1) -> float:
        """Take ``cost`` tokens from ``key``'s bucket: 0.0 if done, else the seconds to wait (and the
        bucket is unchanged)."""
        now = self._now()
        current = self._current
        tat = current.get(key)
        if tat is None:
            tat = self._old.get(key, now)
        if tat < now:
            tat = now
        later = tat + cost * self.interval
        wait = later - now - self.period
        if wait > _SLACK:
            return wait
        current[key] = later
        return 0.0

    def take_all(self, costs: Counter[Hashable]) -> float:
        """Take from several buckets at once, all or none: 0.0 if done, else the longest wait."""
        now = self._now()
        current, interval = self._current, self.interval
        get, get_old = current.get, self._old.get
        horizon = now + self.period  # how far a bucket's TAT may go
        latest = horizon
        planned: dict[Hashable, float] = {}
        for key, cost in costs.items():  # a batch's thousand users: kept to a few operations each
            tat = get(key)
            if tat is None:
                tat = get_old(key, now)
            later = (tat if tat > now else now) + cost * interval
            if later > latest:
                latest = later
            planned[key] = later
        if latest - horizon > _SLACK:
            return latest - horizon
        current.update(planned)
        return 0.0


class ApiGuard:
    """The per-client and per-user buckets and the API tokens of one node (``None``: disabled)."""

    def __init__(
        self,
        *,
        client_rate: int,
        client_burst: int,
        user_rate: int,
        user_burst: int,
        max_keys: int,
        tokens: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clients = RateLimiter(client_rate, client_burst, max_keys, clock) if client_rate else None
        self.users = RateLimiter(user_rate, user_burst, max_keys, clock) if user_rate else None
        self._digests = tuple(hashlib.sha256(token.encode()).digest() for token in tokens)

    @property
    def tokens_required(self) -> bool:
        """Whether writes and admin routes need a bearer token."""
        return bool(self._digests)

    def authenticate(self, authorization: str | None) -> int | None:
        """The index of the configured token an ``Authorization: Bearer`` header carries, or None."""
        if authorization is None or not self._digests:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        digest = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        found = None
        for i, known in enumerate(self._digests):  # no early exit: the time is the same for every token
            if hmac.compare_digest(known, digest):
                found = i
        return found

    def require_token(self, authorization: str | None, token: int | None) -> None:
        """Raise ``Unauthorized`` unless ``token`` (from ``authenticate``) is a valid one."""
        if token is None:
            if authorization is None:
                raise Unauthorized("this request needs an 'Authorization: Bearer <token>' header")
            raise Unauthorized("the bearer token is not valid", invalid_token=True)

    def limit_client(self, token: int | None, remote: str | None) -> None:
        """Charge one request to the client (its token, else its address); 429 when over."""
        if self.clients is None:
            return
        key: Hashable = remote if token is None else ("token", token)
        wait = self.clients.take(key)
        if wait:
            raise TooManyRequests(
                f"too many requests from this client (limit {self.clients.burst} at once, then "
                f"{1 / self.clients.interval:g}/s)",
                wait,
            )

    def limit_user(self, user: int) -> None:
        """Charge one like or unlike to ``user``; 429 when over (the hot path: no allocation)."""
        if self.users is not None:
            wait = self.users.take(user)
            if wait:
                raise self._user_limited(wait)

    def limit_users(self, users: Iterable[int]) -> None:
        """Charge one write to each user (repeats add up), all or none; 429 when any is over, 422 when
        one request alone holds more writes of one user than a full bucket (it could never pass)."""
        if self.users is None:
            return
        costs: Counter[Hashable] = Counter(users)
        if not costs:
            return
        most = max(costs.values())
        if most > self.users.burst:
            user = next(user for user, cost in costs.items() if cost == most)
            raise InvalidValue(
                f"user {user}: {most} writes in one request exceed the per-user burst (api.user_burst) of "
                f"{self.users.burst}"
            )
        wait = self.users.take_all(costs)
        if wait:
            raise self._user_limited(wait)

    def _user_limited(self, wait: float) -> TooManyRequests:
        assert self.users is not None
        return TooManyRequests(
            f"too many likes and unlikes by one user (limit {self.users.burst} at once, then "
            f"{1 / self.users.interval:g}/s)",
            wait,
        )
