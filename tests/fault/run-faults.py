#!/usr/bin/python3
"""run-faults.py — a fault harness for coregroup: real processes, real faults, a history checker.

It builds a throwaway world (a private PostgreSQL cluster migrated with cg-migrate, two cg-busd
forwarders, three coregroupd cores of group "g" and one of group "h", all on 127.0.0.1), runs a
read-modify-write and read load against it through the JSON request protocol
(coregroup/REQUESTS.md), injects faults one after another (each followed by a settle period,
the load running throughout), records every request, and judges the history with checker.py:
lost updates, phantoms, reads staler than [cache] max_staleness_ms, reads going backwards on a
core, the longest stall of a healthy core, catch-ups per 1,000 events, time to recover, group
isolation, the outbox. Everything it starts is stopped and removed at the end, also on Ctrl-C
or error.

Exit status: 0 no violation; 1 a violation was found; 2 the harness itself failed (a missing
tool, a port in use, a program that would not start, an interruption) -- never a pass.

Needs Debian's python3-zmq and python3-psycopg2 (run it with /usr/bin/python3), PostgreSQL's
server binaries (as tests/pgcluster.sh finds them) and a build of the programs (--bin).

    tests/fault/run-faults.py                              # all scenarios, 20 s each
    tests/fault/run-faults.py --quick --scenario stop-core --keep
    tests/fault/run-faults.py --bin ../before/build \
        --migrations ../before/migrations --legacy-config   # an older build, for "before"

The world. PostgreSQL keeps synchronous_commit on (an acknowledged commit must survive
"restart -m immediate"); fsync is off, which only an OS crash would expose. Cores log in as
cg_core, a member of coregroup_app, so row-level security and the session fence apply. Each
core: [core] failure_timeout_ms 1000, [bus] both forwarders, poll_interval_ms 200,
heartbeat_interval_ms 100, [cache] max_staleness_ms 1000, [repository] lock_timeout_ms 1000
(--legacy-config leaves out the keys an older build refuses).

The load. 20 hot resources of group g. The first 10 (--shared) are updated by every writer
(contention: the lost-update check); each of the others only by the writers of its home core,
and read on all cores, so the other cores learn of its changes only through the bus or the
poll -- otherwise a core's own commits and stale-error evictions keep refreshing its cache and
hide a missed invalidation. 12 writers (get, then update with the version read; on stale, retry
with the version the error names) and 6 readers, spread evenly over g1..g3, each its own
thread and DEALER with a 2 s timeout (a timed-out request is indeterminate; the socket is
reopened); a light writer on h1 that also asks g cores for its handle and service id (they
must not find them). A stats poller per core, once a second.

The timeline of a scenario (--duration, 20 s): 3 s of load, the fault, the hold (kill-core:
2 s dead, then restarted; stop-core: 4.5 s SIGSTOP; forwarders: 3 s dead, then restarted;
pg-restart-*: as long as pg_ctl restart takes), then settling until the duration is up (at
least 5 s). Each fault and recovery is an event with monotonic and wall time (--json).

The table (checker.format_summary). ops: get and update requests sent in the window; ok:
answered ok; lost, phantom, stale>bnd: see checker.py; oldest/bound: the stalest read served,
in ms of "sent after a newer version was acknowledged", against max_staleness_ms; stall: the
longest time a core other than the faulted one had requests outstanding and answered none,
from the fault to the window's end; catchup/1k ev: catch-ups per 1,000 group events, mean
(and max) over g1..g3, from the stats counters; recover: from the recovery action (restart,
SIGCONT, PostgreSQL up) to the first acknowledged update sent after it, worst core of g (it
includes the client's own wait on requests sent before); other: backwards reads, isolation,
outbox, a core that never recovered, a program that died by itself; errors by code: the
protocol's codes plus "timeout" (stale is the normal outcome of a lost race).
"""

import argparse
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, HERE)

import checker  # noqa: E402

try:
    import psycopg2
    import zmq
    IMPORT_ERROR = None
except ImportError as e:  # reported as a harness failure by main()
    IMPORT_ERROR = e

SCENARIOS = ["kill-core", "stop-core", "kill-forwarder", "kill-both-forwarders",
             "pg-restart-fast", "pg-restart-immediate"]
GROUP, OTHER = "g", "h"
G_CORES = ["g1", "g2", "g3"]
H_CORE = "h1"
PART = "state"

# The figures the brief fixes for the cores' configuration.
FAILURE_TIMEOUT_MS = 1000
POLL_INTERVAL_MS = 200
HEARTBEAT_INTERVAL_MS = 100
MAX_STALENESS_MS = 1000
LOCK_TIMEOUT_MS = 1000
# Written explicitly (at the library's defaults) so that --legacy-config has something to leave
# out: an older build refuses unknown keys.
REORDER_WINDOW_MS = 20
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30000


class HarnessError(Exception):
    """The harness could not do its job: exit 2, never a pass."""


T_START = time.monotonic()


def log(msg):
    sys.stderr.write("[%7.2fs] %s\n" % (time.monotonic() - T_START, msg))
    sys.stderr.flush()


def tail(path, n=15):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError:
        return "(no log)"


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def free_ports(n, rng):
    """n distinct free ports below Linux's ephemeral range (so clients' own connections do not
    take them meanwhile)."""
    out = set()
    for _ in range(2000):
        if len(out) == n:
            return sorted(out)
        p = rng.randrange(20000, 32000)
        if p not in out and port_free(p):
            out.add(p)
    raise HarnessError("could not find %d free ports on 127.0.0.1" % n)


# ---------------------------------------------------------------- processes

