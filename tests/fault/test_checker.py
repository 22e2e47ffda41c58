"""test_checker.py — the fault checker on hand-made histories (python3 -m unittest).

Each history is small enough to verify by hand: a clean one, a lost update, a stale read past
the bound, a phantom, and the other judgements (backwards reads, stalls, counters, isolation,
the outbox). No database, no bus, no daemon.
"""

import os
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import checker  # noqa: E402

H = 101  # the one hot part in most histories


def op(op, client, core, send, reply, outcome="ok", **kw):
    r = {"op": op, "client": client, "core": core, "group": kw.pop("group", "g"),
         "handle": kw.pop("handle", H), "part": "state", "send": send, "reply": reply,
         "end": reply if reply is not None else kw.pop("end", send + 2.0),
         "wsend": send, "wreply": reply, "outcome": outcome}
    r.update(kw)
    return r


def get(client, core, send, reply, version, token, **kw):
    return op("get", client, core, send, reply, version=version, token=token, **kw)


def upd(client, core, send, reply, expected, token, outcome="ok", version=None, **kw):
    if outcome == "ok" and version is None:
        version = expected + 1
    return op("update", client, core, send, reply, outcome, expected=expected,
              version=version if outcome == "ok" else None, token=token, **kw)


def clean_history():
    """Two writers on one part, each re-reading after a stale error; readers on two cores."""
    return [
        op("register", "setup", "g1", 0.0, 0.01, version=1, token="init"),
        get("a", "g1", 0.10, 0.11, 1, "init"),
        get("b", "g2", 0.10, 0.11, 1, "init"),
        upd("a", "g1", 0.12, 0.13, 1, "a:1"),                       # 1 -> 2
        upd("b", "g2", 0.12, 0.14, 1, "b:1", "stale", actual=2),    # lost the race
        upd("b", "g2", 0.15, 0.16, 2, "b:2"),                       # 2 -> 3
        get("r", "g3", 0.20, 0.21, 3, "b:2"),
        get("r", "g1", 0.30, 0.31, 3, "b:2"),
        upd("a", "g1", 0.40, 2.40, 3, "a:2", "timeout"),            # indeterminate: applied
        get("r", "g2", 2.50, 2.51, 4, "a:2"),
        upd("b", "g2", 2.60, 2.61, 4, "b:3", "retryable"),          # indeterminate: not applied
        get("r", "g3", 2.70, 2.71, 4, "a:2"),
    ]


CLEAN_FINAL = {("g", H, "state"): (4, "a:2")}


class CleanHistory(unittest.TestCase):
    def test_nothing_flagged(self):
        h = clean_history()
        res = checker.analyze(h, [{"name": "w", "t0": 0.0, "t1": 3.0, "t_fault": 0.05,
                                   "t_recover": 0.1, "faulted": None}], 1000,
                              final=CLEAN_FINAL, group_cores=["g1", "g2"],
                              all_cores=["g1", "g2", "g3"])
        self.assertEqual(res["violation_count"], 0, res["violations"])
        w = res["windows"][0]
        self.assertEqual(w["lost_updates"], 0)
        self.assertEqual(w["phantoms"], 0)
        self.assertEqual(w["stale_past_bound"], 0)
        self.assertEqual(w["errors"], {"stale": 1, "timeout": 1, "retryable": 1})
        self.assertEqual(res["applied_despite_error"], {"timeout": 1})
        self.assertAlmostEqual(w["recover_ms"], 60.0)  # g2's first ack at 0.16
        self.assertIn("lost", checker.format_summary(res))

    def test_reads_are_fresh(self):
        h = clean_history()
        self.assertEqual([s for _, s in checker.read_staleness(h)], [0.0] * 6)

    def test_outbox_clean(self):
        rows = [{"seq": 1, "items": [{"h": H, "p": "state", "v": 1}]},
                {"seq": 2, "items": [{"h": H, "p": "state", "v": 2}]},
                {"seq": 3, "items": [{"h": H, "p": "state", "v": 3}]},
                {"seq": 4, "items": [{"h": H, "p": "state", "v": 4}]}]
        self.assertEqual(checker.check_outbox(rows, CLEAN_FINAL, "g", 4), [])


