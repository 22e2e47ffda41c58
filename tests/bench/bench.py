#!/usr/bin/python3
"""bench.py — coregroup's benchmark suite: the Swatch mix under the three cache strategies, its
scaling curves, and the micro-benchmarks, each against a baseline measured in the same run.

Run it through tests/run-benchmarks.sh, which installs what is missing and builds first:

    tests/run-benchmarks.sh [--quick] [--out DIR] [...]      (--help lists every option)

It starts its own world: a private PostgreSQL cluster (tests/pgharness.sh: fsync off, so the
figures compare CPU and round trips, not a disk), one cg-busd forwarder, and for each run the
cores: in-process (bench_swatch processes, each one core with --threads client threads) or
coregroupd daemons (each with a bench_swatch client process of --threads threads). Every run
has a warm-up and a measured window; the processes of a run line their windows up by the wall
clock. Everything is stopped at the end, also on failure or Ctrl-C.

The results go to DIR (default tests/bench/results, where the last full run is committed;
--quick writes to tests/bench/results/quick): results.json (every figure,
the machine and the commit), results.md (the tables and what bends the curves), and PNG
plots (python3-matplotlib): throughput.png (the headline), latency_cdf.png,
eviction_lag.png, scaling_cores.png, scaling_writes.png.

Exit status: 0 done; 1 a run failed, crashed or lost an update (said on stderr and in
results.md: such a run is never reported as a figure); 2 bad usage or a missing tool.
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STRATEGIES = ["none", "version-check", "invalidate"]
LABEL = {"none": "1 no cache", "version-check": "2 version check", "invalidate": "3 invalidation"}
OPS = ["invoke", "discover", "connect", "list", "rmw", "register"]
READS = ["invoke", "discover", "connect", "list"]
GROUP = "swatch"
ROLE = "cg_swatch"


class Failure(Exception):
    pass


class MissingTool(Failure):
    pass


T0 = time.time()


def log(msg):
    print("bench: [%4.0f s] %s" % (time.time() - T0, msg), flush=True)


def positive_int(lo, hi):
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a whole number" % text)
        if v < lo or v > hi:
            raise argparse.ArgumentTypeError("%d is not within %d to %d" % (v, lo, hi))
        return v
    return parse


def number(lo, hi):
    def parse(text):
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError("%r is not a number" % text)
        if not (lo <= v <= hi):
            raise argparse.ArgumentTypeError("%g is not within %g to %g" % (v, lo, hi))
        return v
    return parse


def int_list(lo, hi):
    def parse(text):
        out = []
        for part in text.split(","):
            out.append(positive_int(lo, hi)(part.strip()))
        return out
    return parse


def pct_list(text):
    out = []
    for part in text.split(","):
        v = number(0, 100)(part.strip())
        out.append(v)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="tests/run-benchmarks.sh",
        description="coregroup's benchmark suite: the Swatch mix under the three cache "
                    "strategies (in-process and through coregroupd), scaling curves over cores "
                    "and write fractions, and micro-benchmarks against raw baselines. Writes "
                    "results.json, results.md and PNG plots.",
        epilog="Exit status: 0 done; 1 a run failed, crashed or lost an update; 2 bad usage or "
               "a missing tool.")
    p.add_argument("--quick", action="store_true",
                   help="short windows, fewer scaling points, short micro-benchmarks (under "
                        "2 minutes once built; a smoke run, not figures to quote)")
    p.add_argument("--out", default=None,
                   help="results directory (default tests/bench/results, where the last full "
                        "run is committed; --quick: tests/bench/results/quick)")
    p.add_argument("--build", default=os.path.join(ROOT, "build-bench"),
                   help="build directory with the programs (run-benchmarks.sh builds it)")
    p.add_argument("--cores", type=positive_int(1, 16), default=3,
                   help="cores of the group in the Swatch runs (default 3)")
    p.add_argument("--threads", type=positive_int(1, 64), default=4,
                   help="client threads per core (default 4)")
    p.add_argument("--write-pct", type=number(0, 100), default=3.0,
                   help="writes, percent of the messages, in the Swatch runs (default 3)")
    p.add_argument("--scale-cores", type=int_list(1, 16), default=None,
                   help="core counts of the scaling curve (default 1,2,4,8; --quick 1,4)")
    p.add_argument("--scale-writes", type=pct_list, default=None,
                   help="write percentages of the scaling curve (default 0,1,3,10,30, where 0 "
                        "is the read-only ceiling; --quick 1,30)")
    p.add_argument("--seconds", type=number(0.5, 600), default=None,
                   help="measured seconds per run (default 10, --quick 0.8)")
    p.add_argument("--warmup", type=number(0, 60), default=None,
                   help="warm-up seconds per run (default 2, --quick 0.2)")
    p.add_argument("--prefill", choices=["yes", "no"], default=None,
                   help="load every resource, listing and find into each caching core before "
                        "the warm-up, as a core that has served for a while holds them (default "
                        "yes; --quick: no)")
    p.add_argument("--pin", choices=["yes", "no"], default="yes",
                   help="run PostgreSQL on the last CPU and the cores, forwarder and clients on "
                        "the others, as if the repository had a host of its own (default yes; "
                        "no: all share every CPU)")
    p.add_argument("--strategies", default=",".join(STRATEGIES),
                   help="cache strategies to run (default none,version-check,invalidate)")
    p.add_argument("--modes", default="library,daemon",
                   help="how the Swatch mix reaches the cores: library (in-process), daemon "
                        "(through coregroupd); default both")
    p.add_argument("--only", default="swatch,scaling,micro",
                   help="which parts: any of swatch, scaling, micro (default all)")
    p.add_argument("--validate", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    parts = [x.strip() for x in a.only.split(",") if x.strip()]
    for x in parts:
        if x not in ("swatch", "scaling", "micro"):
            p.error("--only: unknown part %r (expected swatch, scaling, micro)" % x)
    a.parts = set(parts)
    a.strategy_list = [x.strip() for x in a.strategies.split(",") if x.strip()]
    for x in a.strategy_list:
        if x not in STRATEGIES:
            p.error("--strategies: unknown strategy %r (expected %s)" % (x, ", ".join(STRATEGIES)))
    a.mode_list = [x.strip() for x in a.modes.split(",") if x.strip()]
    for x in a.mode_list:
        if x not in ("library", "daemon"):
            p.error("--modes: unknown mode %r (expected library, daemon)" % x)
    if not a.strategy_list or not a.mode_list or not parts:
        p.error("--strategies, --modes and --only must each name at least one")
    if a.scale_cores is None:
        a.scale_cores = [1, 4] if a.quick else [1, 2, 4, 8]
    if a.scale_writes is None:
        a.scale_writes = [1, 30] if a.quick else [0, 1, 3, 10, 30]
    if a.seconds is None:
        a.seconds = 0.8 if a.quick else 10.0
    if a.warmup is None:
        a.warmup = 0.2 if a.quick else 2.0
    a.prefill = (a.prefill or ("no" if a.quick else "yes")) == "yes"
    a.pin = a.pin == "yes"
    if a.out is None:
        a.out = os.path.join(ROOT, "tests", "bench", "results", *(["quick"] if a.quick else []))
    return a


# ---- the world ---------------------------------------------------------------------------

def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class World:
    def __init__(self, args, tmp):
        self.args = args
        self.tmp = tmp
        self.bin = args.build
        self.procs = []
        self.state = os.path.join(tmp, "pg.state")
        self.env = {}
        # --pin: the repository on the last CPU, everything else on the others, as if the
        # repository had a host of its own (it has in production)
        n = os.cpu_count() or 1
        self.pin_repo = ["taskset", "-c", str(n - 1)] if args.pin and n >= 2 else []
        self.pin_cores = ["taskset", "-c", "0-%d" % (n - 2)] if args.pin and n >= 2 else []

    def prog(self, name):
        for path in (os.path.join(self.bin, name), os.path.join(self.bin, "tests", name)):
            if os.access(path, os.X_OK):
                return path
        raise MissingTool("%s not found in %s (run tests/run-benchmarks.sh, which builds it)"
                          % (name, self.bin))

    def start(self):
        r = subprocess.run(self.pin_repo + [os.path.join(ROOT, "tests", "pgharness.sh"), "start", self.state,
                            os.path.join(ROOT, "migrations"), self.prog("cg-migrate")],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if r.returncode != 0:
            raise Failure("the private PostgreSQL did not start:\n%s" % r.stdout.decode()[-800:])
        for line in open(self.state):
            k, _, v = line.strip().partition("=")
            self.env[k] = v.strip("'\"")
        self.admin_dsn = self.env["CG_TEST_DSN"]
        for role, group in ((ROLE, GROUP), ("cg_bench", "bench"), ("cg_bench_bus", "bench-bus"),
                            ("cg_bench_daemon", "bench-daemon"), ("cg_bench_upd", "bench-upd")):
            self.run_ok([self.prog("cg-migrate"), "-q", "-d", self.admin_dsn, "map-role", role,
                         group])
        self.dsn = "%s user=%s" % (self.admin_dsn, ROLE)
        self.front, self.back = free_port(), free_port()
        self.busd = self.spawn("busd", [self.prog("cg-busd"), "--frontend",
                                        "tcp://127.0.0.1:%d" % self.front, "--backend",
                                        "tcp://127.0.0.1:%d" % self.back, "--quiet"])
        time.sleep(0.3)
        if self.busd.poll() is not None:
            raise Failure("cg-busd exited at once (log %s)" % self.logpath("busd"))
        self.pg_version = self.query1("SHOW server_version")

    def logpath(self, name):
        return os.path.join(self.tmp, name + ".log")

    def spawn(self, name, argv):
        f = open(self.logpath(name), "ab")
        p = subprocess.Popen(self.pin_cores + argv, stdout=f, stderr=subprocess.STDOUT,
                             start_new_session=True)
        f.close()
        p.name = name
        self.procs.append(p)
        return p

    def run_ok(self, argv, timeout=600):
        r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        if r.returncode != 0:
            raise Failure("%s failed (%d): %s" % (" ".join(os.path.basename(x) for x in argv[:2]),
                                                 r.returncode, r.stdout.decode()[-800:]))
        return r.stdout.decode()

    def query1(self, sql, dsn=None):
        psql = os.path.join(self.env.get("CG_TEST_PGBIN", ""), "psql")
        if not os.access(psql, os.X_OK):
            psql = shutil.which("psql")
        out = self.run_ok([psql, "-X", "-q", "-At", "-d", dsn or self.admin_dsn, "-c", sql])
        return out.strip()

    def stop(self):
        for p in reversed(self.procs):
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGTERM)
                except OSError:
                    pass
        deadline = time.time() + 10
        for p in self.procs:
            try:
                p.wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs = []
        if os.path.exists(self.state):
            subprocess.run([os.path.join(ROOT, "tests", "pgharness.sh"), "stop", self.state],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ---- one run of the mix --------------------------------------------------------------------

class RunFailed(Failure):
    pass


def daemon_ini(world, name, strategy, listen):
    return "\n".join([
        "; written by tests/bench/bench.py",
        "[repository]", "dsn = %s application_name=%s" % (world.dsn, name),
        "pool_size = %d" % min(64, world.args.threads + 1),
        "[core]", "name = %s" % name, "group = %s" % GROUP, "log_level = warn",
        "[bus]", "publish = tcp://127.0.0.1:%d" % world.front,
        "subscribe = tcp://127.0.0.1:%d" % world.back,
        "[cache]", "strategy = %s" % strategy,
        "[daemon]", "listen = %s" % listen, "workers = 4", ""])


def wait_daemon(world, ini, proc, limit=30.0):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RunFailed("coregroupd %s exited (%s) at start (log %s)"
                            % (proc.name, proc.returncode, world.logpath(proc.name)))
        r = subprocess.run([world.prog("cgctl"), "-c", ini, "health"], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        if r.returncode == 0:
            return
        time.sleep(0.2)
    raise RunFailed("coregroupd %s not healthy after %.0f s" % (proc.name, limit))


def run_mix(world, label, strategy, mode, cores, threads, write_pct):
    """One run: `cores` cores of the group, `threads` client threads each. Returns the merged
    figures, or raises RunFailed."""
    a = world.args
    tag = "%s-%s-%s-c%d-w%g" % (label, mode, strategy, cores, write_pct)
    outs, clients, daemons = [], [], []
    barrier = os.path.join(world.tmp, "barrier-" + tag)
    os.makedirs(barrier)
    try:
        for k in range(cores):
            name = "sw%d" % (k + 1)
            out = os.path.join(world.tmp, "%s-%s.json" % (tag, name))
            outs.append(out)
            common = [world.prog("bench_swatch"), "run", "--dsn", world.dsn, "--group", GROUP,
                      "--threads", str(threads), "--write-pct", "%g" % write_pct,
                      "--warmup", "%g" % a.warmup, "--seconds", "%g" % a.seconds,
                      "--barrier", barrier, "--seed", str(k + 1), "--out", out]
            if a.prefill and strategy != "none":
                common.append("--prefill")
            if mode == "library":
                argv = common + ["--core", name, "--strategy", strategy,
                                 "--publish", "tcp://127.0.0.1:%d" % world.front,
                                 "--subscribe", "tcp://127.0.0.1:%d" % world.back]
            else:
                listen = "ipc://%s/%s.sock" % (world.tmp, name)
                ini = os.path.join(world.tmp, name + ".ini")
                with open(ini, "w") as f:
                    f.write(daemon_ini(world, name, strategy, listen))
                d = world.spawn("%s-%s" % (tag, name), [world.prog("coregroupd"), "-c", ini])
                daemons.append((d, ini))
                argv = common + ["--daemon", listen]
            clients.append((name, argv))
        for d, ini in daemons:
            wait_daemon(world, ini, d)
        procs = [world.spawn("%s-%s-client" % (tag, name), argv) for name, argv in clients]
        # every process ready (connected, data set read, prefilled): then one common start
        deadline = time.time() + 300
        while len([f for f in os.listdir(barrier) if f.startswith("ready.")]) < len(procs):
            for p in procs:
                if p.poll() is not None:
                    with open(world.logpath(p.name), errors="replace") as f:
                        tail = f.read()[-600:]
                    raise RunFailed("%s exited %s before the start: %s"
                                    % (p.name, p.returncode, tail.strip()))
            if time.time() > deadline:
                raise RunFailed("the processes of the run were not ready within 300 s")
            time.sleep(0.05)
        start_at = int(time.time() * 1000) + 200
        with open(os.path.join(barrier, "go.tmp"), "w") as f:
            f.write("%d\n" % start_at)
        os.rename(os.path.join(barrier, "go.tmp"), os.path.join(barrier, "go"))
        limit = time.time() + 0.2 + a.warmup + a.seconds + 60
        # each CPU's busy share over the measured window: with --pin, the last CPU is the
        # repository's, so the figures say which side a curve is bound by
        time.sleep(max(0.0, start_at / 1000.0 + a.warmup - time.time()))
        cpu0 = cpu_times()
        time.sleep(max(0.0, start_at / 1000.0 + a.warmup + a.seconds - time.time()))
        cpu_busy = busy_pct(cpu0, cpu_times())
        for p in procs:
            try:
                p.wait(max(1, limit - time.time()))
            except subprocess.TimeoutExpired:
                raise RunFailed("%s did not finish (log %s)" % (p.name, world.logpath(p.name)))
            if p.returncode != 0:
                with open(world.logpath(p.name), errors="replace") as f:
                    tail = f.read()[-600:]
                raise RunFailed("%s exited %s: %s" % (p.name, p.returncode, tail.strip()))
    finally:
        for d, ini in daemons:
            if d.poll() is None:
                d.send_signal(signal.SIGTERM)
        for d, ini in daemons:
            try:
                d.wait(15)
            except subprocess.TimeoutExpired:
                d.kill()
                d.wait()
            if d.returncode not in (0, -signal.SIGTERM):
                raise RunFailed("coregroupd %s exited %s (log %s)"
                                % (d.name, d.returncode, world.logpath(d.name)))
    parts = [json.load(open(o)) for o in outs]
    r = merge(parts, strategy, mode, cores, threads, write_pct)
    r["cpu_busy_pct"] = cpu_busy
    return r


def cpu_times():
    """(busy, total) jiffies per CPU, from /proc/stat."""
    out = []
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("cpu") and line[3].isdigit():
                v = [int(x) for x in line.split()[1:]]
                idle = v[3] + (v[4] if len(v) > 4 else 0)
                out.append((sum(v) - idle, sum(v)))
    return out


def busy_pct(a, b):
    return [round(100.0 * (b1 - b0) / max(1, t1 - t0), 1) for (b0, t0), (b1, t1) in zip(a, b)]


def merge(parts, strategy, mode, cores, threads, write_pct):
    seconds = parts[0]["seconds"]
    ops = {k: sum(p["ops"][k] for p in parts) for k in OPS}
    buckets = {}
    for k in OPS:
        b = {}
        for p in parts:
            for i, c in p["latency_buckets"].get(k, []):
                b[int(i)] = b.get(int(i), 0) + int(c)
        buckets[k] = b
    reads = {}
    for k in READS:
        for i, c in buckets[k].items():
            reads[i] = reads.get(i, 0) + c
    total = sum(ops.values())
    events = [p["events"] for p in parts if p["events"] >= 0]
    catchups = sum(p["catchups"] for p in parts)
    ev = max(events) if events else 0
    lag = None
    for p in parts:
        h = p.get("eviction_lag_ms")
        if h and h.get("le"):
            if lag is None:
                lag = {"le": h["le"], "count": [0] * len(h["count"])}
            lag["count"] = [x + y for x, y in zip(lag["count"], h["count"])]
    sampled = sum(p["reads_sampled"] for p in parts)
    older = sum(p["reads_older"] for p in parts)
    r = {
        "strategy": strategy, "mode": mode, "cores": cores, "threads_per_core": threads,
        "write_pct": write_pct, "seconds": seconds,
        "ops": ops, "ops_per_s": total / seconds,
        "ops_per_s_by_type": {k: ops[k] / seconds for k in OPS},
        "latency_us": {k: percentiles(buckets[k]) for k in OPS},
        "read_latency_us": percentiles(reads),
        "read_latency_cdf": cdf(reads),
        "stale_errors": sum(p["stale_errors"] for p in parts),
        "gave_up": sum(p["gave_up"] for p in parts),
        "errors": sum(p["errors"] for p in parts),
        "first_error": next((p["first_error"] for p in parts if p["first_error"]), ""),
        "catchups": catchups, "events": ev,
        "catchups_per_1000_events": (1000.0 * catchups / cores / ev) if ev > 0 else 0.0,
        "cache_resets": sum(p["cache_resets"] for p in parts),
        "reads_sampled": sampled, "reads_older": older,
        "reads_older_pct": (100.0 * older / sampled) if sampled else 0.0,
        "oldest_read_ms": max(p["oldest_read_ms"] for p in parts),
        "eviction_lag_ms": lag,
    }
    r["stale_errors_per_s"] = r["stale_errors"] / seconds
    return r


def bucket_us(i):
    """The upper edge of latency bucket i (1/8 octave from 1 ns), in microseconds."""
    return 2 ** ((i + 1) / 8.0) / 1000.0


def percentiles(b):
    n = sum(b.values())
    out = {"n": n}
    for name, q in (("p50", 0.5), ("p99", 0.99), ("p999", 0.999)):
        if n == 0:
            out[name] = None
            continue
        acc = 0
        for i in sorted(b):
            acc += b[i]
            if acc >= q * n:
                out[name] = round(bucket_us(i), 2)
                break
    return out


def cdf(b):
    n = sum(b.values())
    acc, pts = 0, []
    for i in sorted(b):
        acc += b[i]
        pts.append([round(bucket_us(i), 3), acc / n])
    return pts


def check_no_lost_update(world):
    """Every state part's counter equals its version - 1: each committed read-modify-write
    raised both by one, so a lost update (a write based on a stale read that went through)
    shows as a difference."""
    bad = world.query1("SELECT count(*) FROM resource_parts WHERE group_id = '%s' AND part = "
                       "'state' AND (body->>'n')::bigint <> version - 1" % GROUP)
    writes = world.query1("SELECT coalesce(sum(version - 1), 0) FROM resource_parts WHERE "
                          "group_id = '%s' AND part = 'state'" % GROUP)
    return int(bad), int(writes)


# ---- micro-benchmarks --------------------------------------------------------------------

def micro(world):
    a = world.args
    secs = "0.3" if a.quick else "2"
    res = {}
    log("micro: update path vs pgbench, 8 writers on one part")
    out = world.run_ok([world.prog("bench_update"), "--dsn", "%s user=cg_bench_upd"
                        % world.admin_dsn, "--group", "bench-upd", "--seconds",
                        "1" if a.quick else "3", "--rounds", "1" if a.quick else "3",
                        "--writers", "8", "--json"])
    res["bench_update"] = json.loads(out[out.index("{"):])
    for name, argv in (
            ("bench_core", [world.prog("bench_core"), "--dsn", "%s user=cg_bench"
                            % world.admin_dsn, "--seconds", secs, "--rounds",
                            "1" if a.quick else "3"]),
            ("bench_cache", [world.prog("bench_cache"), "--seconds", secs]),
            ("bench_daemon", [world.prog("bench_daemon"), "--dsn", "%s user=cg_bench_daemon"
                              % world.admin_dsn, "--coregroupd", world.prog("coregroupd"),
                              "--group", "bench-daemon", "--seconds", secs,
                              "--rounds", "1" if a.quick else "3"]),
            ("bench_bus", [world.prog("bench_bus"), "--dsn", "%s user=cg_bench_bus"
                           % world.admin_dsn, "--busd", world.prog("cg-busd"),
                           "--samples", "100" if a.quick else "400"])):
        log("micro: %s" % name)
        res[name] = world.run_ok(argv).strip().splitlines()
    return res


# ---- the report ----------------------------------------------------------------------------

def machine(world):
    mem = 0
    for line in open("/proc/meminfo"):
        if line.startswith("MemTotal:"):
            mem = int(line.split()[1]) * 1024
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short=12", "HEAD"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.decode().strip()
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL).stdout.strip()
    except OSError:
        commit, dirty = "", b""
    cpu = ""
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    return {"cpus": os.cpu_count(), "cpu": cpu, "memory_gib": round(mem / 2 ** 30, 1),
            "kernel": platform.release(), "postgresql": world.pg_version,
            "commit": commit + (" (with uncommitted changes)" if dirty else ""),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def fmt(x, digits=0):
    if x is None:
        return "-"
    if isinstance(x, float) and digits == 0:
        return "{:,.0f}".format(x)
    return "{:,.{d}f}".format(x, d=digits)


def cpu_cell(r):
    """Each CPU's busy share over the window, "a/b%"; with --pin the last is the repository's."""
    return "/".join("%.0f" % x for x in r.get("cpu_busy_pct", [])) + "%"


def lat_cell(l):
    return "%s / %s / %s" % (fmt(l["p50"], 1), fmt(l["p99"], 1), fmt(l["p999"], 1)) if l["n"] else "-"


def targets(results):
    """The issue's targets as ratios within this run (library mode, the Swatch mix)."""
    sw = {r["strategy"]: r for r in results.get("swatch", []) if r["mode"] == "library"}
    t = []
    if all(s in sw for s in STRATEGIES):
        s1, s2, s3 = sw["none"], sw["version-check"], sw["invalidate"]
        t.append(("strategy 3 throughput >= 10x strategy 1", s3["ops_per_s"] / s1["ops_per_s"], 10.0, ">="))
        t.append(("strategy 3 throughput >= 3x strategy 2", s3["ops_per_s"] / s2["ops_per_s"], 3.0, ">="))
        p1, p3 = s1["read_latency_us"]["p99"], s3["read_latency_us"]["p99"]
        if p1 and p3:
            t.append(("strategy 3 p99 read latency <= 1/10 of strategy 1", p3 / p1, 0.1, "<="))
    up = results.get("micro", {}).get("bench_update", {}).get("update_path")
    if up:
        t.append(("library update path <= 1.25x raw (pgbench, same statements and pipelining)",
                  up["ratio_pipelined"], 1.25, "<="))
    return [{"target": n, "value": round(v, 3), "limit": lim,
             "met": (v >= lim if op == ">=" else v <= lim)} for n, v, lim, op in t]


