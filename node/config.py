"""The one home of configuration: ``cluster.yaml`` parsed into frozen dataclasses.

Every key, its unit and its default is documented beside its field below, except the gossip
section's: its timings and sizes are declared once, where gossip uses them (``gossip.config``'s
``GossipSettings``, each field with its key here, unit, range and trade-off), and read from those
declarations. Reading is strict: an unknown key, a missing field, a wrong type, a value out of
range, a duplicate node name or a port used twice on one host raises ``ConfigError`` naming the key
(``nodes[1].http_port``), because a typo that silently falls back to a default is the hardest
misconfiguration to find in a cluster.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from gossip.config import GossipSettings, file_keys
from gossip.security import Keyring, KeyringError
from node.errors import ConfigError

#: The secret of the shipped cluster.yaml: public, so a node off loopback refuses it.
DEVELOPMENT_SECRET = "local-dev-secret-not-for-production"

#: Node names become part of actor ids and directory names: short, plain ASCII.
NODE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,31}")
#: Shortest accepted cluster secret, in bytes (UTF-8): anything shorter is guessable.
MIN_SECRET_BYTES = 16


def _bounded(default: Any, minimum: int | None = None, maximum: int | None = None) -> Any:
    """A dataclass field with a default and the inclusive range a number must lie in."""
    return field(default=default, metadata={"min": minimum, "max": maximum})


def _choice(default: str, *choices: str) -> Any:
    """A string field with a default and the values it may take."""
    return field(default=default, metadata={"choices": (default, *choices)})


@dataclass(frozen=True)
class NodeSpec:
    """One node of the cluster: where its HTTP API and its gossip listen."""

    #: Unique name of the node, ``[A-Za-z0-9][A-Za-z0-9_.-]{0,31}``; also its data subdirectory.
    name: str
    #: Host (IP address or name) both listeners bind to and peers dial. Required.
    host: str
    #: TCP port of the HTTP API. Required, 1-65535.
    http_port: int = _bounded(MISSING, 1, 65535)
    #: TCP port of gossip. Required, 1-65535, distinct from every other port on the same host.
    gossip_port: int = _bounded(MISSING, 1, 65535)

    @property
    def url(self) -> str:
        """Base URL of the node's HTTP API."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.http_port}"


@dataclass(frozen=True)
class StorageSettings:
    """Where nodes keep their files."""

    #: Root of the data directories, one subdirectory per node. A relative path is relative to the
    #: directory of the cluster file, so every node and ``likes up`` agree on it.
    data_dir: Path = Path("./data")
    #: ``always``: a write is acknowledged only once its log record is fsynced (group commit shares
    #: one fsync among all writes waiting). ``never``: acknowledged once the OS has the bytes; a
    #: power loss can lose acknowledged likes. UNSAFE, for benchmarks only.
    fsync: str = _choice("always", "never")
    #: Flush the items changed since the last flush to the item store, and drop the log it covers,
    #: once the log holds this many bytes: what a restart replays at most. Lower means faster
    #: restarts and more flushes; a flush writes only the items changed since the last one.
    flush_bytes: int = _bounded(64 * 1024 * 1024, 1024, 2**40)
    #: ... or once this many items changed since the last flush: what a clean stop writes, and the
    #: log's tail a start replays, at most (a flush of 100,000 small items takes about 0.7 s).
    flush_items: int = _bounded(100_000, 1, 2**40)
    #: Items of the item store a start reads before the node serves (about two seconds' worth); a
    #: bigger store is read on while it serves, not ready meanwhile (``node.durable.loading``).
    read_at_start: int = _bounded(200_000, 1, 2**40)


