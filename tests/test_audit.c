/*
 * test_audit.c — the consistency audit (coregroup/audit.c, `audit` in REQUESTS.md, `cgctl
 * audit`), against the harness's PostgreSQL, a real cg-busd and real coregroupd processes.
 * A cache is made stale on purpose: a writer's invalidation is dropped (hooks.drop_every) and
 * the reader neither polls nor proves (a huge poll interval and bound, or hooks.no_proofs), so
 * nothing but the audit can tell:
 *  - the library: exactly the entry whose invalidation was lost is older, with the version the
 *    repository holds and an age that fits the time since the write; within the bound and with
 *    a fresh lease on one core, past the bound with an expired lease on a core with a small
 *    bound; a deleted resource is "gone"; a pruned outbox makes the age unknown (counted past
 *    the bound); the sample respects its maximum and the maximum its range;
 *  - end to end: `cgctl -c A -c B audit` exits 0 while every older entry is within its core's
 *    bound, 1 once one is past it (an outbox row dated back by the DBA), 2 when a live member
 *    was not named, a core does not answer, or a core is an older coregroupd (a stand-in
 *    daemon that speaks version 1 only), and 2 for a --max out of range; the daemon refuses an
 *    out-of-range max naming the field, and a version-1 audit naming "v".
 * Every wait is a loop with a deadline, none a bare sleep; the only sleeps make a commit old
 * enough for an age to be asserted from below.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "bustest.h"
#include "core_internal.h"
#include "testutil.h"

static char *dsn, *dir;
static PGconn *dba;
static bt_busd fwd;

static void setup(void)
{
    dsn = cgt_createdb("audit", 1);
    dba = cgt_connect(dsn);
    dir = cgt_tmpdir();
    memset(&fwd, 0, sizeof(fwd));
    bt_busd_start(&fwd, dir, "audit", NULL);
}

static void teardown(void)
{
    if (fwd.pid > 0)
        bt_busd_kill(&fwd);
    PQfinish(dba);
    free(dsn);
    free(dir);
}

static void sleep_ms(int ms)
{
    usleep((useconds_t)ms * 1000);
}

/* A core on the suite's forwarder with a freshness bound; it never polls (cgt_core_config's
 * poll interval is an hour), so with a bound of a day it never proves either. */
static cg_config *config(const char *name, const char *group, int max_staleness_ms)
{
    cg_config *cfg = cgt_core_config(dsn, name, group);
    cg_config_set_string(&cfg->publish[cfg->n_publish++], fwd.fe);
    cg_config_set_string(&cfg->subscribe[cfg->n_subscribe++], fwd.be);
    cfg->heartbeat_interval_ms = 50;
    cfg->max_staleness_ms = max_staleness_ms;
    return cfg;
}

/* Wait until a core hears its group's heartbeats: its subscription is live. */
static void wait_hearing(cg_core *core)
{
    cg_core_stats st;
    int64_t until = bt_ms() + 10000;
    do {
        cg_core_stats_get(core, &st);
        if (st.heartbeats_received > 0)
            return;
        usleep(5000);
    } while (bt_ms() < until);
    ck_abort_msg("%s never heard the bus", cg_core_name(core));
}

/* The one entry of the report that is not consistent (fails unless there is exactly one). */
static const cg_audit_entry *the_inconsistent(const cg_audit_report *r)
{
    const cg_audit_entry *found = NULL;
    size_t i;
    for (i = 0; i < r->checked; i++)
        if (r->entries[i].state != CG_AUDIT_CONSISTENT) {
            ck_assert_msg(found == NULL, "more than one entry is not consistent");
            found = &r->entries[i];
        }
    ck_assert_msg(found != NULL, "every entry is consistent");
    return found;
}

static const cg_audit_entry *entry_of(const cg_audit_report *r, int64_t h, cg_part_kind k)
{
    size_t i;
    for (i = 0; i < r->checked; i++)
        if (r->entries[i].handle == h && r->entries[i].part == k)
            return &r->entries[i];
    ck_abort_msg("no entry for (%lld, %d)", (long long)h, (int)k);
    return NULL;
}

static void delete_resource(cg_core *core, int64_t h)
{
    cg_call *call;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_resource_delete(call, h));
    CGT_OK(cg_call_commit(call));
}