class Proc:
    """One program we started: kept in its own session so Ctrl-C reaches only us."""

    def __init__(self, name, argv, logpath):
        self.name, self.argv, self.logpath = name, argv, logpath
        self.p = None
        self.expected_down = False  # we killed it on purpose
        self.stopped = False        # SIGSTOPped by us

    def start(self):
        with open(self.logpath, "ab") as logf:
            self.p = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=logf,
                                      stderr=subprocess.STDOUT, start_new_session=True)
        self.expected_down = False
        return self.p.pid

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def signal(self, sig):
        if self.alive():
            os.kill(self.p.pid, sig)

    def kill9(self):
        self.expected_down = True
        self.signal(signal.SIGKILL)
        if self.p:
            try:
                self.p.wait(5)
            except subprocess.TimeoutExpired:
                pass

    def stop(self, timeout=5.0):
        if not self.alive():
            return
        self.expected_down = True
        try:
            os.kill(self.p.pid, signal.SIGCONT)
            os.kill(self.p.pid, signal.SIGTERM)
            self.p.wait(timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass


class Postgres:
    """A private cluster through tests/pgcluster.sh's functions."""

    def __init__(self, root, port):
        self.root, self.port = root, port
        self.data = os.path.join(root, "data")
        self.sock = os.path.join(root, "sock")
        self.logpath = os.path.join(root, "server.log")
        self.lib = os.path.join(ROOT, "tests", "pgcluster.sh")
        self.started = False

    def sh(self, script, *args, timeout=120):
        r = subprocess.run(["bash", "-c", '. "$0" || exit 99; ' + script, self.lib] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
        if r.returncode != 0:
            raise HarnessError("PostgreSQL: `%s` failed (%d): %s" % (
                script, r.returncode, (r.stderr or r.stdout).decode("utf-8", "replace")[-800:]))
        return r.stdout.decode().strip()

    def bindir(self):
        return self.sh('echo "$PGC_BIN"')

    def init(self, settings):
        os.makedirs(self.sock, exist_ok=True)
        if os.getuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sock, "postgres", "postgres")
        path = os.path.join(self.root, "settings")
        with open(path, "w") as f:
            f.write(settings)
        self.sh('pgc_init "$1" "$2"', self.data, path)

    def start(self):
        if not port_free(self.port):
            raise HarnessError("port %d is in use" % self.port)
        try:
            self.sh('pgc_start "$1" "$2" "$3" "$4"', self.data, str(self.port), self.sock,
                    self.logpath)
        except HarnessError as e:
            raise HarnessError("%s\nserver log:\n%s" % (e, tail(self.logpath)))
        self.started = True

    def restart(self, mode):
        self.sh('pgc_as_pg "$PGC_BIN/pg_ctl" -D "$1" -m "$2" -w -t 60 -l "$3" restart',
                self.data, mode, self.logpath)

    def stop(self):
        if self.started:
            self.sh('pgc_stop "$1" immediate', self.data)
            self.started = False

    def dsn(self, db="coregroup"):
        return "host=%s port=%d user=postgres dbname=%s" % (self.sock, self.port, db)

    def query(self, sql, args=(), retry_s=15.0, db="coregroup"):
        """One query as the superuser (row-level security does not apply), retried while the
        server restarts."""
        deadline = time.monotonic() + retry_s
        while True:
            try:
                conn = psycopg2.connect(self.dsn(db), connect_timeout=3)
                try:
                    conn.autocommit = True
                    with conn.cursor() as cur:
                        cur.execute(sql, args)
                        return cur.fetchall() if cur.description else None
                finally:
                    conn.close()
            except psycopg2.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)


# ---------------------------------------------------------------- the request protocol

