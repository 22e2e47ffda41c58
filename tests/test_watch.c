/*
 * test_watch.c — the operator's watch tool, cg-watch, as a real process behind a real cg-busd:
 * --json lines carry the decoded fields, lag_ms and the gap / duplicate / late flags for a
 * sequence with all three; the human format shows the DUP and GAP(missed N) marks and the
 * stats lines the per-origin lag; --group and --part filter (and sequence tracking still sees
 * what --part hides); malformed, wrong-frame-count and foreign messages are reported on
 * stderr and counted without stopping it; --exec feeds each event's JSON line to a command
 * and survives the command failing; two forwarders show every message once plus once as a
 * duplicate; a CURVE watcher with an allowed key hears a CURVE forwarder; SIGINT and SIGTERM
 * exit 0. No database.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bustest.h"

typedef struct {
    pid_t pid;
    char out[1100], err[1100];
} watcher;

/* Start cg-watch with `args` (NULL-terminated), stdout in dir/NAME.out, stderr in
 * dir/NAME.err. */
static void watch_start(watcher *w, const char *dir, const char *name, const char *const *args)
{
    char bin[1024], *argv[32];
    int n = 0, i;
    snprintf(bin, sizeof(bin), "%s/cg-watch", cgt_binary_dir());
    snprintf(w->out, sizeof(w->out), "%s/%s.out", dir, name);
    snprintf(w->err, sizeof(w->err), "%s/%s.err", dir, name);
    argv[n++] = bin;
    for (i = 0; args[i] && n < 31; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    w->pid = bt_spawn(argv, w->out, w->err);
}

static int64_t next_probe = 1;

/*
 * Publish probes until the watcher's stdout has `count` lines containing both a and b: its
 * subscription is live (ZeroMQ's slow joiner). A probe is a heartbeat of `group` from
 * "probe", or with `inval` set an invalidation of `group` (one state item) from "probe".
 */
static void watch_sync(void *pub, const watcher *w, int inval, const char *group, const char *a,
                       const char *b, int count)
{
    int64_t until = bt_ms() + 10000;
    for (;;) {
        if (inval)
            bt_send_inval(pub, group, "probe", next_probe++);
        else
            bt_send_heartbeat(pub, group, "probe", next_probe++);
        if (bt_wait_lines(w->out, a, b, count, 20))
            return;
        if (bt_ms() > until) {
            char *err = bt_slurp(w->err);
            ck_abort_msg("cg-watch never showed a probe (\"%s\" + \"%s\"); stderr:\n%s", a,
                         b ? b : "", err);
        }
    }
}

/* Every JSON line of `path` whose "origin" is `origin`, parsed, in order: *n of them. The
 * caller frees each with cJSON_Delete and the array with free. */
static cJSON **json_lines(const char *path, const char *origin, int *n)
{
    char *text = bt_slurp(path), *line, *save = NULL;
    cJSON **out = calloc(256, sizeof(*out));
    *n = 0;
    for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        const cJSON *o;
        ck_assert_msg(j != NULL, "not JSON: %s", line);
        o = cJSON_GetObjectItemCaseSensitive(j, "origin");
        if (origin && (!cJSON_IsString(o) || strcmp(o->valuestring, origin) != 0)) {
            cJSON_Delete(j);
            continue;
        }
        ck_assert_int_lt(*n, 256);
        out[(*n)++] = j;
    }
    free(text);
    return out;
}

static void free_lines(cJSON **lines, int n)
{
    int i;
    for (i = 0; i < n; i++)
        cJSON_Delete(lines[i]);
    free(lines);
}

static double num(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    ck_assert_msg(cJSON_IsNumber(v), "no number \"%s\"", key);
    return v->valuedouble;
}

static int flag(const cJSON *j, const char *key)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(j, key));
}

static const char *str(const cJSON *j, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, key);
    ck_assert_msg(cJSON_IsString(v), "no string \"%s\"", key);
    return v->valuestring;
}

