"""The timeline (always on), `leakshim diff` between two snapshots, and the Prometheus textfile
(metrics=DIR), on the staircase program (samples/py_staircase.py: a connection kept per request
next to a saw-tooth psycopg2 pool) and its fixed twin, against the harness's PostgreSQL."""

import json
import re
import subprocess
import threading
import time

from helpers import PY, ROOT, TOOL, run_shim, shim_env

STAIR = ROOT / "samples" / "py_staircase.py"
FIXED = ROOT / "samples" / "py_staircase_fixed.py"


def run_report(script, dsn, tmp_path, name, requests=10, options=""):
    """Runs script under the shim with a JSON exit report; returns the report."""
    opts = f"report={tmp_path}/{name}.json:format=json" + (":" + options if options else "")
    r = run_shim([PY, script, dsn, "--requests", requests, "--pause", "0.1"], options=opts, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads((tmp_path / f"{name}.json").read_text())


def series(doc, k):
    return [s["groups"][k][0] for s in doc["timeline"]]


def leak_timeline_group(doc):
    leaks = [i for i, g in enumerate(doc["groups"]) if g["leak"]]
    return [k for k, t in enumerate(doc["timeline_groups"]) if t["group"] in leaks]


def test_staircase_climbs_and_the_pool_saws(pg, tmp_path):
    doc = run_report(STAIR, pg.dsn, tmp_path, "stair", requests=12, options="interval=0.05")
    assert doc["summary"]["leaks"] == 12
    assert len(doc["timeline"]) >= 10
    (k,) = leak_timeline_group(doc)  # exactly one timeline group is the leak
    stair = series(doc, k)
    assert stair == sorted(stair), stair  # never comes back down
    assert stair[-1] == 12 and len(set(stair)) >= 6  # one step per request, seen step by step
    pools = [k for k, t in enumerate(doc["timeline_groups"]) if t["pool"]]
    assert len(pools) == 1
    saw = series(doc, pools[0])
    assert max(saw) <= 8 and any(b < a for a, b in zip(saw, saw[1:])), saw  # goes up and down
    # the totals are the sum of the groups; created never decreases
    for s in doc["timeline"]:
        assert s["live"] == sum(g[0] for g in s["groups"])
    created = [s["created"] for s in doc["timeline"]]
    assert created == sorted(created) and created[-1] >= 12
    ts = [s["t"] for s in doc["timeline"]]
    assert ts == sorted(ts)


def test_healthy_program_has_no_staircase(pg, tmp_path):
    doc = run_report(FIXED, pg.dsn, tmp_path, "fixed", requests=12, options="interval=0.05")
    assert doc["summary"]["leaks"] == 0
    assert not leak_timeline_group(doc)
    total = [s["live"] for s in doc["timeline"]]
    assert len(total) >= 10 and max(total) <= 8 + 1
    assert total[-1] <= 2  # back down at the end: the pool's idle connection (and one request's)


def test_timeline_is_on_by_default(pg, tmp_path):
    # interval's default (1 s) samples a run of a few seconds without any option
    doc = run_report(STAIR, pg.dsn, tmp_path, "default", requests=25)
    assert len(doc["timeline"]) >= 1
    assert doc["timeline"][-1]["live"] >= 1


class Phased:
    """samples/py_staircase.py --phases K under the shim: after each phase it prints READY i and
    waits for a line on stdin (its connections stay as they are meanwhile)."""

    def __init__(self, dsn, options, requests=5, phases=2):
        self.proc = subprocess.Popen([PY, str(STAIR), dsn, "--requests", str(requests), "--pause", "0.02",
                                      "--phases", str(phases)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=shim_env(options))

    def ready(self, i):
        line = self.proc.stdout.readline().strip()
        assert line == f"READY {i}", (line, self.proc.stderr.read() if self.proc.poll() is not None else "")

    def dump(self, path):
        r = subprocess.run([str(TOOL), "dump", "--json", str(self.proc.pid)], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, r.stderr
        path.write_text(r.stdout)
        return json.loads(r.stdout)

    def go_on(self):
        self.proc.stdin.write("\n")
        self.proc.stdin.flush()

    def finish(self):
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return out, err


def test_diff_of_two_snapshots_names_exactly_the_grown_group(pg, tmp_path):
    p = Phased(pg.dsn, f"report={tmp_path}/r.%p", requests=4)
    try:
        p.ready(1)
        old = p.dump(tmp_path / "old.json")
        p.go_on()
        p.ready(2)
        new = p.dump(tmp_path / "new.json")
        p.go_on()
    finally:
        p.finish()
    assert old["summary"]["live"] < new["summary"]["live"]
    r = subprocess.run([str(TOOL), "diff", tmp_path / "old.json", tmp_path / "new.json"], capture_output=True,
                       text=True, timeout=30)
    assert r.returncode == 1, r.stdout + r.stderr
    changed = [line for line in r.stdout.splitlines() if line.startswith(("NEW", "GREW"))]
    assert len(changed) == 1, r.stdout  # only the staircase, not the pool
    assert changed[0].startswith("GREW  +4 PostgreSQL"), changed
    assert "at open_for_request (samples/py_staircase.py:" in r.stdout
    assert "1 group new or grown" in r.stdout
    # the other way round nothing grew, and a report against itself neither: exit status 0
    back = subprocess.run([str(TOOL), "diff", tmp_path / "new.json", tmp_path / "old.json"], capture_output=True,
                          text=True, timeout=30)
    assert back.returncode == 0 and "nothing grew" in back.stdout, back.stdout
    same = subprocess.run([str(TOOL), "diff", tmp_path / "new.json", tmp_path / "new.json"], capture_output=True,
                          text=True, timeout=30)
    assert same.returncode == 0
    # --min 5 ignores the step of 4; a file that is not a report is a usage error (2)
    assert subprocess.run([str(TOOL), "diff", "--min", "5", tmp_path / "old.json", tmp_path / "new.json"],
                          capture_output=True, timeout=30).returncode == 0
    (tmp_path / "junk.json").write_text("{not json")
    bad = subprocess.run([str(TOOL), "diff", tmp_path / "junk.json", tmp_path / "new.json"], capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "not a leakshim JSON report" in bad.stderr


def parse_metrics(text):
    """{(name, frozenset(labels)): value} from the exposition format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-z_]+)\{(.*)\} (\S+)', line)
        assert m, line
        labels = frozenset(re.findall(r'([a-z_]+)="((?:[^"\\]|\\.)*)"', m.group(2)))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def wait_for(cond, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        threading.Event().wait(0.02)
    raise AssertionError("condition not met in time")


def test_metrics_textfile_passes_promtool_and_equals_the_live_counts(pg, tmp_path):
    mdir = tmp_path / "textfile"
    mdir.mkdir(mode=0o755)
    p = Phased(pg.dsn, f"report={tmp_path}/r.%p:metrics={mdir}:interval=0.05", requests=6)
    try:
        p.ready(1)
        snap = p.dump(tmp_path / "snap.json")
        files = wait_for(lambda: sorted(mdir.glob("*.prom")))
        assert len(files) == 1
        prom = files[0]
        assert re.fullmatch(rf"leakshim_python3(\.\d+)?_0_{p.proc.pid}\.prom", prom.name), prom.name
        assert prom.stat().st_mode & 0o777 == 0o644
        # a file written after the dump (the program is idle, waiting on stdin: counts are stable)
        since = time.time()
        wait_for(lambda: prom.exists() and prom.stat().st_mtime > since + 0.1)
        text = prom.read_text()
        check = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                               timeout=30)
        assert check.returncode == 0, check.stdout + check.stderr
        m = parse_metrics(text)
        open_conns = {dict(k[1])["state"]: v for k, v in m.items() if k[0] == "leakshim_open_connections"}
        assert sum(open_conns.values()) == snap["summary"]["live"]
        states = {}
        for s in snap["sockets"]:
            states[s["state"]] = states.get(s["state"], 0) + 1
        assert {k: v for k, v in open_conns.items() if v} == states
        assert all(dict(k[1])["database"] == "PostgreSQL" for k in m if k[0] == "leakshim_open_connections")
        one = {k[0]: v for k, v in m.items()}
        assert one["leakshim_leaked_at_exit"] == 6  # the staircase's six, not the pool's idle connection
        assert one["leakshim_checkouts_over_threshold"] == 0
        assert one["leakshim_oldest_checkout_seconds"] == 0
        assert one["leakshim_leak_warnings_total"] == 0
        created = sum(v for k, v in m.items() if k[0] == "leakshim_connections_created_total")
        closed = sum(v for k, v in m.items() if k[0] == "leakshim_connections_closed_total")
        assert created - closed == snap["summary"]["live"] and created >= 6
        info = [dict(k[1]) for k in m if k[0] == "leakshim_process_info"]
        assert info and info[0]["pid"] == str(p.proc.pid) and info[0]["slot"] == "0"
        for (name, labels) in m:  # pids only in the info metric; no stacks anywhere
            keys = dict(labels)
            assert name == "leakshim_process_info" or "pid" not in keys
            assert not any("/" in v or ".py" in v for v in keys.values()), keys
        p.go_on()
        p.ready(2)
        p.go_on()
    finally:
        p.finish()
    assert not list(mdir.glob("*.prom")), "the textfile is removed at exit"


def test_metrics_in_an_unsafe_directory_is_refused_with_one_line(pg, tmp_path):
    mdir = tmp_path / "open"
    mdir.mkdir()
    mdir.chmod(0o777)  # writable by anyone, no sticky bit
    r = run_shim([PY, STAIR, pg.dsn, "--requests", "3", "--pause", "0.05"],
                 options=f"metrics={mdir}:interval=0.02", timeout=60)
    assert r.returncode == 0
    lines = [line for line in r.stderr.splitlines() if "metrics=" in line]
    assert len(lines) == 1 and "writable by others" in lines[0], r.stderr
    assert not list(mdir.iterdir())


def test_two_processes_of_one_program_get_two_slots(pg, tmp_path):
    mdir = tmp_path / "textfile"
    mdir.mkdir(mode=0o755)
    procs = [Phased(pg.dsn, f"report={tmp_path}/r.%p:metrics={mdir}:interval=0.05", requests=2 + i)
             for i in range(2)]
    try:
        for p in procs:
            p.ready(1)

        def two_slots():  # two processes that start together may both take 0 first; one moves
            fs = sorted(mdir.glob("*.prom"))
            return len(fs) == 2 and len({f.name.rsplit("_", 2)[1] for f in fs}) == 2 and fs

        files = wait_for(two_slots)
        by_pid = {int(f.name.rsplit("_", 1)[1][:-5]): f for f in files}
        assert set(by_pid) == {p.proc.pid for p in procs}
        slots = {re.search(r'slot="(\d+)"', by_pid[p.proc.pid].read_text()).group(1) for p in procs}
        assert slots == {"0", "1"}  # the same labels would be one series in node_exporter
        for f in files:  # the label is the file name's slot
            assert f'slot="{f.name.rsplit("_", 2)[1]}"' in f.read_text()
        both = "".join(f.read_text() for f in files)
        gauges = parse_metrics(both)  # every series distinct across the two files
        assert len(gauges) == len([line for line in both.splitlines() if line and not line.startswith("#")])
        for p in procs:
            p.go_on()
            p.ready(2)
            p.go_on()
    finally:
        for p in procs:
            p.finish()
    assert not list(mdir.glob("*.prom"))