class Rpc:
    """One DEALER to one core. A request that times out is indeterminate: the socket is closed
    and a new one opened, so a late reply can never be taken for the next request's."""

    def __init__(self, ctx, endpoint, timeout_s):
        self.ctx, self.endpoint, self.timeout_s = ctx, endpoint, timeout_s
        self.sock, self.n = None, 0
        self.open()

    def open(self):
        if self.sock is not None:
            self.sock.close(0)
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def close(self):
        if self.sock is not None:
            self.sock.close(0)
            self.sock = None

    def call(self, req, timeout_s=None):
        """(reply or None on timeout, send, end, wall send, wall end)."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        self.n += 1
        req = dict(req, v=1, id=self.n)
        data = json.dumps(req, separators=(",", ":")).encode()
        ws = time.time()
        ts = time.monotonic()
        deadline = ts + timeout_s
        try:
            self.sock.send(data, zmq.NOBLOCK)
        except zmq.Again:
            time.sleep(max(0.0, deadline - time.monotonic()))
            self.open()
            return None, ts, time.monotonic(), ws, time.time()
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self.sock.poll(max(1, int(left * 1000))):
                if time.monotonic() < deadline:
                    continue
                te, we = time.monotonic(), time.time()
                self.open()
                return None, ts, te, ws, we
            msg = self.sock.recv()
            te, we = time.monotonic(), time.time()
            try:
                rep = json.loads(msg)
            except ValueError:
                rep = {"ok": False, "error": {"code": "error", "message": "reply not JSON: %r"
                                              % msg[:100]}}
                return rep, ts, te, ws, we
            if rep.get("id") == self.n:
                return rep, ts, te, ws, we


def make_record(client, core, group, op, req, rep, ts, te, ws, we):
    r = {"client": client, "core": core, "group": group, "op": op,
         "handle": req.get("handle"), "part": req.get("part"), "expected": req.get("expected"),
         "send": ts, "end": te, "reply": te if rep is not None else None,
         "wsend": ws, "wreply": we if rep is not None else None}
    if rep is None:
        r["outcome"] = "timeout"
    elif rep.get("ok"):
        r["outcome"] = "ok"
    else:
        err = rep.get("error") or {}
        r["outcome"] = err.get("code") or "error"
        if r["outcome"] == "stale":
            r["actual"] = err.get("actual")
        else:
            r["msg"] = str(err.get("message", ""))[:240]
    return r


# ---------------------------------------------------------------- the world

class World:
    def __init__(self, args):
        self.args = args
        self.rng = random.Random(args.seed)
        self.bin = os.path.abspath(args.bin)
        self.migrations = os.path.abspath(args.migrations)
        self.tmp = None
        self.pg = None
        self.busd = {}
        self.cores = {}
        self.ctx = None
        self.endpoints = {}
        self.inis = {}
        self.history_lock = threading.Lock()
        self.histories = []        # one list per thread, merged at the end
        self.stats = defaultdict(list)   # core -> [(t, stats dict or None)]
        self.incarnations = defaultdict(list)
        self.events = []
        self.extra = []            # violations the harness saw itself
        self.stop_load = threading.Event()
        self.stop_poll = threading.Event()
        self.threads = []
        self.hot = []              # handles of the hot resources of g
        self.writable = {}         # core -> the hot handles its writers update
        self.h_handle = None

    # ---- bookkeeping
    def event(self, what, **kw):
        e = {"t": time.monotonic(), "wall": time.time(), "what": what}
        e.update(kw)
        self.events.append(e)
        log("%s %s" % (what, " ".join("%s=%s" % kv for kv in kw.items())))
        return e["t"]

    def new_history(self):
        h = []
        with self.history_lock:
            self.histories.append(h)
        return h

    def harness_violation(self, kind, detail, core=None):
        self.extra.append({"kind": kind, "key": core or "-", "version": None,
                           "time": time.monotonic(), "detail": detail, "core": core})
        log("VIOLATION %s: %s" % (kind, detail))

    # ---- set-up
    def check_tools(self):
        for prog in ("coregroupd", "cg-busd", "cg-migrate"):
            p = os.path.join(self.bin, prog)
            if not os.access(p, os.X_OK):
                raise HarnessError("%s not found or not executable (--bin %s; build with cmake "
                                   "first)" % (p, self.bin))
        if not os.path.isdir(self.migrations):
            raise HarnessError("no migrations directory %s" % self.migrations)
        if not shutil.which("bash"):
            raise HarnessError("bash not found")

    def setup(self):
        self.check_tools()
        self.tmp = tempfile.mkdtemp(prefix="cg-fault.")
        os.chmod(self.tmp, 0o755)
        log("world in %s" % self.tmp)
        ports = free_ports(1 + 4 + 4, self.rng)
        pgroot = os.path.join(self.tmp, "pg")
        os.makedirs(pgroot)
        os.chmod(pgroot, 0o755)
        self.pg = Postgres(pgroot, ports[0])
        log("PostgreSQL binaries in %s" % self.pg.bindir())
        # synchronous_commit stays on: an acknowledged commit must survive "restart -m
        # immediate" (fsync off only matters for an OS crash, which this harness does not do).
        settings = ("fsync = off\nsynchronous_commit = on\nfull_page_writes = off\n"
                    "max_connections = 200\nshared_buffers = 64MB\nlog_min_messages = warning\n"
                    "log_line_prefix = '%m [%p] %u %a '\n")
        if self.args.pg_diagnostics:
            # evidence for a person reading the server log (kept with --keep): lock waits past
            # 100 ms, statements slower than 100 ms, every connection
            settings += ("log_lock_waits = on\ndeadlock_timeout = 100ms\n"
                         "log_min_duration_statement = 100\nlog_connections = on\n")
        self.pg.init(settings)
        self.pg.start()
        log("PostgreSQL on 127.0.0.1:%d, socket %s" % (self.pg.port, self.pg.sock))
        self.pg.query("CREATE DATABASE coregroup", db="postgres")
        r = subprocess.run([os.path.join(self.bin, "cg-migrate"), "-q", "-m", self.migrations,
                            "-d", self.pg.dsn(), "up"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if r.returncode != 0:
            raise HarnessError("cg-migrate up failed (%d): %s"
                               % (r.returncode, r.stdout.decode("utf-8", "replace")[-800:]))
        self.pg.query("CREATE ROLE cg_core LOGIN IN ROLE coregroup_app")

        self.ctx = zmq.Context()
        bus = ports[1:5]
        self.bus_front = ["tcp://127.0.0.1:%d" % bus[0], "tcp://127.0.0.1:%d" % bus[2]]
        self.bus_back = ["tcp://127.0.0.1:%d" % bus[1], "tcp://127.0.0.1:%d" % bus[3]]
        for i, name in enumerate(("busd-1", "busd-2")):
            p = Proc(name, [os.path.join(self.bin, "cg-busd"), "--name", name,
                            "--frontend", self.bus_front[i], "--backend", self.bus_back[i],
                            "--stats-interval", "10"],
                     os.path.join(self.tmp, name + ".log"))
            self.busd[name] = p
            self.start_busd(p, initial=True)

        for i, name in enumerate(G_CORES + [H_CORE]):
            ep = "tcp://127.0.0.1:%d" % ports[5 + i]
            self.endpoints[name] = ep
            ini = os.path.join(self.tmp, name + ".ini")
            self.inis[name] = ini
            with open(ini, "w") as f:
                f.write(self.ini_text(name, GROUP if name in G_CORES else OTHER, ep))
            p = Proc(name, [os.path.join(self.bin, "coregroupd"), "-c", ini],
                     os.path.join(self.tmp, name + ".log"))
            self.cores[name] = p
            p.start()
            log("started %s (pid %d) on %s" % (name, p.pid, ep))
        for name in G_CORES + [H_CORE]:
            self.wait_healthy(name, 30.0, initial=True)

    def ini_text(self, name, group, listen):
        legacy = self.args.legacy_config
        lines = ["; written by tests/fault/run-faults.py", "[repository]",
                 "dsn = host=127.0.0.1 port=%d user=cg_core dbname=coregroup" % self.pg.port,
                 "pool_size = 4"]
        if not legacy:
            lines.append("lock_timeout_ms = %d" % LOCK_TIMEOUT_MS)
            lines.append("idle_in_transaction_timeout_ms = %d" % IDLE_IN_TRANSACTION_TIMEOUT_MS)
        lines += ["[core]", "name = %s" % name, "group = %s" % group,
                  "failure_timeout_ms = %d" % FAILURE_TIMEOUT_MS, "log_level = info",
                  "[bus]", "publish = %s" % ", ".join(self.bus_front),
                  "subscribe = %s" % ", ".join(self.bus_back),
                  "poll_interval_ms = %d" % self.args.poll_interval_ms,
                  "heartbeat_interval_ms = %d" % HEARTBEAT_INTERVAL_MS]
        if not legacy:
            lines.append("reorder_window_ms = %d" % REORDER_WINDOW_MS)
        lines += ["[cache]"]
        if not legacy:
            lines.append("max_staleness_ms = %d" % MAX_STALENESS_MS)
        lines += ["[daemon]", "listen = %s" % listen, "workers = 4",
                  "pidfile = %s" % os.path.join(self.tmp, name + ".pid")]
        return "\n".join(lines) + "\n"

    def start_busd(self, p, initial=False):
        for attempt in range(20):
            p.start()
            time.sleep(0.3)
            if p.alive():
                log("started %s (pid %d)" % (p.name, p.pid))
                return True
            if initial:
                raise HarnessError("%s would not start (exit %s):\n%s"
                                   % (p.name, p.p.returncode, tail(p.logpath)))
            time.sleep(0.2)  # a restart may race the old socket's release
        self.harness_violation("restart-failed", "%s would not restart:\n%s"
                               % (p.name, tail(p.logpath)))
        return False

    def wait_healthy(self, name, timeout_s, initial=False):
        """Until the core answers health ok. Initially, a core that dies or never answers is a
        harness failure; after a fault, the time it took is returned (None: never)."""
        p = self.cores[name]
        rpc = Rpc(self.ctx, self.endpoints[name], 1.0)
        t0 = time.monotonic()
        last = None
        try:
            while time.monotonic() - t0 < timeout_s:
                if not p.alive():
                    if initial:
                        raise HarnessError("%s exited (%s) while starting:\n%s"
                                           % (name, p.p.returncode, tail(p.logpath)))
                    return None
                rep = rpc.call({"op": "health"})[0]
                last = rep
                if rep is not None and rep.get("ok"):
                    return time.monotonic() - t0
                time.sleep(0.1)
        finally:
            rpc.close()
        if initial:
            raise HarnessError("%s did not become healthy within %.0f s (last health reply: %s)"
                               ":\n%s" % (name, timeout_s, json.dumps(last), tail(p.logpath)))
        return None

    def start_core(self, name):
        p = self.cores[name]
        for attempt in range(10):
            p.start()
            time.sleep(0.3)
            if p.alive():
                return True
            log("%s exited (%s) right after its restart; retrying" % (name, p.p.returncode))
            time.sleep(0.7)
        self.harness_violation("restart-failed", "%s would not restart after its kill:\n%s"
                               % (name, tail(p.logpath)), name)
        return False

    def check_processes(self):
        """A program that died on its own (not killed by us) is a finding."""
        for p in list(self.cores.values()) + list(self.busd.values()):
            if p.p is not None and not p.expected_down and not p.alive():
                self.harness_violation(
                    "process-died", "%s (pid %d) exited by itself with status %s; log tail:\n%s"
                    % (p.name, p.pid, p.p.returncode, tail(p.logpath)), p.name)
                p.expected_down = True  # report once

    # ---- the data
    def register_hot(self):
        n = self.args.resources
        for i in range(n):
            core = G_CORES[i % len(G_CORES)]
            h = self.setup_call(core, {"op": "register", "kind": "service",
                                       "service_id": "g-svc",
                                       "state": {"g": GROUP, "t": checker.INITIAL_TOKEN}},
                                GROUP, "register")
            self.hot.append(h)
        # The first --shared resources are written from every core (contention: stale errors,
        # the lost-update check); each other one only by the writers of its home core, so the
        # other cores learn of its changes only through the bus or the poll backstop -- a core's
        # own commits and stale-error evictions would otherwise refresh its cache and hide a
        # missed invalidation from the staleness check. Readers read all of them.
        shared = self.hot[:self.args.shared]
        for i, core in enumerate(G_CORES):
            self.writable[core] = shared + [h for j, h in enumerate(self.hot)
                                            if j >= self.args.shared and j % len(G_CORES) == i]
        self.h_handle = self.setup_call(H_CORE, {"op": "register", "kind": "service",
                                                 "service_id": "h-svc",
                                                 "state": {"g": OTHER,
                                                           "t": checker.INITIAL_TOKEN}},
                                        OTHER, "register")
        log("registered %d hot resources in %s (handles %d..%d) and handle %d in %s"
            % (n, GROUP, min(self.hot), max(self.hot), self.h_handle, OTHER))

    def setup_call(self, core, req, group, op):
        hist = self.new_history()
        rpc = Rpc(self.ctx, self.endpoints[core], self.args.timeout_ms / 1000.0)
        try:
            for attempt in range(10):
                rep, ts, te, ws, we = rpc.call(req)
                rec = make_record("setup", core, group, op, req, rep, ts, te, ws, we)
                if rep is not None and rep.get("ok"):
                    rec.update(handle=rep["handle"], part=PART, version=1,
                               token=checker.INITIAL_TOKEN)
                    hist.append(rec)
                    return rep["handle"]
                hist.append(rec)
                time.sleep(0.3)
        finally:
            rpc.close()
        raise HarnessError("%s: %s failed ten times: %s" % (core, op, json.dumps(rep)))

    # ---- the load
    def start_load(self):
        a = self.args
        for i in range(a.writers):
            core = G_CORES[i % len(G_CORES)]
            self.spawn(self.rmw_client, "rmw-%d" % i, core, GROUP, self.writable[core], i)
        for i in range(a.readers):
            core = G_CORES[i % len(G_CORES)]
            self.spawn(self.reader, "reader-%d" % i, core, i)
        self.spawn(self.rmw_client, "light-h", H_CORE, OTHER, [self.h_handle], 1000,
                   a.light_interval_ms / 1000.0, True)
        for name in G_CORES + [H_CORE]:
            t = threading.Thread(target=self.poller, args=(name,), name="stats-" + name,
                                 daemon=True)
            t.start()
            self.threads.append((t, "poll"))

    def spawn(self, fn, *args):
        t = threading.Thread(target=self.guard, args=(fn,) + args, name=args[0], daemon=True)
        t.start()
        self.threads.append((t, "load"))

    def guard(self, fn, *args):
        try:
            fn(*args)
        except Exception:  # a client bug must not pass silently
            self.client_crash = traceback.format_exc()
            log("client %s crashed:\n%s" % (args[0], self.client_crash))

    client_crash = None

    def think(self, rng, base=None):
        ms = self.args.think_ms if base is None else base * 1000.0
        if ms > 0:
            time.sleep(rng.uniform(0.5, 1.5) * ms / 1000.0)

    def backoff(self, outcome):
        if outcome not in ("ok", "stale", "timeout"):
            time.sleep(0.05)

    def rmw_client(self, client, core, group, handles, seed, interval=None, probes=False):
        rng = random.Random(self.args.seed * 1000 + seed)
        hist = self.new_history()
        rpc = Rpc(self.ctx, self.endpoints[core], self.args.timeout_ms / 1000.0)
        probe_rpc = {c: Rpc(self.ctx, self.endpoints[c], self.args.timeout_ms / 1000.0)
                     for c in (G_CORES if probes else [])}
        n = 0
        it = 0
        try:
            while not self.stop_load.is_set():
                it += 1
                h = rng.choice(handles)
                rec = self.get(rpc, hist, client, core, group, h)
                if rec["outcome"] != "ok":
                    self.backoff(rec["outcome"])
                    continue
                v = rec["version"]
                for attempt in range(4):
                    n += 1
                    token = "%s:%d" % (client, n)
                    req = {"op": "update", "handle": h, "part": PART, "expected": v,
                           "body": {"g": group, "t": token}}
                    rep, ts, te, ws, we = rpc.call(req)
                    u = make_record(client, core, group, "update", req, rep, ts, te, ws, we)
                    u["token"] = token
                    if u["outcome"] == "ok":
                        u["version"] = rep.get("version")
                    hist.append(u)
                    if u["outcome"] == "stale" and u.get("actual") is not None \
                            and not self.stop_load.is_set():
                        v = u["actual"]
                        continue
                    self.backoff(u["outcome"])
                    break
                if probes and it % 5 == 0:
                    self.probe(probe_rpc, hist, client, rng)
                self.think(rng, interval)
        finally:
            rpc.close()
            for r in probe_rpc.values():
                r.close()

    def probe(self, rpcs, hist, client, rng):
        """Group isolation, from the outside: h's handle and service id, asked of a g core."""
        c = rng.choice(G_CORES)
        req = {"op": "get", "handle": self.h_handle, "part": PART}
        rep, ts, te, ws, we = rpcs[c].call(req)
        r = make_record(client, c, GROUP, "probe-get", req, rep, ts, te, ws, we)
        if r["outcome"] == "ok":
            r["version"] = rep.get("version")
        hist.append(r)
        req = {"op": "find", "service_id": "h-svc"}
        rep, ts, te, ws, we = rpcs[c].call(req)
        r = make_record(client, c, GROUP, "find", req, rep, ts, te, ws, we)
        r["service_id"] = "h-svc"
        if r["outcome"] == "ok":
            r["handles"] = rep.get("handles") or []
        hist.append(r)

    def get(self, rpc, hist, client, core, group, h):
        req = {"op": "get", "handle": h, "part": PART}
        rep, ts, te, ws, we = rpc.call(req)
        rec = make_record(client, core, group, "get", req, rep, ts, te, ws, we)
        if rec["outcome"] == "ok":
            rec["version"] = rep.get("version")
            body = rep.get("body")
            if isinstance(body, dict):
                rec["token"] = body.get("t")
                rec["bgroup"] = body.get("g")
        hist.append(rec)
        return rec

    def reader(self, client, core, seed):
        rng = random.Random(self.args.seed * 1000 + 500 + seed)
        hist = self.new_history()
        rpc = Rpc(self.ctx, self.endpoints[core], self.args.timeout_ms / 1000.0)
        try:
            while not self.stop_load.is_set():
                rec = self.get(rpc, hist, client, core, GROUP, rng.choice(self.hot))
                self.backoff(rec["outcome"])
                self.think(rng)
        finally:
            rpc.close()

    def poller(self, core):
        """stats once a second: counters for catch-ups, and the core's incarnation."""
        hist = self.new_history()
        group = GROUP if core in G_CORES else OTHER
        rpc = Rpc(self.ctx, self.endpoints[core], self.args.timeout_ms / 1000.0)
        try:
            while not self.stop_poll.is_set():
                req = {"op": "stats"}
                rep, ts, te, ws, we = rpc.call(req)
                hist.append(make_record("stats-" + core, core, group, "stats", req, rep, ts, te,
                                        ws, we))
                if rep is not None and rep.get("ok") and isinstance(rep.get("stats"), dict):
                    self.stats[core].append((te, rep["stats"]))
                    inc = rep.get("incarnation")
                    if not self.incarnations[core] or self.incarnations[core][-1][1] != inc:
                        self.incarnations[core].append((te, inc))
                else:
                    self.stats[core].append((te, None))
                self.stop_poll.wait(max(0.0, 1.0 - (time.monotonic() - ts)))
        finally:
            rpc.close()

    def stop_clients(self):
        self.stop_load.set()
        deadline = time.monotonic() + self.args.timeout_ms / 1000.0 * 4 + 5
        for t, kind in self.threads:
            if kind == "load":
                t.join(max(0.1, deadline - time.monotonic()))
        # one more round of stats after the load, then the pollers stop
        time.sleep(1.5)
        self.stop_poll.set()
        for t, kind in self.threads:
            if kind == "poll":
                t.join(max(0.1, deadline - time.monotonic()))
        alive = [t.name for t, _ in self.threads if t.is_alive()]
        if alive:
            raise HarnessError("client threads did not stop: %s" % ", ".join(alive))

    # ---- the faults
    def event_seq(self, group=GROUP):
        try:
            rows = self.pg.query("SELECT event_seq FROM core_groups WHERE group_id = %s",
                                 (group,), retry_s=20.0)
            return rows[0][0] if rows else 0
        except psycopg2.Error as e:
            log("could not read event_seq: %s" % e)
            return None

    def run_scenario(self, name):
        a = self.args
        w = {"name": name, "faulted": None, "t_fault": None, "t_recover": None}
        w["t0"] = self.event("scenario-start", scenario=name)
        ev0 = self.event_seq()
        time.sleep(a.pre)
        self.check_processes()
        if name == "kill-core":
            target = "g2"
            p = self.cores[target]
            w["faulted"] = target
            w["t_fault"] = self.event("fault", scenario=name, action="kill -9 %s" % target,
                                      pid=p.pid)
            p.kill9()
            time.sleep(a.hold_kill)
            self.start_core(target)
            w["t_recover"] = self.event("recover", scenario=name,
                                        action="restart %s" % target, pid=p.pid)
            took = self.wait_healthy(target, a.duration)
            self.event("healthy", scenario=name, core=target,
                       after_ms=None if took is None else round(took * 1000))
        elif name == "stop-core":
            target = "g3"
            p = self.cores[target]
            w["faulted"] = target
            w["t_fault"] = self.event("fault", scenario=name, action="SIGSTOP %s" % target,
                                      pid=p.pid)
            p.stopped = True
            p.signal(signal.SIGSTOP)
            time.sleep(0.5)  # long enough for others to queue behind its locks
            self.event("paused-sessions", scenario=name, core=target,
                       **self.sessions_of(target, p.pid))
            time.sleep(max(0.0, a.hold_stop - (time.monotonic() - w["t_fault"])))
            p.signal(signal.SIGCONT)
            p.stopped = False
            w["t_recover"] = self.event("recover", scenario=name,
                                        action="SIGCONT %s" % target)
            took = self.wait_healthy(target, a.duration)
            self.event("healthy", scenario=name, core=target,
                       after_ms=None if took is None else round(took * 1000))
        elif name in ("kill-forwarder", "kill-both-forwarders"):
            names = ["busd-1"] if name == "kill-forwarder" else ["busd-1", "busd-2"]
            w["t_fault"] = self.event("fault", scenario=name,
                                      action="kill -9 %s" % " ".join(names))
            for n in names:
                self.busd[n].kill9()
            time.sleep(a.hold_bus)
            for n in names:
                self.start_busd(self.busd[n])
            w["t_recover"] = self.event("recover", scenario=name,
                                        action="restart %s" % " ".join(names))
        elif name.startswith("pg-restart-"):
            mode = name[len("pg-restart-"):]
            w["t_fault"] = self.event("fault", scenario=name, action="pg_ctl restart -m " + mode)
            try:
                self.pg.restart(mode)
            except HarnessError as e:
                raise HarnessError("%s\nserver log:\n%s" % (e, tail(self.pg.logpath)))
            w["t_recover"] = self.event("recover", scenario=name, action="PostgreSQL is up")
        else:
            raise HarnessError("unknown scenario %s" % name)
        rest = w["t0"] + a.duration - time.monotonic()
        settle = max(rest, a.settle_min)
        time.sleep(settle)
        self.check_processes()
        ev1 = self.event_seq()
        w["t1"] = self.event("scenario-end", scenario=name)
        w["events"] = (ev0, ev1)
        return w

    def sessions_of(self, core, pid):
        """What the paused core's repository sessions were doing: open transactions, and the
        row locks they hold that others wait for (the evidence behind a healthy core's stall).
        The sessions are found by the client's port: they are the core's TCP connections."""
        try:
            inodes = set()
            for fd in os.listdir("/proc/%d/fd" % pid):
                try:
                    target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
                except OSError:
                    continue
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
            ports = set()
            with open("/proc/net/tcp") as f:  # the namespace's sockets; ours by inode
                for line in f.readlines()[1:]:
                    col = line.split()
                    loc, rem, inode = col[1], col[2], col[9]
                    if inode in inodes and int(rem.split(":")[1], 16) == self.pg.port:
                        ports.add(int(loc.split(":")[1], 16))
            rows = self.pg.query(
                "SELECT a.pid, a.state, a.application_name, "
                "  (SELECT count(*) FROM pg_locks l WHERE l.pid = a.pid AND l.granted "
                "     AND l.locktype IN ('tuple', 'transactionid')) "
                "FROM pg_stat_activity a WHERE a.client_port = ANY(%s)", (sorted(ports),),
                retry_s=2.0)
            waiting = self.pg.query(
                "SELECT count(*) FROM pg_stat_activity w WHERE w.wait_event_type = 'Lock' "
                "AND w.datname = 'coregroup'", retry_s=2.0)[0][0]
        except Exception as e:  # evidence only: never fail the run for it
            return {"error": str(e)[:200]}
        in_tx = [r for r in rows if r[1] in ("idle in transaction", "active")]
        return {"sessions": len(rows), "in_transaction": len(in_tx),
                "states": ",".join(sorted(r[1] or "?" for r in rows)),
                "others_waiting_on_locks": waiting}

    # ---- the end
    def final_state(self):
        rows = self.pg.query(
            "SELECT group_id, handle, part, version, body->>'t', body->>'g' FROM resource_parts "
            "WHERE part = %s AND ((group_id = %s AND handle = ANY(%s)) OR "
            "(group_id = %s AND handle = %s))",
            (PART, GROUP, self.hot, OTHER, self.h_handle))
        final = {(g, h, p): (v, t) for g, h, p, v, t, _bg in rows}
        for g, h, p, v, t, bg in rows:
            if bg != g:
                self.harness_violation("isolation", "the repository holds %s/%d/%s with a body "
                                       "written in group %s" % (g, h, p, bg))
        for h in self.hot:
            if (GROUP, h, PART) not in final:
                self.harness_violation("missing-resource", "hot resource %d of %s is gone"
                                       % (h, GROUP))
        outbox = {}
        for g in (GROUP, OTHER):
            rows = self.pg.query("SELECT seq, items FROM invalidations WHERE group_id = %s "
                                 "ORDER BY seq", (g,))
            outbox[g] = {"rows": [{"seq": s, "items": items} for s, items in rows],
                         "event_seq": self.event_seq(g)}
        foreign = {GROUP: {self.h_handle}, OTHER: set(self.hot)}
        for g, o in outbox.items():
            for r in o["rows"]:
                bad = [it for it in r["items"] if it.get("h") in foreign[g]]
                if bad:
                    self.harness_violation("isolation", "the outbox of %s (seq %d) names "
                                           "handle %d of another group" % (g, r["seq"],
                                                                           bad[0]["h"]))
        owners = self.pg.query("SELECT group_id, handle FROM resources WHERE handle = ANY(%s)",
                               ([self.h_handle] + self.hot,))
        for g, h in owners:
            if (h == self.h_handle) != (g == OTHER):
                self.harness_violation("isolation", "handle %d has a row in group %s" % (h, g))
        members = self.pg.query("SELECT group_id, core_name, incarnation, state, applied_seq "
                                "FROM cores ORDER BY group_id, core_name")
        return final, outbox, foreign, [list(m) for m in members]

    def teardown(self):
        for p in self.cores.values():
            try:
                p.stop()
            except Exception as e:  # keep tearing down
                log("stopping %s: %s" % (p.name, e))
        for p in self.busd.values():
            try:
                p.stop()
            except Exception as e:
                log("stopping %s: %s" % (p.name, e))
        # a context with sockets still open would block term(): only when every client is done
        if self.ctx is not None and not any(t.is_alive() for t, _ in self.threads):
            self.ctx.term()
        if self.pg is not None:
            try:
                self.pg.stop()
            except Exception as e:
                log("stopping PostgreSQL: %s" % e)
        if self.tmp:
            if self.args.keep:
                log("kept %s (logs, configuration, the cluster's files)" % self.tmp)
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)