class LostUpdate(unittest.TestCase):
    def test_two_acks_of_one_version(self):
        h = clean_history()[:4] + [upd("b", "g2", 0.12, 0.14, 1, "b:1")]  # both 1 -> 2 ok
        res = checker.check_chains(h, {("g", H, "state"): (2, "b:1")})
        kinds = sorted(v["kind"] for v in res["lost"])
        self.assertIn("duplicate-ack", kinds)
        self.assertIn("ack-overwritten", kinds)  # the final body is b's, a's ack of 2 was lost
        self.assertEqual(res["phantoms"], [])

    def test_acknowledged_version_missing_from_repository(self):
        h = clean_history()[:4]  # a made version 2
        res = checker.check_chains(h, {("g", H, "state"): (1, "init")})
        self.assertEqual([v["kind"] for v in res["lost"]], ["ack-beyond-final"])

    def test_acknowledged_body_replaced_under_its_version(self):
        # a was acknowledged 1 -> 2, but a read shows version 2 with the body of b's update
        # that timed out (so b's write replaced a's under the same version).
        h = clean_history()[:4] + [upd("b", "g2", 0.12, None, 1, "b:1", "timeout", end=2.12),
                                   get("r", "g3", 2.2, 2.21, 2, "b:1")]
        res = checker.check_chains(h)
        self.assertEqual([v["kind"] for v in res["lost"]], ["ack-overwritten"])

    def test_analyze_flags_and_counts_in_window(self):
        h = clean_history()[:4] + [upd("b", "g2", 0.12, 0.14, 1, "b:1")]
        res = checker.analyze(h, [{"name": "w", "t0": 0.0, "t1": 1.0}], 1000,
                              final={("g", H, "state"): (2, "b:1")})
        self.assertGreaterEqual(res["windows"][0]["lost_updates"], 1)
        self.assertGreaterEqual(res["violation_count"], 1)


class StaleRead(unittest.TestCase):
    def history(self, read_send):
        return [
            op("register", "setup", "g1", 0.0, 0.01, version=1, token="init"),
            upd("a", "g1", 0.9, 1.0, 1, "a:1"),                  # version 2 acked at 1.0
            get("r", "g2", read_send, read_send + 0.01, 1, "init"),
        ]

    def test_past_the_bound(self):
        h = self.history(2.5)  # sent 1500 ms after version 2 was acknowledged
        st = checker.read_staleness(h)
        self.assertAlmostEqual(st[0][1], 1.5)
        res = checker.analyze(h, [{"name": "w", "t0": 0.0, "t1": 3.0}], 1000,
                              final={("g", H, "state"): (2, "a:1")})
        self.assertEqual(res["windows"][0]["stale_past_bound"], 1)
        self.assertEqual(res["windows"][0]["oldest_read_ms"], 1500.0)
        self.assertEqual(res["violations"]["stale_reads"][0]["core"], "g2")

    def test_within_the_bound(self):
        h = self.history(1.5)  # 500 ms: stale, but within the 1000 ms bound
        res = checker.analyze(h, [{"name": "w", "t0": 0.0, "t1": 3.0}], 1000,
                              final={("g", H, "state"): (2, "a:1")})
        self.assertEqual(res["violation_count"], 0)
        self.assertEqual(res["windows"][0]["oldest_read_ms"], 500.0)

    def test_sent_before_the_ack_is_fresh(self):
        h = self.history(0.95)  # concurrent with the update: not stale at all
        self.assertEqual(checker.read_staleness(h)[0][1], 0.0)

    def test_oldest_newer_version_counts(self):
        # versions 2 (acked 1.0) and 3 (acked 1.2); a read of 1 sent at 2.5 is stale by 1.5 s,
        # a read of 2 sent at 2.5 by 1.3 s.
        h = self.history(2.5) + [upd("a", "g1", 1.1, 1.2, 2, "a:2"),
                                 get("r", "g2", 2.5, 2.51, 2, "a:1")]
        st = [s for _, s in checker.read_staleness(h)]
        self.assertAlmostEqual(st[0], 1.5)
        self.assertAlmostEqual(st[1], 1.3)


