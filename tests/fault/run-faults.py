#!/usr/bin/python3
"""run-faults.py — a fault harness for coregroup: real processes, real faults, a history checker.

It builds a throwaway world (a private PostgreSQL cluster migrated with cg-migrate, two cg-busd
forwarders, three coregroupd cores of group "g" and one of group "h"), runs a read-modify-write
and read load against it through the JSON request protocol (coregroup/REQUESTS.md), injects
faults one after another (each followed by a settle period, the load running throughout),
records every request, and judges the history with checker.py. Everything it starts is stopped
and removed at the end, also on Ctrl-C or error.

Exit status: 0 no violation; 1 a violation was found; 2 the harness itself failed (a missing
tool, a port in use, a program that would not start, an interruption, no scenario able to run)
-- never a pass. A scenario that cannot run here (a partition without root, ip or nft; bus loss
without a test-hooks build) is printed as SKIPPED with the reason, in the table too.

Needs Debian's python3-zmq and python3-psycopg2 (run it with /usr/bin/python3), PostgreSQL's
server binaries (as tests/pgcluster.sh finds them) and a build of the programs (--bin); for
the partitions root, iproute2 and nftables; for --valgrind, valgrind.

    tests/fault/run-faults.py                          # every scenario, 20 s each
    tests/fault/run-faults.py --quick                  # the short form (./run-tests.sh runs it)
    tests/fault/run-faults.py --full --markdown f.md   # the long form, 40 s each, and a table
    tests/fault/run-faults.py --quick --scenario stop-core --keep
    tests/fault/run-faults.py --valgrind --scenario stop-core   # the daemons under memcheck

The world. PostgreSQL keeps synchronous_commit on (an acknowledged commit must survive
"restart -m immediate"); fsync is off, which only an OS crash would expose. Each group's cores
log in as that group's login role, cg_g or cg_h, mapped by `cg-migrate map-role`: row-level
security and the session fence apply to them. Each core: [core] failure_timeout_ms 1000,
[bus] both forwarders, poll_interval_ms 200, heartbeat_interval_ms 100, [cache]
max_staleness_ms 1000, [repository] lock_timeout_ms 1000. When a partition scenario runs (and
with --hosts yes), every core runs on a host of its own: a network namespace with its own
address on a bridge, where PostgreSQL and the forwarders listen (class Net).

The load. 20 hot resources of group g. The first 10 (--shared) are updated by every writer
(contention: the lost-update check); each of the others only by the writers of its home core,
and read on all cores, so the other cores learn of its changes only through the bus or the
poll -- otherwise a core's own commits and stale-error evictions keep refreshing its cache and
hide a missed invalidation. 12 writers (get, then update with the version read; on stale, retry
with the version the error names), 2 multi writers (a pair of parts read in one multi and
written together in one multi: a half-applied multi shows) and 6 readers, spread evenly over
g1..g3, each its own thread and DEALER with a 2 s timeout (a timed-out request is
indeterminate; the socket is reopened); a light writer on h1 that also asks g cores for its
handle and service id (they must not find them). A stats poller per core, once a second.

The scenarios (--scenario, all by default; TRIED below says each in one line): kill-core
(a random core killed many times, every other time at a random commit between COMMIT and
publish), stop-core (SIGSTOP past the failure timeout), kill-forwarder, kill-both-forwarders,
pg-restart-fast, pg-restart-immediate, drop-bus (every core drops 1 in N invalidations),
slow-repository (another session holds the group's counter row past the lock timeout),
prune-past-stopped (the outbox deleted under a stopped core: it must reset), isolation-attacks
(hostile SQL as h's login against g; forged bus messages), partition-bus,
partition-repository, partition-both (one core cut off by nftables DROP rules, then healed).
After each, the writers pause and every live core of g is audited: its cache must agree with
the repository within one poll interval (plus an allowance for the statements).

The table (checker.format_summary). ops: get and update requests sent in the window; ok:
answered ok; lost, phantom, stale>bnd: see checker.py; oldest/bound: the stalest read served,
in ms of "sent after a newer version was acknowledged", against max_staleness_ms; stall: the
longest time a core other than the faulted ones had requests outstanding and answered none,
from the fault to the window's end (a violation past the lock timeout plus an allowance where
another core is paused, killed, cut off or holds a lock); catchup/1k ev: catch-ups per 1,000
group events, mean (and max) over g1..g3, from the stats counters; recover: from the recovery
action (restart, SIGCONT, PostgreSQL up, heal) to the first acknowledged update sent after it,
worst core of g (it includes the client's own wait on requests sent before); other: backwards
reads, isolation, outbox, half-applied multis, caches that disagree after the fault, stalls, a
core that never recovered, a program that died by itself, memcheck findings; errors by code:
the protocol's codes plus "timeout" (stale is the normal outcome of a lost race).
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
             "pg-restart-fast", "pg-restart-immediate", "drop-bus", "slow-repository",
             "prune-past-stopped", "isolation-attacks",
             "partition-bus", "partition-repository", "partition-both"]
# They need the cores on hosts of their own (Net); --hosts is on when one is chosen.
PARTITIONS = ["partition-bus", "partition-repository", "partition-both"]
# They need a build with the fault-injection hooks (-DCG_TEST_HOOKS=ON).
NEEDS_HOOKS = ["drop-bus"]
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
# A healthy core must answer within the lock timeout while another is paused, killed, cut off
# or holds a lock: a request waits at most that long for a row lock and is then answered
# "retryable". The allowance is for the answer itself on this 2-CPU machine (scheduling, the
# reply's encoding and the socket hops), not for any wait.
STALL_ALLOWANCE_MS = 250
STALL_LIMIT_MS = LOCK_TIMEOUT_MS + STALL_ALLOWANCE_MS
# After each scenario every live core's cache must agree with the repository within one poll
# interval of the writers stopping, plus this allowance for the catch-up and audit statements.
AUDIT_ALLOWANCE_MS = 250
# Under valgrind (--valgrind) a daemon runs this many times slower: the audit's limit and the
# request timeouts are stretched by it. The soak is for memory, not for timing.
VALGRIND_SLOWDOWN = 10
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

    def __init__(self, name, argv, logpath, prefix=(), env=None):
        self.name, self.argv, self.logpath = name, argv, logpath
        self.prefix = list(prefix)  # ["ip", "netns", "exec", ns] and/or valgrind's argv
        self.env = dict(env or {})  # added to ours (CG_TEST_HOOKS, ...)
        self.p = None
        self.starts = 0
        self.expected_down = False  # we killed it on purpose
        self.stopped = False        # SIGSTOPped by us

    def start(self, env=None):
        """Start it; `env` adds to self.env for this start only (a hook for one run)."""
        e = dict(os.environ)
        e.update(self.env)
        e.update(env or {})
        self.starts += 1
        argv = [a.replace("%n", str(self.starts)) for a in self.prefix] + self.argv
        with open(self.logpath, "ab") as logf:
            self.p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf,
                                      stderr=subprocess.STDOUT, start_new_session=True, env=e)
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
        """SIGTERM, then SIGKILL after `timeout` seconds. Returns the exit status (None when it
        had to be killed or was not running)."""
        if not self.alive():
            return None
        self.expected_down = True
        try:
            os.kill(self.p.pid, signal.SIGCONT)
            os.kill(self.p.pid, signal.SIGTERM)
            return self.p.wait(timeout)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.kill(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        return None


class Postgres:
    """A private cluster through tests/pgcluster.sh's functions."""

    def __init__(self, root, port, listen="127.0.0.1"):
        self.root, self.port, self.listen = root, port, listen
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
            self.sh('pgc_start "$1" "$2" "$3" "$4" "$5"', self.data, str(self.port), self.sock,
                    self.logpath, self.listen)
        except HarnessError as e:
            raise HarnessError("%s\nserver log:\n%s" % (e, tail(self.logpath)))
        self.started = True

    def restart(self, mode):
        # pg_ctl restart reuses the options the server was started with (postmaster.opts)
        self.sh('pgc_as_pg "$PGC_BIN/pg_ctl" -D "$1" -m "$2" -w -t 60 -l "$3" restart',
                self.data, mode, self.logpath)

    def trust_network(self, cidr):
        """Clients from `cidr` (the cores' namespaces) log in without a password, as 127.0.0.1
        does (initdb --auth-host=trust)."""
        with open(os.path.join(self.data, "pg_hba.conf"), "a") as f:
            f.write("host all all %s trust\n" % cidr)

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