/* ---- the library ------------------------------------------------------------------------ */

START_TEST(a_dropped_invalidation_is_the_one_older_entry)
{
    cg_core *a = cgt_core_open_cfg(config("au-a", "au-lib", 86400000));
    cg_core *b = cgt_core_open_cfg(config("au-b", "au-lib", 86400000));
    cg_audit_report rep;
    const cg_audit_entry *e;
    int64_t h[4], v, t_bump, t_audit;
    int i;

    wait_hearing(a);
    wait_hearing(b);
    for (i = 0; i < 4; i++)
        h[i] = cgt_create(a);
    for (i = 0; i < 4; i++)
        ck_assert_int_eq(cgt_read_version(b, h[i]), 1); /* b caches each state part */

    CGT_OK(cg_core_audit(&rep, b, 100));
    ck_assert_uint_eq(rep.checked, 4);
    ck_assert_uint_eq(rep.consistent, 4);
    ck_assert_uint_eq(rep.older + rep.newer + rep.past_bound, 0);
    ck_assert_uint_eq(rep.cache_entries, 4);
    ck_assert_int_eq(rep.oldest_age_ms, -1);
    ck_assert_int_eq(rep.max_staleness_ms, 86400000);
    ck_assert_int_eq(rep.lease_fresh, 1);
    cg_audit_report_dispose(&rep);

    /* h[1]'s invalidation never leaves a; b has no poll and a lease of a day */
    a->hooks.drop_every = 1;
    t_bump = bt_ms();
    v = cgt_bump(a, h[1]);
    a->hooks.drop_every = 0;
    ck_assert_int_eq(v, 2);
    ck_assert_int_eq(cgt_read_version(b, h[1]), 1); /* stale, and served */
    sleep_ms(200);                                  /* so its age is at least that */

    CGT_OK(cg_core_audit(&rep, b, 100));
    t_audit = bt_ms();
    ck_assert_uint_eq(rep.checked, 4);
    ck_assert_uint_eq(rep.consistent, 3);
    ck_assert_uint_eq(rep.older, 1);
    ck_assert_uint_eq(rep.newer, 0);
    e = the_inconsistent(&rep);
    ck_assert_int_eq(e->handle, h[1]);
    ck_assert_int_eq(e->part, CG_PART_STATE);
    ck_assert_int_eq(e->state, CG_AUDIT_OLDER);
    ck_assert_int_eq(e->cached_version, 1);
    ck_assert_int_eq(e->repository_version, 2);
    ck_assert_msg(e->age_ms >= 150 && e->age_ms <= t_audit - t_bump + 5,
                  "age %lld ms, %lld ms between the write and the audit's end",
                  (long long)e->age_ms, (long long)(t_audit - t_bump));
    ck_assert_int_eq(rep.oldest_age_ms, e->age_ms);
    /* older, but within the bound: allowed by design (the bus may not have delivered yet) */
    ck_assert_int_eq(e->past_bound, 0);
    ck_assert_uint_eq(rep.past_bound, 0);
    ck_assert_int_eq(rep.lease_fresh, 1);
    cg_audit_report_dispose(&rep);

    /* the writer's own cache is current: it holds what it locked and wrote */
    CGT_OK(cg_core_audit(&rep, a, CG_AUDIT_MAX_ENTRIES));
    ck_assert_uint_eq(rep.checked, 1);
    ck_assert_int_eq(rep.entries[0].handle, h[1]);
    ck_assert_int_eq(rep.entries[0].cached_version, 2);
    ck_assert_uint_eq(rep.consistent, rep.checked);
    cg_audit_report_dispose(&rep);

    /* the sample's size, and its range */
    CGT_OK(cg_core_audit(&rep, b, 2));
    ck_assert_uint_eq(rep.checked, 2);
    ck_assert_uint_eq(rep.cache_entries, 4);
    cg_audit_report_dispose(&rep);
    CGT_EXPECT(CG_EINVALID, cg_core_audit(&rep, b, 0));
    ck_assert_ptr_null(rep.entries);
    ck_assert_uint_eq(rep.checked, 0);
    CGT_EXPECT(CG_EINVALID, cg_core_audit(&rep, b, CG_AUDIT_MAX_ENTRIES + 1));
    cg_audit_report_dispose(&rep); /* harmless on an empty report */
    cg_audit_report_dispose(NULL);

    /* a deletion lost on the way: the entry is older, its part gone */
    a->hooks.drop_every = 1;
    delete_resource(a, h[2]);
    a->hooks.drop_every = 0;
    CGT_OK(cg_core_audit(&rep, b, 100));
    ck_assert_uint_eq(rep.older, 2);
    ck_assert_uint_eq(rep.consistent, 2);
    e = entry_of(&rep, h[2], CG_PART_STATE);
    ck_assert_int_eq(e->state, CG_AUDIT_OLDER);
    ck_assert_int_eq(e->repository_version, -1);
    ck_assert_int_ge(e->age_ms, 0);
    ck_assert_int_eq(e->past_bound, 0);
    cg_audit_report_dispose(&rep);

    /* the outbox pruned: when the newer versions committed is unknown, and an unknown age
     * counts as past the bound (rows are pruned only after [bus] outbox_retention_s) */
    free(cgt_query1(dba, "DELETE FROM invalidations WHERE group_id = 'au-lib'"));
    CGT_OK(cg_core_audit(&rep, b, 100));
    ck_assert_uint_eq(rep.older, 2);
    ck_assert_uint_eq(rep.past_bound, 2);
    ck_assert_int_eq(entry_of(&rep, h[1], CG_PART_STATE)->age_ms, -1);
    ck_assert_int_eq(entry_of(&rep, h[1], CG_PART_STATE)->repository_version, 2);
    ck_assert_int_eq(entry_of(&rep, h[2], CG_PART_STATE)->age_ms, -1);
    ck_assert_int_eq(rep.oldest_age_ms, -1);
    cg_audit_report_dispose(&rep);

    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

/* The entry of kind `kind` ("names" or "find") with this handle. */
static const cg_audit_entry *named_entry(const cg_audit_report *r, int64_t h, const char *kind)
{
    size_t i;
    for (i = 0; i < r->checked; i++)
        if (r->entries[i].handle == h && strcmp(r->entries[i].kind, kind) == 0)
            return &r->entries[i];
    ck_abort_msg("no %s entry for %lld", kind, (long long)h);
    return NULL;
}

static void list_and_find(cg_core *core, const char *service_id)
{
    cg_call *call;
    cg_name_list l;
    cg_handle_list f;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_name_list_get(&l, call, CG_ROOT_FOLDER));
    CGT_OK(cg_resource_find(&f, call, service_id));
    CGT_OK(cg_call_commit(call));
    cg_name_list_dispose(&l);
    cg_handle_list_dispose(&f);
}