@dataclass(frozen=True)
class SecuritySettings:
    """The gossip keyring that authenticates every frame: set exactly one of the four keys below.

    Keys are strings of at least 16 bytes (UTF-8). With several, the first signs every frame and all
    of them verify: a node started mid-rotation lists the key in use first and the other still in the
    ring after it. A running node changes its ring without a restart (``likes keys``); what it starts
    with is always this section, so update it (or the variable it names) with every rotation step.
    """

    #: One key, the whole keyring. Fine for a laptop; prefer ``secret_env`` or ``keys_env`` elsewhere.
    secret: str | None = None
    #: Name of the environment variable holding one key, read when a node starts.
    secret_env: str | None = None
    #: The keyring as a list of keys, the signing key first, e.g. ``[new-key..., old-key...]``.
    keys: tuple[str, ...] | None = None
    #: Name of the environment variable holding the keyring as comma-separated keys, the signing key
    #: first (``LIKES_KEYS=new-key...,old-key...``; spaces around each key are dropped, so a key
    #: given this way cannot contain a comma or begin or end with a space).
    keys_env: str | None = None
    #: Bearer tokens of the HTTP API (each 16-256 characters of ``A-Za-z0-9._~+/=-``). When set,
    #: every write (likes, unlikes, counters, batch) and every admin route (``/v1/keyring``) needs
    #: ``Authorization: Bearer <one of them>`` (401 otherwise); reads stay open. Unset (the
    #: default): writes are open to whoever reaches the port, and admin routes still need a request
    #: signed with a gossip key. Set at most one of ``api_tokens`` and ``api_tokens_env``.
    api_tokens: tuple[str, ...] | None = None
    #: Name of the environment variable holding the API tokens, comma-separated.
    api_tokens_env: str | None = None

    def resolve_api_tokens(self, environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
        """The API tokens (empty: writes are open), read from the environment if so configured."""
        if self.api_tokens is not None:
            return self.api_tokens
        if self.api_tokens_env is None:
            return ()
        found = (os.environ if environ is None else environ).get(self.api_tokens_env)
        if found is None:
            raise ConfigError(
                f"security.api_tokens_env: environment variable {self.api_tokens_env} is not set"
            )
        tokens = tuple(token.strip() for token in found.split(","))
        _check_api_tokens(tokens, f"security.api_tokens_env ({self.api_tokens_env})")
        return tokens

    def resolve_keys(self, environ: Mapping[str, str] | None = None) -> tuple[bytes, ...]:
        """The keyring's keys, signing key first, read from the environment if so configured."""
        env = os.environ if environ is None else environ
        if self.keys is not None:
            values, where = list(self.keys), "security.keys"
        elif self.keys_env is not None:
            found = env.get(self.keys_env)
            if found is None:
                raise ConfigError(f"security.keys_env: environment variable {self.keys_env} is not set")
            values, where = [key.strip() for key in found.split(",")], f"security.keys_env ({self.keys_env})"
        elif self.secret is not None:
            values, where = [self.secret], "security.secret"
        else:
            assert self.secret_env is not None  # load_config guarantees exactly one
            found = env.get(self.secret_env)
            if found is None:
                raise ConfigError(f"security.secret_env: environment variable {self.secret_env} is not set")
            values, where = [found], f"security.secret_env ({self.secret_env})"
        keys = tuple(value.encode() for value in values)
        _check_keys(keys, where)
        return keys

    def resolve(self, environ: Mapping[str, str] | None = None) -> bytes:
        """The signing key's bytes (the whole ring is checked): ``resolve_keys()[0]``."""
        return self.resolve_keys(environ)[0]


def _check_keys(keys: tuple[bytes, ...], where: str) -> None:
    """Refuse an empty ring, a short or repeated key, and two keys that share a wire key id."""
    if not keys:
        raise ConfigError(f"{where}: list at least one key")
    singular = len(keys) == 1 and not where.startswith("security.keys")
    for i, key in enumerate(keys):
        name = where if singular else f"{where}[{i}]"
        if len(key) < MIN_SECRET_BYTES:
            what = "the secret" if singular else "a key"
            raise ConfigError(f"{name}: {what} must be at least {MIN_SECRET_BYTES} bytes")
        if key in keys[:i]:
            raise ConfigError(f"{name}: the same key is listed twice")
    try:
        Keyring(keys)
    except KeyringError as exc:
        raise ConfigError(f"{where}: {exc}") from None


#: What an API token may hold: RFC 6750's token characters, long enough not to be guessed.
API_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{16,256}")


def _check_api_tokens(tokens: tuple[str, ...], where: str) -> None:
    """Refuse an empty list, a short or odd token, and a token listed twice."""
    if not tokens:
        raise ConfigError(f"{where}: list at least one token (or leave api tokens unset)")
    for i, token in enumerate(tokens):
        if not API_TOKEN.fullmatch(token):
            raise ConfigError(f"{where}[{i}]: a token must be 16-256 characters of A-Za-z0-9._~+/=-")
        if token in tokens[:i]:
            raise ConfigError(f"{where}[{i}]: the same token is listed twice")


def _parse_security(raw: object) -> SecuritySettings:
    """The security section: exactly one way to give the keyring, each checked as far as it can be."""
    data = _mapping(raw, "security")
    given: dict[str, Any] = {}
    if "keys" in data:
        keys = data.pop("keys")
        if not isinstance(keys, list) or not all(type(key) is str for key in keys):
            raise ConfigError(f"security.keys: expected a list of strings, got {keys!r:.60}")
        given["keys"] = tuple(keys)
    if "api_tokens" in data:
        tokens = data.pop("api_tokens")
        if not isinstance(tokens, list) or not all(type(token) is str for token in tokens):
            raise ConfigError(f"security.api_tokens: expected a list of strings, got {type(tokens).__name__}")
        _check_api_tokens(tuple(tokens), "security.api_tokens")
        given["api_tokens"] = tuple(tokens)
    security = _parse_section(SecuritySettings, data, "security", given=given)
    if security.api_tokens is not None and security.api_tokens_env is not None:
        raise ConfigError("security: set at most one of security.api_tokens and security.api_tokens_env")
    chosen = [
        name for name in ("secret", "secret_env", "keys", "keys_env") if getattr(security, name) is not None
    ]
    if len(chosen) != 1:
        raise ConfigError(
            "security: set exactly one of security.secret, security.secret_env, security.keys and "
            f"security.keys_env (found {', '.join(chosen) or 'none'})"
        )
    if security.secret is not None:
        _check_keys((security.secret.encode(),), "security.secret")
    if security.keys is not None:
        _check_keys(tuple(key.encode() for key in security.keys), "security.keys")
    for name in ("secret_env", "keys_env", "api_tokens_env"):
        variable = getattr(security, name)
        if variable is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", variable):
            raise ConfigError(f"security.{name}: expected an environment variable name")
    return security


@dataclass(frozen=True)
class ApiSettings:
    """Limits of the HTTP API; a request over a limit is rejected whole (413, 422 or 429)."""

    #: Largest request body, in bytes (413 above).
    max_body_bytes: int = _bounded(1024 * 1024, 1, 64 * 1024 * 1024)
    #: Most operations in one ``POST /v1/batch``.
    max_batch_ops: int = _bounded(1_000, 1, 100_000)
    #: Most items in one ``POST /v1/counts`` or ``POST /v1/users/{user}/liked``.
    max_count_items: int = _bounded(1_000, 1, 100_000)
    #: Page size when ``limit`` is not given.
    default_page_limit: int = _bounded(100, 1, 100_000)
    #: Largest accepted ``limit``.
    max_page_limit: int = _bounded(1_000, 1, 100_000)
    #: Most named counters one item may hold (a new name beyond it is rejected).
    max_counters_per_item: int = _bounded(32, 1, 10_000)
    #: Largest magnitude of one counter ``delta``.
    max_counter_delta: int = _bounded(1_000_000_000, 1, 2**62)
    #: How long a write at ``?w=majority`` or ``?w=all`` waits for peers' receipts before answering
    #: 503 ``write_timeout`` (the write is durable locally and still spreads by gossip).
    write_timeout_ms: int = _bounded(2_000, 1, 600_000)
    # Rate limits: token buckets kept by each node for itself, refilled continuously; over a limit
    # the answer is 429 with ``Retry-After`` and nothing is applied. A rate of 0 disables that limit.
    #: Requests per second one client may make to one node, any route (a batch is one request). A
    #: client is its valid API token, else its remote address. The default is above what one node
    #: serves, so it never throttles the benchmarks (one loopback client); lower it to a client's
    #: fair share where clients are many.
    client_rate: int = _bounded(100_000, 0, 100_000_000)
    #: Requests one client may make at once, from a full bucket.
    client_burst: int = _bounded(200_000, 1, 1_000_000_000)
    #: Likes and unlikes per second of one user id on one node (path ``{user}`` or each batch op's
    #: ``user``): a person clicks a few times a second at most, a script far more.
    user_rate: int = _bounded(20, 0, 100_000_000)
    #: Likes and unlikes one user may make at once; a batch holding more for one user is 422.
    user_burst: int = _bounded(40, 1, 1_000_000_000)
    #: Buckets remembered per table (clients, users) before the oldest generation is dropped early;
    #: memory is about ``2 * rate_limit_keys`` small entries per table.
    rate_limit_keys: int = _bounded(100_000, 100, 100_000_000)
    #: How long a request carrying a causal token (``Likes-Causal-Token``, see ``node.http.causal``) waits,
    #: pulling from peers, for the writes the token names before answering 503 ``causal_timeout``
    #: (having changed nothing). 0 answers at once when they are not already here.
    causal_wait_ms: int = _bounded(1_000, 0, 60_000)


@dataclass(frozen=True)
class CheckpointSettings:
    """Where merged state is checkpointed; each item is written by one owner node, only when dirty."""

    #: The embedded checkpoint, ``<data_dir>/<node>/checkpoint.sqlite``: like_records and item states.
    sqlite: bool = True
    #: Redis read model (``like:count:{type}:{id}``, ``like:status:{type}:{id}``), e.g.
    #: ``redis://127.0.0.1:6379/0``; the environment variable ``LIKES_REDIS_URL`` overrides it.
    redis_url: str | None = None
    #: Prefix of every Redis key written (to share one Redis between clusters or tests).
    redis_prefix: str = ""
    #: MySQL ``like_records`` and item states for disaster recovery, e.g.
    #: ``mysql://root@127.0.0.1:3306/likes``; ``LIKES_MYSQL_URL`` overrides it.
    mysql_url: str | None = None
    #: How often dirty items are written. Lower: fresher sinks, smaller and more frequent batches.
    interval_ms: int = _bounded(1_000, 10, 3_600_000)
    #: Most items per batch written to one sink.
    batch_items: int = _bounded(500, 1, 100_000)
    #: Bound on every sink operation, connecting included; an outage is detected within it.
    timeout_ms: int = _bounded(2_000, 10, 600_000)
    #: Longest pause between retries while a sink is down (backoff doubles up to it).
    max_backoff_ms: int = _bounded(10_000, 10, 3_600_000)

    def with_environment(self, environ: Mapping[str, str] | None = None) -> CheckpointSettings:
        """The settings with ``LIKES_REDIS_URL`` and ``LIKES_MYSQL_URL`` applied."""
        env = os.environ if environ is None else environ
        redis_url = env.get("LIKES_REDIS_URL") or self.redis_url
        mysql_url = env.get("LIKES_MYSQL_URL") or self.mysql_url
        return dataclasses.replace(self, redis_url=redis_url, mysql_url=mysql_url)


@dataclass(frozen=True)
class ClusterConfig:
    """The whole cluster file."""

    #: The nodes of the cluster (at least one). Each is also a gossip seed of the others.
    nodes: tuple[NodeSpec, ...]
    storage: StorageSettings = StorageSettings()
    #: Timings (in milliseconds in the file, seconds once read) and sizes of gossip: every key is a
    #: field of ``gossip.config.GossipSettings``, documented there.
    gossip: GossipSettings = field(default_factory=GossipSettings)
    #: Required: gossip refuses to run unauthenticated.
    security: SecuritySettings = SecuritySettings()
    api: ApiSettings = ApiSettings()
    checkpoint: CheckpointSettings = CheckpointSettings()

    def node(self, name: str) -> NodeSpec:
        """The node called ``name``."""
        for spec in self.nodes:
            if spec.name == name:
                return spec
        known = ", ".join(spec.name for spec in self.nodes)
        raise ConfigError(f"no node named {name!r} in the cluster file (nodes: {known})")

    def node_dir(self, name: str) -> Path:
        """The data directory of node ``name``."""
        return self.storage.data_dir / self.node(name).name


# -- loading ---------------------------------------------------------------------------------------

_Section = TypeVar("_Section")


class _StrictLoader(yaml.SafeLoader):
    """A safe loader that rejects a key repeated within one mapping instead of keeping the last."""


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if isinstance(key, typing.Hashable) and key in seen:
            line = key_node.start_mark.line + 1
            raise ConfigError(f"{key}: duplicate key (line {line})")
        seen.add(key)
    return loader.construct_mapping(node)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_config(
    path: str | os.PathLike[str], environ: Mapping[str, str] | None = None
) -> ClusterConfig:
    """Read and validate the cluster file at ``path``, with the overrides of ``environ`` (the process
    environment by default) applied (``environment_overrides``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the cluster file: {exc}") from exc
    try:
        raw = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if isinstance(raw, dict):
        environment_overrides(raw, os.environ if environ is None else environ)
    return parse_config(raw, base_dir=path.resolve().parent)


#: The sections whose keys the environment may set, and the settings type of each (gossip's keys are
#: ``gossip.config.file_keys``).
_OVERRIDABLE: dict[str, type[Any] | None] = {
    "storage": StorageSettings,
    "checkpoint": CheckpointSettings,
    "gossip": None,
    "security": SecuritySettings,
    "api": ApiSettings,
}


def environment_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    """Set ``<section>.<key>`` of the parsed file ``raw`` from each ``LIKES_<SECTION>__<KEY>`` of
    ``environ`` (upper case, two underscores between section and key: ``LIKES_GOSSIP__FANOUT=3``).
    A value is read as YAML (``false``, ``[a, b]``), except for a key that holds text, which takes it
    as it is. A variable naming no section or no key of one is an error, as an unknown key in the file
    is; ``LIKES_SECRET`` and the like (one underscore) are names a file may point to, never read here."""
    for name, value in sorted(environ.items()):
        if not name.startswith("LIKES_") or "__" not in name:
            continue
        section, _, key = (part.lower() for part in name.removeprefix("LIKES_").partition("__"))
        if section not in _OVERRIDABLE:
            raise ConfigError(f"{name}: no section {section!r} (sections: {', '.join(_OVERRIDABLE)})")
        kind = _OVERRIDABLE[section]
        text_keys: set[str] = set()
        if kind is None:
            known = set(file_keys())
        else:
            known = {f.name for f in fields(kind)}
            text_keys = {f.name for f in fields(kind) if str(f.type).startswith(("str", "Path"))}
        if key not in known:
            raise ConfigError(f"{name}: {section} has no key {key!r}")
        if key in text_keys:
            parsed: Any = value
        else:
            try:
                parsed = yaml.load(value, Loader=_StrictLoader)
            except yaml.YAMLError as exc:
                raise ConfigError(f"{name}: not a YAML value: {exc}") from exc
        target = raw.setdefault(section, {})
        if not isinstance(target, dict):
            raise ConfigError(f"{section}: expected a mapping")
        target[key] = parsed


def parse_config(raw: object, *, base_dir: Path) -> ClusterConfig:
    """Validate an already parsed document; relative paths are resolved against ``base_dir``."""
    if not isinstance(raw, dict):
        raise ConfigError("(top level): the cluster file must be a mapping with a 'nodes' key")
    _reject_unknown(raw, {f.name for f in fields(ClusterConfig)}, "")
    if "nodes" not in raw:
        raise ConfigError("nodes: missing (list every node with name, host, http_port, gossip_port)")
    nodes = _parse_nodes(raw["nodes"])
    storage_raw = _mapping(raw.get("storage", {}), "storage")
    data_dir_raw = storage_raw.pop("data_dir", str(StorageSettings.data_dir))
    if not isinstance(data_dir_raw, str) or not data_dir_raw:
        raise ConfigError("storage.data_dir: expected a non-empty path string")
    data_dir = Path(data_dir_raw).expanduser()
    data_dir = data_dir if data_dir.is_absolute() else base_dir / data_dir
    storage = _parse_section(StorageSettings, storage_raw, "storage", given={"data_dir": data_dir})
    checkpoint = _parse_section(CheckpointSettings, raw.get("checkpoint", {}), "checkpoint")
    for key, schemes in _SINK_SCHEMES.items():
        url = getattr(checkpoint, key)
        if url is not None and not url.startswith(schemes):
            raise ConfigError(f"checkpoint.{key}: expected a {' or '.join(schemes)} URL")
    gossip = _parse_gossip(raw.get("gossip", {}))
    api = _parse_section(ApiSettings, raw.get("api", {}), "api")
    if api.default_page_limit > api.max_page_limit:
        raise ConfigError("api.default_page_limit: must not exceed api.max_page_limit")
    if "security" not in raw:
        raise ConfigError("security: missing (set security.secret, secret_env, keys or keys_env)")
    security = _parse_security(raw["security"])
    _check_development_secret(security, nodes)
    return ClusterConfig(
        nodes=nodes, storage=storage, gossip=gossip, security=security, api=api, checkpoint=checkpoint
    )


def _check_development_secret(security: SecuritySettings, nodes: Sequence[NodeSpec]) -> None:
    """The shipped file's secret is public: it may sign frames on loopback, never on a network."""
    if DEVELOPMENT_SECRET not in (security.secret, *(security.keys or ())):
        return
    for spec in nodes:
        if not _loopback(spec.host):
            raise ConfigError(
                f"security.secret: the development secret of the shipped cluster.yaml is for loopback "
                f"only, and node {spec.name} is on {spec.host}: put a secret of your own in the "
                "environment and name it with security.secret_env (e.g. secret_env: LIKES_SECRET)"
            )


def _loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve anywhere
        return False


def _parse_gossip(raw: object) -> GossipSettings:
    """The gossip section, read by the declarations of ``GossipSettings``: each key an integer in its
    range, in the file's unit (milliseconds for a timing), scaled to the setting's."""
    data = _mapping(raw, "gossip")
    keys = file_keys()
    _reject_unknown(data, set(keys), "gossip.")
    values: dict[str, Any] = {}
    for key, value in data.items():
        name, spec = keys[key]
        _check_integer(value, f"gossip.{key}", spec.low, spec.high)
        values[name] = spec.read(value)
    default = GossipSettings()
    timeout = values.get("probe_timeout", default.probe_timeout)
    if timeout >= values.get("probe_interval", default.probe_interval):
        raise ConfigError("gossip.probe_timeout_ms: must be shorter than gossip.probe_interval_ms")
    try:
        return GossipSettings(**values)
    except ValueError as exc:  # gossip's own checks; the ranges above should have caught these first
        raise ConfigError(f"gossip: {exc}") from exc


def _parse_nodes(raw: object) -> tuple[NodeSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("nodes: expected a non-empty list of nodes")
    nodes = tuple(_parse_section(NodeSpec, item, f"nodes[{i}]") for i, item in enumerate(raw))
    names: set[str] = set()
    ports: dict[tuple[str, int], str] = {}
    for i, spec in enumerate(nodes):
        if not NODE_NAME.fullmatch(spec.name):
            raise ConfigError(f"nodes[{i}].name: {spec.name!r} must match {NODE_NAME.pattern}")
        if not spec.host or spec.host != spec.host.strip():
            raise ConfigError(f"nodes[{i}].host: expected a host name or address")
        if spec.name in names:
            raise ConfigError(f"nodes[{i}].name: duplicate node name {spec.name!r}")
        names.add(spec.name)
        for key in ("http_port", "gossip_port"):
            port = getattr(spec, key)
            owner = ports.get((spec.host, port))
            if owner is not None:
                raise ConfigError(f"nodes[{i}].{key}: port {port} on {spec.host} is already used by {owner}")
            ports[(spec.host, port)] = f"{spec.name}.{key}"
    return nodes


def _mapping(raw: object, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping")
    for key in raw:
        if not isinstance(key, str):
            raise ConfigError(f"{where}.{key}: keys must be strings")
    return dict(raw)


#: The URL schemes each sink takes: ``rediss://`` is Redis over TLS (``?ssl_ca_certs=/path/ca.pem`` names
#: the CA to verify the server with), ``unix://`` a local socket.
_SINK_SCHEMES = {"redis_url": ("redis://", "rediss://", "unix://"), "mysql_url": ("mysql://",)}

#: Keys an earlier version read, and what they are called now.
_RENAMED = {"storage.snapshot_bytes": "storage.flush_bytes"}


def _reject_unknown(raw: Mapping[Any, Any], known: set[str], prefix: str) -> None:
    for key in raw:
        if key not in known:
            renamed = _RENAMED.get(f"{prefix}{key}")
            if renamed is not None:
                raise ConfigError(f"{prefix}{key}: renamed {renamed} (same meaning for this file)")
            expected = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{prefix}{key}: unknown key (expected: {expected})")


def _parse_section(
    cls: type[_Section], raw: object, where: str, given: Mapping[str, Any] | None = None
) -> _Section:
    """Build the flat dataclass ``cls`` from ``raw``, checking keys, types and ranges; the fields in
    ``given`` were parsed by the caller."""
    data = _mapping(raw, where)
    given = given or {}
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    _reject_unknown(data, known - set(given), f"{where}.")
    values: dict[str, Any] = dict(given)
    for f in fields(cls):  # type: ignore[arg-type]
        key = f"{where}.{f.name}"
        if f.name in given:
            continue
        if f.name not in data:
            if f.default is MISSING:
                raise ConfigError(f"{key}: missing")
            continue
        value = data[f.name]
        expected = hints[f.name]
        if expected is int:
            _check_integer(value, key, f.metadata.get("min"), f.metadata.get("max"))
        elif expected is bool:
            if type(value) is not bool:
                raise ConfigError(f"{key}: expected true or false, got {value!r}")
        elif expected in (str, str | None):
            if type(value) is not str:
                raise ConfigError(f"{key}: expected a string, got {value!r}")
            choices = f.metadata.get("choices")
            if choices is not None and value not in choices:
                raise ConfigError(f"{key}: {value!r} is not one of {', '.join(choices)}")
        else:  # pragma: no cover  # a field type this reader does not know: a programming error
            raise TypeError(f"{key}: unsupported field type {expected}")
        values[f.name] = value
    return cls(**values)


def _check_integer(value: object, key: str, low: int | None, high: int | None) -> None:
    """Refuse anything but an integer (``true`` and ``5.0`` included) in ``[low, high]``."""
    if type(value) is not int:
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ConfigError(f"{key}: {value} is out of range [{low}, {high}]")
