"""checker.py — pure functions over the history of a fault run (tests/fault/run-faults.py).

Nothing here does I/O: every function takes a history (a list of request records) and the
facts read from the repository at the end, and returns findings. run-faults.py collects, this
module judges, test_checker.py tests the judging on hand-made histories.

A history record is a dict, one per request a client sent:

    client   who sent it ("rmw-3", "reader-1", "light-h", "stats-g1", ...)
    core     the core it went to ("g1"); group: that core's group ("g")
    op       "register", "get", "update", "find", "stats", ...
    handle, part      the part it names (part "state" in this harness)
    expected          update: the version it expected to replace
    send, end         monotonic seconds: just before sending; when the reply arrived or the
                      client gave up (timeout)
    reply             monotonic seconds of the reply, None on timeout
    wsend, wreply     the same on the wall clock (for people, never for arithmetic)
    outcome           "ok", or the protocol's error code ("stale", "retryable", "degraded",
                      "fenced", "not-found", "invalid", "exists", "error"), or "timeout"
    version           get: the version read; update: the version it made
    actual            stale: the version the repository held then
    token             update: the marker written into the body; get: the marker read back
    bgroup            get: the group marker read back from the body
    handles           find: the handles returned

The judgements (each a function below):
  - check_chains: per part, acknowledged updates form one chain 1->2->3...; a version nobody
    can have made is a phantom; two acknowledgements of one version, or an acknowledged version
    the repository never reached or holds with another body, is a lost update. An update that
    timed out or failed retryable/degraded/fenced/error is INDETERMINATE: it may be in the
    chain. The body marker ("token") of every write ties a version to the one write that made it.
  - check_outbox: every version of every part in the outbox exactly once, the seqs gap-free.
  - read_staleness: how stale each read was: its send time minus the acknowledgement time of the
    oldest newer version acknowledged before it was sent (0 when fresh). This is a LOWER bound of
    the true staleness (the send is recorded before the request leaves, the acknowledgement
    after the commit), so a read flagged past the bound really is past it.
  - backwards_reads: per core and part, a read that started after an earlier read's (or acked
    update's) reply arrived never returns an older version (I4).
  - longest_stall: the longest time a core had requests outstanding and answered none.
  - counter_delta / per_1000: stats counters across restarts.
  - time_to_recover, check_isolation, analyze (all of it per window) and format_summary.
"""

from bisect import bisect_right
from collections import Counter, defaultdict

INITIAL_TOKEN = "init"
# An update answered so may or may not have been applied.
INDETERMINATE = frozenset({"timeout", "retryable", "degraded", "fenced", "error"})
# An update answered so was certainly not applied.
DEFINITE_FAILURES = frozenset({"stale", "not-found", "invalid", "exists"})
LOAD_OPS = frozenset({"get", "update"})


def key_of(r):
    return (r.get("group", "g"), r["handle"], r.get("part", "state"))


def key_name(key):
    return "%s/%s/%s" % key


def _violation(kind, key, version, time, detail, core=None):
    return {"kind": kind, "key": key_name(key), "version": version, "time": time,
            "detail": detail, "core": core}


def _dedupe(violations):
    """One entry per (kind, part, version, detail kind); keeps the earliest, counts the rest."""
    seen = {}
    for v in violations:
        k = (v["kind"], v["key"], v["version"])
        if k in seen:
            first = seen[k]
            first["count"] += 1
            if v["time"] is not None and (first["time"] is None or v["time"] < first["time"]):
                count = first["count"]
                seen[k] = dict(v, count=count)
        else:
            seen[k] = dict(v, count=1)
    return sorted(seen.values(), key=lambda v: (v["time"] is None, v["time"] or 0, v["key"]))


# ---------------------------------------------------------------- chains: lost and phantom