class Phantom(unittest.TestCase):
    def test_version_never_written(self):
        # version 3 is read, but nobody ever sent an update from version 2
        h = clean_history()[:4] + [get("r", "g2", 0.5, 0.51, 3, "x:9")]
        res = checker.check_chains(h)
        kinds = sorted(v["kind"] for v in res["phantoms"])
        self.assertEqual(kinds, ["unexplained-version", "unknown-body"])
        self.assertEqual(res["lost"], [])

    def test_definitely_failed_update_seen(self):
        # b's update was refused stale, yet its body shows up as version 2
        h = [op("register", "setup", "g1", 0.0, 0.01, version=1, token="init"),
             upd("a", "g1", 0.1, 0.2, 1, "a:1", "timeout"),
             upd("b", "g2", 0.1, 0.2, 1, "b:1", "stale", actual=1),
             get("r", "g3", 0.5, 0.51, 2, "b:1")]
        res = checker.check_chains(h)
        self.assertEqual([v["kind"] for v in res["phantoms"]], ["failed-update-applied"])

    def test_final_version_beyond_what_was_sent(self):
        # version 5 may be b's retryable update (indeterminate), but nothing can have made 6
        res = checker.check_chains(clean_history(), {("g", H, "state"): (6, "zz")})
        kinds = sorted((v["kind"], v["version"]) for v in res["phantoms"])
        self.assertEqual(kinds, [("unexplained-version", 6), ("unknown-body", 6)])

    def test_analyze_counts_phantom(self):
        h = clean_history()[:4] + [get("r", "g2", 0.5, 0.51, 3, "x:9")]
        res = checker.analyze(h, [{"name": "w", "t0": 0.0, "t1": 1.0}], 1000)
        self.assertEqual(res["windows"][0]["phantoms"], 2)
        self.assertGreater(res["violation_count"], 0)


class Backwards(unittest.TestCase):
    def test_read_goes_back_on_one_core(self):
        h = [op("register", "setup", "g1", 0.0, 0.01, version=1, token="init"),
             upd("a", "g1", 0.1, 0.11, 1, "a:1"),
             get("r", "g2", 0.2, 0.21, 2, "a:1"),
             get("r", "g2", 0.3, 0.31, 1, "init")]
        self.assertEqual([v["kind"] for v in checker.backwards_reads(h)], ["backwards-read"])

    def test_overlapping_reads_may_disagree(self):
        h = [op("register", "setup", "g1", 0.0, 0.01, version=1, token="init"),
             upd("a", "g1", 0.1, 0.11, 1, "a:1"),
             get("r", "g2", 0.2, 0.40, 2, "a:1"),
             get("s", "g2", 0.3, 0.31, 1, "init"),   # sent before the first read's reply
             get("s", "g3", 0.5, 0.51, 1, "init")]   # another core: not backwards on it
        self.assertEqual(checker.backwards_reads(h), [])

    def test_read_after_own_update(self):
        h = [op("register", "setup", "g1", 0.0, 0.01, version=1, token="init"),
             upd("a", "g1", 0.1, 0.11, 1, "a:1"),
             get("a", "g1", 0.2, 0.21, 1, "init")]
        self.assertEqual(len(checker.backwards_reads(h)), 1)


class Stall(unittest.TestCase):
    def test_longest_silence_with_requests_outstanding(self):
        h = [get("r", "g1", 0.0, 0.1, 1, "init"),
             get("r", "g1", 0.2, 1.5, 1, "init"),      # 1.3 s silent
             get("s", "g1", 0.3, 0.4, 1, "init"),      # ... but this reply breaks it at 0.4
             get("r", "g1", 2.0, 2.1, 1, "init")]      # idle 1.5-2.0: not a stall
        d, a, b = checker.longest_stall(h, "g1", 0.0, 3.0)
        self.assertAlmostEqual(d, 1.1)
        self.assertAlmostEqual(a, 0.4)

    def test_timeouts_chain(self):
        h = [op("get", "r", "g1", 0.0, None, "timeout", end=2.0),
             op("get", "r", "g1", 2.01, None, "timeout", end=4.01),
             get("r", "g1", 4.02, 4.5, 1, "init")]
        d, a, b = checker.longest_stall(h, "g1", 0.0, 10.0)
        self.assertAlmostEqual(d, 4.5)

    def test_window_clips(self):
        h = [op("get", "r", "g1", 0.0, None, "timeout", end=2.0)]
        self.assertAlmostEqual(checker.longest_stall(h, "g1", 1.0, 10.0)[0], 1.0)