START_TEST(names_and_finds_are_audited_too)
{
    /* A cached listing is compared with its folder's names version, a cached find result with
     * its service key's version; a bind or a register whose invalidation was lost leaves them
     * older, dated from the outbox's items_v2. */
    cg_core *a = cgt_core_open_cfg(config("au-na", "au-names", 86400000));
    cg_core *b = cgt_core_open_cfg(config("au-nb", "au-names", 86400000));
    cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
    cg_audit_report rep;
    const cg_audit_entry *e;
    cg_call *call;
    int64_t h, h2, key = (int64_t)cg_service_key("svc-audit");

    wait_hearing(a);
    wait_hearing(b);
    h = cgt_create(a);
    list_and_find(b, "svc-audit"); /* b caches the root's listing and the find */
    CGT_OK(cg_core_audit(&rep, b, 100));
    ck_assert_uint_eq(rep.checked, 2);
    ck_assert_uint_eq(rep.consistent, 2);
    ck_assert_str_eq(named_entry(&rep, CG_ROOT_FOLDER, "names")->kind, "names");
    ck_assert_int_eq(named_entry(&rep, key, "find")->cached_version, 0); /* never registered */
    cg_audit_report_dispose(&rep);

    a->hooks.drop_every = 1; /* both changes lost on the bus; b never polls */
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "audited", h));
    CGT_OK(cg_call_commit(call));
    o.service_id = "svc-audit";
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_resource_create(&h2, call, &o));
    CGT_OK(cg_call_commit(call));
    a->hooks.drop_every = 0;
    sleep_ms(50);

    CGT_OK(cg_core_audit(&rep, b, 100));
    ck_assert_uint_eq(rep.checked, 2);
    ck_assert_uint_eq(rep.older, 2);
    e = named_entry(&rep, CG_ROOT_FOLDER, "names");
    ck_assert_int_eq(e->state, CG_AUDIT_OLDER);
    ck_assert_int_gt(e->repository_version, e->cached_version);
    ck_assert_int_ge(e->age_ms, 40);
    ck_assert_int_eq(e->past_bound, 0);
    e = named_entry(&rep, key, "find");
    ck_assert_int_eq(e->state, CG_AUDIT_OLDER);
    ck_assert_int_eq(e->cached_version, 0);
    ck_assert_int_gt(e->repository_version, 0);
    ck_assert_int_ge(e->age_ms, 40);
    cg_audit_report_dispose(&rep);

    /* the writer's own entries are current */
    list_and_find(a, "svc-audit");
    CGT_OK(cg_core_audit(&rep, a, 100));
    ck_assert_uint_eq(rep.consistent, rep.checked);
    ck_assert_uint_ge(rep.checked, 2);
    cg_audit_report_dispose(&rep);
    (void)h2;
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