def check_chains(history, final=None, end_time=None):
    """Lost updates and phantoms, per part.

    final: {key: (version, token)} read from the repository at the end (None: unknown, then
    only the history itself is checked). end_time: the time to attribute findings about the
    final state to. Returns {"lost": [...], "phantoms": [...], "applied_despite_error":
    {code: n}, "parts": n}.
    """
    parts = defaultdict(lambda: {"acked": defaultdict(list), "indet": defaultdict(list),
                                 "tokens": {}, "obs": []})
    lost, phantoms = [], []
    for r in history:
        if r.get("handle") is None or r["op"] not in ("update", "get", "register"):
            continue
        k = key_of(r)
        p = parts[k]
        if r["op"] == "update":
            if r.get("token") is not None:
                p["tokens"][r["token"]] = r
            if r["outcome"] == "ok":
                if r.get("version") != r["expected"] + 1:
                    lost.append(_violation(
                        "bad-ack", k, r.get("version"), r.get("reply"),
                        "update from version %s acknowledged as version %s (not +1)"
                        % (r["expected"], r.get("version")), r.get("core")))
                p["acked"][r["version"]].append(r)
            elif r["outcome"] in INDETERMINATE:
                p["indet"][r["expected"] + 1].append(r)
            elif r["outcome"] == "stale" and r.get("actual") is not None:
                p["obs"].append({"version": r["actual"], "token": None, "time": r.get("reply"),
                                 "core": r.get("core"), "what": "stale error's actual"})
        elif r["outcome"] == "ok" and r.get("version") is not None:
            p["obs"].append({"version": r["version"], "token": r.get("token"),
                             "time": r.get("reply"), "core": r.get("core"),
                             "what": r["op"]})
    if final:
        for k in final:
            parts[k]  # a part only the repository knows still gets checked

    applied = {}  # id(update) -> outcome, for indeterminate updates seen applied
    for k, p in parts.items():
        acked, indet, tokens = p["acked"], p["indet"], p["tokens"]
        for v, ups in acked.items():
            if len(ups) > 1:
                t = max(u["reply"] for u in ups)
                lost.append(_violation(
                    "duplicate-ack", k, v, t,
                    "%d updates acknowledged as making version %d (from %s): all but one lost"
                    % (len(ups), v, ", ".join("%s@%s" % (u["client"], u["core"]) for u in ups)),
                    ups[-1].get("core")))
        fv, ft = (final.get(k, (None, None)) if final else (None, None))
        observed = [o["version"] for o in p["obs"]]
        known = list(acked) + observed + ([fv] if fv is not None else [])
        top = fv if fv is not None else (max(known) if known else 1)
        if fv is not None:
            for v, ups in acked.items():
                if v > fv:
                    lost.append(_violation(
                        "ack-beyond-final", k, v, ups[0]["reply"],
                        "version %d acknowledged, the repository ended at %d" % (v, fv),
                        ups[0].get("core")))
        # Every version 2..top was made by one update: an acknowledged or an indeterminate one.
        first_seen = {}
        for o in p["obs"]:
            if o["time"] is not None and (o["version"] not in first_seen
                                          or o["time"] < first_seen[o["version"]]):
                first_seen[o["version"]] = o["time"]
        # (a version far above every write, say one a hostile session set, is one finding for
        # the whole range: never a loop over it)
        made = set(acked) | set(indet)
        last = min(top, max(made, default=1) + 1)
        for v in range(2, last + 1):
            if v not in made:
                phantoms.append(_violation(
                    "unexplained-version", k, v, first_seen.get(v, end_time),
                    "version %d exists but no update from version %d was acknowledged or "
                    "left indeterminate" % (v, v - 1)))
        if top > last:
            phantoms.append(_violation(
                "unexplained-version", k, last + 1, first_seen.get(last + 1, end_time),
                "versions %d..%d exist but no update made any of them" % (last + 1, top)))
        obs = list(p["obs"])
        if fv is not None:
            obs.append({"version": fv, "token": ft, "time": end_time, "core": None,
                        "what": "final state"})
        for o in obs:
            v, tok = o["version"], o["token"]
            if fv is not None and v > fv:
                phantoms.append(_violation(
                    "beyond-final", k, v, o["time"],
                    "%s saw version %d, the repository ended at %d" % (o["what"], v, fv),
                    o["core"]))
                continue
            if tok is None:
                continue
            if v == 1:
                if tok != INITIAL_TOKEN:
                    phantoms.append(_violation(
                        "unknown-body", k, v, o["time"],
                        "%s saw version 1 with body %r, not the registered one"
                        % (o["what"], tok), o["core"]))
                continue
            u = tokens.get(tok)
            if u is None:
                phantoms.append(_violation(
                    "unknown-body", k, v, o["time"],
                    "%s saw version %d with body %r that no client wrote to this part"
                    % (o["what"], v, tok), o["core"]))
                continue
            if u["outcome"] in DEFINITE_FAILURES:
                phantoms.append(_violation(
                    "failed-update-applied", k, v, o["time"],
                    "%s saw version %d with the body of an update answered %r (%s@%s)"
                    % (o["what"], v, u["outcome"], u["client"], u["core"]), o["core"]))
                continue
            made = u["version"] if u["outcome"] == "ok" else u["expected"] + 1
            if made != v:
                phantoms.append(_violation(
                    "version-body-mismatch", k, v, o["time"],
                    "%s saw version %d with the body written as version %d (%s@%s, %s)"
                    % (o["what"], v, made, u["client"], u["core"], u["outcome"]), o["core"]))
                continue
            if u["outcome"] != "ok":
                applied[id(u)] = u["outcome"]
            others = [a for a in acked.get(v, []) if a is not u]
            if others:
                lost.append(_violation(
                    "ack-overwritten", k, v, o["time"],
                    "version %d was acknowledged to %s@%s, but %s saw it with the body of "
                    "%s@%s (%s): one of the two writes was lost"
                    % (v, others[0]["client"], others[0]["core"], o["what"], u["client"],
                       u["core"], u["outcome"]), o["core"]))
    return {"lost": _dedupe(lost), "phantoms": _dedupe(phantoms),
            "applied_despite_error": dict(Counter(applied.values())), "parts": len(parts)}


