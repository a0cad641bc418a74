"""The process names the supervisord template spells are app/stack/names.py's.

The template names processes with supervisord's own expansions (Salt renders it from
its own context); app/stack/names.py formats the same names for supervisorctl, the
event listener, the admin page and bench/chaos.py.  Parsed here with supervisord's
parser, a sentinel stack (instances, replica, sentinels) must name exactly those.
"""

from __future__ import annotations

from pathlib import Path

from supervisor.options import ServerOptions

from app.settings import Settings
from app.stack import names, render

ROOT = Path(__file__).resolve().parents[1]


def test_rendered_process_names_are_the_formatters(tmp_path):
    s = Settings(var_dir=tmp_path / "var", instances=3, redis_mode="sentinel")
    ctx, _ = render.render_site(s, root=ROOT, var_dir=tmp_path / "var")
    conf = tmp_path / "supervisord.conf"
    conf.write_text((ROOT / "supervisord.conf").read_text())
    opts = ServerOptions()
    opts.realize(args=["-c", str(conf)])
    procs = {names.process_key(g.name, p.name): p for g in opts.process_group_configs for p in g.process_configs}
    sentinels = len(ctx["redis_ha"]["sentinel_ports"])
    assert sentinels == 3
    want = {names.instance_process(n) for n in (1, 2, 3)}
    want |= {names.process_key(names.GROUP, names.sentinel_name(n)) for n in range(1, sentinels + 1)}
    assert want <= set(procs), sorted(procs)
    for n in (1, 2, 3):
        assert names.instance_number(names.instance_name(n)) == n
        assert procs[names.instance_process(n)].stdout_logfile.endswith(f"/{names.instance_name(n)}.log")
    unexpected = {p for p in procs if p.startswith((f"{names.GROUP}:{names.INSTANCE_PROGRAM}_",
                                                    f"{names.GROUP}:{names.SENTINEL_PROGRAM}_"))} - want
    assert not unexpected