START_TEST(an_entry_older_than_a_small_bound_is_past_it)
{
    cg_core *a = cgt_core_open_cfg(config("au-w", "au-bound", 86400000));
    cg_core *c = cgt_core_open_cfg(config("au-c", "au-bound", 1000)); /* proves every 250 ms */
    cg_audit_report rep;
    const cg_audit_entry *e;
    int64_t h, h2, t_bump;

    wait_hearing(a);
    wait_hearing(c);
    h = cgt_create(a);
    h2 = cgt_create(a);
    { /* cached under a lease its proofs renew (a read past a lapsed lease fills nothing) */
        int64_t until = bt_ms() + 10000;
        size_t cached = 0;
        do {
            ck_assert_int_eq(cgt_read_version(c, h), 1);
            ck_assert_int_eq(cgt_read_version(c, h2), 1);
            CGT_OK(cg_core_audit(&rep, c, 100));
            cached = rep.checked;
            cg_audit_report_dispose(&rep);
        } while (cached < 2 && bt_ms() < until);
        ck_assert_uint_eq(cached, 2);
    }
    atomic_store(&c->hooks.no_proofs, 1); /* from now on it cannot catch up, nor renew */

    a->hooks.drop_every = 1;
    t_bump = bt_ms();
    cgt_bump(a, h);
    a->hooks.drop_every = 0;
    while (bt_ms() - t_bump < 1300) /* the bound of 1000 ms, and then some */
        sleep_ms(50);

    CGT_OK(cg_core_audit(&rep, c, 100));
    ck_assert_uint_eq(rep.checked, 2);
    ck_assert_uint_eq(rep.consistent, 1);
    ck_assert_uint_eq(rep.older, 1);
    ck_assert_uint_eq(rep.past_bound, 1);
    ck_assert_int_eq(rep.max_staleness_ms, 1000);
    e = the_inconsistent(&rep);
    ck_assert_int_eq(e->handle, h);
    ck_assert_int_eq(e->repository_version, 2);
    ck_assert_int_eq(e->past_bound, 1);
    ck_assert_msg(e->age_ms > 1000, "age %lld ms", (long long)e->age_ms);
    /* no proof for longer than the bound: the lease ran out, the entry is not served */
    ck_assert_int_eq(rep.lease_fresh, 0);
    cg_audit_report_dispose(&rep);

    /* the audit reports, it does not repair: the entry is still there */
    CGT_OK(cg_core_audit(&rep, c, 100));
    ck_assert_uint_eq(rep.older, 1);
    cg_audit_report_dispose(&rep);

    /* a read past the lease goes to the repository, and what it read is a floor: the older
     * entry goes (I4: a later renewed lease must not serve it again) */
    ck_assert_int_eq(cgt_read_version(c, h), 2);
    CGT_OK(cg_core_audit(&rep, c, 100));
    ck_assert_uint_eq(rep.older, 0);
    ck_assert_uint_eq(rep.checked, 1);
    cg_audit_report_dispose(&rep);
    cg_core_close(a);
    cg_core_close(c);
}
END_TEST

/* ---- end to end: coregroupd and cgctl ----------------------------------------------------- */