class Counters(unittest.TestCase):
    def test_delta_across_a_restart(self):
        s = [(0.0, {"catchups": 5}), (1.0, {"catchups": 7}), (2.0, None),
             (3.0, {"catchups": 1}), (4.0, {"catchups": 4})]
        self.assertEqual(checker.counter_delta(s, "catchups", 0.5, 10.0), 2 + 1 + 3)
        self.assertIsNone(checker.counter_delta(s, "reordered", 0.0, 10.0))
        self.assertEqual(checker.per_1000(3, 1500), 2.0)


class Isolation(unittest.TestCase):
    def test_foreign_handle_and_body(self):
        h = [get("r", "g1", 0.0, 0.1, 1, "init", handle=900),
             op("find", "p", "g1", 0.2, 0.3, handles=[900], handle=None, service_id="h-svc"),
             get("r", "g1", 0.4, 0.5, 1, "init", bgroup="h"),
             op("get", "p", "g2", 0.6, 0.7, "not-found", handle=900)]
        iso = checker.check_isolation(h, {"g": {900}})
        self.assertEqual(len(iso), 3)


class Outbox(unittest.TestCase):
    def test_missing_duplicate_and_gap(self):
        final = {("g", H, "state"): (3, "x")}
        rows = [{"seq": 1, "items": [{"h": H, "p": "state", "v": 2}]},
                {"seq": 3, "items": [{"h": H, "p": "state", "v": 2}]}]
        kinds = sorted(v["kind"] for v in checker.check_outbox(rows, final, "g", 3))
        self.assertEqual(kinds, ["outbox-duplicate", "outbox-missing", "outbox-seq-gap"])


class Recovery(unittest.TestCase):
    def test_first_ack_per_core(self):
        h = [upd("a", "g1", 5.0, 5.2, 1, "a:1"), upd("b", "g2", 5.5, 6.0, 2, "b:1"),
             upd("b", "g2", 4.0, 4.1, 1, "b:0")]
        worst, by = checker.time_to_recover(h, ["g1", "g2"], 4.5, 10.0)
        self.assertAlmostEqual(worst, 1.5)
        worst, by = checker.time_to_recover(h, ["g1", "g2", "g3"], 4.5, 10.0)
        self.assertIsNone(worst)

    def test_a_core_that_never_recovers_is_a_violation(self):
        h = [op("register", "setup", "g1", 0.0, 0.01, version=1, token="init"),
             upd("a", "g1", 5.0, 5.2, 1, "a:1"),
             op("update", "b", "g2", 5.0, None, "timeout", expected=1, token="b:1", end=7.0)]
        w = [{"name": "w", "t0": 0.0, "t1": 10.0, "t_fault": 3.0, "t_recover": 4.5,
              "faulted": "g2"}]
        res = checker.analyze(h, w, 1000, group_cores=["g1", "g2"])
        self.assertEqual([v["core"] for v in res["violations"]["liveness"]], ["g2"])
        self.assertEqual(res["windows"][0]["other_violations"], 1)
        self.assertIn("never", checker.format_summary(res))


class StallLimit(unittest.TestCase):
    """A healthy core silent past the window's limit is a violation; the faulted ones are not
    judged (a list of them, as kill-core's several targets)."""
    H = [get("r", "g1", 0.0, 0.1, 1, "init"),
         get("r", "g1", 0.2, 1.7, 1, "init"),          # g1 silent 1.5 s
         get("r", "g2", 0.2, 2.7, 1, "init"),          # g2 silent 2.5 s, but faulted
         get("r", "g3", 0.2, 0.3, 1, "init")]

    def test_past_the_limit(self):
        w = [{"name": "w", "t0": 0.0, "t1": 3.0, "t_fault": 0.1, "faulted": ["g2"],
              "stall_limit_ms": 1250}]
        res = checker.analyze(self.H, w, 1000, all_cores=["g1", "g2", "g3"])
        st = res["violations"]["stalls"]
        self.assertEqual([v["core"] for v in st], ["g1"])
        self.assertEqual(res["windows"][0]["other_violations"], 1)
        self.assertEqual(res["violation_count"], 1)

    def test_within_the_limit_or_unjudged(self):
        for lim in (2000, None):
            w = [{"name": "w", "t0": 0.0, "t1": 3.0, "t_fault": 0.1, "faulted": ["g2"],
                  "stall_limit_ms": lim}]
            res = checker.analyze(self.H, w, 1000, all_cores=["g1", "g2", "g3"])
            self.assertEqual(res["violations"]["stalls"], [])