# ---------------------------------------------------------------- hosts

class Net:
    """Each core on its own "host": a network namespace with its own address, joined to the
    harness's namespace by a veth pair on a bridge (this machine only; nothing leaves it).

    The harness's namespace keeps PostgreSQL, the forwarders and the clients; they listen on
    the bridge's address. A partition is a pair of nftables rules inside one core's namespace
    that DROP (not reject: a real partition answers nothing) its packets to and from the
    repository's port, the forwarders' ports, or both, while the clients' requests to the
    core's own port still pass. Healing deletes the rules; TCP's retransmissions then carry on
    where they stopped.

    Needs root, `ip` (iproute2) and `nft` (nftables); without them available() says why and the
    partition scenarios are skipped and reported as skipped, never run without their fault.
    """

    def __init__(self):
        # not from the load's seeded generator: two runs (or a killed one's leftovers) must
        # not collide on names
        rng = random.SystemRandom()
        self.tag = "%04x" % rng.randrange(0x10000)
        self.bridge = "cgb" + self.tag
        self.subnet_b = rng.randrange(1, 255)
        self.host = "10.231.%d.1" % self.subnet_b
        self.cidr = "10.231.%d.0/24" % self.subnet_b
        self.ns = {}       # core -> namespace
        self.addrs = {}    # core -> address
        self.links = []
        self.cut = {}      # core -> what is cut ("bus", "repository", "both")
        self.up = False

    @staticmethod
    def available():
        """None when partitions can be made, else the reason they cannot."""
        if os.geteuid() != 0:
            return "network namespaces need root"
        for tool, pkg in (("ip", "iproute2"), ("nft", "nftables")):
            if not shutil.which(tool):
                return "`%s` not found (Debian: apt-get install -y %s)" % (tool, pkg)
        return None

    def run(self, argv, ns=None, data=None):
        argv = (["ip", "netns", "exec", ns] if ns else []) + argv
        r = subprocess.run(argv, input=data, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=30)
        if r.returncode != 0:
            raise HarnessError("`%s` failed (%d): %s" % (" ".join(argv), r.returncode,
                                                        r.stdout.decode("utf-8", "replace")))

    def setup(self, cores):
        self.up = True
        self.run(["ip", "link", "add", self.bridge, "type", "bridge"])
        self.links.append(self.bridge)
        self.run(["ip", "addr", "add", self.host + "/24", "dev", self.bridge])
        self.run(["ip", "link", "set", self.bridge, "up"])
        for i, core in enumerate(cores):
            ns = "cg%s-%s" % (self.tag, core)
            host_if, core_if = "cg%s%dh" % (self.tag, i), "cg%s%dc" % (self.tag, i)
            addr = "10.231.%d.%d" % (self.subnet_b, 10 + i)
            self.run(["ip", "netns", "add", ns])
            self.ns[core] = ns
            self.run(["ip", "link", "add", host_if, "type", "veth", "peer", "name", core_if])
            self.links.append(host_if)
            self.run(["ip", "link", "set", core_if, "netns", ns])
            self.run(["ip", "link", "set", host_if, "master", self.bridge])
            self.run(["ip", "link", "set", host_if, "up"])
            self.run(["ip", "link", "set", "lo", "up"], ns)
            self.run(["ip", "addr", "add", addr + "/24", "dev", core_if], ns)
            self.run(["ip", "link", "set", core_if, "up"], ns)
            self.addrs[core] = addr
        log("hosts: bridge %s %s; %s" % (self.bridge, self.host, ", ".join(
            "%s %s (netns %s)" % (c, self.addrs[c], self.ns[c]) for c in cores)))

    def prefix(self, core):
        return ["ip", "netns", "exec", self.ns[core]]

    def partition(self, core, what, repo_ports, bus_ports):
        """Cut `core` from the repository, the bus, or both ("repository", "bus", "both")."""
        ports = (list(repo_ports) if what in ("repository", "both") else []) + \
            (list(bus_ports) if what in ("bus", "both") else [])
        plist = ", ".join(str(p) for p in ports)
        rules = ("table inet cgcut {\n"
                 " chain out { type filter hook output priority 0; policy accept;\n"
                 "  ip daddr %s tcp dport { %s } drop\n }\n"
                 " chain in { type filter hook input priority 0; policy accept;\n"
                 "  ip saddr %s tcp sport { %s } drop\n }\n}\n"
                 % (self.host, plist, self.host, plist))
        self.run(["nft", "-f", "-"], self.ns[core], rules.encode())
        self.cut[core] = what

    def heal(self, core):
        if core in self.cut:
            self.run(["nft", "delete", "table", "inet", "cgcut"], self.ns[core])
            del self.cut[core]

    def teardown(self):
        if not self.up:
            return
        for core in list(self.cut):
            try:
                self.heal(core)
            except HarnessError as e:
                log("healing %s: %s" % (core, e))
        for link in reversed(self.links):
            subprocess.run(["ip", "link", "del", link], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "del", ns], stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        self.up = False


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

    def call(self, req, timeout_s=None, v=1):
        """(reply or None on timeout, send, end, wall send, wall end)."""
        timeout_s = self.timeout_s if timeout_s is None else timeout_s
        self.n += 1
        req = dict(req, v=v, id=self.n)
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
        self.net = None            # Net when the cores run on their own hosts (--hosts)
        self.roles = {}            # group -> the login role of its cores
        self.pair = []             # the two handles only multi writers update, always together
        self.quiet = threading.Event()   # set: writers pause (for the cache audit)
        self.skipped = {}          # scenario -> why it was not run
        self.audits = []           # per scenario: the cache audit after it
        self.pruned = []           # outbox rows of g the prune scenario deleted
        self.in_flight = 0         # updates sent and not answered (under history_lock)
        self.hooks = False         # the build has CG_TEST_HOOKS (fault-injection hooks)

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
        if self.args.hosts:
            self.net = Net()
            self.net.setup(G_CORES + [H_CORE])
        host = self.net.host if self.net else "127.0.0.1"
        ports = free_ports(1 + 4 + 4, self.rng)
        pgroot = os.path.join(self.tmp, "pg")
        os.makedirs(pgroot)
        os.chmod(pgroot, 0o755)
        self.pg = Postgres(pgroot, ports[0],
                           "127.0.0.1" + ("," + host if self.net else ""))
        log("PostgreSQL binaries in %s" % self.pg.bindir())
        try:
            PG_VERSION[0] = subprocess.run(
                [os.path.join(self.pg.bindir(), "postgres"), "--version"], stdout=subprocess.PIPE,
                timeout=10).stdout.decode().strip()
        except (OSError, subprocess.SubprocessError):
            pass
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
        if self.net:
            self.pg.trust_network(self.net.cidr)
        self.pg.start()
        log("PostgreSQL on %s:%d, socket %s" % (self.pg.listen, self.pg.port, self.pg.sock))
        self.pg.query("CREATE DATABASE coregroup", db="postgres")
        r = subprocess.run([os.path.join(self.bin, "cg-migrate"), "-q", "-m", self.migrations,
                            "-d", self.pg.dsn(), "up"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if r.returncode != 0:
            raise HarnessError("cg-migrate up failed (%d): %s"
                               % (r.returncode, r.stdout.decode("utf-8", "replace")[-800:]))
        self.create_roles()

        self.ctx = zmq.Context()
        bus = ports[1:5]
        self.bus_ports = bus
        self.bus_front = ["tcp://%s:%d" % (host, bus[0]), "tcp://%s:%d" % (host, bus[2])]
        self.bus_back = ["tcp://%s:%d" % (host, bus[1]), "tcp://%s:%d" % (host, bus[3])]
        for i, name in enumerate(("busd-1", "busd-2")):
            p = Proc(name, [os.path.join(self.bin, "cg-busd"), "--name", name,
                            "--frontend", self.bus_front[i], "--backend", self.bus_back[i],
                            "--stats-interval", "10"],
                     os.path.join(self.tmp, name + ".log"), prefix=self.valgrind_prefix(name))
            self.busd[name] = p
            self.start_busd(p, initial=True)

        for i, name in enumerate(G_CORES + [H_CORE]):
            addr = self.net.addrs[name] if self.net else "127.0.0.1"
            ep = "tcp://%s:%d" % (addr, ports[5 + i])
            self.endpoints[name] = ep
            ini = os.path.join(self.tmp, name + ".ini")
            self.inis[name] = ini
            with open(ini, "w") as f:
                f.write(self.ini_text(name, GROUP if name in G_CORES else OTHER, ep))
            prefix = (self.net.prefix(name) if self.net else []) + self.valgrind_prefix(name)
            p = Proc(name, [os.path.join(self.bin, "coregroupd"), "-c", ini],
                     os.path.join(self.tmp, name + ".log"), prefix=prefix)
            self.cores[name] = p
            p.start()
            log("started %s (pid %d) on %s" % (name, p.pid, ep))
        for name in G_CORES + [H_CORE]:
            self.wait_healthy(name, 30.0 * (4 if self.args.valgrind else 1), initial=True)

    def create_roles(self):
        """One login role per group, mapped by the DBA's command (cg-migrate map-role): the
        repository then confines each core to its login's group (row-level security on the
        map), whatever the session claims; the superuser would bypass it, so no core is one."""
        self.roles = {GROUP: "cg_" + GROUP, OTHER: "cg_" + OTHER}
        for group, role in self.roles.items():
            r = subprocess.run([os.path.join(self.bin, "cg-migrate"), "-d", self.pg.dsn(),
                                "map-role", role, group],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60)
            if r.returncode != 0:
                raise HarnessError("cg-migrate map-role %s %s failed (%d): %s" % (
                    role, group, r.returncode, r.stdout.decode("utf-8", "replace")[-400:]))

    def valgrind_prefix(self, name):
        """valgrind memcheck's command line for program `name` (--valgrind), else nothing.
        One log per start (%n: the start's number)."""
        if not self.args.valgrind:
            return []
        return ["valgrind", "--tool=memcheck", "--leak-check=full",
                "--show-leak-kinds=definite,indirect", "--errors-for-leak-kinds=definite,indirect",
                "--num-callers=30", "--log-file=%s" % os.path.join(self.tmp, name + ".vg.%n")]

    def ini_text(self, name, group, listen):
        legacy = self.args.legacy_config
        lines = ["; written by tests/fault/run-faults.py", "[repository]",
                 "dsn = host=%s port=%d user=%s dbname=coregroup"
                 % (self.net.host if self.net else "127.0.0.1", self.pg.port, self.roles[group]),
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

    def start_core(self, name, env=None):
        p = self.cores[name]
        if env:  # armed to die by its own hand: dying at once is no failure to start
            p.start(env)
            return True
        for attempt in range(10):
            p.start(env)
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
        for i in range(2):
            self.pair.append(self.setup_call(G_CORES[0], {
                "op": "register", "kind": "service", "service_id": "g-pair",
                "state": {"g": GROUP, "t": checker.INITIAL_TOKEN}}, GROUP, "register"))
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
        for i in range(a.multi_writers):
            self.spawn(self.multi_client, "multi-%d" % i, G_CORES[i % len(G_CORES)], i)
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
                if self.quiet.is_set():
                    self.stop_load.wait(0.02)
                    continue
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
                    rep, ts, te, ws, we = self.write_call(rpc, req)
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

    def multi_client(self, client, core, seed):
        """Read-modify-write of the pair in ONE call: a `multi` of two gets, then a `multi` of
        two updates with the versions read and one body marker. Both parts of the pair are only
        ever written together, so the repository must always hold the same marker on both and
        every outbox row names both or neither (checker.check_multi). Each update of the multi
        is recorded as its own update record for the chain check."""
        rng = random.Random(self.args.seed * 1000 + 700 + seed)
        hist = self.new_history()
        rpc = Rpc(self.ctx, self.endpoints[core], self.args.timeout_ms / 1000.0)
        n = 0
        try:
            while not self.stop_load.is_set():
                if self.quiet.is_set():
                    self.stop_load.wait(0.02)
                    continue
                req = {"op": "multi", "ops": [{"op": "get", "handle": h, "part": PART}
                                              for h in self.pair]}
                rep, ts, te, ws, we = rpc.call(req)
                reads = []
                for i, h in enumerate(self.pair):
                    g = make_record(client, core, GROUP, "get", {"handle": h, "part": PART},
                                    rep, ts, te, ws, we)
                    g["via"] = "multi"
                    if g["outcome"] == "ok":
                        res = rep["results"][i]
                        g["version"] = res.get("version")
                        body = res.get("body")
                        if isinstance(body, dict):
                            g["token"], g["bgroup"] = body.get("t"), body.get("g")
                    hist.append(g)
                    reads.append(g)
                if any(g["outcome"] != "ok" for g in reads):
                    self.backoff(reads[0]["outcome"])
                    continue
                n += 1
                token = "%s:%d" % (client, n)
                req = {"op": "multi", "ops": [
                    {"op": "update", "handle": h, "part": PART, "expected": g["version"],
                     "body": {"g": GROUP, "t": token}} for h, g in zip(self.pair, reads)]}
                rep, ts, te, ws, we = self.write_call(rpc, req)
                outcome = None
                for i, h in enumerate(self.pair):
                    u = make_record(client, core, GROUP, "update", req["ops"][i], rep, ts, te,
                                    ws, we)
                    u["token"], u["via"] = token, "multi"
                    if u["outcome"] == "ok":
                        u["version"] = rep["results"][i].get("version")
                    elif u["outcome"] == "stale" and rep is not None \
                            and rep.get("error", {}).get("index") != i:
                        u.pop("actual", None)  # the stale error was about the other part
                    hist.append(u)
                    outcome = u["outcome"]
                self.backoff(outcome)
                self.think(rng)
        finally:
            rpc.close()

    def write_call(self, rpc, req):
        with self.history_lock:
            self.in_flight += 1
        try:
            return rpc.call(req)
        finally:
            with self.history_lock:
                self.in_flight -= 1

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
            self.kill_cores(w)
        elif name in ("stop-core", "prune-past-stopped"):
            target = "g3"
            p = self.cores[target]
            w["faulted"] = target
            w["stall_limit_ms"] = STALL_LIMIT_MS
            prune = name == "prune-past-stopped"
            if prune:
                # the bus too, so that what is published meanwhile is really lost to g3
                for n in self.busd:
                    self.busd[n].kill9()
            w["t_fault"] = self.event("fault", scenario=name, action="SIGSTOP %s%s" % (
                target, " and kill -9 both forwarders" if prune else ""), pid=p.pid)
            p.stopped = True
            p.signal(signal.SIGSTOP)
            time.sleep(0.5)  # long enough for others to queue behind its locks
            self.event("paused-sessions", scenario=name, core=target,
                       **self.sessions_of(target, p.pid))
            if prune:
                rows = self.pg.query("DELETE FROM invalidations WHERE group_id = %s "
                                     "RETURNING seq, items", (GROUP,))
                # kept, so that the final check still sees every version exactly once
                self.pruned += [{"seq": sq, "items": items} for sq, items in rows]
                self.event("outbox-pruned", scenario=name, rows=len(rows),
                           up_to_seq=max((r[0] for r in rows), default=None))
                for n in self.busd:
                    self.start_busd(self.busd[n])
            hold = a.hold_prune if prune else a.hold_stop
            time.sleep(max(0.0, hold - (time.monotonic() - w["t_fault"])))
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
        elif name == "drop-bus":
            self.drop_bus(w)
        elif name == "slow-repository":
            self.slow_repository(w)
        elif name == "isolation-attacks":
            self.isolation_attacks(w)
        elif name.startswith("partition-"):
            what = name[len("partition-"):]
            target = "g3"
            w["faulted"] = target
            w["stall_limit_ms"] = STALL_LIMIT_MS
            w["t_fault"] = self.event("fault", scenario=name, action="cut %s from the %s" % (
                target, "repository and the bus" if what == "both" else what))
            self.net.partition(target, what, [self.pg.port], self.bus_ports)
            time.sleep(a.hold_partition)
            self.net.heal(target)
            w["t_recover"] = self.event("recover", scenario=name, action="heal %s" % target)
            took = self.wait_healthy(target, a.duration)
            self.event("healthy", scenario=name, core=target,
                       after_ms=None if took is None else round(took * 1000))
        else:
            raise HarnessError("unknown scenario %s" % name)
        rest = w["t0"] + a.duration - time.monotonic()
        settle = max(rest, a.settle_min)
        time.sleep(settle)
        self.check_processes()
        self.audit_caches(name)
        ev1 = self.event_seq()
        w["t1"] = self.event("scenario-end", scenario=name)
        w["events"] = (ev0, ev1)
        return w

    def kill_cores(self, w):
        """kill -9 a core of g at a random moment of the load, again and again (--kills times),
        each time a random one; every other kill with a test-hooks build instead lets the core
        run to a random commit of its next life and SIGKILL itself between that COMMIT and the
        publication of its invalidation (CG_TEST_HOOKS exit_after_commit), the worst moment."""
        a = self.args
        rng = random.Random(a.seed * 7 + 1)
        killed = []
        w["faulted"] = killed
        w["stall_limit_ms"] = STALL_LIMIT_MS
        for k in range(a.kills):
            target = rng.choice(G_CORES)
            if target not in killed:
                killed.append(target)
            p = self.cores[target]
            t = self.event("fault", scenario="kill-core", action="kill -9 %s" % target, pid=p.pid,
                           kill=k + 1)
            if w["t_fault"] is None:
                w["t_fault"] = t
            p.kill9()
            time.sleep(rng.uniform(0.2, 1.0))
            env = None
            if self.hooks and k % 2 == 1:
                at = rng.randint(1, 30)
                env = {"CG_TEST_HOOKS": "exit_after_commit=2,exit_at_commit=%d" % at}
                self.event("armed", scenario="kill-core", core=target,
                           action="SIGKILL itself after commit %d, before publishing" % at)
            self.start_core(target, env)
            w["t_recover"] = self.event("recover", scenario="kill-core",
                                        action="restart %s" % target, pid=p.pid)
            if env:
                p.expected_down = True  # it will die by its own hand
                deadline = time.monotonic() + 10.0
                while p.alive() and time.monotonic() < deadline:
                    time.sleep(0.05)
                if p.alive():
                    self.event("not-triggered", scenario="kill-core", core=target)
                    p.kill9()
                else:
                    self.event("died-after-commit", scenario="kill-core", core=target,
                               status=p.p.returncode)
                self.start_core(target)
                w["t_recover"] = self.event("recover", scenario="kill-core",
                                            action="restart %s" % target, pid=p.pid)
            took = self.wait_healthy(target, a.duration)
            self.event("healthy", scenario="kill-core", core=target,
                       after_ms=None if took is None else round(took * 1000))
            time.sleep(rng.uniform(0.2, 1.0))

    def restart_graceful(self, name, env=None):
        p = self.cores[name]
        status = p.stop(10.0)
        if status not in (0, None) and not self.args.valgrind:
            self.harness_violation("bad-exit", "%s exited %s on SIGTERM:\n%s"
                                   % (name, status, tail(p.logpath)), name)
        self.start_core(name, env)
        if self.wait_healthy(name, self.args.duration) is None:
            self.harness_violation("restart-failed", "%s did not come back healthy after a "
                                   "graceful restart:\n%s" % (name, tail(p.logpath)), name)

    def drop_bus(self, w):
        """Every core of g drops every --drop-every'th invalidation it publishes (never sent to
        any forwarder), for the hold; the others must fill each hole from the outbox. The hook
        is set at start (CG_TEST_HOOKS drop_every), so each core is restarted gracefully
        with it, and again without it at the end."""
        a = self.args
        env = {"CG_TEST_HOOKS": "drop_every=%d" % a.drop_every}
        w["faulted"] = list(G_CORES)  # each is restarted twice: its pauses are not stalls
        for c in G_CORES:
            self.restart_graceful(c, env)
        w["t_fault"] = self.event("fault", scenario="drop-bus",
                                  action="g1..g3 drop 1 in %d invalidations" % a.drop_every)
        time.sleep(a.hold_drop)
        dropped = {}
        for c in G_CORES:
            st = self.stats_of(c)
            dropped[c] = None if st is None else st.get("invalidations_unsent")
        self.event("dropped", scenario="drop-bus", **dropped)
        for c in G_CORES:
            self.restart_graceful(c)
        w["t_recover"] = self.event("recover", scenario="drop-bus", action="hooks off")

    def slow_repository(self, w):
        """Another session holds the lock on group g's event counter (every commit of g updates
        that row) for --hold-lock seconds: writes wait [repository] lock_timeout_ms and fail
        retryable; reads and the freshness proofs (which only read the counter) go on; no core
        may stop answering for longer than the lock timeout."""
        a = self.args
        w["stall_limit_ms"] = STALL_LIMIT_MS
        conn = psycopg2.connect(self.pg.dsn(), connect_timeout=3)
        try:
            cur = conn.cursor()
            cur.execute("SELECT event_seq FROM core_groups WHERE group_id = %s FOR UPDATE",
                        (GROUP,))
            w["t_fault"] = self.event("fault", scenario="slow-repository",
                                      action="lock core_groups row of %s" % GROUP)
            time.sleep(a.hold_lock)
            conn.rollback()
            w["t_recover"] = self.event("recover", scenario="slow-repository",
                                        action="lock released")
        finally:
            conn.close()

    def stats_of(self, core):
        rpc = Rpc(self.ctx, self.endpoints[core], 2.0)
        try:
            rep = rpc.call({"op": "stats"})[0]
        finally:
            rpc.close()
        return rep.get("stats") if rep and rep.get("ok") else None

    # ---- group isolation attacks: a hostile session, forged bus messages
    def isolation_attacks(self, w):
        w["t_fault"] = self.event("fault", scenario="isolation-attacks",
                                  action="hostile SQL as %s; forged bus messages"
                                  % self.roles[OTHER])
        self.hostile_sql()
        self.forge_bus()
        w["t_recover"] = self.event("recover", scenario="isolation-attacks", action="done")

    def hostile_sql(self):
        """Group h's login, connected like a core of h, tries to read and change group g's rows
        whatever it says its group is. Every attempt must see or change 0 rows of g, or be
        refused; anything else is an isolation violation."""
        role = self.roles[OTHER]
        dsn = "host=%s port=%d user=%s dbname=coregroup" % (self.pg.sock, self.pg.port, role)
        conn = psycopg2.connect(dsn, connect_timeout=3)
        conn.autocommit = True
        g1 = self.pg.query("SELECT incarnation FROM cores WHERE group_id = %s AND core_name "
                           "= 'g1'", (GROUP,))
        inc = g1[0][0] if g1 else 1
        h = self.hot[0]
        attempts = [
            ("select parts", "SELECT count(*) FROM resource_parts WHERE group_id = %(g)s"),
            ("select resources", "SELECT count(*) FROM resources WHERE group_id = %(g)s"),
            ("select outbox", "SELECT count(*) FROM invalidations WHERE group_id = %(g)s"),
            ("select cores", "SELECT count(*) FROM cores WHERE group_id = %(g)s"),
            ("select names", "SELECT count(*) FROM name_bindings WHERE group_id = %(g)s"),
            ("update parts", "UPDATE resource_parts SET body = '{\"g\":\"h\",\"t\":\"evil\"}', "
                             "version = version + 1 WHERE group_id = %(g)s"),
            ("delete parts", "DELETE FROM resource_parts WHERE group_id = %(g)s AND handle = "
                             "%(h)s"),
            ("insert resource", "INSERT INTO resources (group_id, handle, kind) "
                                "VALUES (%(g)s, 999999999, 'service')"),
            ("move own row", "UPDATE resources SET group_id = %(g)s WHERE group_id = %(o)s"),
            ("append outbox", "INSERT INTO invalidations (group_id, seq, origin_core, "
                              "origin_incarnation, items) VALUES (%(g)s, 999999999, 'evil', 1, "
                              "'[]')"),
            ("fence core", "UPDATE cores SET state = 'failed' WHERE group_id = %(g)s"),
            ("call end sessions", "SELECT cg_end_fenced_sessions(%(g)s, 'g1', %(inc)s)"),
            ("bump counter", "UPDATE core_groups SET event_seq = event_seq + 1 WHERE group_id = "
                             "%(g)s"),
        ]
        results = []
        for label, sql in attempts:
            for pretend in (None, "set_config", "SET ROLE"):
                cur = conn.cursor()
                try:
                    if pretend == "SET ROLE":  # membership grants it; it must not widen the group
                        cur.execute("SET ROLE coregroup_app")
                    if pretend:
                        cur.execute("SELECT set_config('coregroup.group', %s, false)", (GROUP,))
                    cur.execute(sql, {"g": GROUP, "o": OTHER, "h": h, "inc": inc})
                    # a count of rows seen, sessions ended; or the rows changed
                    n = cur.fetchone()[0] if label.split()[0] in ("select", "call") \
                        else cur.rowcount
                    outcome = "rows=%s" % n
                    if isinstance(n, int) and n > 0:
                        self.harness_violation(
                            "isolation", "%s's login %s (pretending %s): %s touched %s row(s) "
                            "of group %s" % (OTHER, role, pretend or "nothing", label, n, GROUP))
                except psycopg2.Error as e:
                    outcome = "refused %s" % (e.pgcode or "?")
                finally:
                    cur.close()
                    if pretend == "SET ROLE":
                        with conn.cursor() as c2:
                            c2.execute("RESET ROLE")
                results.append("%s%s: %s" % (label, {None: "", "set_config": " (set group=g)",
                                                     "SET ROLE": " (SET ROLE coregroup_app, "
                                                                 "group=g)"}[pretend], outcome))
        conn.close()
        self.event("hostile-sql", role=role, attempts=len(results), results="; ".join(results))

    def forge_bus(self):
        """Without CURVE anyone who reaches a forwarder's frontend may publish. Forgeries of
        every kind, aimed at g: a far-future seq, a huge version of a hot part, the NEXT seq with
        other items (racing the real one), a foreign group under g's topic, malformed payloads,
        a heartbeat claiming a huge seq, a member event saying g1 failed. They may cost reads;
        the checker must still find nothing."""
        before = {c: self.stats_of(c) or {} for c in G_CORES}
        pub = self.ctx.socket(zmq.PUB)
        pub.setsockopt(zmq.LINGER, 0)
        for ep in self.bus_front:
            pub.connect(ep)
        time.sleep(0.3)  # slow joiner: let the connections come up
        now = int(time.time() * 1e6)
        topic = ("%s/" % GROUP).encode()
        base = {"v": 1, "group": GROUP, "origin": "g9", "inc": 1, "at": now}
        sent = 0
        ev = 0
        for k in range(20):
            if k % 5 == 0:  # near the real next seq, without a query per round
                ev = self.event_seq() or ev
            h = self.hot[k % len(self.hot)]
            forged = [
                dict(base, type="inval", seq=ev + 1,
                     items=[{"h": self.hot[-1 - (k % 3)], "p": PART, "v": 2}]),
                dict(base, type="inval", seq=ev + 1000000,
                     items=[{"h": h, "p": PART, "v": 3}]),
                dict(base, type="inval", seq=ev + 2,
                     items=[{"h": h, "p": PART, "v": 9007199254740991}]),
                dict(base, type="inval", group=OTHER, seq=ev + 1,
                     items=[{"h": h, "p": PART, "v": 2}]),
                dict(base, type="heartbeat", seq=ev + 500000, applied=ev + 500000),
                dict(base, type="member", event="failed", member="g1", minc=1),
            ]
            for m in forged:
                pub.send_multipart([topic, json.dumps(m, separators=(",", ":")).encode()])
                sent += 1
            for raw in (b"{", b"{\"v\":1,\"type\":\"inval\"}", b"\x00\xff", b"[]"):
                pub.send_multipart([topic, raw])
                sent += 1
            pub.send_multipart([topic])  # one frame only
            sent += 1
            time.sleep(0.1)
        pub.close(0)
        time.sleep(0.5)
        seen = {}
        for c in G_CORES:
            after = self.stats_of(c) or {}
            seen[c] = "conflicts+%s dropped+%s catchups+%s" % tuple(
                after.get(f, 0) - before[c].get(f, 0) if f in after else "?"
                for f in ("bus_conflicts", "messages_dropped", "catchups"))
        self.event("forged-bus", messages=sent, **seen)

    # ---- after each scenario: the caches agree with the repository
    def audit_caches(self, scenario):
        """Pause the writers and wait for the updates in flight; then every live core of g must
        reach a cache at the repository's versions (the audit request: every cached entry
        compared) within one poll interval and an allowance for the audit itself. Audited again
        every 50 ms until it agrees or that time is up; the time it took is a figure."""
        self.quiet.set()
        try:
            deadline = time.monotonic() + self.args.timeout_ms / 1000.0 * 5 + 2
            while self.writes_in_flight() and time.monotonic() < deadline:
                time.sleep(0.01)
            t_quiet = time.monotonic()
            limit = (self.args.poll_interval_ms + AUDIT_ALLOWANCE_MS) / 1000.0
            if self.args.valgrind:
                limit *= VALGRIND_SLOWDOWN
            for c in G_CORES:
                if not self.cores[c].alive():
                    continue
                rpc = Rpc(self.ctx, self.endpoints[c], 5.0 * (VALGRIND_SLOWDOWN
                                                            if self.args.valgrind else 1))
                try:
                    while True:
                        rep = rpc.call({"op": "audit", "max": 10000}, v=2)[0]
                        t = time.monotonic()
                        au = rep if rep and rep.get("ok") else None
                        ok = au is not None and au.get("older") == 0 and au.get("newer") == 0
                        if ok or t - t_quiet > limit:
                            break
                        time.sleep(0.05)
                finally:
                    rpc.close()
                if au is None:
                    detail = "audit of %s failed: %s" % (c, json.dumps(rep)[:300])
                else:
                    detail = ("%s after %s: %s of %s cached entries checked, %s consistent, "
                              "%s older, %s newer, %.0f ms after the writers stopped (limit "
                              "%.0f ms)%s" % (c, scenario, au.get("checked"),
                                              au.get("cache_entries"), au.get("consistent"),
                                              au.get("older"), au.get("newer"),
                                              (t - t_quiet) * 1000, limit * 1000,
                                              "" if ok else ": " + json.dumps(
                                                  au.get("entries"))[:300]))
                self.audits.append({"window": scenario, "core": c, "time": t, "ok": ok,
                                    "detail": detail, "agree_ms": (t - t_quiet) * 1000,
                                    "checked": (au or {}).get("checked")})
                if not ok:
                    log("VIOLATION cache-disagrees: " + detail)
        finally:
            self.quiet.clear()

    def writes_in_flight(self):
        with self.history_lock:
            return self.in_flight

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
            (PART, GROUP, self.hot + self.pair, OTHER, self.h_handle))
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
            outbox[g] = {"rows": [{"seq": s, "items": items} for s, items in rows]
                         + (self.pruned if g == GROUP else []),
                         "event_seq": self.event_seq(g)}
        foreign = {GROUP: {self.h_handle}, OTHER: set(self.hot + self.pair)}
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

    def memcheck(self):
        """--valgrind: stop every daemon gracefully (memcheck reports at exit), then read each
        log: an error or a definitely/indirectly lost block is a violation. A log without a
        summary (a process killed by a fault) proves nothing and is counted as such."""
        if not self.args.valgrind:
            return []
        import glob
        import re
        for p in list(self.cores.values()) + list(self.busd.values()):
            status = p.stop(60.0)
            if status is None and p.p is not None and p.p.returncode is None:
                log("%s did not stop within 60 s under valgrind" % p.name)
        out, summary = [], []
        for path in sorted(glob.glob(os.path.join(self.tmp, "*.vg.*"))):
            with open(path, errors="replace") as f:
                text = f.read()
            m = re.search(r"ERROR SUMMARY: ([0-9,]+) errors", text)
            name = os.path.basename(path)
            if not m:
                summary.append("%s: no summary (killed)" % name)
                continue
            errors = int(m.group(1).replace(",", ""))
            lost = {}
            for kind in ("definitely", "indirectly"):
                lm = re.search(kind + r" lost: ([0-9,]+) bytes in ([0-9,]+) blocks", text)
                lost[kind] = int(lm.group(1).replace(",", "")) if lm else 0
            summary.append("%s: %d errors, %d B definitely and %d B indirectly lost"
                           % (name, errors, lost["definitely"], lost["indirectly"]))
            if errors or lost["definitely"] or lost["indirectly"]:
                first = re.search(r"==\d+== (Invalid|Conditional|Use of|Mismatched|Syscall|"
                                  r"\S+ bytes in \S+ blocks are definitely).*", text)
                out.append({"kind": "memcheck", "key": name, "version": None,
                            "time": time.monotonic(), "core": None,
                            "detail": "%s: %d errors, %d B definitely, %d B indirectly lost; "
                                      "first: %s (log kept with --keep)"
                                      % (name, errors, lost["definitely"], lost["indirectly"],
                                         first.group(0)[:200] if first else "-")})
        self.event("memcheck", logs=len(summary), summary="; ".join(summary))
        self.memcheck_summary = summary
        if not any("errors," in x for x in summary):
            raise HarnessError("--valgrind: no valgrind log has a summary (%s)"
                               % "; ".join(summary))
        return out

    memcheck_summary = None

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
        if self.net is not None:
            self.net.teardown()
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
    ap.add_argument("--quick", action="store_true",
                    help="the short form: 10 s per scenario, 3 kills")
    ap.add_argument("--full", action="store_true",
                    help="the long form: 40 s per scenario, 10 kills, longer holds")
    ap.add_argument("--hosts", choices=["auto", "yes", "no"], default="auto",
                    help="run each core in its own network namespace (needs root, ip, nft): "
                         "auto when a partition scenario is chosen and they are available, else "
                         "the partition scenarios are skipped and reported so; yes: fail (exit 2) "
                         "when they are not available")
    ap.add_argument("--valgrind", action="store_true",
                    help="run every coregroupd and cg-busd under valgrind memcheck (a soak: "
                         "leaks and invalid accesses are violations); slow, so the scenarios "
                         "that kill the daemons are left out unless named")
    ap.add_argument("--markdown", metavar="FILE",
                    help="write the figures as a Markdown table to FILE")
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
    ap.add_argument("--multi-writers", type=int, default=2,
                    help="clients updating a pair of parts together in one multi")
    ap.add_argument("--kills", type=int, default=argparse.SUPPRESS,
                    help="kill-core: how many kills (default 6, --quick 3, --full 10)")
    ap.add_argument("--drop-every", type=int, default=3,
                    help="drop-bus: each core of g drops every Nth invalidation it publishes")
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
    if a.quick and a.full:
        ap.error("--quick and --full exclude each other")
    if getattr(a, "duration", None) is None:
        a.duration = 10.0 if a.quick else (40.0 if a.full else 20.0)
    if a.duration <= 0:
        ap.error("--duration must be positive")
    if a.duration < 12.5 and not a.quick:
        ap.error("--duration must be at least 12.5 s (3 s before the fault, 4.5 s of the "
                 "longest hold, 5 s settling); --quick allows shorter")
    if getattr(a, "kills", None) is None:
        a.kills = 3 if a.quick else (10 if a.full else 6)
    for name in ("kills", "writers", "drop_every", "timeout_ms", "poll_interval_ms"):
        if getattr(a, name) < 1:
            ap.error("--%s must be at least 1" % name.replace("_", "-"))
    for name in ("readers", "multi_writers"):
        if getattr(a, name) < 0:
            ap.error("--%s must not be negative" % name.replace("_", "-"))
    a.pre = 1.5 if a.quick else 3.0
    a.settle_min = 3.0 if a.quick else 5.0
    a.hold_stop = 4.5 if not a.full else 8.0
    a.hold_prune = 0.8   # under the failure timeout: g3 stays a member, its cache must reset
    a.hold_bus = 3.0 if not a.full else 8.0
    a.hold_drop = 3.0 if a.quick else (6.0 if not a.full else 20.0)
    a.hold_lock = 3.0 if not a.full else 8.0
    a.hold_partition = 3.0 if a.quick else (5.0 if not a.full else 15.0)
    if not 0 <= a.shared <= a.resources or a.resources < 1:
        ap.error("--shared must be between 0 and --resources (at least 1)")
    if not a.scenario or "all" in a.scenario:
        a.scenario = list(SCENARIOS)
        if a.valgrind:  # a memcheck soak: the daemons must live to exit and report
            a.scenario = [x for x in SCENARIOS if x not in ("kill-core", "drop-bus")]
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
        world.hooks = build_has_hooks(args.bin)
        want_hosts = any(x in PARTITIONS for x in args.scenario)
        why = Net.available()
        if args.hosts == "yes" and why:
            raise HarnessError("--hosts yes: %s" % why)
        args.hosts = args.hosts == "yes" or (args.hosts == "auto" and want_hosts and not why)
        for x in args.scenario:
            if x in PARTITIONS and not args.hosts:
                world.skipped[x] = why or "--hosts no"
            if x in NEEDS_HOOKS and not world.hooks:
                world.skipped[x] = ("the build in %s has no fault-injection hooks (configure it "
                                    "with -DCG_TEST_HOOKS=ON)" % args.bin)
        for x, reason in world.skipped.items():
            log("SKIPPED %s: %s" % (x, reason))
        args.scenario = [x for x in args.scenario if x not in world.skipped]
        if not args.scenario:
            raise HarnessError("no scenario can run here: %s" % "; ".join(
                "%s: %s" % kv for kv in world.skipped.items()))
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
            extra_violations=world.extra + world.memcheck(), pair=world.pair,
            pair_group=GROUP, audits=world.audits)
        ok_ops = sum(w["ok"] for w in result["windows"])
        if ok_ops == 0:
            raise HarnessError("the load got no successful reply at all: nothing to check")
        label = "%s%s" % (args.bin, " (legacy config)" if args.legacy_config else "")
        print(checker.format_summary(result, "coregroup fault run: %s, %s s per scenario, "
                                     "bound %d ms" % (label, args.duration, MAX_STALENESS_MS)))
        for x, reason in world.skipped.items():
            print("SKIPPED %s: %s" % (x, reason))
        status = 1 if result["violation_count"] else 0
        print("\nresult: %s" % ("VIOLATIONS FOUND" if status else "no violation"))
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(markdown(result, world, args, status))
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


def machine():
    """What the figures were measured on: CPUs, memory, kernel, PostgreSQL, the commit."""
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kb = int(f.readline().split()[1])
            mem = "%.0f GiB" % (kb / 1048576.0)
    except (OSError, ValueError, IndexError):
        pass
    try:
        commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                timeout=10).stdout.decode().strip() or "?"
        dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               timeout=10).stdout.decode().strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        commit = "?"
    return "%d CPUs, %s memory, Linux %s, %s, commit %s" % (
        os.cpu_count() or 0, mem, os.uname().release, PG_VERSION[0] or "PostgreSQL ?", commit)