def check_outbox(rows, final, group, event_seq=None, end_time=None):
    """The outbox of one group: rows [{"seq", "items": [{"h", "p", "v"}]}]; final {key: (v, t)}.

    Every version 2..F of every part in final appears exactly once (version 1, from the
    registration, at most once), none beyond F; the seqs are gap-free and end at event_seq.
    """
    out = []
    seqs = sorted(r["seq"] for r in rows)
    if seqs:
        dup = [s for s, c in Counter(seqs).items() if c > 1]
        if dup:
            out.append(_violation("outbox-seq-duplicate", (group, "-", "-"), dup[0], end_time,
                                  "seq %s appears %d times" % (dup[0], seqs.count(dup[0]))))
        # counted pairwise, never as a range: a forged row far ahead must not cost memory
        uniq = sorted(set(seqs))
        holes = [(a, b) for a, b in zip(uniq, uniq[1:]) if b > a + 1]
        if holes:
            n = sum(b - a - 1 for a, b in holes)
            out.append(_violation("outbox-seq-gap", (group, "-", "-"), holes[0][0] + 1, end_time,
                                  "%d seqs missing between %d and %d, first %d"
                                  % (n, seqs[0], seqs[-1], holes[0][0] + 1)))
        if event_seq is not None and seqs[-1] != event_seq:
            out.append(_violation("outbox-seq-end", (group, "-", "-"), seqs[-1], end_time,
                                  "last outbox seq %d, the group's event_seq %d"
                                  % (seqs[-1], event_seq)))
    counts = defaultdict(Counter)
    for r in rows:
        for it in r["items"]:
            counts[(group, it["h"], it["p"])][it["v"]] += 1
    for k, (fv, _tok) in final.items():
        if k[0] != group:
            continue
        c = counts.get(k, Counter())
        for v, n in sorted(c.items()):
            if n > 1:
                out.append(_violation("outbox-duplicate", k, v, end_time,
                                      "version %d in the outbox %d times" % (v, n)))
            if v > fv:
                out.append(_violation("outbox-beyond-final", k, v, end_time,
                                      "version %d in the outbox, the part ended at %d" % (v, fv)))
        have = sorted(v for v in c if 2 <= v <= fv)
        if len(have) < fv - 1:
            first = next((i for i, v in enumerate(have, 2) if v != i), len(have) + 2)
            out.append(_violation("outbox-missing", k, first, end_time,
                                  "%d of versions 2..%d not in the outbox, first %d"
                                  % (fv - 1 - len(have), fv, first)))
    return out