/* An invalidation of g1 from core-a#3 with the given items. */
static void send_items(void *pub, int64_t seq, const cg_bus_item *items, size_t n)
{
    cg_bus_msg m = bt_msg(CG_MSG_INVALIDATION, "g1", "core-a", seq);
    m.incarnation = 3;
    m.items = (cg_bus_item *)items;
    m.n_items = n;
    bt_send(pub, &m);
}

typedef struct {
    char *dir;
    void *ctx, *pub;
    bt_busd busd;
} rig;

/* A forwarder and a publisher connected to it. */
static void rig_up(rig *r)
{
    memset(r, 0, sizeof(*r));
    r->dir = cgt_tmpdir();
    bt_busd_start(&r->busd, r->dir, "w", NULL);
    r->ctx = zmq_ctx_new();
    r->pub = bt_socket(r->ctx, ZMQ_PUB);
    ck_assert_int_eq(zmq_connect(r->pub, r->busd.fe), 0);
}

static void rig_down(rig *r)
{
    zmq_close(r->pub);
    zmq_ctx_term(r->ctx);
    bt_stop(r->busd.pid, SIGTERM, 0);
    free(r->dir);
}

START_TEST(help_and_usage_errors)
{
    int rc;
    char bin[1024], *out;
    snprintf(bin, sizeof(bin), "%s/cg-watch", cgt_binary_dir());

    out = cgt_run(&rc, "'%s' --help", bin);
    ck_assert_int_eq(rc, 0);
    ck_assert(strstr(out, "Usage: cg-watch") && strstr(out, "--exec") && strstr(out, "Exit"));
    free(out);
    out = cgt_run(&rc, "'%s'", bin);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "cg-watch: error: --connect is required"), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' --connect tcp://127.0.0.1:1 --part body", bin);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "--part \"body\": expected specification"), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' --connect tcp://127.0.0.1:1 --group 'a/b'", bin);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "--group \"a/b\""), "%s", out);
    free(out);
    out = cgt_run(&rc, "'%s' --connect tcp://127.0.0.1:1 --stats 0", bin);
    ck_assert_int_eq(rc, 2);
    free(out);
    out = cgt_run(&rc, "'%s' --connect nonsense", bin);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "--connect \"nonsense\": cannot connect: Invalid argument"), "%s",
                  out);
    free(out);
    out = cgt_run(&rc, "'%s' --connect tcp://127.0.0.1:1 --curve-server-key /nonexistent", bin);
    ck_assert_int_eq(rc, 2);
    ck_assert_msg(strstr(out, "missing --curve-secret-key"), "%s", out);
    free(out);
}
END_TEST

START_TEST(json_marks_gap_duplicate_late)
{
    const int64_t seqs[] = {1, 2, 3, 3, 6, 7, 4, 4};
    /* what each arrival must be flagged as: "" normal, "d" duplicate, "g" gap, "l" late */
    const char *const want[] = {"", "", "", "d", "g", "", "l", "d"};
    rig r;
    watcher w;
    cJSON **lines;
    int n, i;
    const char *args[] = {"--json", "--connect", NULL, NULL};

    rig_up(&r);
    args[2] = r.busd.be;
    watch_start(&w, r.dir, "json", args);
    watch_sync(r.pub, &w, 0, "g1", "\"origin\":\"probe\"", NULL, 1);
    for (i = 0; i < 8; i++) {
        cg_bus_item item = {seqs[i], CG_PART_STATE, 1};
        send_items(r.pub, seqs[i], &item, 1);
    }
    ck_assert(bt_wait_lines(w.out, "\"origin\":\"core-a\"", NULL, 8, 5000));
    bt_stop(w.pid, SIGINT, 0);

    lines = json_lines(w.out, "core-a", &n);
    ck_assert_int_eq(n, 8);
    for (i = 0; i < 8; i++) {
        const cJSON *j = lines[i];
        ck_assert_str_eq(str(j, "type"), "inval");
        ck_assert_str_eq(str(j, "group"), "g1");
        ck_assert_int_eq((int64_t)num(j, "seq"), seqs[i]);
        ck_assert_int_eq((int64_t)num(j, "inc"), 3);
        ck_assert_int_eq((int64_t)num(j, "v"), 1);
        ck_assert(num(j, "at") > 0);
        ck_assert_msg(num(j, "lag_ms") > -1000 && num(j, "lag_ms") < 10000, "lag_ms %f",
                      num(j, "lag_ms"));
        ck_assert_int_eq(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(j, "items")), 1);
        ck_assert(strlen(str(j, "received")) == 27);
        ck_assert_msg(flag(j, "duplicate") == (want[i][0] == 'd'), "arrival %d (seq %lld)", i,
                      (long long)seqs[i]);
        ck_assert_msg(flag(j, "gap") == (want[i][0] == 'g'), "arrival %d (seq %lld)", i,
                      (long long)seqs[i]);
        ck_assert_msg(flag(j, "late") == (want[i][0] == 'l'), "arrival %d (seq %lld)", i,
                      (long long)seqs[i]);
    }
    ck_assert_int_eq((int)num(lines[4], "missed"), 2); /* 4 and 5 */
    free_lines(lines, n);
    rig_down(&r);
}
END_TEST