# ---------------------------------------------------------------- main

def parse_args(argv):
    ap = argparse.ArgumentParser(
        prog="run-faults.py",
        description="Fault harness for coregroup: a private PostgreSQL cluster, two cg-busd "
                    "forwarders, three coregroupd cores of group g and one of group h; a "
                    "read-modify-write and read load; faults one after another; a history "
                    "checker (lost updates, phantoms, stale reads past max_staleness_ms, "
                    "backwards reads, stalls, catch-ups, recovery). Exit 0: no violation; "
                    "1: violation found; 2: the harness failed.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build-fault"),
                    help="build directory holding coregroupd, cg-busd, cg-migrate")
    ap.add_argument("--migrations", default=os.path.join(ROOT, "migrations"),
                    help="migrations directory for cg-migrate")
    ap.add_argument("--legacy-config", action="store_true",
                    help="omit the keys an older build does not know ([cache] max_staleness_ms, "
                         "[bus] reorder_window_ms, [repository] lock_timeout_ms and "
                         "idle_in_transaction_timeout_ms)")
    ap.add_argument("--scenario", action="append", choices=SCENARIOS + ["all"],
                    help="run only this scenario (repeatable); default all, in this order: "
                         + ", ".join(SCENARIOS))
    ap.add_argument("--duration", type=float, default=argparse.SUPPRESS,
                    help="seconds per scenario, fault and settle included (default 20, "
                         "--quick 10)")
    ap.add_argument("--quick", action="store_true", help="a short form: 10 s per scenario")
    ap.add_argument("--json", metavar="FILE", help="write the whole result as JSON to FILE")
    ap.add_argument("--history", metavar="FILE",
                    help="write every request record as JSON lines to FILE")
    ap.add_argument("--pg-diagnostics", action="store_true",
                    help="PostgreSQL logs lock waits, slow statements and connections (with "
                         "--keep, read them in the kept pg/server.log)")
    ap.add_argument("--keep", action="store_true",
                    help="keep the temporary directory (logs, configs) after stopping everything")
    ap.add_argument("--seed", type=int, default=1, help="random seed of the load")
    ap.add_argument("--writers", type=int, default=12, help="read-modify-write clients")
    ap.add_argument("--readers", type=int, default=6, help="reader clients")
    ap.add_argument("--resources", type=int, default=20, help="hot resources of group g")
    ap.add_argument("--shared", type=int, default=10,
                    help="how many of them every core's writers update; each other one is "
                         "updated only from its home core (and read everywhere)")
    ap.add_argument("--think-ms", type=float, default=10.0,
                    help="mean pause of each client between operations (the machine has few "
                         "CPUs: the load must not starve the programs under test)")
    ap.add_argument("--light-interval-ms", type=float, default=100.0,
                    help="pause of the light client of group h")
    ap.add_argument("--timeout-ms", type=int, default=2000, help="request timeout")
    ap.add_argument("--poll-interval-ms", type=int, default=POLL_INTERVAL_MS,
                    help="[bus] poll_interval_ms of the cores (a longer one than the bound shows "
                         "that the checker catches stale reads: try it on a build without the "
                         "freshness lease, with the forwarders killed)")
    a = ap.parse_args(argv)
    if getattr(a, "duration", None) is None:
        a.duration = 10.0 if a.quick else 20.0
    if a.duration < 12.5 and not a.quick:
        ap.error("--duration must be at least 12.5 s (3 s before the fault, 4.5 s of the "
                 "longest hold, 5 s settling); --quick allows shorter")
    a.pre = 1.5 if a.quick else 3.0
    a.settle_min = 3.0 if a.quick else 5.0
    a.hold_kill = 2.0
    a.hold_stop = 4.5
    a.hold_bus = 3.0
    if not 0 <= a.shared <= a.resources or a.resources < 1:
        ap.error("--shared must be between 0 and --resources (at least 1)")
    if not a.scenario or "all" in a.scenario:
        a.scenario = list(SCENARIOS)
    return a