def check_multi(rows, pair, final, group, end_time=None):
    """A `multi` is never half applied. `pair`: handles whose parts are only ever written
    together, in one `multi` with one body marker. Every outbox row of `group` that names one
    of them names all of them, and the repository ends with the same marker on all of them.
    A half-applied call would show as a row naming only one, or as different markers."""
    out = []
    if not pair:
        return out
    want = set(pair)
    for r in rows:
        named = {it["h"] for it in r["items"]} & want
        if named and named != want:
            out.append(_violation("multi-half-applied", (group, sorted(named)[0], "state"),
                                  r["seq"], end_time,
                                  "outbox seq %d names handle(s) %s of the pair %s but not %s"
                                  % (r["seq"], sorted(named), sorted(want),
                                     sorted(want - named))))
    tokens = {h: (final or {}).get((group, h, "state")) for h in pair}
    if all(t is not None for t in tokens.values()):
        if len({t[1] for t in tokens.values()}) > 1:
            out.append(_violation("multi-half-applied", (group, pair[0], "state"), None, end_time,
                                  "the pair ended with different bodies: %s" % ", ".join(
                                      "%d v%d %r" % (h, t[0], t[1])
                                      for h, t in sorted(tokens.items()))))
    return out


# ---------------------------------------------------------------- freshness

def read_staleness(history):
    """[(index, stale_s)] for every successful read: send minus the ack time of the oldest
    newer version acknowledged before the send; 0.0 when fresh."""
    acks = defaultdict(dict)
    for r in history:
        if r["op"] == "update" and r["outcome"] == "ok" and r.get("handle") is not None:
            d = acks[key_of(r)]
            v = r["version"]
            if v not in d or r["reply"] < d[v]:
                d[v] = r["reply"]
    index = {}
    for k, d in acks.items():
        vs = sorted(d)
        sm = [0.0] * len(vs)
        m = float("inf")
        for i in range(len(vs) - 1, -1, -1):
            m = min(m, d[vs[i]])
            sm[i] = m
        index[k] = (vs, sm)
    out = []
    for i, r in enumerate(history):
        if r["op"] != "get" or r["outcome"] != "ok" or r.get("version") is None \
                or r.get("handle") is None:
            continue
        stale = 0.0
        ix = index.get(key_of(r))
        if ix:
            vs, sm = ix
            j = bisect_right(vs, r["version"])
            if j < len(vs) and sm[j] < r["send"]:
                stale = r["send"] - sm[j]
        out.append((i, stale))
    return out


def backwards_reads(history):
    """Per core and part: a read sent after an earlier observation's reply (a read, or an
    acknowledged update, on the same core) returned an older version."""
    obs = defaultdict(list)
    reads = defaultdict(list)
    for r in history:
        if r.get("handle") is None or r["outcome"] != "ok" or r.get("version") is None:
            continue
        if r["op"] not in ("get", "update"):
            continue
        ck = (r["core"],) + key_of(r)
        obs[ck].append((r["reply"], r["version"], r))
        if r["op"] == "get":
            reads[ck].append(r)
    out = []
    for ck, rs in reads.items():
        ob = sorted(obs[ck], key=lambda x: x[0])
        rs = sorted(rs, key=lambda r: r["send"])
        j, maxv, maxr = 0, 0, None
        for r in rs:
            while j < len(ob) and ob[j][0] < r["send"]:
                if ob[j][1] > maxv:
                    maxv, maxr = ob[j][1], ob[j][2]
                j += 1
            if r["version"] < maxv:
                out.append(_violation(
                    "backwards-read", ck[1:], r["version"], r["send"],
                    "core %s served version %d after it had served version %d (%s, reply "
                    "%.3f s before this read was sent)"
                    % (ck[0], r["version"], maxv, maxr["op"], r["send"] - maxr["reply"]),
                    ck[0]))
    return _dedupe(out)


# ---------------------------------------------------------------- liveness