START_TEST(human_format_and_stats)
{
    rig r;
    watcher w;
    char *out, *p;
    const char *args[] = {"--stats", "0.2", "--connect", NULL, NULL};
    const cg_bus_item two[] = {{12, CG_PART_STATE, 7}, {0, CG_PART_SPECIFICATION, 2}};

    rig_up(&r);
    args[3] = r.busd.be;
    watch_start(&w, r.dir, "human", args);
    watch_sync(r.pub, &w, 0, "g1", " heartbeat probe#1 lag=", "applied=0", 1);
    send_items(r.pub, 1, two, 2);
    send_items(r.pub, 1, two, 2);
    send_items(r.pub, 4, two, 1);
    {
        cg_bus_msg m = bt_msg(CG_MSG_MEMBERSHIP, "g1", "core-a", 0);
        m.incarnation = 3;
        m.event = CG_MEMBER_SUSPECT;
        snprintf(m.member, sizeof(m.member), "core-c");
        m.member_incarnation = 5;
        bt_send(r.pub, &m);
    }
    ck_assert(bt_wait_lines(w.out, " g1 member core-a#3 lag=", "suspect core-c#5", 1, 5000));
    ck_assert_msg(bt_wait_lines(w.out, "cg-watch: stats ", "lag[g1/core-a]=max:", 1, 5000),
                  "no stats line with the lag of core-a");
    bt_stop(w.pid, SIGTERM, 0);

    out = bt_slurp(w.out);
    ck_assert_msg(bt_lines_with(out, " g1 seq=1 inval core-a#3 lag=",
                                "ms items=2 12:state@7 0:specification@2") == 1,
                  "%s", out);
    ck_assert_msg(bt_lines_with(out, " g1 seq=1 DUP inval core-a#3 lag=", NULL) == 1, "%s", out);
    ck_assert_msg(bt_lines_with(out, " g1 seq=4 GAP(missed 2) inval core-a#3 lag=",
                                "items=1 12:state@7") == 1,
                  "%s", out);
    /* The timestamp: 2026-11-22T04:30:00.123456Z */
    p = strstr(out, " g1 seq=1 DUP");
    ck_assert(p != NULL && p - out >= 27);
    p -= 27;
    ck_assert_msg(isdigit((unsigned char)p[0]) && p[4] == '-' && p[10] == 'T' && p[19] == '.' &&
                      p[26] == 'Z',
                  "%.40s", p);
    /* The final line counts since the start. */
    ck_assert_msg(bt_lines_with(out, "cg-watch: stats ", "why=exit") == 1, "%s", out);
    p = strstr(out, "why=exit");
    while (p > out && p[-1] != '\n')
        p--;
    ck_assert_msg(strstr(p, " gaps=1 missed=2 dups=1 late=0 drops=0"), "%s", p);
    free(out);
    rig_down(&r);
}
END_TEST