class Multi(unittest.TestCase):
    """Two parts only ever written together: the outbox and the final state must show both."""
    PAIR = [201, 202]

    def rows(self, *named):
        return [{"seq": i + 1, "items": [{"h": h, "p": "state", "v": 2} for h in n]}
                for i, n in enumerate(named)]

    def test_whole_calls_pass(self):
        final = {("g", 201, "state"): (2, "m:1"), ("g", 202, "state"): (2, "m:1")}
        self.assertEqual(checker.check_multi(self.rows([201, 202], [5]), self.PAIR, final, "g"),
                         [])

    def test_a_row_naming_one_of_the_pair(self):
        out = checker.check_multi(self.rows([201, 202], [201]), self.PAIR, {}, "g")
        self.assertEqual([v["kind"] for v in out], ["multi-half-applied"])
        self.assertEqual(out[0]["version"], 2)  # the seq of the half row

    def test_different_final_bodies(self):
        final = {("g", 201, "state"): (3, "m:2"), ("g", 202, "state"): (2, "m:1")}
        out = checker.check_multi([], self.PAIR, final, "g")
        self.assertEqual([v["kind"] for v in out], ["multi-half-applied"])

    def test_analyze_counts_it(self):
        h = [op("register", "setup", "g1", 0.0, 0.01, version=1, token="init", handle=201),
             op("register", "setup", "g1", 0.0, 0.01, version=1, token="init", handle=202)]
        res = checker.analyze(h, [{"name": "w", "t0": 0.0, "t1": 1.0}], 1000,
                              outbox={"g": {"rows": self.rows([201])}}, pair=self.PAIR)
        self.assertEqual(res["violation_count"], 1)


class Audit(unittest.TestCase):
    def test_a_disagreeing_cache_is_flagged(self):
        audits = [{"window": "w", "core": "g1", "time": 0.5, "ok": True, "detail": "fine"},
                  {"window": "w", "core": "g2", "time": 0.6, "ok": False,
                   "detail": "g2: 1 older"}]
        res = checker.analyze([get("r", "g1", 0.0, 0.1, 1, "init")],
                              [{"name": "w", "t0": 0.0, "t1": 1.0}], 1000, audits=audits)
        self.assertEqual(res["violation_count"], 1)
        self.assertEqual(res["violations"]["harness_observed"][0]["kind"], "cache-disagrees")
        self.assertEqual(res["windows"][0]["other_violations"], 1)


class HostileNumbers(unittest.TestCase):
    """A row or version a hostile session planted far ahead is one finding, found without
    walking the range (a forged outbox seq of 999999999 once cost the harness all memory)."""

    def test_far_seq_and_version(self):
        rows = [{"seq": 1, "items": [{"h": H, "p": "state", "v": 2}]},
                {"seq": 999999999, "items": []}]
        out = checker.check_outbox(rows, {("g", H, "state"): (10 ** 12, "evil")}, "g")
        kinds = sorted(v["kind"] for v in out)
        self.assertEqual(kinds, ["outbox-missing", "outbox-seq-gap"])
        self.assertIn("999999997 seqs missing", [v for v in out
                                                 if v["kind"] == "outbox-seq-gap"][0]["detail"])
        self.assertEqual([v for v in out if v["kind"] == "outbox-missing"][0]["version"], 3)
        h = [op("register", "setup", "g1", 0.0, 0.01, version=1, token="init"),
             upd("a", "g1", 0.1, 0.2, 1, "a:1")]
        ph = checker.check_chains(h, {("g", H, "state"): (10 ** 12, "evil")}, 1.0)["phantoms"]
        self.assertTrue(any("4..1000000000000" in v["detail"] for v in ph))


if __name__ == "__main__":
    unittest.main()