def longest_stall(history, core, t0, t1, rejoin_gap=0.1):
    """The longest stretch within [t0, t1] in which `core` had requests outstanding and sent
    no reply. A client that gave up (timeout) and sent again within rejoin_gap seconds keeps
    the stretch going. Returns (seconds, start, end); (0.0, None, None) when none."""
    ev = []
    for r in history:
        if r.get("core") != core:
            continue
        end = r.get("end", r.get("reply"))
        if end is None or end < t0 or r["send"] > t1:
            continue
        ev.append((r["send"], 1, False))
        ev.append((end, 0, r.get("reply") is not None))
    ev.sort(key=lambda e: (e[0], e[1]))
    best = (0.0, None, None)
    outstanding, since, gap_since, gap_at = 0, None, None, None

    def stretch(a, b):
        a, b = max(a, t0), min(b, t1)
        return (b - a, a, b) if b > a else (0.0, None, None)

    for t, is_send, replied in ev:
        if is_send:
            if outstanding == 0:
                since = gap_since if (gap_at is not None and t - gap_at <= rejoin_gap) else t
            outstanding += 1
            continue
        outstanding -= 1
        s = stretch(since, t)
        if s[0] > best[0]:
            best = s
        if replied:
            since, gap_at = t, None
        elif outstanding == 0:
            gap_since, gap_at = since, t
    return best


def time_to_recover(history, cores, t_rec, t_end):
    """Per core: seconds from t_rec to the first acknowledged update sent at or after t_rec
    (None if none before t_end); and the max over cores (None if any never recovered)."""
    first = {c: None for c in cores}
    for r in history:
        c = r.get("core")
        if c in first and r["op"] == "update" and r["outcome"] == "ok" \
                and r["send"] >= t_rec and r["reply"] <= t_end:
            d = r["reply"] - t_rec
            if first[c] is None or d < first[c]:
                first[c] = d
    worst = None if any(v is None for v in first.values()) else max(first.values(), default=0.0)
    return worst, first


def counter_delta(samples, field, t0, t1):
    """How much a counter grew over [t0, t1], across restarts of its process.

    samples: [(t, stats dict or None)] sorted by t. The last sample at or before t0 is the
    baseline; a value lower than the previous one means the process restarted (its counter
    began again at 0). None when the field is in no sample (an older build without it)."""
    seen = False
    prev, total = None, 0
    for t, s in samples:
        if t > t1:
            break
        if s is None or field not in s:
            continue
        seen = True
        v = s[field]
        if t <= t0:
            prev = v
            continue
        if prev is None:
            prev = v  # no baseline before the window: count from the first sample in it
            continue
        total += v - prev if v >= prev else v
        prev = v
    return total if seen else None


def per_1000(count, events):
    if count is None or not events:
        return None
    return 1000.0 * count / events


def check_isolation(history, foreign):
    """foreign: {group: set(handles of other groups)}. A core of `group` must never succeed on
    one of them, find one, or serve a body marked with another group."""
    out = []
    for r in history:
        g = r.get("group")
        if r["outcome"] != "ok":
            continue
        bad = foreign.get(g, set())
        if r.get("handle") in bad and r["op"] in ("get", "update", "lock", "probe-get"):
            out.append(_violation("isolation", (g, r["handle"], r.get("part")), r.get("version"),
                                  r["send"], "core %s of group %s answered %s on a handle of "
                                  "another group" % (r["core"], g, r["op"]), r["core"]))
        if r["op"] == "find" and bad & set(r.get("handles") or ()):
            out.append(_violation("isolation", (g, "find", r.get("service_id")), None, r["send"],
                                  "core %s of group %s found handles %s of another group"
                                  % (r["core"], g, sorted(bad & set(r["handles"]))), r["core"]))
        if r.get("bgroup") is not None and r["bgroup"] != g:
            out.append(_violation("isolation", key_of(r), r.get("version"), r["send"],
                                  "core %s of group %s served a body written in group %s"
                                  % (r["core"], g, r["bgroup"]), r["core"]))
    return _dedupe(out)


# ---------------------------------------------------------------- the whole judgement

def _in(t, w):
    return t is not None and w["t0"] <= t < w["t1"]