START_TEST(group_filter)
{
    rig r;
    watcher w1, w2;
    char *out, *err;
    const char *a1[] = {"--json", "--group", "g1", "--connect", NULL, NULL};
    const char *a2[] = {"--json", "--connect", NULL, NULL};
    const char *foreign = "{\"v\":1,\"type\":\"inval\",\"group\":\"g2\",\"seq\":9,\"origin\":"
                          "\"sneak\",\"inc\":1,\"at\":1,\"items\":[{\"h\":1,\"p\":\"state\","
                          "\"v\":1}]}";

    rig_up(&r);
    a1[4] = a2[2] = r.busd.be;
    watch_start(&w1, r.dir, "g1", a1);
    watch_start(&w2, r.dir, "all", a2);
    watch_sync(r.pub, &w1, 0, "g1", "\"origin\":\"probe\"", NULL, 1);
    watch_sync(r.pub, &w2, 0, "g1", "\"origin\":\"probe\"", NULL, 1);
    bt_send_inval(r.pub, "g2", "t", 1);
    bt_send_inval(r.pub, "g1x", "t", 1);
    bt_send_raw(r.pub, "g1/", foreign, strlen(foreign)); /* a g2 payload under g1's topic */
    bt_send_inval(r.pub, "g1", "t", 1);
    ck_assert(bt_wait_lines(w1.out, "\"group\":\"g1\"", "\"origin\":\"t\"", 1, 5000));
    ck_assert(bt_wait_lines(w2.out, "\"group\":\"g1\"", "\"origin\":\"t\"", 1, 5000));

    out = bt_slurp(w1.out);
    ck_assert_msg(!strstr(out, "\"group\":\"g2\"") && !strstr(out, "\"group\":\"g1x\""), "%s", out);
    free(out);
    err = bt_slurp(w1.err);
    ck_assert_msg(strstr(err, "cg-watch: dropped malformed message: bus message: field "
                              "\"group\": foreign group \"g2\""),
                  "%s", err);
    free(err);

    out = bt_slurp(w2.out); /* without --group: every group, and still no foreign payload */
    ck_assert_msg(strstr(out, "\"group\":\"g2\"") && strstr(out, "\"group\":\"g1x\""), "%s", out);
    ck_assert_msg(!strstr(out, "sneak"), "%s", out);
    free(out);
    err = bt_slurp(w2.err);
    ck_assert_msg(strstr(err, "cg-watch: dropped malformed message: topic \"g1/\" does not match "
                              "the payload's group \"g2\""),
                  "%s", err);
    free(err);

    bt_stop(w1.pid, SIGINT, 0);
    bt_stop(w2.pid, SIGINT, 0);
    rig_down(&r);
}
END_TEST

