"""A host's place in a deployment of several hosts: Salt's pillar, read by ``fleetctl render``.

Salt writes its pillar ``fleet:`` (without the secrets, which go to ``var/secrets.env``)
plus the minion's id and roles to ``var/deployment.json``; ``fleetctl render
--deployment FILE`` turns it into :class:`app.settings.Settings` and a
:class:`Topology` here, and :func:`app.stack.render.build_context` computes every
template value from those two, for one host or several.  The pillar keys that are
``Settings`` field names (``http_port``, ``metrics_allow``, ...) are passed on as
``FLEET_*`` settings; the others are the topology (who runs where):

``host`` (minion id), ``roles`` (``single`` or any of ``web``, ``bokeh``, ``redis``),
``site`` (var/ is ``site/var``), ``user`` (FLEET_RUN_USER), ``instances`` and
``bokeh_host`` (this host's, unless its ``bokeh_hosts`` entry says otherwise),
``bokeh_hosts`` (``[{id, address, instances, bind}]``: the nginx upstream),
``redis_host`` (what programs connect to), ``redis_bind`` (what redis-server listens
on, default ``redis_host``), ``redis_url`` (an external Redis: used as given, no ACL
users), ``redis_ha`` (``{master_name, master_host, master_port, sentinels, quorum,
down_after_ms, failover_timeout_ms}``: Sentinel on several hosts), ``redis_node``
(``master``, ``replica`` or ``sentinel``), ``sentinel_port``, ``web_address`` (the
site's name, default ``http_host``), ``trusted_proxies`` and ``extra_env`` (any other
``FLEET_*`` variable).  Anything else is refused, so a mistyped key is an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from app.settings import PREFIX, Settings, SettingsError, load

ROLES = ("single", "web", "bokeh", "redis")
REDIS_NODES = ("master", "replica", "sentinel")
#: keys of the deployment description that are not Settings fields (see the docstring)
TOPOLOGY_KEYS = ("host", "roles", "site", "user", "instances", "bokeh_host", "bokeh_hosts",
                 "redis_host", "redis_bind", "redis_url", "redis_ha", "redis_node", "sentinel_port",
                 "web_address", "trusted_proxies", "extra_env")
#: redis_ha keys and their defaults (``sentinels`` is required)
HA_DEFAULTS = {"master_name": "fleet", "quorum": 2, "down_after_ms": 5000, "failover_timeout_ms": 60000}
LOOPBACK = ("127.0.0.1", "::1")


class DeploymentError(ValueError):
    """The deployment description cannot describe a working host; the message says why."""


@dataclasses.dataclass(frozen=True)
class BokehHost:
    """One Bokeh host of the upstream: what nginx and Prometheus connect to."""

    id: str
    address: str
    instances: int


@dataclasses.dataclass(frozen=True)
class Topology:
    """Which programs this host runs and where the others are."""

    host: str
    roles: frozenset[str]
    bokeh_hosts: tuple[BokehHost, ...] = ()
    redis_host: str = "127.0.0.1"
    redis_bind: str = "127.0.0.1"
    redis_managed: bool = True  # the stack's own Redis (ACL users), not a redis_url
    redis_node: str = "master"
    sentinel_port: int = 26379
    redis_ha: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # {} = one Redis
    web_address: str = ""

    @property
    def single(self) -> bool:
        return "single" in self.roles

    def runs(self, role: str) -> bool:
        """True when this host has ``role`` (``single`` has every role)."""
        return self.single or role in self.roles


def _int(desc: Mapping[str, Any], key: str, default: int) -> int:
    value = desc.get(key, default)
    try:
        return int(value)
    except (TypeError, ValueError):
        raise DeploymentError(f"{key}={value!r}: not a number") from None


def _env_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _bokeh_hosts(desc: Mapping[str, Any], default_instances: int) -> tuple[BokehHost, ...]:
    out = []
    for i, h in enumerate(desc.get("bokeh_hosts") or []):
        if not isinstance(h, Mapping) or not h.get("address"):
            raise DeploymentError(f"bokeh_hosts[{i}]: needs at least an address (and id, instances)")
        out.append(BokehHost(str(h.get("id", "")), str(h["address"]), _int(h, "instances", default_instances)))
    return tuple(out)


def _redis_ha(desc: Mapping[str, Any], redis_host: str, redis_port: int) -> dict[str, Any]:
    ha = desc.get("redis_ha") or {}
    if not isinstance(ha, Mapping):
        raise DeploymentError("redis_ha: expected a mapping (master_host, master_port, sentinels, ...)")
    if not ha.get("sentinels"):
        return {}
    unknown = set(ha) - {*HA_DEFAULTS, "master_host", "master_port", "sentinels"}
    if unknown:
        raise DeploymentError(f"redis_ha: unknown key(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {k: ha.get(k, v) for k, v in HA_DEFAULTS.items()}
    out.update(master_host=str(ha.get("master_host", redis_host)), sentinels=[str(s) for s in ha["sentinels"]])
    for key, default in (("master_port", redis_port), ("quorum", 2), ("down_after_ms", 5000),
                         ("failover_timeout_ms", 60000)):
        out[key] = _int(ha, key, default)
    return out


def load_deployment(desc: Mapping[str, Any]) -> tuple[Settings, Topology, Path]:
    """``(settings, topology, var_dir)`` of the host that ``desc`` describes."""
    unknown = [k for k in desc if k not in TOPOLOGY_KEYS and k not in _SETTINGS_FIELDS]
    if unknown:
        raise DeploymentError(f"unknown deployment key(s): {', '.join(sorted(unknown))}")
    roles = frozenset(desc.get("roles") or ["single"])
    if not roles <= set(ROLES):
        raise DeploymentError(f"roles={sorted(roles)}: use single, or any of web, bokeh, redis")
    if not desc.get("site"):
        raise DeploymentError("site: the site directory (its var/ gets the configs) is required")
    host = str(desc.get("host", ""))
    single = "single" in roles
    default_instances = _int(desc, "instances", 2)
    bokeh_hosts = () if single else _bokeh_hosts(desc, default_instances)
    me: Mapping[str, Any] = next(
        (h for h in (desc.get("bokeh_hosts") or []) if not single and h.get("id") == host), {})
    instances = _int(me, "instances", default_instances) if single or "bokeh" in roles else 0
    if "bokeh" in roles and not single and not me:
        raise DeploymentError(f"host {host!r} has the bokeh role but no bokeh_hosts entry (id: {host}): "
                              "nginx would not reach its instances")
    redis_port = _int(desc, "redis_port", Settings.redis_port)
    redis_host = "127.0.0.1" if single else str(desc.get("redis_host", "127.0.0.1"))
    node = str(desc.get("redis_node", "master"))
    if node not in REDIS_NODES:
        raise DeploymentError(f"redis_node={node!r}: use master, replica or sentinel")

    env: dict[str, str] = {}
    for key, value in desc.items():
        if key in _SETTINGS_FIELDS and key not in TOPOLOGY_KEYS:
            env[PREFIX + key.upper()] = _env_value(value)
    env[PREFIX + "INSTANCES"] = str(instances)
    env[PREFIX + "BOKEH_HOST"] = str(me.get("bind") or me.get("address") or desc.get("bokeh_host", "127.0.0.1"))
    env[PREFIX + "RUN_USER"] = str(desc.get("user", ""))
    if desc.get("redis_url"):
        env[PREFIX + "REDIS_URL"] = str(desc["redis_url"])
    if desc.get("trusted_proxies"):  # nginx's address(es) as gunicorn sees them, and loopback
        env[PREFIX + "TRUSTED_PROXIES"] = _env_value(list(dict.fromkeys([*desc["trusted_proxies"], *LOOPBACK])))
    for key, value in (desc.get("extra_env") or {}).items():
        if not str(key).startswith(PREFIX):
            raise DeploymentError(f"extra_env: {key!r} is not a {PREFIX}* setting")
        env[str(key)] = _env_value(value)
    try:
        settings = load(env=env)
    except SettingsError as exc:
        raise DeploymentError(str(exc)) from None
    topology = Topology(
        host=host, roles=roles, bokeh_hosts=bokeh_hosts, redis_host=redis_host,
        redis_bind="127.0.0.1 -::1" if single else str(desc.get("redis_bind", redis_host)),
        redis_managed=not desc.get("redis_url"), redis_node=node,
        sentinel_port=_int(desc, "sentinel_port", 26379),
        redis_ha=_redis_ha(desc, redis_host, redis_port),
        web_address=str(desc.get("web_address", "")),
    )
    return settings, topology, Path(str(desc["site"])) / "var"


_SETTINGS_FIELDS = frozenset(f.name for f in dataclasses.fields(Settings)) - {"var_dir", "run_user"}