typedef struct {
    char name[64], ini[320], log[320], endpoint[64];
    pid_t pid;
} daemon_t;

/* Write daemon `name`'s repository.ini (a free port; the suite's forwarder; no poll; a bound
 * of ten minutes, so it proves nothing during the test either). */
static void daemon_init(daemon_t *d, const char *name, const char *group)
{
    char *core_dsn = cgt_core_dsn(dsn, group), text[4096];
    int port;

    memset(d, 0, sizeof(*d));
    bt_free_ports(&port, 1);
    snprintf(d->name, sizeof(d->name), "%s", name);
    snprintf(d->ini, sizeof(d->ini), "%s/%s.ini", dir, name);
    snprintf(d->log, sizeof(d->log), "%s/%s.log", dir, name);
    snprintf(d->endpoint, sizeof(d->endpoint), "tcp://127.0.0.1:%d", port);
    snprintf(text, sizeof(text),
             "[repository]\ndsn = %s\npool_size = 3\n"
             "[core]\nname = %s\ngroup = %s\nlog_level = debug\n"
             "[bus]\npublish = %s\nsubscribe = %s\nheartbeat_interval_ms = 100\n"
             "poll_interval_ms = 3600000\n"
             "[cache]\nmax_staleness_ms = 600000\n"
             "[retry]\nattempts = 1\ninterval_ms = 100\n"
             "[daemon]\nlisten = %s\nworkers = 2\npidfile = %s/%s.pid\n",
             core_dsn, name, group, fwd.fe, fwd.be, d->endpoint, dir, name);
    cgt_write_file(d->ini, text);
    free(core_dsn);
}

static void daemon_start(daemon_t *d, const char *name, const char *group)
{
    char *argv[] = {(char *)cgt_bin("coregroupd"), "-c", d->ini, NULL};
    int64_t until = bt_ms() + 20000;

    daemon_init(d, name, group);
    d->pid = bt_spawn(argv, d->log, NULL);
    for (;;) {
        char *log = bt_slurp(d->log);
        int up = bt_count(log, "event=started") > 0;
        if (!up && (bt_wait(d->pid, 0) >= 0 || bt_ms() > until))
            ck_abort_msg("coregroupd %s did not start:\n%s", d->name, log);
        free(log);
        if (up)
            return;
        usleep(10000);
    }
}

static void daemon_stop(daemon_t *d)
{
    if (d->pid > 0)
        bt_stop(d->pid, SIGTERM, 0);
    d->pid = 0;
}