START_TEST(part_filter)
{
    rig r;
    watcher w;
    cJSON **lines, *items;
    int n;
    char *out;
    const char *args[] = {"--json", "--part", "state", "--connect", NULL, NULL};
    const cg_bus_item first[] = {{12, CG_PART_STATE, 7}, {0, CG_PART_SPECIFICATION, 2}};
    const cg_bus_item second[] = {{5, CG_PART_DESCRIPTION, 1}};
    const cg_bus_item third[] = {{7, CG_PART_STATE, 3}};

    rig_up(&r);
    args[4] = r.busd.be;
    watch_start(&w, r.dir, "part", args);
    /* Heartbeats are not shown with --part: probe with invalidations of another group. */
    watch_sync(r.pub, &w, 1, "sync", "\"origin\":\"probe\"", NULL, 1);
    send_items(r.pub, 1, first, 2);
    bt_send_heartbeat(r.pub, "g1", "core-a", 1);
    send_items(r.pub, 2, second, 1);
    send_items(r.pub, 3, third, 1);
    ck_assert(bt_wait_lines(w.out, "\"origin\":\"core-a\"", "\"seq\":3,", 1, 5000));
    bt_stop(w.pid, SIGINT, 0);

    out = bt_slurp(w.out);
    ck_assert_msg(!strstr(out, "\"type\":\"heartbeat\""), "%s", out);
    free(out);
    lines = json_lines(w.out, "core-a", &n);
    ck_assert_int_eq(n, 2); /* seq 2 touches no state part */
    ck_assert_int_eq((int)num(lines[0], "seq"), 1);
    items = cJSON_GetObjectItemCaseSensitive(lines[0], "items");
    ck_assert_int_eq(cJSON_GetArraySize(items), 1);
    ck_assert_str_eq(str(cJSON_GetArrayItem(items, 0), "p"), "state");
    ck_assert_int_eq((int)num(cJSON_GetArrayItem(items, 0), "h"), 12);
    ck_assert_int_eq((int)num(lines[0], "items_total"), 2);
    ck_assert_int_eq((int)num(lines[1], "seq"), 3);
    ck_assert_msg(!flag(lines[1], "gap"), "seq 2 was hidden, not missed");
    free_lines(lines, n);
    rig_down(&r);
}
END_TEST

START_TEST(malformed_reported_and_counted)
{
    rig r;
    watcher w;
    cJSON **lines, *stats, *reasons;
    char *err;
    int n;
    const char *args[] = {"--json", "--stats", "3600", "--connect", NULL, NULL};
    const char *v3 = "{\"v\":3,\"type\":\"inval\",\"group\":\"g1\"}";

    rig_up(&r);
    args[4] = r.busd.be;
    watch_start(&w, r.dir, "bad", args);
    watch_sync(r.pub, &w, 0, "g1", "\"origin\":\"probe\"", NULL, 1);
    bt_send_raw(r.pub, "g1/", "not json", 8);
    ck_assert_int_ge(zmq_send(r.pub, "g1/", 3, ZMQ_SNDMORE), 0); /* three frames */
    ck_assert_int_ge(zmq_send(r.pub, "{}", 2, ZMQ_SNDMORE), 0);
    ck_assert_int_ge(zmq_send(r.pub, "x", 1, 0), 0);
    bt_send_raw(r.pub, "g1/", v3, strlen(v3));
    bt_send_inval(r.pub, "g1", "t", 1);
    ck_assert(bt_wait_lines(w.out, "\"origin\":\"t\"", NULL, 1, 5000));
    ck_assert_int_eq(bt_wait(w.pid, 0), -1); /* still running */

    err = bt_slurp(w.err);
    ck_assert_msg(strstr(err, "cg-watch: dropped malformed message: bus message: not JSON"), "%s",
                  err);
    ck_assert_msg(strstr(err, "cg-watch: dropped malformed message: 3 frames"), "%s", err);
    ck_assert_msg(strstr(err, "cg-watch: dropped malformed message: bus message: field \"v\": "
                              "unknown wire version 3"),
                  "%s", err);
    ck_assert_int_eq(bt_count(err, "\n"), 3);
    free(err);

    bt_send_inval(r.pub, "g1", "t", 2); /* and it goes on */
    ck_assert(bt_wait_lines(w.out, "\"origin\":\"t\"", NULL, 2, 5000));
    bt_stop(w.pid, SIGINT, 0);

    lines = json_lines(w.out, NULL, &n);
    stats = lines[n - 1];
    ck_assert_str_eq(str(stats, "type"), "stats");
    ck_assert_str_eq(str(stats, "why"), "exit");
    ck_assert_int_eq((int)num(stats, "drops"), 3);
    reasons = cJSON_GetObjectItemCaseSensitive(stats, "drop_reasons");
    ck_assert_int_eq((int)num(reasons, "malformed"), 1);
    ck_assert_int_eq((int)num(reasons, "frames"), 1);
    ck_assert_int_eq((int)num(reasons, "version"), 1);
    free_lines(lines, n);
    rig_down(&r);
}
END_TEST