def check_audits(audits):
    """audits: [{"window", "core", "time", "ok", "detail"}], the harness's cache audit of every
    live core after a window (writers paused, one poll interval waited). One that is not ok is
    a core whose cache did not agree with the repository within one poll interval of the end of
    the fault."""
    return [_violation("cache-disagrees", (a["window"], a["core"], "-"), None, a["time"],
                       a["detail"], a["core"]) for a in audits if not a["ok"]]


def _faulted(w):
    f = w.get("faulted")
    return set(f) if isinstance(f, (list, tuple, set)) else ({f} if f else set())


def analyze(history, windows, bound_ms, final=None, outbox=None, event_seqs=None, stats=None,
            foreign=None, group_cores=None, all_cores=None, end_time=None, extra_violations=(),
            pair=None, pair_group="g", audits=()):
    """Everything, per window and in total.

    windows: [{"name", "t0", "t1", "t_fault", "t_recover", "faulted", "stall_limit_ms"}]
    (monotonic seconds; faulted: a core or a list of cores; stall_limit_ms: when set, a healthy
    core that stops answering longer than this within the window is a violation).
    pair: handles of pair_group only ever written together (check_multi). audits: as
    check_audits.
    final: {key: (version, token)}. outbox: {group: {"rows": [...], "event_seq": n}}.
    event_seqs: {window name: (event_seq at t0, at t1)} of the loaded group.
    stats: {core: [(t, stats dict or None)]}. foreign: as check_isolation. group_cores: the
    loaded group's cores; all_cores: every core. extra_violations: violations the harness saw
    itself (a core that would not restart, ...), each with kind/key/version/time/detail.
    """
    group_cores = group_cores or sorted({r["core"] for r in history if r.get("core")})
    all_cores = all_cores or group_cores
    end_time = end_time if end_time is not None else max((r.get("end") or r["send"]
                                                          for r in history), default=0.0)
    chains = check_chains(history, final, end_time)
    ob = []
    for g, o in (outbox or {}).items():
        ob += check_outbox(o["rows"], final or {}, g, o.get("event_seq"), end_time)
    stale = read_staleness(history)
    bound = bound_ms / 1000.0
    stale_viol = []
    for i, s in stale:
        if s > bound:
            r = history[i]
            stale_viol.append(_violation(
                "stale-read", key_of(r), r["version"], r["send"],
                "core %s served version %d %.0f ms after a newer version was acknowledged "
                "(bound %d ms)" % (r["core"], r["version"], s * 1000, bound_ms), r["core"]))
    back = backwards_reads(history)
    iso = check_isolation(history, foreign or {})
    extra = list(extra_violations)
    if pair:
        extra += check_multi((outbox or {}).get(pair_group, {}).get("rows", []), pair,
                             final or {}, pair_group, end_time)
    extra += check_audits(audits)
    stalls = []

    def window_figures(w):
        ops = [r for r in history if r["op"] in LOAD_OPS and _in(r["send"], w)]
        errors = Counter(r["outcome"] for r in ops if r["outcome"] != "ok")
        st = [s for i, s in stale if _in(history[i]["send"], w)]
        oldest = max(st, default=0.0)
        sv = [v for v in stale_viol if _in(v["time"], w)]
        lost = [v for v in chains["lost"] if _in(v["time"], w)]
        ph = [v for v in chains["phantoms"] if _in(v["time"], w)]
        others = [v for v in back + iso + ob + extra if _in(v["time"], w)]
        # (a window whose cores never recovered counts one more, added below)
        healthy = [c for c in all_cores if c not in _faulted(w)]
        t_fault = w.get("t_fault", w["t0"])
        stall = (0.0, None, None, None)
        for c in healthy:
            s = longest_stall(history, c, t_fault, w["t1"])
            if s[0] > stall[0]:
                stall = (s[0], s[1], s[2], c)
        rec, rec_by = (None, {})
        if w.get("t_recover") is not None:
            rec, rec_by = time_to_recover(history, group_cores, w["t_recover"], w["t1"])
        cu = {}
        ev = (event_seqs or {}).get(w["name"])
        ev_delta = (ev[1] - ev[0]) if ev and None not in ev else None
        for c in group_cores:
            samples = (stats or {}).get(c, [])
            cu[c] = {f: counter_delta(samples, f, w["t0"], w["t1"])
                     for f in ("catchups", "gaps", "reordered", "lease_misses",
                                                             "cache_resets")}
        rates = [per_1000(cu[c]["catchups"], ev_delta) for c in group_cores]
        rates = [x for x in rates if x is not None]
        return {
            "name": w["name"], "ops": len(ops), "ok": len(ops) - sum(errors.values()),
            "errors": dict(sorted(errors.items())),
            "lost_updates": len(lost), "phantoms": len(ph), "stale_past_bound": len(sv),
            "other_violations": len(others),
            "oldest_read_ms": round(oldest * 1000, 1), "bound_ms": bound_ms,
            "reads": len(st),
            "longest_stall_ms": round(stall[0] * 1000, 1), "stall_core": stall[3],
            "stall_from": stall[1], "stall_to": stall[2],
            "events": ev_delta, "counters": cu,
            "catchups_per_1k": (round(sum(rates) / len(rates), 2) if rates else None),
            "catchups_per_1k_max": (round(max(rates), 2) if rates else None),
            "recover_ms": None if rec is None else round(rec * 1000, 1),
            "recover_ms_by_core": {c: (None if v is None else round(v * 1000, 1))
                                   for c, v in rec_by.items()},
            "recovered": (w.get("t_recover") is None) or rec is not None,
            "faulted": w.get("faulted"), "t0": w["t0"], "t1": w["t1"],
            "stall_limit_ms": w.get("stall_limit_ms"),
            "t_fault": w.get("t_fault"), "t_recover": w.get("t_recover"),
        }

    per = [window_figures(w) for w in windows]
    for p in per:
        p["other_violations"] += 0 if p["recovered"] else 1
        lim = p.get("stall_limit_ms")
        if lim is not None and p["longest_stall_ms"] > lim:
            stalls.append(_violation(
                "stall", (p["name"], p["stall_core"], "-"), None, p["stall_from"],
                "healthy core %s answered nothing for %.0f ms while %s was faulted (limit %d ms: "
                "the lock timeout and an allowance for answering)" % (p["stall_core"], p["longest_stall_ms"],
                                       p["faulted"] or "-", lim), p["stall_core"]))
            p["other_violations"] += 1
    everything = {"name": "all", "t0": float("-inf"), "t1": float("inf")}
    total = window_figures(everything)
    # the total counts every finding, also those outside any window or without a time
    total.update({"lost_updates": len(chains["lost"]), "phantoms": len(chains["phantoms"]),
                  "stale_past_bound": len(stale_viol),
                  "other_violations": len(back) + len(iso) + len(ob) + len(extra)})
    if event_seqs:
        evs = [e for e in event_seqs.values() if None not in e]
        if evs:
            total["events"] = max(e[1] for e in evs) - min(e[0] for e in evs)
    total["longest_stall_ms"] = max((p["longest_stall_ms"] for p in per), default=0.0)
    total["stall_core"] = next((p["stall_core"] for p in per
                                if p["longest_stall_ms"] == total["longest_stall_ms"]), None)
    recs = [p["recover_ms"] for p in per if p["t_recover"] is not None]
    total["recover_ms"] = None if (not recs or None in recs) else max(recs)
    total["recovered"] = all(p["recovered"] for p in per)
    total["catchups_per_1k"] = None
    rates = []
    for c in group_cores:
        n = sum((p["counters"][c]["catchups"] or 0) for p in per)
        if total.get("events") and any(p["counters"][c]["catchups"] is not None for p in per):
            rates.append(per_1000(n, total["events"]))
    if rates:
        total["catchups_per_1k"] = round(sum(rates) / len(rates), 2)
        total["catchups_per_1k_max"] = round(max(rates), 2)
    liveness = []
    for p in per:
        if not p["recovered"]:
            never = sorted(c for c, v in p["recover_ms_by_core"].items() if v is None)
            liveness.append({"kind": "not-recovered", "key": p["name"], "version": None,
                             "time": p["t_recover"], "core": never[0] if never else None,
                             "detail": "no update was acknowledged by %s between the recovery "
                                       "of %s and the end of its window"
                                       % (", ".join(never), p["name"])})
    total["other_violations"] += len(liveness) + len(stalls)
    violations = (chains["lost"] + chains["phantoms"] + stale_viol + back + iso + ob + extra
                  + liveness + stalls)
    return {
        "bound_ms": bound_ms,
        "windows": per, "total": total,
        "violations": {"lost_updates": chains["lost"], "phantoms": chains["phantoms"],
                       "stale_reads": stale_viol, "backwards_reads": back, "isolation": iso,
                       "outbox": ob, "liveness": liveness, "stalls": stalls,
                       "harness_observed": extra},
        "violation_count": len(violations),
        "applied_despite_error": chains["applied_despite_error"],
        "parts_checked": chains["parts"],
    }