def write_markdown(path, results):
    m = results["machine"]
    a = results["settings"]
    L = []
    L.append("# Benchmark results%s" % (" (--quick: a smoke run, not figures to quote)"
                                        if a["quick"] else ""))
    L.append("")
    L.append("Machine: %d CPUs (%s), %.1f GiB, Linux %s, PostgreSQL %s. Commit %s, %s. Written "
             "by `tests/run-benchmarks.sh%s`." % (m["cpus"], m["cpu"], m["memory_gib"], m["kernel"],
                                                  m["postgresql"], m["commit"], m["date"],
                                                  " --quick" if a["quick"] else ""))
    L.append("")
    L.append("Each run: %s%g s warm-up, then %g s measured. The Swatch mix: %d cores of one group, "
             "%d client threads per core, 10,000 resources with Zipf (s = 0.99) popularity; "
             "invoke 60, discover 20, connect 10, list 7, writes %g (two in three a "
             "read-modify-write of a state part, one in three a re-registration: unregister, "
             "register and bind). The operations are defined in `tests/bench_swatch.c`'s header."
             % ("every caching core prefilled with the whole data set, then " if a.get("prefill") else "",
                a["warmup"], a["seconds"], a["cores"], a["threads"], a["write_pct"]))
    L.append("")
    if results.get("failures"):
        L.append("**This run FAILED; its figures are not to be quoted:**")
        L.append("")
        for f in results["failures"]:
            L.append("- %s" % f)
        L.append("")
    tg = results.get("targets", [])
    if tg:
        L.append("## Targets (ratios within this run)")
        L.append("")
        L.append("| target | measured | met |")
        L.append("| --- | --- | --- |")
        for t in tg:
            L.append("| %s | %.3g | %s |" % (t["target"], t["value"], "yes" if t["met"] else "**no**"))
        L.append("")
    sw = results.get("swatch", [])
    if sw:
        L.append("## The Swatch mix")
        L.append("")
        L.append("| strategy | mode | messages/s | vs strategy 1 | read p50 / p99 / p999 µs | "
                 "stale errors/s | catch-ups per 1,000 events | reads older than the repository "
                 "| CPUs busy |")
        L.append("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        base = {r["mode"]: r["ops_per_s"] for r in sw if r["strategy"] == "none"}
        for r in sw:
            L.append("| %s | %s | %s | %.1fx | %s | %.1f | %.2f | %.3f%% of %d sampled, oldest %.1f ms | %s |" % (
                LABEL[r["strategy"]], r["mode"], fmt(r["ops_per_s"]),
                r["ops_per_s"] / base.get(r["mode"], r["ops_per_s"]), lat_cell(r["read_latency_us"]),
                r["stale_errors_per_s"], r["catchups_per_1000_events"], r["reads_older_pct"],
                r["reads_sampled"], r["oldest_read_ms"], cpu_cell(r)))
        L.append("")
        L.append("Latency per message type, p50 / p99 / p999 in µs:")
        L.append("")
        L.append("| strategy | mode | " + " | ".join(OPS) + " |")
        L.append("| --- | --- |" + " --- |" * len(OPS))
        for r in sw:
            L.append("| %s | %s | %s |" % (LABEL[r["strategy"]], r["mode"],
                                           " | ".join(lat_cell(r["latency_us"][k]) for k in OPS)))
        L.append("")
        errs = [r for r in sw if r["errors"] or r["gave_up"]]
        for r in errs:
            L.append("- %s %s: %d errors%s; %d read-modify-writes gave up after 16 stale "
                     "attempts (not counted as messages)" % (
                         LABEL[r["strategy"]], r["mode"], r["errors"],
                         (", the first: `%s`" % r["first_error"][:200]) if r["errors"] else "",
                         r["gave_up"]))
        if errs:
            L.append("")
    for key, title, col in (("scaling_cores", "Scaling with cores (library, %g%% writes)" % a["write_pct"], "cores"),
                            ("scaling_writes", "Scaling with writes (library, %d cores)" % a["cores"], "write_pct")):
        rows = results.get(key, [])
        if not rows:
            continue
        L.append("## %s" % title)
        L.append("")
        xs = sorted(set(r[col] for r in rows))
        L.append("| strategy | " + " | ".join(("%g" % x) + ("" if col == "cores" else "%") for x in xs) + " |")
        L.append("| --- |" + " --- |" * len(xs))
        for s in STRATEGIES:
            cells = []
            for x in xs:
                r = next((r for r in rows if r["strategy"] == s and r[col] == x), None)
                cells.append("%s (%s)" % (fmt(r["ops_per_s"]), cpu_cell(r)) if r else "-")
            L.append("| %s | %s |" % (LABEL[s], " | ".join(cells)))
        L.append("")
    if results.get("notes"):
        L.append("## Where the curves bend, and why")
        L.append("")
        L.append("The cells of the scaling tables are messages/s (CPUs busy: %s). Why each "
                 "curve bends, with the measurements behind it (`pg_stat_statements`, `perf`): "
                 "[`../NOTES.md`](../NOTES.md)." % (
                     "the cores' CPU / the repository's CPU, which has the last CPU to itself "
                     "(--pin)" if a.get("pin") else "each CPU, all shared"))
        L.append("")
        for n in results["notes"]:
            L.append("- " + n)
        L.append("")
    mi = results.get("micro")
    if mi:
        L.append("## Micro-benchmarks")
        L.append("")
        up = mi.get("bench_update", {})
        if up.get("update_path"):
            u = up["update_path"]
            L.append("Update path (one thread): the library %s calls/s; pgbench running the same "
                     "statements %s tps with the library's pipelining (ratio %.2fx), %s tps one "
                     "round trip per statement (ratio %.2fx)." % (
                         fmt(u["library_ops_s"]), fmt(u["pgbench_pipelined_tps"]),
                         u["ratio_pipelined"], fmt(u["pgbench_4rt_tps"]), u["ratio_4rt"]))
            L.append("")
        if up.get("one_part_writers"):
            w = up["one_part_writers"]
            L.append("%d writers on one part: %s commits/s, %s stale errors/s, %d lost updates "
                     "(baseline: %s, %s commits/s)." % (
                         w["writers"], fmt(w["commits_s"]), fmt(w["stale_s"]), w["lost_updates"],
                         w.get("baseline", "?"), fmt(w.get("baseline_commits_s"))))
            L.append("")
        for name in ("bench_core", "bench_cache", "bench_daemon", "bench_bus"):
            if name in mi:
                L.append("`%s`:" % name)
                L.append("")
                L.append("```")
                L.extend(mi[name])
                L.append("```")
                L.append("")
    L.append("Plots: `throughput.png`, `latency_cdf.png`, `eviction_lag.png`, "
             "`scaling_cores.png`, `scaling_writes.png`.")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def plots(out, results):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    colors = {"none": "#d62728", "version-check": "#ff7f0e", "invalidate": "#2ca02c"}
    m = results["machine"]
    foot = "%d CPUs, PostgreSQL %s, commit %s" % (m["cpus"], m["postgresql"], m["commit"])
    sw = results.get("swatch", [])
    if sw:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        modes = [x for x in ("library", "daemon") if any(r["mode"] == x for r in sw)]
        width = 0.8 / len(STRATEGIES)
        for j, s in enumerate(STRATEGIES):
            ys = [next((r["ops_per_s"] for r in sw if r["mode"] == md and r["strategy"] == s), 0)
                  for md in modes]
            xs = [i + (j - 1) * width for i in range(len(modes))]
            bars = ax.bar(xs, ys, width, label=LABEL[s], color=colors[s])
            for b, y in zip(bars, ys):
                ax.annotate(fmt(y), (b.get_x() + b.get_width() / 2, y), ha="center",
                            va="bottom", fontsize=8)
        ax.set_xticks(range(len(modes)))
        ax.set_xticklabels(["in-process (library)" if x == "library" else "through coregroupd"
                            for x in modes])
        ax.set_ylabel("Swatch messages per second")
        ax.set_title("The Swatch mix, %d cores x %d threads, %g%% writes, by cache strategy"
                     % (results["settings"]["cores"], results["settings"]["threads"],
                        results["settings"]["write_pct"]), fontsize=10)
        ax.legend()
        fig.text(0.01, 0.01, foot, fontsize=7, color="gray")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "throughput.png"), dpi=110)
        plt.close(fig)

        fig, axes = plt.subplots(1, len(modes), figsize=(5 * len(modes), 4), squeeze=False)
        for ax, md in zip(axes[0], modes):
            for s in STRATEGIES:
                r = next((r for r in sw if r["mode"] == md and r["strategy"] == s), None)
                if r and r["read_latency_cdf"]:
                    xs, ys = zip(*r["read_latency_cdf"])
                    ax.plot(xs, ys, label=LABEL[s], color=colors[s])
            ax.set_xscale("log")
            ax.set_xlabel("read latency, µs (log)")
            ax.set_ylabel("fraction of reads")
            ax.set_title("Read latency CDF, %s" % md, fontsize=10)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
        fig.text(0.01, 0.01, foot, fontsize=7, color="gray")
        fig.tight_layout()
        fig.savefig(os.path.join(out, "latency_cdf.png"), dpi=110)
        plt.close(fig)

        r = next((r for r in sw if r["mode"] == "library" and r["strategy"] == "invalidate"), None)
        if r and r["eviction_lag_ms"]:
            le, cum = r["eviction_lag_ms"]["le"], r["eviction_lag_ms"]["count"]
            counts = [cum[0]] + [cum[i] - cum[i - 1] for i in range(1, len(cum))]
            labels = ["<= %g" % x if x >= 0 else "> %g" % le[-2] for x in le]
            fig, ax = plt.subplots(figsize=(8, 4))
            ax.bar(range(len(counts)), counts, color=colors["invalidate"])
            ax.set_xticks(range(len(counts)))
            ax.set_xticklabels(labels, rotation=60, fontsize=7)
            ax.set_xlabel("commit to eviction on another core, ms")
            ax.set_ylabel("invalidations")
            ax.set_title("Commit-to-eviction latency (strategy 3, Swatch mix, all cores)",
                         fontsize=10)
            fig.text(0.01, 0.01, foot, fontsize=7, color="gray")
            fig.tight_layout()
            fig.savefig(os.path.join(out, "eviction_lag.png"), dpi=110)
            plt.close(fig)
    for key, col, xlabel, fname in (("scaling_cores", "cores", "cores (processes on this machine)", "scaling_cores.png"),
                                    ("scaling_writes", "write_pct", "writes, % of messages", "scaling_writes.png")):
        rows = results.get(key, [])
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 4))
        for s in STRATEGIES:
            pts = sorted((r[col], r["ops_per_s"]) for r in rows if r["strategy"] == s)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, marker="o", label=LABEL[s], color=colors[s])
        ax.set_xscale("log", base=2 if col == "cores" else 10)
        xs = sorted(set(r[col] for r in rows))
        ax.set_xticks(xs)
        ax.set_xticklabels(["%g" % x for x in xs])
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("Swatch messages per second (log)")
        ax.set_title("Throughput of the mix as %s grow" % ("cores" if col == "cores" else "writes"),
                     fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.text(0.01, 0.01, foot, fontsize=7, color="gray")
        fig.tight_layout()
        fig.savefig(os.path.join(out, fname), dpi=110)
        plt.close(fig)


def bend_notes(results):
    """Where each curve bends, read off the figures (the why is the design's, stated plainly)."""
    notes = []
    cpus = results["machine"]["cpus"]
    for key, col, unit in (("scaling_cores", "cores", " cores"), ("scaling_writes", "write_pct", "% writes")):
        rows = results.get(key, [])
        for s in STRATEGIES:
            pts = sorted((r[col], r["ops_per_s"]) for r in rows if r["strategy"] == s)
            if len(pts) < 2:
                continue
            gains = ["%g%s: %s/s" % (x, unit, fmt(y)) for x, y in pts]
            busy = [r.get("cpu_busy_pct") for r in sorted(
                (r for r in rows if r["strategy"] == s), key=lambda r: r[col])]
            best = max(pts, key=lambda p: p[1])
            notes.append("%s, %s: %s; the peak at %g%s; CPUs busy %s." % (
                LABEL[s], "cores" if col == "cores" else "writes", ", ".join(gains), best[0], unit,
                ", ".join("/".join("%.0f" % x for x in c) + "%" for c in busy if c)))
    if results["settings"].get("pin") and cpus >= 2:
        notes.append("This machine has %d CPUs: the repository had the last one to itself, every "
                     "other process of a run (the client threads, the cores' threads, the "
                     "forwarder) shared the rest. A run whose first figure is near 100%% is bound "
                     "by the cores' side of this machine, one whose last figure is near 100%% by "
                     "the repository's CPU; neither near 100%% means waiting (locks)." % cpus)
    else:
        notes.append("This machine has %d CPUs, shared by every process of a run (the client "
                     "threads, the cores' threads, PostgreSQL's backends, the forwarder)." % cpus)
    return notes


def main(argv):
    args = parse_args(argv)
    if args.validate:
        return 0
    if "micro" in args.parts or "swatch" in args.parts or "scaling" in args.parts:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("bench: python3-matplotlib is missing (tests/run-benchmarks.sh installs it)",
                  file=sys.stderr)
            return 2
    os.makedirs(args.out, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="cg-bench.")
    world = World(args, tmp)
    results = {"settings": {"quick": args.quick, "cores": args.cores, "threads": args.threads,
                            "write_pct": args.write_pct, "seconds": args.seconds,
                            "warmup": args.warmup, "prefill": args.prefill, "pin": args.pin,
                            "scale_cores": args.scale_cores,
                            "scale_writes": args.scale_writes}}
    failures = []
    t0 = time.time()

    def interrupted(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)
    try:
        world.start()
        results["machine"] = machine(world)
        log("world up: PostgreSQL %s, forwarder on %d/%d; results to %s"
            % (world.pg_version, world.front, world.back, args.out))
        if args.parts & {"swatch", "scaling"}:
            log(world.run_ok([world.prog("bench_swatch"), "setup", "--dsn", world.dsn, "--group",
                              GROUP]).strip())
        done = {}

        def mix(label, strategy, mode, cores, write_pct):
            key = (strategy, mode, cores, write_pct)
            if key in done:
                return done[key]
            t = time.time()
            try:
                r = run_mix(world, label, strategy, mode, cores, args.threads, write_pct)
            except RunFailed as e:
                failures.append("%s %s %d cores %g%% writes: %s" % (strategy, mode, cores, write_pct, e))
                log("FAILED: %s" % failures[-1])
                return None
            done[key] = r
            log("%-8s %-13s %-7s %d cores %4g%% writes: %10.0f msg/s  read p99 %s us  "
                "stale %d  errors %d  CPUs busy %s%%  (%.0f s)"
                % (label, strategy, mode, cores, write_pct, r["ops_per_s"],
                   r["read_latency_us"]["p99"], r["stale_errors"], r["errors"],
                   "/".join("%.0f" % x for x in r["cpu_busy_pct"]), time.time() - t))
            return r

        if "swatch" in args.parts:
            results["swatch"] = []
            for mode in args.mode_list:
                for s in args.strategy_list:
                    r = mix("swatch", s, mode, args.cores, args.write_pct)
                    if r:
                        results["swatch"].append(r)
        if "scaling" in args.parts:
            results["scaling_cores"], results["scaling_writes"] = [], []
            for s in args.strategy_list:
                for n in args.scale_cores:
                    r = mix("cores", s, "library", n, args.write_pct)
                    if r:
                        results["scaling_cores"].append(r)
                for w in args.scale_writes:
                    r = mix("writes", s, "library", args.cores, w)
                    if r:
                        results["scaling_writes"].append(r)
            results["notes"] = bend_notes(results)
        bad, writes = check_no_lost_update(world)
        results["lost_updates"] = {"parts_checked_with_a_difference": bad,
                                   "committed_read_modify_writes": writes}
        if bad:
            failures.append("LOST UPDATES: %d state parts whose counter is not their version - 1"
                            % bad)
        log("no lost update: %d state parts checked, %d read-modify-writes committed in all, "
            "%d differences" % (int(world.query1("SELECT count(*) FROM resource_parts WHERE "
                                                 "group_id = '%s' AND part = 'state'" % GROUP)),
                                writes, bad))
        if "micro" in args.parts:
            try:
                results["micro"] = micro(world)
                w = results["micro"]["bench_update"].get("one_part_writers", {})
                if w.get("lost_updates"):
                    failures.append("LOST UPDATES in the one-part writers: %d" % w["lost_updates"])
            except Failure as e:
                failures.append("micro-benchmarks: %s" % e)
                log("FAILED: %s" % failures[-1])
        results["targets"] = targets(results)
    except MissingTool as e:
        print("bench: %s" % e, file=sys.stderr)
        world.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        return 2
    except Failure as e:
        failures.append(str(e))
        log("FAILED: %s" % e)
    except KeyboardInterrupt:
        failures.append("interrupted")
    finally:
        world.stop()
    results["failures"] = failures
    results["elapsed_s"] = round(time.time() - t0, 1)
    if "machine" in results:
        with open(os.path.join(args.out, "results.json"), "w") as f:
            json.dump(results, f, indent=1)
        write_markdown(os.path.join(args.out, "results.md"), results)
        try:
            plots(args.out, results)
        except Exception as e:  # a plot must not hide the figures
            failures.append("plots: %s" % e)
    for t in results.get("targets", []):
        log("target %-75s %8.3g  %s" % (t["target"], t["value"], "met" if t["met"] else "MISSED"))
    log("done in %.0f s; results in %s" % (time.time() - t0, args.out))
    if failures:
        for f in failures:
            print("bench: FAILED: %s" % f, file=sys.stderr)
        if os.path.isdir(tmp):
            print("bench: logs kept in %s" % tmp, file=sys.stderr)
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
