"""Redis Sentinel: clients find the master, follow a failover, and acks can mean "on a replica".

Real redis-server master + replica + three sentinels on free loopback ports
(the ``sentinel_set`` fixture, fleet_testing/redis.py ``SentinelSet``).  The master is SIGKILLed; a publisher
through app.bus and an in-process instance reader keep going on the promoted
replica, and no command acknowledged in ``replica`` durability mode is lost.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time

import pytest
import redis

from app.bus import registry
from app.bus.connection import CONNECTION_ERRORS, ResponseError, replica_client, sync_client
from app.bus.keys import Keys
from app.bus.publisher import NotDurable, publish
from app.bus.reader import Reader
from app.bus.store import read_state
from app.settings import Settings, SettingsError, load, read_env_file
from app.stack import render
from fleet_testing.helpers import LINE
from fleet_testing.ports import wait_port
from fleet_testing.redis import free_ha_base, redis_server_binary

KEYS = Keys("fleet")


def point(i: int) -> dict:
    return {"op": "stream", "name": "p", "id": f"c{i}", "data": json.dumps({"t": [i], "y": [i]})}


def settings_for(ss, **kw) -> Settings:
    # the URL's host:port point nowhere: the sentinels must be asked
    return Settings(redis_url="redis://127.0.0.1:1/0", redis_sentinels=ss.addresses,
                    redis_master=ss.name, block_ms=200, **kw)


def test_settings_parse_sentinels_and_reject_bad_values():
    s = load(env={"FLEET_REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26379",
                  "FLEET_REDIS_MASTER": "m", "FLEET_REDIS_DURABILITY": "replica"})
    assert s.redis_sentinels == ("10.0.0.1:26379", "10.0.0.2:26379") and s.redis_master == "m"
    with pytest.raises(SettingsError, match="FLEET_REDIS_DURABILITY"):
        load(env={"FLEET_REDIS_DURABILITY": "sometimes"})
    with pytest.raises(SettingsError, match="FLEET_REDIS_SENTINELS"):
        load(env={"FLEET_REDIS_SENTINELS": "nohostport"})


def test_replica_durability_ack_means_on_the_replica(sentinel_set):
    ss = sentinel_set
    settings = settings_for(ss, redis_durability="replica", redis_wait_ms=300)
    c = sync_client(settings)
    registry.create_dashboard(c, KEYS, "d")
    replica = next(n for n in ss.nodes if n.port != ss.master_port())
    rc = replica_client(settings, "127.0.0.1", replica.port)
    eid = publish(c, KEYS, "d", LINE, durability="replica", wait_ms=300)
    assert rc.xrange(KEYS.commands("d"), min=eid, max=eid), "acknowledged but not on the replica"
    # a replica that cannot confirm: the publish must not be acknowledged
    os.kill(replica.proc.pid, signal.SIGSTOP)
    try:
        with pytest.raises(NotDurable, match="no replica confirmed"):
            publish(c, KEYS, "d", point(1), durability="replica", wait_ms=300)
    finally:
        os.kill(replica.proc.pid, signal.SIGCONT)
    c.close()
    rc.close()


def test_publisher_and_reader_follow_a_failover_without_losing_acked_commands(sentinel_set):
    ss = sentinel_set
    settings = settings_for(ss)
    c = sync_client(settings)
    registry.create_dashboard(c, KEYS, "d")
    publish(c, KEYS, "d", LINE)
    old_master = ss.node(ss.master_port())
    acked: list[str] = []

    async def main():
        reader = Reader(settings)
        reader.start()
        await reader.wait_caught_up(30)
        for i in range(1, 21):  # acknowledged only once on the replica
            publish(c, KEYS, "d", point(i), durability="replica", wait_ms=2000)
            acked.append(f"c{i}")
        old_master.kill()  # SIGKILL the master
        i, deadline = 21, time.monotonic() + 60
        while i <= 40:  # the publisher retries until the sentinels promoted the replica
            assert time.monotonic() < deadline, "no new master within 60 s"
            try:
                publish(c, KEYS, "d", point(i))
                acked.append(f"c{i}")
                i += 1
            except (*CONNECTION_ERRORS, ResponseError):  # master down / READONLY meanwhile
                await asyncio.sleep(0.2)
        while True:
            feed = reader.feeds.get("d")
            if feed is not None and feed.state.figures["p"].length == 41 and reader.caught_up.is_set():
                break
            assert time.monotonic() < deadline, "the reader did not follow the failover"
            await asyncio.sleep(0.05)
        got = reader.feeds["d"].state
        await reader.stop()
        return got

    got = asyncio.run(asyncio.wait_for(main(), 120))
    assert ss.master_port() != old_master.port
    fold, _ = read_state(c, KEYS, "d", settings)
    ids = [e[1][b"id"].decode() for e in c.xrange(KEYS.commands("d")) if b"id" in e[1]]
    assert sorted(ids, key=lambda s: int(s[1:])) == acked, "every acked command exactly once"
    assert list(fold.figures["p"].data["t"]) == list(range(41))
    assert list(got.figures["p"].data["t"]) == list(range(41)), "the reader's state equals the fold"
    c.close()


def test_rendered_local_set_fails_over_with_acl_users(tmp_path):
    """FLEET_REDIS_MODE=sentinel renders a master, a replica and three sentinels that
    authenticate with their own ACL users and passwords, and fail over on SIGKILL."""
    base = free_ha_base()
    ctx, _ = render.render_site(Settings(redis_mode="sentinel", redis_port=base, run_user="",
                                         redis_durability="replica"), var_dir=tmp_path / "var")
    red = tmp_path / "var" / "redis"
    confs = [[str(red / "redis.conf")], [str(red / "redis-replica.conf")]]
    confs += [[str(red / f"sentinel-{i}" / "sentinel.conf"), "--sentinel"] for i in (1, 2, 3)]
    procs = [subprocess.Popen([redis_server_binary(), *c], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL) for c in confs]
    try:
        for p in (base, base + 1, base + 20000, base + 20001, base + 20002):
            wait_port(p)
        settings = load(env=read_env_file(tmp_path / "var" / "fleet.env"))
        assert settings.redis_sentinels and settings.redis_sentinel_password
        c = sync_client(settings)
        deadline = time.monotonic() + 30
        while True:  # replica in sync (min-replicas-to-write 1) and sentinels acquainted
            try:
                registry.create_dashboard(c, KEYS, "d")
                eid = publish(c, KEYS, "d", LINE, durability="replica", wait_ms=500)
                break
            except (NotDurable, ResponseError, *CONNECTION_ERRORS):
                assert time.monotonic() < deadline, "the rendered set never accepted a durable write"
                time.sleep(0.2)
        for port in (base + 20000, base + 20001, base + 20002):  # sentinels acquainted
            sc = redis.Redis(port=port, password=settings.redis_sentinel_password)
            while not (sc.execute_command("SENTINEL", "REPLICAS", "fleet")
                       and len(sc.execute_command("SENTINEL", "SENTINELS", "fleet")) >= 2):
                assert time.monotonic() < deadline, "the sentinels did not find the replica and each other"
                time.sleep(0.2)
            sc.close()
        procs[0].kill()  # SIGKILL the master
        deadline = time.monotonic() + 60
        while True:
            try:
                if c.xrange(KEYS.commands("d"), min=eid, max=eid):
                    break
            except (ResponseError, *CONNECTION_ERRORS):
                pass
            assert time.monotonic() < deadline, "no failover to the replica within 60 s"
            time.sleep(0.2)
        assert c.connection_pool.get_master_address()[1] == base + 1
        c.close()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
                p.wait(10)


@pytest.mark.parametrize("node", ["replica", "sentinel"])
def test_salt_redis_role_is_a_replica_or_a_sentinel(tmp_path, node):
    """salt roles.redis with fleet:redis_ha, applied into a temp site: `fleetctl render
    --deployment` writes the node's files from the pillar Salt passes on."""
    from tests.test_stack_salt import SECRETS, Minion, _pillar

    secrets = {**SECRETS, "redis_password_replica": "r-pw", "redis_password_sentinel": "s-pw",
               "sentinel_password": "sentinel-pw"}
    m = Minion(tmp_path / "salt", _pillar(
        tmp_path, roles=["redis"], redis_host="10.0.0.31", redis_node=node, sentinel_port=26390,
        redis_durability="replica", secrets=secrets,
        redis_ha={"master_host": "10.0.0.30", "master_port": 6390,
                  "sentinels": ["10.0.0.41:26390", "10.0.0.42:26390", "10.0.0.43:26390"]}))
    result = m.call("state.apply", "roles.redis", 'exclude=[{"id": "fleet-supervisord-running"}]')
    bad = {k: v["comment"] for k, v in result.items() if v["result"] is False}
    assert not bad, bad
    var = tmp_path / "site" / "var"
    env = read_env_file(var / "fleet.env")
    assert env["FLEET_REDIS_SENTINELS"] == "10.0.0.41:26390,10.0.0.42:26390,10.0.0.43:26390"
    assert env["FLEET_REDIS_SENTINEL_PASSWORD"] == "sentinel-pw"
    assert env["FLEET_REDIS_DURABILITY"] == "replica" and env["FLEET_INSTANCES"] == "0"
    programs = (var / "supervisor" / "fleet.conf").read_text()
    if node == "replica":
        assert not (var / "redis" / "sentinel-1").exists() and not (var / "nginx" / "nginx.conf").exists()
        conf = (var / "redis" / "redis.conf").read_text()
        assert "replicaof 10.0.0.30 6390" in conf and "min-replicas-to-write 1" in conf
        assert "bind 10.0.0.31" in conf and "masterauth r-pw" in conf
        acl = (var / "redis" / "users.acl").read_text()
        assert "user replica on #" + render.acl_hash("r-pw") in acl
        assert "user sentinel on #" + render.acl_hash("s-pw") in acl
        assert "[program:redis]" in programs and "[program:sentinel]" not in programs
    else:
        assert not (var / "redis" / "redis.conf").exists()
        text = (var / "redis" / "sentinel-1" / "sentinel.conf").read_text()
        assert "port 26390" in text and "sentinel monitor fleet 10.0.0.30 6390 2" in text
        assert "requirepass sentinel-pw" in text and "sentinel auth-pass fleet s-pw" in text
        assert "[program:redis]" not in programs and "numprocs=1" in programs
        assert "sentinel-%(process_num)d/sentinel.conf --sentinel" in programs