PG_VERSION = [None]

# What each scenario does to the world (for the figures table).
TRIED = {
    "kill-core": "kill -9 a random core of g, {kills} times, every other time at a random commit "
                 "between COMMIT and publish; restart it",
    "stop-core": "SIGSTOP g3 for {hold_stop:g} s (past the 1 s failure timeout), then SIGCONT",
    "kill-forwarder": "kill -9 busd-1 for {hold_bus:g} s, restart it",
    "kill-both-forwarders": "kill -9 both forwarders for {hold_bus:g} s, restart them",
    "pg-restart-fast": "pg_ctl restart -m fast under load",
    "pg-restart-immediate": "pg_ctl restart -m immediate (crash recovery) under load",
    "drop-bus": "every core of g drops 1 in {drop_every} invalidations it publishes for "
                "{hold_drop:g} s",
    "slow-repository": "another session holds g's event counter row for {hold_lock:g} s (every "
                       "write waits the 1 s lock timeout)",
    "prune-past-stopped": "SIGSTOP g3 and kill both forwarders; delete g's whole outbox; "
                          "restart them, SIGCONT g3 (it must reset its cache)",
    "isolation-attacks": "SQL as h's login against g's rows (13 kinds, each plainly, after "
                         "set_config of g, and after SET ROLE coregroup_app); 220 forged bus messages (far-future seq, huge "
                         "version, next seq, foreign group, malformed, heartbeat, member)",
    "partition-bus": "g3 cut from both forwarders (nftables DROP in its namespace) for "
                     "{hold_partition:g} s, then healed",
    "partition-repository": "g3 cut from PostgreSQL for {hold_partition:g} s, then healed",
    "partition-both": "g3 cut from PostgreSQL and the forwarders for {hold_partition:g} s, "
                      "then healed",
}