def _fmt_ms(x):
    return "-" if x is None else ("%.0f" % x)


def format_summary(result, title=None):
    """The summary table (one row per window and one for all), then the violations."""
    cols = ["scenario", "ops", "ok", "lost", "phantom", "stale>bnd", "oldest/bound ms",
            "stall ms (core)", "catchup/1k ev", "recover ms", "other", "errors by code"]
    rows = []
    for w in result["windows"] + [result["total"]]:
        errs = " ".join("%s=%d" % kv for kv in sorted(w["errors"].items())) or "-"
        cu = "-" if w["catchups_per_1k"] is None else "%.1f (max %.1f)" % (
            w["catchups_per_1k"], w["catchups_per_1k_max"])
        if w["name"] != "all" and w.get("t_recover") is None:
            rec = "-"
        elif not w["recovered"]:
            rec = "never"
        else:
            rec = _fmt_ms(w["recover_ms"])
        rows.append([w["name"], str(w["ops"]), str(w["ok"]), str(w["lost_updates"]),
                     str(w["phantoms"]), str(w["stale_past_bound"]),
                     "%s/%d" % (_fmt_ms(w["oldest_read_ms"]), w["bound_ms"]),
                     "%s (%s)" % (_fmt_ms(w["longest_stall_ms"]), w["stall_core"] or "-"),
                     cu, rec, str(w["other_violations"]), errs])
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = []
    if title:
        lines.append(title)
    fmt = "  ".join("%%-%ds" % wd if i in (0, len(cols) - 1) else "%%%ds" % wd
                    for i, wd in enumerate(widths))
    lines.append(fmt % tuple(cols))
    lines.append("  ".join("-" * wd for wd in widths))
    for i, r in enumerate(rows):
        if i == len(rows) - 1:
            lines.append("  ".join("-" * wd for wd in widths))
        lines.append(fmt % tuple(r))
    v = result["violations"]
    lines.append("")
    lines.append("violations: %d (lost updates %d, phantoms %d, stale reads past %d ms %d, "
                 "backwards reads %d, isolation %d, outbox %d, not recovered %d, stalls %d, "
                 "other %d)"
                 % (result["violation_count"], len(v["lost_updates"]), len(v["phantoms"]),
                    result["bound_ms"], len(v["stale_reads"]), len(v["backwards_reads"]),
                    len(v["isolation"]), len(v["outbox"]), len(v["liveness"]),
                    len(v.get("stalls", [])), len(v["harness_observed"])))
    for name in ("lost_updates", "phantoms", "stale_reads", "backwards_reads", "isolation",
                 "outbox", "liveness", "stalls", "harness_observed"):
        for x in v[name][:5]:
            lines.append("  %s %s v%s%s: %s" % (x["kind"], x["key"], x["version"],
                                               " (x%d)" % x["count"] if x.get("count", 1) > 1
                                               else "", x["detail"]))
        if len(v[name]) > 5:
            lines.append("  ... and %d more %s" % (len(v[name]) - 5, name.replace("_", " ")))
    if result.get("applied_despite_error"):
        lines.append("updates answered with an error but applied (indeterminate, allowed): %s"
                     % " ".join("%s=%d" % kv for kv in sorted(
                         result["applied_despite_error"].items())))
    return "\n".join(lines)