def test_controller_acl_user_survives_a_failover(sentinel_set):
    """ACL users are not replicated: `fleetctl controllers add` sets the controller's user
    on every replica the sentinels know, so its URL still publishes after the master dies
    (before, the user existed on the old master only: NOPERM/WRONGPASS after failover)."""
    from app.bus import acl
    from app.bus.connection import replica_clients

    ss = sentinel_set
    settings = settings_for(ss)
    admin = sync_client(settings)
    registry.create_dashboard(admin, KEYS, "d")
    replicas = replica_clients(settings)
    assert [r.connection_pool.connection_kwargs["port"] for r in replicas] == \
        [n.port for n in ss.nodes if n.port != ss.master_port()]
    user, password, _ = acl.add_controller(admin, KEYS, "feeder", ["d"], replicas=replicas)
    ctl = sync_client(settings_for(ss).__class__(
        redis_url=f"redis://{user}:{password}@127.0.0.1:1/0", redis_sentinels=ss.addresses,
        redis_master=ss.name, block_ms=200))
    ctl.xadd(KEYS.commands("d"), LINE)
    for r in replicas:  # the user can do exactly what it could on the master
        assert r.execute_command("ACL", "GETUSER", user) is not None
    old_master = ss.node(ss.master_port())
    old_master.kill()
    deadline = time.monotonic() + 60
    while True:
        try:
            ctl.xadd(KEYS.commands("d"), point(1))
            break
        except (redis.AuthenticationError, redis.exceptions.NoPermissionError):
            raise AssertionError("the controller's user is gone after the failover") from None
        except (*CONNECTION_ERRORS, ResponseError):  # master down / READONLY meanwhile
            assert time.monotonic() < deadline, "no new master within 60 s"
            time.sleep(0.2)
    assert ss.master_port() != old_master.port
    with pytest.raises(redis.exceptions.NoPermissionError):
        ctl.xadd(KEYS.commands("other"), LINE)  # still only its own dashboard
    # removing it reaches the replicas too
    acl.remove_controller(admin, "feeder", replicas=replica_clients(settings))
    for r in replica_clients(settings):
        assert r.execute_command("ACL", "GETUSER", user) is None
    admin.close()
    ctl.close()