def markdown(result, world, args, status):
    """The figures of a run as Markdown: one row per scenario, then what was skipped."""
    audits = defaultdict(lambda: [0, 0, 0.0])
    for a in world.audits:
        audits[a["window"]][0] += a["ok"]
        audits[a["window"]][1] += 1
        audits[a["window"]][2] = max(audits[a["window"]][2], a["agree_ms"])
    out = ["| scenario | what was tried | ops (ok) | errors by code | lost | phantoms | "
           "stale > bound | oldest read (bound) | longest healthy stall | recovery | caches "
           "agree after | other |",
           "| --- | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for w in result["windows"]:
        errs = ", ".join("%s %d" % kv for kv in sorted(w["errors"].items())) or "-"
        stall = "%s ms (%s)" % (_ms(w["longest_stall_ms"]), w["stall_core"] or "-")
        if w.get("stall_limit_ms"):
            stall += " of %d" % w["stall_limit_ms"]
        rec = "-" if w.get("t_recover") is None else (
            "never" if not w["recovered"] else "%s ms" % _ms(w["recover_ms"]))
        au = audits.get(w["name"])
        out.append("| %s | %s | %d (%d) | %s | %d | %d | %d | %s ms (%d) | %s | %s | %s | %d |" % (
            w["name"], TRIED.get(w["name"], "").format(**vars(args)), w["ops"], w["ok"], errs,
            w["lost_updates"], w["phantoms"], w["stale_past_bound"], _ms(w["oldest_read_ms"]),
            w["bound_ms"], stall, rec,
            "%d of %d cores, %.0f ms" % tuple(au) if au else "-",
            w["other_violations"]))
    lines = ["Fault run: %s s per scenario, seed %d, %d writers, %d multi writers, %d readers, "
             "bound (max_staleness_ms) %d ms, lock timeout %d ms, poll interval %d ms%s. "
             "Result: **%s** (%d violations)." % (
                 args.duration, args.seed, args.writers, args.multi_writers, args.readers,
                 MAX_STALENESS_MS, LOCK_TIMEOUT_MS, args.poll_interval_ms,
                 ", daemons under valgrind memcheck" if args.valgrind else "",
                 "no violation" if status == 0 else "VIOLATIONS FOUND",
                 result["violation_count"]),
             "", "Machine: %s." % machine(), ""] + out
    for x, reason in world.skipped.items():
        lines.append("")
        lines.append("Skipped %s: %s." % (x, reason))
    if world.memcheck_summary:
        lines += ["", "valgrind memcheck, one log per daemon start:", ""]
        lines += ["- %s" % x for x in world.memcheck_summary]
    return "\n".join(lines) + "\n"


def _ms(x):
    return "-" if x is None else "%.0f" % x


def build_has_hooks(bindir):
    """Whether the build in bindir was configured with -DCG_TEST_HOOKS=ON (its CMakeCache)."""
    try:
        with open(os.path.join(bindir, "CMakeCache.txt")) as f:
            return any(line.strip() in ("CG_TEST_HOOKS:BOOL=ON", "CG_TEST_HOOKS:BOOL=TRUE")
                       for line in f)
    except OSError:
        return False


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