def main(argv):
    args = parse_args(argv)
    if IMPORT_ERROR is not None:
        print("run-faults.py: %s: needs Debian's python3-zmq and python3-psycopg2 (apt-get "
              "install -y python3-zmq python3-psycopg2) and the system python, /usr/bin/python3"
              % IMPORT_ERROR, file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        raise KeyboardInterrupt("signal %d" % signum)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)

    world = World(args)
    status = 2
    result = None
    try:
        world.setup()
        world.register_hot()
        world.event("load-start", writers=args.writers, readers=args.readers)
        world.start_load()
        time.sleep(2.0)  # warm caches before the first scenario
        windows = []
        for name in args.scenario:
            windows.append(world.run_scenario(name))
            if world.client_crash:
                raise HarnessError("a client thread crashed:\n" + world.client_crash)
        world.stop_clients()
        end = world.event("load-stop")
        time.sleep(1.0)  # any update still in flight in a daemon commits or aborts now
        world.check_processes()
        final, outbox, foreign, members = world.final_state()
        history = [r for h in world.histories for r in h]
        history.sort(key=lambda r: r["send"])
        log("checking %d requests" % len(history))
        result = checker.analyze(
            history, windows, MAX_STALENESS_MS, final=final, outbox=outbox,
            event_seqs={w["name"]: w["events"] for w in windows}, stats=world.stats,
            foreign=foreign, group_cores=G_CORES, all_cores=G_CORES + [H_CORE], end_time=end,
            extra_violations=world.extra)
        ok_ops = sum(w["ok"] for w in result["windows"])
        if ok_ops == 0:
            raise HarnessError("the load got no successful reply at all: nothing to check")
        label = "%s%s" % (args.bin, " (legacy config)" if args.legacy_config else "")
        print(checker.format_summary(result, "coregroup fault run: %s, %s s per scenario, "
                                     "bound %d ms" % (label, args.duration, MAX_STALENESS_MS)))
        status = 1 if result["violation_count"] else 0
        print("\nresult: %s" % ("VIOLATIONS FOUND" if status else "no violation"))
        if args.history:
            with open(args.history, "w") as f:
                for r in history:
                    f.write(json.dumps(r) + "\n")
        if args.json:
            out = {
                "status": status, "bin": os.path.abspath(args.bin),
                "migrations": os.path.abspath(args.migrations),
                "legacy_config": args.legacy_config, "duration_s": args.duration,
                "scenarios": args.scenario, "seed": args.seed,
                "config": {"failure_timeout_ms": FAILURE_TIMEOUT_MS,
                           "poll_interval_ms": args.poll_interval_ms,
                           "heartbeat_interval_ms": HEARTBEAT_INTERVAL_MS,
                           "max_staleness_ms": None if args.legacy_config else MAX_STALENESS_MS,
                           "bound_checked_ms": MAX_STALENESS_MS,
                           "lock_timeout_ms": None if args.legacy_config else LOCK_TIMEOUT_MS,
                           "reorder_window_ms": None if args.legacy_config
                           else REORDER_WINDOW_MS,
                           "idle_in_transaction_timeout_ms": None if args.legacy_config
                           else IDLE_IN_TRANSACTION_TIMEOUT_MS,
                           "writers": args.writers,
                           "readers": args.readers, "resources": args.resources,
                           "think_ms": args.think_ms, "timeout_ms": args.timeout_ms},
                "events": [dict(e, t=e["t"] - T_START) for e in world.events],
                "members_at_end": members,
                "incarnations": {c: v for c, v in world.incarnations.items()},
                "error_samples": error_samples(history),
                "result": trim(result),
                "requests": len(history),
            }
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1, default=str)
    except HarnessError as e:
        print("run-faults.py: harness failure: %s" % e, file=sys.stderr)
        status = 2
    except KeyboardInterrupt as e:
        print("run-faults.py: interrupted (%s): stopping everything" % (e or "Ctrl-C"),
              file=sys.stderr)
        status = 2
    except Exception:
        print("run-faults.py: harness failure:\n%s" % traceback.format_exc(), file=sys.stderr)
        status = 2
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        world.stop_load.set()
        world.stop_poll.set()
        for t, _ in world.threads:
            t.join(args.timeout_ms / 1000.0 + 1)
        world.teardown()
    return status


def error_samples(history, per_code=4):
    out = defaultdict(list)
    for r in history:
        m = r.get("msg")
        if m and len(out[r["outcome"]]) < per_code and m not in out[r["outcome"]]:
            out[r["outcome"]].append("%s@%s %s: %s" % (r["client"], r["core"], r["op"], m))
    return dict(out)


def trim(result, n=200):
    """The result for JSON: at most n violations of each kind, times relative to the start."""
    r = dict(result)
    r["violations"] = {}
    for k, vs in result["violations"].items():
        r["violations"][k] = [dict(v, time=None if v["time"] is None else v["time"] - T_START)
                              for v in vs[:n]]
        if len(vs) > n:
            r["violations"][k].append({"more": len(vs) - n})
    for w in r["windows"] + [r["total"]]:
        for f in ("t0", "t1", "t_fault", "t_recover", "stall_from", "stall_to"):
            if isinstance(w.get(f), float) and abs(w[f]) != float("inf"):
                w[f] = round(w[f] - T_START, 3)
            elif isinstance(w.get(f), float):
                w[f] = None
    return r


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