START_TEST(exec_gets_each_event)
{
    rig r;
    watcher w;
    char file[1200], cmd[1300], *out, *got, *err;
    const char *args[] = {"--json", "--exec", NULL, "--connect", NULL, NULL};
    int64_t s;

    rig_up(&r);
    snprintf(file, sizeof(file), "%s/events.jsonl", r.dir);
    snprintf(cmd, sizeof(cmd), "cat >> '%s'; exit 3", file);
    args[2] = cmd;
    args[4] = r.busd.be;
    watch_start(&w, r.dir, "exec", args);
    watch_sync(r.pub, &w, 0, "g1", "\"origin\":\"probe\"", NULL, 1);
    for (s = 1; s <= 3; s++)
        bt_send_inval(r.pub, "g1", "t", s);
    /* The command runs after the line is printed, so the file catching up means both hold
     * every event up to seq 3 and nothing after it. */
    ck_assert(bt_wait_lines(file, "\"origin\":\"t\"", "\"seq\":3,", 1, 5000));
    out = bt_slurp(w.out);
    got = bt_slurp(file);
    ck_assert_str_eq(got, out);
    ck_assert_int_eq(bt_lines_with(got, "\"origin\":\"t\"", NULL), 3);
    free(out);
    free(got);
    ck_assert_int_eq(bt_wait(w.pid, 0), -1); /* failing commands do not stop it */
    /* the command's status is reported after cg-watch reaps it, so after its output is in the
     * file: wait for the line itself */
    bt_wait_lines(w.err, "command exited with status 3", "seq=3", 1, 5000);
    err = bt_slurp(w.err);
    ck_assert_msg(strstr(err, "cg-watch: --exec: command exited with status 3 for inval g1 seq=3"),
                  "%s", err);
    free(err);
    bt_stop(w.pid, SIGINT, 0);
    rig_down(&r);
}
END_TEST

START_TEST(two_forwarders_show_duplicates)
{
    rig r;
    bt_busd b2 = {0};
    watcher w;
    cJSON **lines;
    int n, i, copies[6] = {0}, dups[6] = {0};
    const char *args[] = {"--json", "--connect", NULL, "--connect", NULL, NULL};
    int64_t s;

    rig_up(&r);
    bt_busd_start(&b2, r.dir, "w2", NULL);
    ck_assert_int_eq(zmq_connect(r.pub, b2.fe), 0);
    args[2] = r.busd.be;
    args[4] = b2.be;
    watch_start(&w, r.dir, "two", args);
    /* Both paths live: one probe shown once plainly and once as a duplicate. */
    watch_sync(r.pub, &w, 1, "sync", "\"origin\":\"probe\"", "\"duplicate\":true", 1);
    for (s = 1; s <= 5; s++)
        bt_send_inval(r.pub, "g1", "t", s);
    ck_assert(bt_wait_lines(w.out, "\"origin\":\"t\"", "\"seq\":5,", 2, 5000));
    bt_stop(w.pid, SIGTERM, 0);

    lines = json_lines(w.out, "t", &n);
    ck_assert_int_eq(n, 10);
    for (i = 0; i < n; i++) {
        int seq = (int)num(lines[i], "seq");
        ck_assert(seq >= 1 && seq <= 5);
        copies[seq]++;
        dups[seq] += flag(lines[i], "duplicate");
        ck_assert(!flag(lines[i], "gap") && !flag(lines[i], "late"));
    }
    for (i = 1; i <= 5; i++)
        ck_assert_msg(copies[i] == 2 && dups[i] == 1, "seq %d: %d copies, %d marked", i, copies[i],
                      dups[i]);
    free_lines(lines, n);
    bt_stop(b2.pid, SIGTERM, 0);
    rig_down(&r);
}
END_TEST

/* The key files of a new pair made by cg-busd --keygen: dir/NAME.key and dir/NAME.pub. */
static void keygen(const char *dir, const char *name)
{
    int rc;
    char *out = cgt_run(&rc, "'%s' --keygen '%s/%s'", bt_busd_bin(), dir, name);
    ck_assert_msg(rc == 0, "keygen: %s", out);
    free(out);
}