/* Run cgctl with `args`; *rc its exit status; stdout and stderr together (a new string). */
static char *ctl(int *rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *ctl(int *rc, const char *fmt, ...)
{
    char args[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    return cgt_run(rc, "'%s' %s", cgt_bin("cgctl"), args);
}

/* Run cgctl `args` expecting exit status `want`; the output (the caller frees). */
static char *ctl_expect(int want, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static char *ctl_expect(int want, const char *fmt, ...)
{
    char args[4096], *out;
    va_list ap;
    int rc;
    va_start(ap, fmt);
    vsnprintf(args, sizeof(args), fmt, ap);
    va_end(ap);
    out = ctl(&rc, "%s", args);
    ck_assert_msg(rc == want, "cgctl %s: exit %d, expected %d:\n%s", args, rc, want, out);
    return out;
}

/* cgctl --json -c a -c b audit, exit `want`: the composed object (the caller frees). */
static cJSON *audit_json(int want, const daemon_t *a, const daemon_t *b, const char *extra)
{
    char *out =
        ctl_expect(want, "--json -c '%s' -c '%s' audit %s", a->ini, b->ini, extra ? extra : "");
    cJSON *j = cgt_json_line(out);
    free(out);
    ck_assert_int_eq(cgt_jint(j, "exit"), want);
    return j;
}

/* A stand-in for a coregroupd that predates wire version 2: a ROUTER that answers every
 * request as a version-1 daemon does, refusing any other version by field "v". */
typedef struct {
    char endpoint[64];
    atomic_int stop, answered;
    pthread_t thread;
} old_daemon;

static void *old_daemon_main(void *arg)
{
    old_daemon *o = arg;
    void *ctx = zmq_ctx_new(), *s = bt_socket(ctx, ZMQ_ROUTER);
    ck_assert_int_eq(zmq_bind(s, o->endpoint), 0);
    while (!atomic_load(&o->stop)) {
        zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
        char id[256], body[4096], reply[4096];
        const cJSON *v, *rid;
        cJSON *req;
        int nid, nb, more = 0;
        size_t moresz = sizeof(more);
        char *idtext;

        if (zmq_poll(&it, 1, 50) <= 0)
            continue;
        nid = zmq_recv(s, id, sizeof(id), 0);
        zmq_getsockopt(s, ZMQ_RCVMORE, &more, &moresz);
        if (nid < 0 || !more)
            continue;
        nb = zmq_recv(s, body, sizeof(body) - 1, 0);
        if (nb < 0)
            continue;
        body[nb < (int)sizeof(body) - 1 ? nb : (int)sizeof(body) - 1] = '\0';
        req = cJSON_Parse(body);
        v = cJSON_GetObjectItemCaseSensitive(req, "v");
        rid = cJSON_GetObjectItemCaseSensitive(req, "id");
        idtext = rid ? cJSON_PrintUnformatted(rid) : NULL;
        if (cJSON_IsNumber(v) && v->valuedouble == 1)
            snprintf(reply, sizeof(reply),
                     "{\"v\":1,\"id\":%s,\"ok\":false,\"error\":{\"code\":\"invalid\","
                     "\"message\":\"request: field \\\"op\\\": unknown operation\","
                     "\"field\":\"op\"}}",
                     idtext ? idtext : "null");
        else
            snprintf(reply, sizeof(reply),
                     "{\"v\":1,\"id\":%s,\"ok\":false,\"error\":{\"code\":\"invalid\","
                     "\"message\":\"request: field \\\"v\\\": unknown wire version 2 (this "
                     "daemon speaks 1)\",\"field\":\"v\"}}",
                     idtext ? idtext : "null");
        cJSON_free(idtext);
        cJSON_Delete(req);
        zmq_send(s, id, (size_t)nid, ZMQ_SNDMORE);
        zmq_send(s, reply, strlen(reply), 0);
        atomic_fetch_add(&o->answered, 1);
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return NULL;
}

START_TEST(cgctl_audit_reports_every_core_and_exits_0_1_2)
{
    daemon_t a, b, gone, old;
    old_daemon od;
    cg_config *wc;
    cg_core *w;
    long long h[3];
    cJSON *j, *r;
    char *out, want[256];
    int i;

    daemon_start(&a, "au-da", "au-e2e");
    daemon_start(&b, "au-db", "au-e2e");
    for (i = 0; i < 3; i++) {
        out = ctl_expect(0, "--json -c '%s' register --state '{\"n\":0}'", a.ini);
        r = cgt_json_line(out);
        h[i] = cgt_jint(r, "handle");
        cJSON_Delete(r);
        free(out);
        free(ctl_expect(0, "-c '%s' get %lld state", a.ini, h[i])); /* both cache it */
        free(ctl_expect(0, "-c '%s' get %lld state", b.ini, h[i]));
    }

    /* all fresh: exit 0 */
    j = audit_json(0, &a, &b, NULL);
    ck_assert_int_eq(cgt_jint(j, "total.audited"), 2);
    ck_assert_int_eq(cgt_jint(j, "total.older"), 0);
    ck_assert_int_eq(cgt_jint(j, "total.checked"), cgt_jint(j, "total.consistent"));
    ck_assert_str_eq(cgt_jstr(j, "cores.1.core"), "au-db");
    ck_assert_str_eq(cgt_jstr(j, "cores.1.status"), "ok");
    ck_assert_int_eq(cgt_jint(j, "cores.1.audit.checked"), 3);
    ck_assert_int_eq(cgt_jint(j, "cores.1.audit.lease_fresh"), 1);
    ck_assert_int_eq(cgt_jint(j, "cores.1.audit.max_staleness_ms"), 600000);
    ck_assert_int_eq(cJSON_GetArraySize(cgt_jget(j, "not_audited")), 0);
    cJSON_Delete(j);
    out = ctl_expect(0, "-c '%s' -c '%s' audit", a.ini, b.ini);
    ck_assert_msg(strstr(out, "core au-db: 3 checked, 3 consistent (100.0%)") &&
                      strstr(out, "within the bound"),
                  "%s", out);
    free(out);

    /* a writer in the test process: a live member no -c names, so the audit is incomplete */
    wc = cgt_core_config(dsn, "au-writer", "au-e2e");
    cg_config_set_string(&wc->publish[wc->n_publish++], fwd.fe);
    cg_config_set_string(&wc->subscribe[wc->n_subscribe++], fwd.be);
    wc->heartbeat_interval_ms = 50;
    w = cgt_core_open_cfg(wc);
    wait_hearing(w);
    out = ctl_expect(2, "-c '%s' -c '%s' audit", a.ini, b.ini);
    ck_assert_msg(strstr(out, "core au-writer is a live member of group au-e2e but was not "
                              "audited"),
                  "%s", out);
    free(out);

    /* its update of h[0] never reaches the daemons; then it leaves the group */
    w->hooks.drop_every = 1;
    ck_assert_int_eq(cgt_bump(w, h[0]), 2);
    cg_core_close(w);

    /* both daemons hold the old version: older, within the bound of ten minutes: exit 0 */
    j = audit_json(0, &a, &b, NULL);
    ck_assert_int_eq(cgt_jint(j, "total.older"), 2);
    ck_assert_int_eq(cgt_jint(j, "total.past_bound"), 0);
    ck_assert_int_eq(cgt_jint(j, "total.violations"), 0);
    for (i = 0; i < 2; i++) {
        char p[64];
        const cJSON *e;
        snprintf(p, sizeof(p), "cores.%d.audit", i);
        ck_assert_int_eq(cgt_jint(cgt_jget(j, p), "older"), 1);
        ck_assert_int_eq(cJSON_GetArraySize(cgt_jget(cgt_jget(j, p), "entries")), 1);
        e = cgt_jget(cgt_jget(j, p), "entries.0");
        ck_assert_int_eq(cgt_jint(e, "handle"), h[0]);
        ck_assert_str_eq(cgt_jstr(e, "part"), "state");
        ck_assert_str_eq(cgt_jstr(e, "state"), "older");
        ck_assert_int_eq(cgt_jint(e, "cached_version"), 1);
        ck_assert_int_eq(cgt_jint(e, "repository_version"), 2);
        ck_assert_int_ge(cgt_jint(e, "age_ms"), 0);
        ck_assert_int_lt(cgt_jint(e, "age_ms"), 600000);
        ck_assert_int_eq(cgt_jint(e, "past_bound"), 0);
    }
    cJSON_Delete(j);
    out = ctl_expect(0, "-c '%s' -c '%s' audit", a.ini, b.ini);
    snprintf(want, sizeof(want),
             "older: handle %lld part state, cached version 1, repository version 2", h[0]);
    ck_assert_msg(strstr(out, want) && strstr(out, "within the bound"), "%s", out);
    free(out);
    /* a sample of one entry per core (whichever it is, it is within the bound) */
    j = audit_json(0, &a, &b, "--max 1");
    ck_assert_int_eq(cgt_jint(j, "max"), 1);
    ck_assert_int_eq(cgt_jint(j, "cores.0.audit.checked"), 1);
    ck_assert_int_eq(cgt_jint(j, "total.checked"), 2);
    cJSON_Delete(j);

    /* an older coregroupd: it refuses version 2 by field "v", and cgctl says what that means */
    memset(&od, 0, sizeof(od));
    daemon_init(&old, "au-old", "au-e2e");
    snprintf(od.endpoint, sizeof(od.endpoint), "%s", old.endpoint);
    ck_assert_int_eq(pthread_create(&od.thread, NULL, old_daemon_main, &od), 0);
    out = ctl_expect(2, "-c '%s' -c '%s' -c '%s' audit", a.ini, b.ini, old.ini);
    ck_assert_msg(strstr(out, "core au-old does not support audit (an older coregroupd)"), "%s",
                  out);
    ck_assert_msg(strstr(out, "core au-da: "), "the others are still reported: %s", out);
    free(out);
    ck_assert_int_ge(atomic_load(&od.answered), 1);
    atomic_store(&od.stop, 1);
    pthread_join(od.thread, NULL);

    /* a core that does not answer */
    daemon_init(&gone, "au-gone", "au-e2e"); /* never started */
    out = ctl_expect(2, "--timeout 300 -c '%s' -c '%s' audit", a.ini, gone.ini);
    ck_assert_msg(strstr(out, "core au-gone: unreachable: no answer from"), "%s", out);
    free(out);

    /* the DBA dates the newer version's commit back half an hour: past the bound of ten
     * minutes while both leases say fresh, a violation: exit 1 */
    free(cgt_query1(dba, "UPDATE invalidations SET committed_at = committed_at - "
                         "interval '30 minutes' WHERE group_id = 'au-e2e' AND seq = "
                         "(SELECT max(seq) FROM invalidations WHERE group_id = 'au-e2e')"));
    j = audit_json(1, &a, &b, NULL);
    ck_assert_int_eq(cgt_jint(j, "total.older"), 2);
    ck_assert_int_eq(cgt_jint(j, "total.past_bound"), 2);
    ck_assert_int_eq(cgt_jint(j, "total.violations"), 2);
    ck_assert_int_ge(cgt_jint(j, "total.oldest_age_ms"), 1800000);
    ck_assert_int_eq(cgt_jint(j, "cores.0.audit.entries.0.past_bound"), 1);
    cJSON_Delete(j);
    out = ctl_expect(1, "-c '%s' -c '%s' audit", a.ini, b.ini);
    ck_assert_msg(strstr(out, "PAST THE BOUND") && strstr(out, "VIOLATION"), "%s", out);
    fprintf(stderr, "cgctl audit, past the bound:\n%s", out);
    free(out);
    /* a finding beats an incomplete audit */
    free(ctl_expect(1, "--timeout 300 -c '%s' -c '%s' -c '%s' audit", a.ini, b.ini, gone.ini));

    /* usage: --max out of range, --max elsewhere, several -c elsewhere, no -c */
    out = ctl_expect(2, "-c '%s' audit --max 0", a.ini);
    ck_assert_msg(strstr(out, "--max \"0\": expected 1 to 10000 entries"), "%s", out);
    free(out);
    free(ctl_expect(2, "-c '%s' audit --max 10001", a.ini));
    free(ctl_expect(2, "-c '%s' health --max 5", a.ini));
    free(ctl_expect(2, "-c '%s' -c '%s' health", a.ini, b.ini));
    free(ctl_expect(2, "--endpoint '%s' audit", a.endpoint));
    /* the daemon itself: an out-of-range max is refused naming the field; version 1 cannot
     * name the op */
    out = ctl_expect(1, "-c '%s' send '{\"v\":2,\"id\":\"m\",\"op\":\"audit\",\"max\":0}'", a.ini);
    r = cgt_json_line(out);
    ck_assert_str_eq(cgt_jstr(r, "error.code"), "invalid");
    ck_assert_str_eq(cgt_jstr(r, "error.field"), "max");
    ck_assert_int_eq(cgt_jint(r, "v"), 2); /* answered in the request's version */
    cJSON_Delete(r);
    free(out);
    out = ctl_expect(1, "-c '%s' send '{\"v\":1,\"id\":\"m\",\"op\":\"audit\"}'", a.ini);
    r = cgt_json_line(out);
    ck_assert_str_eq(cgt_jstr(r, "error.field"), "v");
    ck_assert_msg(strstr(cgt_jstr(r, "error.message"), "needs wire version 2"), "%s", out);
    cJSON_Delete(r);
    free(out);
    out = ctl_expect(0, "-c '%s' send '{\"v\":2,\"id\":\"m\",\"op\":\"audit\",\"max\":10000}'",
                     a.ini);
    r = cgt_json_line(out);
    ck_assert_int_eq(cgt_jint(r, "v"), 2);
    ck_assert_int_ge(cgt_jint(r, "checked"), 3);
    cJSON_Delete(r);
    free(out);

    daemon_stop(&a);
    daemon_stop(&b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("audit");
    TCase *tc = tcase_create("library");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, a_dropped_invalidation_is_the_one_older_entry);
    tcase_add_test(tc, names_and_finds_are_audited_too);
    tcase_add_test(tc, an_entry_older_than_a_small_bound_is_past_it);
    suite_add_tcase(s, tc);
    tc = tcase_create("cgctl");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 180);
    tcase_add_test(tc, cgctl_audit_reports_every_core_and_exits_0_1_2);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