START_TEST(curve_client)
{
    char *dir = cgt_tmpdir(), p[8][1100], *pub_z85, *sec_z85, *srv_z85, *clients;
    const char *extra[] = {
        "--curve-secret-key", p[0], "--curve-public-key", p[1], "--curve-clients", p[2], NULL};
    const char *args[] = {"--json", "--curve-server-key",
                          p[1],     "--curve-secret-key",
                          p[3],     "--curve-public-key",
                          p[4],     "--connect",
                          NULL,     NULL};
    bt_busd b = {0};
    watcher w;
    void *ctx = zmq_ctx_new(), *pub;

    keygen(dir, "srv");
    keygen(dir, "watch");
    keygen(dir, "core");
    snprintf(p[0], sizeof(p[0]), "%s/srv.key", dir);
    snprintf(p[1], sizeof(p[1]), "%s/srv.pub", dir);
    snprintf(p[2], sizeof(p[2]), "%s/clients", dir);
    snprintf(p[3], sizeof(p[3]), "%s/watch.key", dir);
    snprintf(p[4], sizeof(p[4]), "%s/watch.pub", dir);
    snprintf(p[5], sizeof(p[5]), "%s/core.pub", dir);
    snprintf(p[6], sizeof(p[6]), "%s/core.key", dir);
    {
        char *a = bt_slurp(p[4]), *c = bt_slurp(p[5]);
        clients = malloc(strlen(a) + strlen(c) + 1);
        strcpy(clients, a);
        strcat(clients, c);
        cgt_write_file(p[2], clients);
        free(a);
        free(c);
        free(clients);
    }
    bt_busd_start(&b, dir, "cw", extra);
    args[8] = b.be;
    watch_start(&w, dir, "cw", args);

    pub = bt_socket(ctx, ZMQ_PUB);
    srv_z85 = bt_slurp(p[1]);
    pub_z85 = bt_slurp(p[5]);
    sec_z85 = bt_slurp(p[6]);
    srv_z85[40] = pub_z85[40] = sec_z85[40] = '\0';
    bt_curve_client(pub, srv_z85, pub_z85, sec_z85);
    ck_assert_int_eq(zmq_connect(pub, b.fe), 0);
    watch_sync(pub, &w, 0, "g1", "\"origin\":\"probe\"", NULL, 1);
    bt_stop(w.pid, SIGINT, 0);

    /* The watcher's key pair must match. */
    {
        int rc;
        char *out = cgt_run(&rc,
                            "'%s/cg-watch' --connect %s --curve-server-key '%s' "
                            "--curve-secret-key '%s' --curve-public-key '%s'",
                            cgt_binary_dir(), b.be, p[1], p[3], p[5]);
        ck_assert_int_eq(rc, 2);
        ck_assert_msg(strstr(out, "is not the public key of --curve-secret-key"), "%s", out);
        free(out);
    }
    free(srv_z85);
    free(pub_z85);
    free(sec_z85);
    zmq_close(pub);
    zmq_ctx_term(ctx);
    bt_stop(b.pid, SIGTERM, 0);
    free(dir);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("watch");
    TCase *tc;

    tc = tcase_create("usage");
    tcase_add_test(tc, help_and_usage_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("marks");
    tcase_add_test(tc, json_marks_gap_duplicate_late);
    tcase_add_test(tc, human_format_and_stats);
    tcase_add_test(tc, two_forwarders_show_duplicates);
    suite_add_tcase(s, tc);

    tc = tcase_create("filters");
    tcase_add_test(tc, group_filter);
    tcase_add_test(tc, part_filter);
    suite_add_tcase(s, tc);

    tc = tcase_create("robustness");
    tcase_add_test(tc, malformed_reported_and_counted);
    tcase_add_test(tc, exec_gets_each_event);
    tcase_add_test(tc, curve_client);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
