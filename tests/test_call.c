/*
 * test_call.c — calls against a real PostgreSQL: every operation, optimistic concurrency and
 * its error detail, one transaction per call with the cache rolled back alongside (I3), the
 * outbox and the publisher hook (nothing before commit, nothing for an abort: I6), the
 * invalidation interface, the forced late-stale-fill interleaving (I4), cache strategies,
 * fencing by incarnation, the retry helper, and bad input.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "core_internal.h"
#include "testutil.h"

static char *dsn;   /* superuser DSN of this suite's database */
static PGconn *dba; /* superuser connection: the repository's truth, past RLS */

static void setup(void)
{
    dsn = cgt_createdb("call", 1);
    dba = cgt_connect(dsn);
}

static void teardown(void)
{
    PQfinish(dba);
    free(dsn);
}

static int64_t create(cg_core *core, const char *state, const char *service_id)
{
    cg_call *call;
    cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
    int64_t h = -1;
    o.state = state;
    o.service_id = service_id;
    o.specification = "{\"spec\":1}";
    o.description = "{\"desc\":1}";
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_resource_create(&h, call, &o));
    CGT_OK(cg_call_commit(call));
    return h;
}

/* The part's version in the repository, read past every cache. */
static int64_t db_version(const char *group, int64_t h, int kind)
{
    char sql[256], *v;
    int64_t n;
    snprintf(sql, sizeof(sql),
             "SELECT coalesce((SELECT version FROM resource_parts WHERE group_id = '%s' AND "
             "handle = %" PRId64 " AND part = '%s'), -1)",
             group, h, cg_part_kind_name(kind));
    v = cgt_query1(dba, sql);
    n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

static int64_t db_count(const char *sql)
{
    char *v = cgt_query1(dba, sql);
    int64_t n = strtoll(v, NULL, 10);
    free(v);
    return n;
}

/* Get a part in a call of its own; returns its version and copies the body into body[]. */
static int64_t get_part(cg_core *core, int64_t h, int kind, char *body, size_t bodysz)
{
    cg_call *call;
    const cg_part *p = NULL; /* lent by the call: read before it ends */
    int64_t v;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_part_get(&p, call, h, (cg_part_kind)kind));
    v = cg_part_version(p);
    if (body)
        snprintf(body, bodysz, "%s", cg_part_body(p));
    CGT_OK(cg_call_commit(call));
    return v;
}

static void update_part(cg_core *core, int64_t h, int kind, int64_t expected, const char *json)
{
    cg_call *call;
    int64_t v = 0;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_part_update(&v, call, h, (cg_part_kind)kind, expected, json));
    CGT_OK(cg_call_commit(call));
    ck_assert_int_eq(v, expected + 1);
}

START_TEST(open_registers_the_core)
{
    cg_core *a = cgt_core_open(dsn, "reg-a", "g-open"), *again;
    cg_core *lonely = cgt_core_open(dsn, "lonely", NULL);
    ck_assert_str_eq(cg_core_group(a), "g-open");
    ck_assert_str_eq(cg_core_group(lonely), "private.lonely");
    ck_assert_int_eq(db_count("SELECT count(*) FROM resources WHERE group_id = 'g-open' AND "
                              "handle = 0 AND kind = 'folder'"),
                     1);
    ck_assert_int_eq(db_count("SELECT count(*) FROM core_groups WHERE group_id IN ('g-open', "
                              "'private.lonely')"),
                     2);
    ck_assert_int_eq(db_count("SELECT incarnation FROM cores WHERE core_name = 'reg-a'"),
                     cg_core_incarnation(a));
    cg_core_close(a);
    ck_assert_int_eq(db_count("SELECT count(*) FROM cores WHERE core_name = 'reg-a' AND "
                              "state = 'left'"),
                     1);
    again = cgt_core_open(dsn, "reg-a", "g-open");
    ck_assert_int_eq(cg_core_incarnation(again), 2); /* a restart is a new incarnation */
    cg_core_close(again);
    cg_core_close(lonely);
}
END_TEST

START_TEST(open_refuses_bad_input)
{
    cg_core *core = (cg_core *)1;
    char *dir = cgt_tmpdir(), path[512], text[1024], *cdsn = cgt_core_dsn(dsn, "f");
    snprintf(path, sizeof(path), "%s/repository.ini", dir);
    cgt_write_file(path, "[repository]\ndsn = x\n[core]\nname = a\ncolour = blue\n");
    CGT_EXPECT(CG_EINVALID, cg_core_open(&core, path));
    ck_assert_ptr_null(core);
    ck_assert(strstr(cg_error_last()->message, "repository.ini:5: [core] colour: unknown key"));
    /* a repository that refuses the connection: a retryable error after the attempts */
    cgt_write_file(path, "[repository]\ndsn = host=127.0.0.1 port=1 dbname=x\n[core]\nname = "
                         "a\n[retry]\nattempts = 1\ninterval_ms = 10\n");
    CGT_EXPECT(CG_ERETRYABLE, cg_core_open(&core, path));
    ck_assert(strstr(cg_error_last()->message, "cannot connect to the repository"));
    /* and a good file opens */
    snprintf(text, sizeof(text), "[repository]\ndsn = %s\n[core]\nname = from-file\ngroup = f\n",
             cdsn);
    cgt_write_file(path, text);
    CGT_OK(cg_core_open(&core, path));
    ck_assert_str_eq(cg_core_name(core), "from-file");
    cg_core_close(core);
    free(cdsn);
    free(dir);
}
END_TEST

START_TEST(resources_parts_and_replicas)
{
    cg_core *a = cgt_core_open(dsn, "crud", "g-crud");
    cg_call *call;
    const cg_part *p;
    cg_resource r;
    cg_handle_list found;
    char body[256];
    cJSON *j;
    int64_t h1 = create(a, "{\"n\":0}", "svc-x"), h2 = create(a, "{\"n\":5}", "svc-x");
    int64_t h3 = create(a, NULL, NULL);

    ck_assert_int_eq(get_part(a, h1, CG_PART_SPECIFICATION, body, sizeof(body)), 1);
    ck_assert_str_eq(body, "{\"spec\": 1}");
    ck_assert_int_eq(get_part(a, h3, CG_PART_STATE, body, sizeof(body)), 1);
    ck_assert_str_eq(body, "{}");
    update_part(a, h1, CG_PART_STATE, 1, "{\"n\":1}");
    ck_assert_int_eq(get_part(a, h1, CG_PART_STATE, body, sizeof(body)), 2);
    ck_assert_str_eq(body, "{\"n\": 1}"); /* as the repository stores it */
    ck_assert_int_eq(db_version("g-crud", h1, CG_PART_STATE), 2);
    ck_assert_int_eq(db_version("g-crud", h1, CG_PART_DESCRIPTION), 1); /* its own version */

    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_resource_get(&r, call, h1));
    ck_assert_str_eq(r.kind, "service");
    ck_assert_str_eq(r.service_id, "svc-x");
    CGT_OK(cg_resource_find(&found, call, "svc-x"));
    ck_assert_uint_eq(found.n, 2);
    ck_assert_int_eq(found.handles[0], h1);
    ck_assert_int_eq(found.handles[1], h2);
    cg_handle_list_dispose(&found);
    CGT_OK(cg_resource_find(&found, call, "svc-none"));
    ck_assert_uint_eq(found.n, 0);
    CGT_OK(cg_part_get(&p, call, h2, CG_PART_STATE));
    j = cg_part_json(p);
    ck_assert_int_eq(cJSON_GetObjectItem(j, "n")->valueint, 5);
    cJSON_Delete(j);
    CGT_OK(cg_resource_delete(call, h2));
    CGT_EXPECT(CG_ENOTFOUND, cg_part_get(&p, call, h2, CG_PART_STATE)); /* own delete */
    CGT_OK(cg_call_commit(call));

    CGT_OK(cg_call_begin(&call, a));
    CGT_EXPECT(CG_ENOTFOUND, cg_part_get(&p, call, h2, CG_PART_STATE));
    CGT_EXPECT(CG_ENOTFOUND, cg_resource_get(&r, call, h2));
    CGT_EXPECT(CG_ENOTFOUND, cg_resource_delete(call, h2));
    CGT_EXPECT(CG_EINVALID, cg_resource_delete(call, CG_ROOT_FOLDER));
    cg_call_abort(call);
    ck_assert_int_eq(db_count("SELECT count(*) FROM resource_parts WHERE handle = 0"), 0);
    cg_core_close(a);
}
END_TEST

START_TEST(one_read_calls)
{
    cg_core *a = cgt_core_open(dsn, "read-a", "g-read");
    int64_t h = create(a, "{\"n\":3}", NULL);
    cg_core_stats s1, s2;
    cg_part *p;

    cg_core_stats_get(a, &s1);
    CGT_OK(cg_part_read(&p, a, h, CG_PART_STATE)); /* a miss: one round trip */
    ck_assert_int_eq(cg_part_version(p), 1);
    ck_assert_str_eq(cg_part_body(p), "{\"n\": 3}");
    cg_part_free(p);
    CGT_OK(cg_part_read(&p, a, h, CG_PART_STATE)); /* now a hit */
    cg_part_free(p);
    cg_core_stats_get(a, &s2);
    ck_assert_uint_eq(s2.repository_reads, s1.repository_reads + 1);
    ck_assert_uint_eq(s2.cache_hits, s1.cache_hits + 1);
    ck_assert_uint_eq(s2.calls_committed, s1.calls_committed + 2);
    CGT_EXPECT(CG_ENOTFOUND, cg_part_read(&p, a, 987654, CG_PART_STATE));
    ck_assert_ptr_null(p);
    CGT_EXPECT(CG_EINVALID, cg_part_read(&p, a, h, (cg_part_kind)9));
    /* the connection is left clean: a writing call right after works */
    update_part(a, h, CG_PART_STATE, 1, "{\"n\":4}");
    CGT_OK(cg_part_read(&p, a, h, CG_PART_STATE));
    ck_assert_int_eq(cg_part_version(p), 2);
    cg_part_free(p);
    cg_core_close(a);
}
END_TEST

/* What cg_part_read_cached() hands its function: a copy taken while the part is lent. */
typedef struct {
    int calls;
    int64_t version;
    char body[64];
} seen_part;

static void copy_part(const cg_part *p, void *arg)
{
    seen_part *s = arg;
    s->calls++;
    s->version = cg_part_version(p);
    snprintf(s->body, sizeof(s->body), "%s", cg_part_body(p));
}

/* Served only when it needs no wait: cached, within the lease, invalidation strategy. */
START_TEST(read_cached_never_waits)
{
    cg_core *a = cgt_core_open(dsn, "rc-a", "g-rc");
    cg_config *cfg = cgt_core_config(dsn, "rc-n", "g-rc");
    cg_core *n;
    int64_t h = create(a, "{\"n\":3}", NULL), other;
    cg_core_stats s1, s2;
    seen_part seen = {0, 0, ""};

    other = create(a, "{}", NULL);
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 1); /* h is cached, other not */
    cg_core_stats_get(a, &s1);
    /* served, counted as a call and a hit */
    CGT_OK(cg_part_read_cached(a, h, CG_PART_STATE, copy_part, &seen));
    ck_assert_int_eq(seen.calls, 1);
    ck_assert_int_eq(seen.version, 1);
    ck_assert_str_eq(seen.body, "{\"n\": 3}");
    cg_core_stats_get(a, &s2);
    ck_assert_uint_eq(s2.calls_committed, s1.calls_committed + 1);
    ck_assert_uint_eq(s2.cache_hits, s1.cache_hits + 1);
    ck_assert_uint_eq(s2.repository_reads, s1.repository_reads);
    /* not cached: not read either, nothing called */
    ck_assert_int_eq(cg_part_read_cached(a, other, CG_PART_STATE, copy_part, &seen), 1);
    ck_assert_int_eq(cg_part_read_cached(a, 987654, CG_PART_STATE, copy_part, &seen), 1);
    cg_core_stats_get(a, &s1);
    ck_assert_uint_eq(s1.repository_reads, s2.repository_reads);
    ck_assert_int_eq(seen.calls, 1);
    CGT_EXPECT(CG_EINVALID, cg_part_read_cached(a, h, (cg_part_kind)9, copy_part, &seen));
    CGT_EXPECT(CG_EINVALID, cg_part_read_cached(a, -1, CG_PART_STATE, copy_part, &seen));
    /* past the lease the cache cannot be proved fresh: not served */
    atomic_store(&a->fresh_until_ms, 0);
    ck_assert_int_eq(cg_part_read_cached(a, h, CG_PART_STATE, copy_part, &seen), 1);
    ck_assert_int_eq(seen.calls, 1);
    /* without the invalidation strategy there is nothing to serve without a round trip */
    cfg->strategy = CG_CACHE_VERSION_CHECK;
    n = cgt_core_open_cfg(cfg);
    ck_assert_int_eq(get_part(n, h, CG_PART_STATE, NULL, 0), 1); /* cached there now */
    ck_assert_int_eq(cg_part_read_cached(n, h, CG_PART_STATE, copy_part, &seen), 1);
    ck_assert_int_eq(seen.calls, 1);
    cg_core_close(n);
    cg_core_close(a);
}
END_TEST

START_TEST(own_writes_are_visible_only_to_the_call)
{
    cg_core *a = cgt_core_open(dsn, "own-a", "g-own"), *b = cgt_core_open(dsn, "own-b", "g-own");
    int64_t h = create(a, "{\"n\":0}", NULL), v;
    cg_call *call;
    const cg_part *p;
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"n\":1}"));
    CGT_OK(cg_part_get(&p, call, h, CG_PART_STATE));
    ck_assert_int_eq(cg_part_version(p), 2);
    ck_assert_str_eq(cg_part_body(p), "{\"n\": 1}");
    ck_assert_int_eq(get_part(b, h, CG_PART_STATE, NULL, 0), 1); /* not committed yet */
    CGT_OK(cg_call_commit(call));
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 2);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

START_TEST(names_in_folders)
{
    cg_core *a = cgt_core_open(dsn, "names", "g-names");
    int64_t s1 = create(a, NULL, NULL), s2 = create(a, NULL, NULL), folder, target = -1;
    cg_resource_options fo = CG_RESOURCE_OPTIONS_INIT;
    cg_name_list list;
    cg_call *call;

    fo.kind = "folder";
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_resource_create(&folder, call, &fo));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "zeta", s1));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "alpha", s2));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "sub", folder));
    CGT_OK(cg_name_bind(call, folder, "inner", s1));
    /* a taken name is "exists", and the call goes on */
    CGT_EXPECT(CG_EEXISTS, cg_name_bind(call, CG_ROOT_FOLDER, "zeta", s2));
    CGT_EXPECT(CG_EINVALID, cg_name_bind(call, s1, "x", s2)); /* s1 is not a folder */
    CGT_EXPECT(CG_ENOTFOUND, cg_name_bind(call, 999999, "x", s2));
    CGT_EXPECT(CG_ENOTFOUND, cg_name_bind(call, CG_ROOT_FOLDER, "x", 999999));
    CGT_OK(cg_call_commit(call));

    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_name_list_get(&list, call, CG_ROOT_FOLDER));
    ck_assert_uint_eq(list.n, 3);
    ck_assert_str_eq(list.entries[0].name, "alpha");
    ck_assert_int_eq(list.entries[0].target, s2);
    ck_assert_str_eq(list.entries[2].name, "zeta");
    cg_name_list_dispose(&list);
    CGT_OK(cg_name_lookup(&target, call, folder, "inner"));
    ck_assert_int_eq(target, s1);
    CGT_OK(cg_name_unbind(call, CG_ROOT_FOLDER, "alpha"));
    CGT_EXPECT(CG_ENOTFOUND, cg_name_unbind(call, CG_ROOT_FOLDER, "alpha"));
    CGT_EXPECT(CG_ENOTFOUND, cg_name_lookup(&target, call, CG_ROOT_FOLDER, "alpha"));
    CGT_EXPECT(CG_EINVALID, cg_name_list_get(&list, call, s1));
    CGT_EXPECT(CG_ENOTFOUND, cg_name_list_get(&list, call, 999999));
    CGT_OK(cg_call_commit(call));
    /* deleting a resource removes the names bound to it */
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_resource_delete(call, s1));
    CGT_OK(cg_name_list_get(&list, call, CG_ROOT_FOLDER));
    ck_assert_uint_eq(list.n, 1);
    ck_assert_str_eq(list.entries[0].name, "sub");
    cg_name_list_dispose(&list);
    CGT_OK(cg_name_list_get(&list, call, folder));
    ck_assert_uint_eq(list.n, 0);
    CGT_OK(cg_call_commit(call));
    cg_core_close(a);
}
END_TEST

START_TEST(stale_update_is_named_evicted_and_rolled_back)
{
    cg_core *a = cgt_core_open(dsn, "stale-a", "g-stale"),
            *b = cgt_core_open(dsn, "stale-b", "g-stale");
    int64_t h = create(a, "{\"n\":0}", NULL), other = create(a, "{\"n\":0}", NULL), v;
    cg_core_stats st;
    cg_call *call;
    const cg_part *p;
    const cg_error *e;

    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 1); /* cached at version 1 */
    update_part(b, h, CG_PART_STATE, 1, "{\"n\":10}");           /* a does not know */

    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_part_update(&v, call, other, CG_PART_STATE, 1, "{\"n\":1}"));
    CGT_OK(cg_part_get(&p, call, h, CG_PART_STATE));
    ck_assert_int_eq(cg_part_version(p), 1); /* the stale cached copy */
    CGT_EXPECT(CG_ESTALE,
               cg_part_update(&v, call, h, CG_PART_STATE, cg_part_version(p), "{\"n\":2}"));
    e = cg_error_last();
    ck_assert_int_eq(e->handle, h);
    ck_assert_int_eq(e->part, CG_PART_STATE);
    ck_assert_int_eq(e->expected_version, 1);
    ck_assert_int_eq(e->actual_version, 2);
    ck_assert_msg(strstr(e->message, "expected version 1, the repository has 2") &&
                      strstr(e->message, "part state"),
                  "%s", e->message);
    /* the call is over: further operations and commit repeat the stale error */
    CGT_EXPECT(CG_ESTALE, cg_part_get(&p, call, h, CG_PART_STATE));
    CGT_EXPECT(CG_ESTALE, cg_call_commit(call));
    ck_assert_int_eq(db_version("g-stale", other, CG_PART_STATE), 1); /* rolled back */

    cg_core_stats_get(a, &st);
    ck_assert_uint_eq(st.stale_errors, 1);
    /* evicted at once: the next read goes to the repository and sees version 2 */
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 2);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

static int published;
static int64_t published_seq[16];
static char visible_at_publish[16][8];

/* The publisher hook: records the batch, and checks the change is already committed by
 * reading it through the superuser connection (a separate session). */
static void record_publish(void *ctx, const cg_inval_batch *b)
{
    char sql[256], *v;
    (void)ctx;
    snprintf(sql, sizeof(sql),
             "SELECT version = %" PRId64 " FROM resource_parts WHERE group_id = '%s' AND handle "
             "= %" PRId64 " AND part = '%s'",
             b->items[0].version, b->group, b->items[0].handle,
             cg_part_kind_name(b->items[0].kind));
    v = cgt_query1(dba, sql);
    if (published < 16) {
        published_seq[published] = b->seq;
        snprintf(visible_at_publish[published], 8, "%s", v);
    }
    published++;
    free(v);
}

START_TEST(call_rolls_back_with_its_cache)
{
    /* A call updates three parts, then fails on the fourth: repository, outbox and both
     * cores' caches are exactly as before, and nothing is published (I3, I6). */
    cg_core *a = cgt_core_open(dsn, "rb-a", "g-rb"), *b = cgt_core_open(dsn, "rb-b", "g-rb");
    int64_t h = create(a, "{\"s\":0}", NULL), h2 = create(a, "{\"n\":0}", NULL), v, seq0;
    char body[128];
    cg_call *call;
    int k;

    for (k = 0; k < CG_PART_COUNT; k++) { /* cache everything on both cores */
        get_part(a, h, k, NULL, 0);
        get_part(b, h, k, NULL, 0);
    }
    update_part(b, h2, CG_PART_STATE, 1, "{\"n\":1}"); /* makes a's copy of h2 stale */
    seq0 = db_count("SELECT event_seq FROM core_groups WHERE group_id = 'g-rb'");
    published = 0;
    cg_core__set_publisher(a, record_publish, NULL);

    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_SPECIFICATION, 1, "{\"s\":\"new\"}"));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_DESCRIPTION, 1, "{\"d\":\"new\"}"));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"st\":\"new\"}"));
    CGT_EXPECT(CG_ESTALE, cg_part_update(&v, call, h2, CG_PART_STATE, 1, "{\"n\":99}"));
    CGT_EXPECT(CG_ESTALE, cg_call_commit(call));

    for (k = 0; k < CG_PART_COUNT; k++) {
        ck_assert_int_eq(db_version("g-rb", h, k), 1);
        ck_assert_int_eq(get_part(a, h, k, body, sizeof(body)), 1);
        ck_assert_msg(strstr(body, "new") == NULL, "%s", body);
        ck_assert_int_eq(get_part(b, h, k, body, sizeof(body)), 1);
        ck_assert_msg(strstr(body, "new") == NULL, "%s", body);
    }
    ck_assert_int_eq(db_count("SELECT event_seq FROM core_groups WHERE group_id = 'g-rb'"), seq0);
    ck_assert_int_eq(db_count("SELECT count(*) FROM invalidations WHERE group_id = 'g-rb'"), seq0);
    ck_assert_int_eq(published, 0);

    /* the same with an explicit abort */
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"st\":\"new\"}"));
    cg_call_abort(call);
    ck_assert_int_eq(db_version("g-rb", h, CG_PART_STATE), 1);
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, body, sizeof(body)), 1);
    ck_assert_int_eq(published, 0);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

START_TEST(outbox_numbers_and_publisher)
{
    cg_core *a = cgt_core_open(dsn, "ob-a", "g-ob");
    int64_t h = create(a, "{\"n\":0}", NULL), h2 = create(a, "{\"n\":0}", NULL), v;
    cg_call *call;
    const cg_part *p;
    char *items;
    int i;

    published = 0;
    cg_core__set_publisher(a, record_publish, NULL);
    ck_assert_int_eq(db_count("SELECT count(*) FROM invalidations WHERE group_id = 'g-ob'"), 0);
    for (i = 1; i <= 3; i++)
        update_part(a, h, CG_PART_STATE, i, "{\"n\":1}");
    CGT_OK(cg_call_begin(&call, a)); /* two parts in one call: one outbox row, two items */
    CGT_OK(cg_part_update(&v, call, h2, CG_PART_STATE, 1, "{\"n\":1}"));
    CGT_OK(cg_part_update(&v, call, h2, CG_PART_STATE, 2, "{\"n\":2}"));
    CGT_OK(cg_part_update(&v, call, h2, CG_PART_SPECIFICATION, 1, "{}"));
    CGT_OK(cg_call_commit(call));
    CGT_OK(cg_call_begin(&call, a)); /* read-only: no row */
    CGT_OK(cg_part_get(&p, call, h2, CG_PART_DESCRIPTION));
    CGT_OK(cg_call_commit(call));

    ck_assert_int_eq(db_count("SELECT count(*) FROM invalidations WHERE group_id = 'g-ob'"), 4);
    ck_assert_int_eq(db_count("SELECT max(seq) FROM invalidations WHERE group_id = 'g-ob'"), 4);
    ck_assert_int_eq(db_count("SELECT event_seq FROM core_groups WHERE group_id = 'g-ob'"), 4);
    items = cgt_query1(dba, "SELECT items::text FROM invalidations WHERE group_id = 'g-ob' AND "
                            "seq = 4");
    {
        char want[256];
        snprintf(want, sizeof(want),
                 "[{\"h\": %" PRId64 ", \"p\": \"state\", \"v\": 3}, {\"h\": %" PRId64
                 ", \"p\": \"specification\", \"v\": 2}]",
                 h2, h2);
        ck_assert_str_eq(items, want);
    }
    free(items);
    items = cgt_query1(dba, "SELECT origin_core || '/' || origin_incarnation FROM invalidations "
                            "WHERE group_id = 'g-ob' AND seq = 1");
    ck_assert_str_eq(items, "ob-a/1");
    free(items);

    ck_assert_int_eq(published, 4);
    for (i = 0; i < 4; i++) {
        ck_assert_int_eq(published_seq[i], i + 1);
        ck_assert_str_eq(visible_at_publish[i], "t"); /* committed before it was published */
    }
    cg_core_close(a);
}
END_TEST

typedef struct {
    cg_core *core;
    int64_t handle;
    int errors;
} seq_worker;

static void *commit_many(void *arg)
{
    seq_worker *w = arg;
    int i;
    for (i = 0; i < 25; i++) {
        cg_call *call;
        const cg_part *p = NULL;
        int64_t v;
        if (cg_call_begin(&call, w->core) < 0 ||
            cg_part_lock(&p, call, w->handle, CG_PART_STATE) < 0 ||
            cg_part_update(&v, call, w->handle, CG_PART_STATE, cg_part_version(p), "{}") < 0) {
            w->errors++;
            cg_call_abort(call);
            continue;
        }
        if (cg_call_commit(call) < 0)
            w->errors++;
    }
    return NULL;
}

START_TEST(event_numbers_are_gap_free_under_concurrency)
{
    cg_config *cfg = cgt_core_config(dsn, "gap", "g-gap");
    cg_core *a;
    pthread_t t[4];
    seq_worker w[4];
    int i;
    cfg->pool_size = 4;
    a = cgt_core_open_cfg(cfg);
    for (i = 0; i < 4; i++) {
        w[i] = (seq_worker){a, create(a, "{}", NULL), 0};
        pthread_create(&t[i], NULL, commit_many, &w[i]);
    }
    for (i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(w[i].errors, 0);
    }
    ck_assert_int_eq(db_count("SELECT count(*) FROM invalidations WHERE group_id = 'g-gap'"), 100);
    ck_assert_int_eq(db_count("SELECT max(seq) - min(seq) + 1 FROM invalidations WHERE "
                              "group_id = 'g-gap'"),
                     100);
    /* commit order: a later seq never has an earlier commit time */
    ck_assert_int_eq(db_count("SELECT count(*) FROM (SELECT committed_at < lag(committed_at) "
                              "OVER (ORDER BY seq) AS back FROM invalidations WHERE group_id = "
                              "'g-gap') x WHERE back"),
                     0);
    cg_core_close(a);
}
END_TEST

START_TEST(refresh_and_lock)
{
    cg_core *a = cgt_core_open(dsn, "lk-a", "g-lock"), *b = cgt_core_open(dsn, "lk-b", "g-lock");
    int64_t h = create(a, "{\"n\":0}", NULL), v;
    cg_core_stats before, after;
    cg_call *call;
    const cg_part *p;

    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 1);
    update_part(b, h, CG_PART_STATE, 1, "{\"n\":7}");
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_part_lock(&p, call, h, CG_PART_STATE)); /* refreshes the stale copy */
    ck_assert_int_eq(cg_part_version(p), 2);
    ck_assert_str_eq(cg_part_body(p), "{\"n\": 7}");
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, cg_part_version(p), "{\"n\":8}"));
    CGT_OK(cg_call_commit(call));
    ck_assert_int_eq(db_version("g-lock", h, CG_PART_STATE), 3);

    /* the refreshed entry is served from the cache afterwards */
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_part_lock(&p, call, h, CG_PART_STATE));
    CGT_OK(cg_call_commit(call));
    cg_core_stats_get(a, &before);
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 3);
    cg_core_stats_get(a, &after);
    ck_assert_uint_eq(after.repository_reads, before.repository_reads);
    ck_assert_uint_eq(after.cache_hits, before.cache_hits + 1);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

START_TEST(invalidation_interface)
{
    cg_core *a = cgt_core_open(dsn, "iv-a", "g-iv"), *b = cgt_core_open(dsn, "iv-b", "g-iv");
    int64_t h = create(a, "{\"n\":0}", NULL);
    cg_bus_item item;
    cg_core_stats st;

    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 1);
    update_part(b, h, CG_PART_STATE, 1, "{\"n\":1}");
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 1); /* stale: nobody told a */
    item = (cg_bus_item){h, CG_PART_STATE, 2};
    cg_core__invalidate(a, &item, 1);
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 2);

    /* an invalidation for a version a already has keeps the entry */
    cg_core_stats_get(a, &st);
    cg_core__invalidate(a, &item, 1);
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 2);
    {
        cg_core_stats st2;
        cg_core_stats_get(a, &st2);
        ck_assert_uint_eq(st2.repository_reads, st.repository_reads);
    }
    /* reset forgets the group */
    cg_core__reset(a);
    cg_core_stats_get(a, &st);
    ck_assert_uint_eq(st.cache_entries, 0);
    ck_assert_uint_eq(st.cache_resets, 1);
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 2);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

START_TEST(late_stale_fill_is_refused)
{
    /* The fixed interleaving that bit Hibernate and Pulsar users:
     *   1. a's reader takes its ticket and reads version 1 from the repository;
     *   2. b commits version 2, and a hears the invalidation for version 2;
     *   3. a's reader, late, offers version 1 to the cache.
     * The fill must be refused and a must serve version 2. */
    cg_core *a = cgt_core_open(dsn, "lsf-a", "g-lsf"), *b = cgt_core_open(dsn, "lsf-b", "g-lsf");
    int64_t h = create(a, "{\"n\":0}", NULL);
    cg_conn *reader;
    cg_part *old = NULL;
    cg_bus_item item = {h, CG_PART_STATE, 2};
    cg_core_stats st;
    uint64_t ticket;

    CGT_OK(cg_repo_connect(&reader, a->cfg, "late-reader"));
    ticket = cg_cache_ticket(a->cache, h, CG_PART_STATE);
    CGT_OK(cg_repo_part_get(&old, reader, "g-lsf", h, CG_PART_STATE, 0));
    ck_assert_int_eq(cg_part_version(old), 1);
    cg_repo_rollback(reader);

    update_part(b, h, CG_PART_STATE, 1, "{\"n\":2}");
    cg_core__invalidate(a, &item, 1);

    ck_assert_int_eq(cg_cache_fill(a->cache, old, ticket), 0);
    cg_core_stats_get(a, &st);
    ck_assert_uint_ge(st.cache_fills_refused, 1);
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 2);
    /* and once version 2 was served, version 1 is never accepted again */
    ck_assert_int_eq(cg_cache_fill(a->cache, old, cg_cache_ticket(a->cache, h, CG_PART_STATE)), 0);
    ck_assert_int_eq(get_part(a, h, CG_PART_STATE, NULL, 0), 2);
    cg_part_free(old);
    cg_repo_close(reader);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

/* ---- names, lists and finds are cached (include/coregroup/sys/item.h) ---- */

static int names_published;
static cg_bus_item names_items[16];
static size_t names_n;

static void count_publish(void *ctx, const cg_inval_batch *b)
{
    size_t i;
    (void)ctx;
    names_published++;
    names_n = b->n < 16 ? b->n : 16;
    for (i = 0; i < names_n; i++)
        names_items[i] = b->items[i];
}

/* A folder's names version or a service key's counter, read past every cache. */
static int64_t db_names_version(const char *group, int64_t folder)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT names_version FROM resources WHERE group_id = '%s' AND handle = %" PRId64,
             group, folder);
    return db_count(sql);
}

static int64_t db_service_version(const char *group, const char *sid)
{
    char sql[256];
    snprintf(sql, sizeof(sql),
             "SELECT coalesce((SELECT version FROM service_versions WHERE group_id = '%s' AND "
             "service_key = %" PRId64 "), 0)",
             group, cg_service_key(sid));
    return db_count(sql);
}

static int64_t db_event_seq(const char *group)
{
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT event_seq FROM core_groups WHERE group_id = '%s'", group);
    return db_count(sql);
}

static int lookup(int64_t *target, cg_core *core, int64_t folder, const char *name)
{
    cg_call *call;
    int err;
    CGT_OK(cg_call_begin(&call, core));
    err = cg_name_lookup(target, call, folder, name);
    CGT_OK(cg_call_commit(call));
    return err;
}

static size_t list_n(cg_core *core, int64_t folder)
{
    cg_call *call;
    cg_name_list l;
    size_t n;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_name_list_get(&l, call, folder));
    CGT_OK(cg_call_commit(call));
    n = l.n;
    cg_name_list_dispose(&l);
    return n;
}

static size_t find_n(cg_core *core, const char *sid)
{
    cg_call *call;
    cg_handle_list l;
    size_t n;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_resource_find(&l, call, sid));
    CGT_OK(cg_call_commit(call));
    n = l.n;
    cg_handle_list_dispose(&l);
    return n;
}

static void bind(cg_core *core, int64_t folder, const char *name, int64_t target)
{
    cg_call *call;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_name_bind(call, folder, name, target));
    CGT_OK(cg_call_commit(call));
}

START_TEST(names_lists_and_finds_are_cached)
{
    cg_core *a = cgt_core_open(dsn, "nc-a", "g-nc"), *b = cgt_core_open(dsn, "nc-b", "g-nc");
    int64_t s1 = create(a, NULL, "svc-nc"), s2 = create(b, NULL, NULL), t = -1, v;
    cg_core_stats st0, st1;
    cg_bus_item item;
    cg_call *call;

    bind(a, CG_ROOT_FOLDER, "one", s1);
    /* the bind's outbox row names the root folder's listing at its new names version, the
     * event's number, in items_v2; items, which an older core reads, holds the no-op item */
    v = db_names_version("g-nc", CG_ROOT_FOLDER);
    ck_assert_int_eq(v, db_event_seq("g-nc"));
    ck_assert_int_eq(v, 2); /* the register with a service id was event 1 */
    {
        char *items = cgt_query1(dba, "SELECT items_v2::text || ' ' || items::text FROM "
                                      "invalidations WHERE group_id = 'g-nc' ORDER BY seq DESC "
                                      "LIMIT 1");
        ck_assert_str_eq(items, "[{\"h\": 0, \"p\": \"names\", \"v\": 2}] "
                                "[{\"h\": 0, \"p\": \"specification\", \"v\": 1}]");
        free(items);
    }
    /* lookup, list: one repository read, then hits */
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "one"));
    ck_assert_int_eq(t, s1);
    cg_core_stats_get(a, &st0);
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "one"));
    CGT_EXPECT(CG_ENOTFOUND, lookup(&t, a, CG_ROOT_FOLDER, "two")); /* absent from the listing */
    ck_assert_uint_eq(list_n(a, CG_ROOT_FOLDER), 1);
    cg_core_stats_get(a, &st1);
    ck_assert_uint_eq(st1.repository_reads, st0.repository_reads);
    ck_assert_uint_ge(st1.cache_hits, st0.cache_hits + 3);

    /* b binds: a (no bus in this suite) serves its cached listing until the invalidation
     * arrives, then the new one */
    bind(b, CG_ROOT_FOLDER, "two", s2);
    v = db_names_version("g-nc", CG_ROOT_FOLDER);
    ck_assert_int_eq(v, db_event_seq("g-nc"));
    item = (cg_bus_item){CG_ROOT_FOLDER, CG_ITEM_NAMES, v};
    cg_core__invalidate(a, &item, 1);
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "two"));
    ck_assert_int_eq(t, s2);
    ck_assert_uint_eq(list_n(a, CG_ROOT_FOLDER), 2);

    /* a call sees its own bind at once (its transaction, not the cache) */
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "three", s2));
    CGT_OK(cg_name_lookup(&t, call, CG_ROOT_FOLDER, "three"));
    ck_assert_int_eq(t, s2);
    CGT_OK(cg_call_commit(call));
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "three")); /* and its commit invalidated a's copy */

    /* find: cached, and a register of the same service id invalidates it */
    ck_assert_uint_eq(find_n(a, "svc-nc"), 1);
    cg_core_stats_get(a, &st0);
    ck_assert_uint_eq(find_n(a, "svc-nc"), 1);
    cg_core_stats_get(a, &st1);
    ck_assert_uint_eq(st1.repository_reads, st0.repository_reads);
    create(b, NULL, "svc-nc");
    v = db_service_version("g-nc", "svc-nc");
    ck_assert_int_eq(v, db_event_seq("g-nc")); /* the register was the last event */
    item = (cg_bus_item){cg_service_key("svc-nc"), CG_ITEM_FIND, v};
    cg_core__invalidate(a, &item, 1);
    ck_assert_uint_eq(find_n(a, "svc-nc"), 2);

    /* unregister: its parts, the folders that named it, its service key */
    names_published = 0;
    cg_core__set_publisher(b, count_publish, NULL);
    CGT_OK(cg_call_begin(&call, b));
    CGT_OK(cg_resource_delete(call, s1));
    CGT_OK(cg_call_commit(call));
    ck_assert_int_eq(names_published, 1);
    {
        size_t i;
        int names = 0, find = 0, parts = 0;
        for (i = 0; i < names_n; i++) {
            if (names_items[i].kind == CG_ITEM_NAMES && names_items[i].handle == CG_ROOT_FOLDER) {
                names++;
                ck_assert_int_eq(names_items[i].version, db_names_version("g-nc", 0));
            } else if (names_items[i].kind == CG_ITEM_FIND) {
                find++;
                ck_assert_int_eq(names_items[i].handle, cg_service_key("svc-nc"));
            } else if (names_items[i].handle == s1 && names_items[i].kind < CG_PART_COUNT)
                parts++;
        }
        ck_assert_int_eq(names, 1);
        ck_assert_int_eq(find, 1);
        ck_assert_int_eq(parts, CG_PART_COUNT);
        cg_core__invalidate(a, names_items, names_n);
    }
    CGT_EXPECT(CG_ENOTFOUND, lookup(&t, a, CG_ROOT_FOLDER, "one"));
    ck_assert_uint_eq(find_n(a, "svc-nc"), 1);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

START_TEST(aborted_bind_publishes_nothing)
{
    cg_core *a = cgt_core_open(dsn, "nab-a", "g-nab");
    int64_t s = create(a, NULL, NULL), t = -1, rows, nv;
    cg_call *call;

    CGT_EXPECT(CG_ENOTFOUND, lookup(&t, a, CG_ROOT_FOLDER, "x")); /* the listing is cached */
    rows = db_count("SELECT count(*) FROM invalidations WHERE group_id = 'g-nab'");
    nv = db_names_version("g-nab", CG_ROOT_FOLDER);
    names_published = 0;
    cg_core__set_publisher(a, count_publish, NULL);
    CGT_OK(cg_call_begin(&call, a));
    CGT_OK(cg_name_bind(call, CG_ROOT_FOLDER, "x", s));
    cg_call_abort(call);
    ck_assert_int_eq(names_published, 0);
    ck_assert_int_eq(db_count("SELECT count(*) FROM invalidations WHERE group_id = 'g-nab'"), rows);
    ck_assert_int_eq(db_names_version("g-nab", CG_ROOT_FOLDER), nv);
    CGT_EXPECT(CG_ENOTFOUND, lookup(&t, a, CG_ROOT_FOLDER, "x"));
    /* a committed bind publishes one message naming the listing */
    bind(a, CG_ROOT_FOLDER, "x", s);
    ck_assert_int_eq(names_published, 1);
    ck_assert_uint_eq(names_n, 1);
    ck_assert_int_eq(names_items[0].kind, CG_ITEM_NAMES);
    ck_assert_int_eq(names_items[0].version, db_event_seq("g-nab"));
    ck_assert_int_gt(names_items[0].version, nv);
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
    cg_core_close(a);
}
END_TEST

/* cache hits of `core` so far */
static uint64_t hits_of(cg_core *core)
{
    cg_core_stats st;
    cg_core_stats_get(core, &st);
    return st.cache_hits;
}

START_TEST(names_not_cached_beside_an_older_core)
{
    /* A core of an older release binds without raising any names version: while one is a
     * live member, names are read from the repository; once it has left, they are cached;
     * when one joins again, the next proof resets the cache. */
    cg_core *old = cgt_core_open(dsn, "nold-old", "g-nold"), *a;
    cg_config *cfg;
    int64_t s = create(old, NULL, NULL), t = -1, until;
    uint64_t r0;
    cg_core_stats st;

    free(cgt_query1(dba, "UPDATE cores SET wire2_incarnation = NULL WHERE group_id = 'g-nold' "
                         "AND core_name = 'nold-old' RETURNING 1"));
    cfg = cgt_core_config(dsn, "nold-a", "g-nold");
    cfg->poll_interval_ms = 20; /* proofs every 20 ms */
    a = cgt_core_open_cfg(cfg);
    bind(a, CG_ROOT_FOLDER, "x", s);
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
    r0 = hits_of(a);
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
    ck_assert_uint_eq(hits_of(a), r0); /* not cached: no hit */

    cg_core_close(old); /* it leaves: every live member reads version 2 */
    until = (int64_t)time(NULL) + 10;
    do {
        usleep(20000);
        CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
        r0 = hits_of(a);
        CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
    } while (hits_of(a) == r0 && (int64_t)time(NULL) < until);
    ck_assert_msg(hits_of(a) > r0, "names are still not cached after the old core left");

    /* an older core joins (a's own row stands in for it): the cache is reset, and names are
     * read from the repository again */
    cg_core_stats_get(a, &st);
    free(cgt_query1(dba, "UPDATE cores SET wire2_incarnation = NULL WHERE group_id = 'g-nold' "
                         "AND core_name = 'nold-a' RETURNING 1"));
    until = (int64_t)time(NULL) + 10;
    for (;;) {
        cg_core_stats s2;
        cg_core_stats_get(a, &s2);
        if (s2.cache_resets > st.cache_resets || (int64_t)time(NULL) >= until)
            break;
        usleep(10000);
    }
    {
        cg_core_stats s3;
        cg_core_stats_get(a, &s3);
        ck_assert_uint_gt(s3.cache_resets, st.cache_resets);
    }
    r0 = hits_of(a);
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
    ck_assert_uint_eq(hits_of(a), r0);
    cg_core_close(a);
}
END_TEST

START_TEST(names_follow_the_lease_and_the_ttl)
{
    /* A listing past its TTL is read again; past the lease, names are not served from the
     * cache (the read goes to the repository and counts as a lease miss). */
    cg_config *cfg = cgt_core_config(dsn, "nlt-a", "g-nlt");
    cg_core *a;
    cg_core_stats s0, s1;
    int64_t s, t = -1;

    cfg->ttl_ms = 50;
    a = cgt_core_open_cfg(cfg);
    s = create(a, NULL, "svc-nlt");
    bind(a, CG_ROOT_FOLDER, "x", s);
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
    ck_assert_uint_eq(find_n(a, "svc-nlt"), 1);
    cg_core_stats_get(a, &s0);
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
    ck_assert_uint_eq(find_n(a, "svc-nlt"), 1);
    cg_core_stats_get(a, &s1);
    ck_assert_uint_eq(s1.cache_hits, s0.cache_hits + 2);
    usleep(120000);
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
    ck_assert_uint_eq(find_n(a, "svc-nlt"), 1);
    cg_core_stats_get(a, &s0);
    ck_assert_uint_ge(s0.cache_expirations, s1.cache_expirations + 2);

    atomic_store(&a->fresh_until_ms, 0); /* the lease has run out */
    cg_core_stats_get(a, &s0);
    CGT_OK(lookup(&t, a, CG_ROOT_FOLDER, "x"));
    ck_assert_int_eq(t, s);
    ck_assert_uint_eq(find_n(a, "svc-nlt"), 1);
    cg_core_stats_get(a, &s1);
    ck_assert_uint_eq(s1.cache_hits, s0.cache_hits);
    ck_assert_uint_eq(s1.lease_misses, s0.lease_misses + 2);
    cg_core_close(a);
}
END_TEST

typedef struct {
    cg_core *core;
    int err;
    int64_t target;
} lookup_arg;

static void *lookup_thread(void *arg)
{
    lookup_arg *la = arg;
    la->err = lookup(&la->target, la->core, CG_ROOT_FOLDER, "x");
    return NULL;
}

START_TEST(names_load_in_single_flight)
{
    /* Four lookups miss the same cold listing while the repository holds the read back (a
     * table lock): one reads, the other three wait for its result. */
    cg_core *a = cgt_core_open(dsn, "nsf-a", "g-nsf");
    int64_t s = create(a, NULL, NULL);
    PGconn *locker = cgt_connect(dsn);
    lookup_arg la[4];
    pthread_t th[4];
    cg_cache_stats c0, c1;
    PGresult *r;
    int i;

    bind(a, CG_ROOT_FOLDER, "x", s);
    cg_cache_stats_get(a->cache, &c0);
    r = PQexec(locker, "BEGIN; LOCK TABLE name_bindings IN ACCESS EXCLUSIVE MODE");
    ck_assert_int_eq(PQresultStatus(r), PGRES_COMMAND_OK);
    PQclear(r);
    for (i = 0; i < 4; i++) {
        la[i] = (lookup_arg){a, -99, -1};
        ck_assert_int_eq(pthread_create(&th[i], NULL, lookup_thread, &la[i]), 0);
    }
    usleep(300000);
    r = PQexec(locker, "COMMIT");
    PQclear(r);
    for (i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        CGT_OK(la[i].err);
        ck_assert_int_eq(la[i].target, s);
    }
    cg_cache_stats_get(a->cache, &c1);
    ck_assert_uint_eq(c1.loads, c0.loads + 1);
    ck_assert_uint_eq(c1.load_waits, c0.load_waits + 3);
    PQfinish(locker);
    cg_core_close(a);
}
END_TEST

START_TEST(late_stale_list_fill_is_refused)
{
    /* The interleaving of late_stale_fill_is_refused, for a folder's listing:
     *   1. a's reader takes its ticket and reads the root's listing (one name);
     *   2. b binds a second name, and a hears the invalidation of the listing;
     *   3. a's reader, late, offers the one-name listing to the cache.
     * The fill must be refused and a must list both names. */
    cg_core *a = cgt_core_open(dsn, "lsl-a", "g-lsl"), *b = cgt_core_open(dsn, "lsl-b", "g-lsl");
    int64_t s = create(a, NULL, NULL), v_old = 0;
    cg_conn *reader;
    cg_name_list l;
    cg_part *old;
    cg_bus_item item;
    cg_core_stats st;
    uint64_t ticket;
    char body[64];
    size_t len;

    bind(a, CG_ROOT_FOLDER, "first", s);
    CGT_OK(cg_repo_connect(&reader, a->cfg, "late-lister"));
    ticket = cg_cache_ticket(a->cache, CG_ROOT_FOLDER, CG_ITEM_NAMES);
    CGT_OK(cg_repo_name_list(&l, &v_old, reader, "g-lsl", CG_ROOT_FOLDER));
    ck_assert_uint_eq(l.n, 1);
    cg_repo_rollback(reader);
    /* packed as call.c caches a listing: target (8 bytes), name, NUL */
    memcpy(body, &l.entries[0].target, 8);
    len = 8 + strlen(l.entries[0].name) + 1;
    memcpy(body + 8, l.entries[0].name, len - 8);
    cg_name_list_dispose(&l);
    ck_assert_ptr_nonnull(old = cg_part__new(CG_ROOT_FOLDER, CG_ITEM_NAMES, v_old, body, len));

    bind(b, CG_ROOT_FOLDER, "second", s);
    item = (cg_bus_item){CG_ROOT_FOLDER, CG_ITEM_NAMES, db_names_version("g-lsl", 0)};
    ck_assert_int_gt(item.version, v_old);
    cg_core__invalidate(a, &item, 1);

    ck_assert_int_eq(cg_cache_fill(a->cache, old, ticket), 0);
    cg_core_stats_get(a, &st);
    ck_assert_uint_ge(st.cache_fills_refused, 1);
    ck_assert_uint_eq(list_n(a, CG_ROOT_FOLDER), 2);
    /* once the newer listing was served, the older one is never accepted again */
    ck_assert_int_eq(
        cg_cache_fill(a->cache, old, cg_cache_ticket(a->cache, CG_ROOT_FOLDER, CG_ITEM_NAMES)), 0);
    ck_assert_uint_eq(list_n(a, CG_ROOT_FOLDER), 2);
    cg_part_free(old);
    cg_repo_close(reader);
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

typedef struct {
    cg_core *other;
    int64_t handle;
    int calls;
} race_arg;

/* Reads, lets another core win the race on the first attempt, then updates. */
static int increment_once(cg_call *call, void *arg)
{
    race_arg *r = arg;
    const cg_part *p;
    int64_t v;
    int err;
    if ((err = cg_part_get(&p, call, r->handle, CG_PART_STATE)) < 0)
        return err;
    if (r->calls++ == 0)
        update_part(r->other, r->handle, CG_PART_STATE, cg_part_version(p), "{\"n\":100}");
    err = cg_part_update(&v, call, r->handle, CG_PART_STATE, cg_part_version(p), "{\"n\":101}");
    return err;
}

/* Move a part one version on from another core, whatever that core had cached. */
static void bump(cg_core *core, int64_t h)
{
    cg_call *call;
    const cg_part *p;
    int64_t v;
    CGT_OK(cg_call_begin(&call, core));
    CGT_OK(cg_part_lock(&p, call, h, CG_PART_STATE));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, cg_part_version(p), "{\"n\":0}"));
    CGT_OK(cg_call_commit(call));
}

/* Reads, then the other core moves on before every update: always stale. */
static int always_stale(cg_call *call, void *arg)
{
    race_arg *r = arg;
    const cg_part *p;
    int64_t v;
    int err;
    r->calls++;
    if ((err = cg_part_get(&p, call, r->handle, CG_PART_STATE)) < 0)
        return err;
    bump(r->other, r->handle);
    err = cg_part_update(&v, call, r->handle, CG_PART_STATE, cg_part_version(p), "{\"n\":1}");
    return err;
}

START_TEST(retry_helper_reruns_stale_calls)
{
    cg_core *a = cgt_core_open(dsn, "rt-a", "g-rt"), *b = cgt_core_open(dsn, "rt-b", "g-rt");
    race_arg r = {b, create(a, "{\"n\":0}", NULL), 0};
    cg_retry_options o = CG_RETRY_OPTIONS_INIT;
    int attempts = 0;
    ck_assert_int_eq(get_part(a, r.handle, CG_PART_STATE, NULL, 0), 1);
    CGT_OK(cg_call_run(a, increment_once, &r, &o, &attempts));
    ck_assert_int_eq(attempts, 2);
    ck_assert_int_eq(db_version("g-rt", r.handle, CG_PART_STATE), 3);
    /* bounded: when the other core always wins, the helper gives up after max_attempts */
    o.max_attempts = 3;
    o.base_delay_ms = 1;
    r.calls = -1000; /* never let increment_once's first-attempt branch run */
    {
        race_arg loser = {b, r.handle, 0};
        CGT_EXPECT(CG_ESTALE, cg_call_run(a, always_stale, &loser, &o, &attempts));
        ck_assert_int_eq(attempts, 3);
        ck_assert_int_eq(loser.calls, 3);
    }
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

START_TEST(fenced_incarnation_cannot_write)
{
    /* A core restarted under the same name (a new incarnation) fences the old process, which
     * may still be running; here the successor comes and goes again at once. */
    cg_core *old = cgt_core_open(dsn, "fenced", "g-fence"), *successor;
    int64_t h = create(old, "{\"n\":0}", NULL), v, until, successor_inc;
    cg_core_stats st;
    cg_call *call;

    successor = cgt_core_open(dsn, "fenced", "g-fence");
    successor_inc = cg_core_incarnation(successor);
    ck_assert_int_eq(successor_inc, cg_core_incarnation(old) + 1);
    cg_core_close(successor);
    CGT_OK(cg_call_begin(&call, old));
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"n\":1}"));
    CGT_EXPECT(CG_EFENCED, cg_call_commit(call));
    ck_assert(strstr(cg_error_last()->message, "is fenced"));
    ck_assert_str_eq(cg_error_last()->sqlstate, "CGF01");
    ck_assert_int_eq(db_version("g-fence", h, CG_PART_STATE), 1);

    /* The fenced core notices at once, drops its cache and rejoins as a newer incarnation. */
    until = (int64_t)time(NULL) + 10;
    do {
        usleep(20000);
        cg_core_stats_get(old, &st);
    } while (st.rejoins == 0 && (int64_t)time(NULL) < until);
    ck_assert_uint_eq(st.rejoins, 1);
    ck_assert_int_eq(cg_core_incarnation(old), successor_inc + 1);
    ck_assert_int_eq(db_count("SELECT incarnation FROM cores WHERE core_name = 'fenced' AND "
                              "state = 'alive'"),
                     successor_inc + 1);
    /* a call begun under the old incarnation stays fenced, even one that writes no part */
    update_part(old, h, CG_PART_STATE, 1, "{\"n\":1}");
    cg_core_close(old);
}
END_TEST

START_TEST(a_call_from_before_a_rejoin_cannot_commit)
{
    cg_core *old = cgt_core_open(dsn, "fenced2", "g-fence"), *successor;
    cg_call *stale_call;
    cg_core_stats st;
    int64_t h, until;
    int rc;

    CGT_OK(cg_call_begin(&stale_call, old)); /* begun under incarnation 1 */
    successor = cgt_core_open(dsn, "fenced2", "g-fence");
    cg_core_close(successor);
    /* writes no part: the fence check at commit refuses it, if the session's advertisement
     * of the fenced incarnation did not already */
    rc = cg_resource_create(&h, stale_call, NULL);
    ck_assert_msg(rc == 0 || rc == CG_EFENCED, "create: %d %s", rc, cg_error_last()->message);
    CGT_EXPECT(CG_EFENCED, cg_call_commit(stale_call));
    until = (int64_t)time(NULL) + 10;
    do {
        usleep(20000);
        cg_core_stats_get(old, &st);
    } while (st.rejoins == 0 && (int64_t)time(NULL) < until);
    ck_assert_uint_eq(st.rejoins, 1);
    ck_assert_int_eq(db_count("SELECT count(*) FROM resources WHERE group_id = 'g-fence' AND "
                              "handle <> 0"),
                     1); /* only the first test's resource */
    cg_core_close(old);
}
END_TEST

START_TEST(cache_strategies)
{
    cg_config *cfg;
    cg_core *vc, *none, *ttl, *w = cgt_core_open(dsn, "st-w", "g-st");
    int64_t h = create(w, "{\"n\":0}", NULL);
    cg_core_stats s1, s2;

    cfg = cgt_core_config(dsn, "st-vc", "g-st");
    cfg->strategy = CG_CACHE_VERSION_CHECK;
    vc = cgt_core_open_cfg(cfg);
    cfg = cgt_core_config(dsn, "st-none", "g-st");
    cfg->strategy = CG_CACHE_NONE;
    none = cgt_core_open_cfg(cfg);
    cfg = cgt_core_config(dsn, "st-ttl", "g-st");
    cfg->ttl_ms = 150;
    ttl = cgt_core_open_cfg(cfg);

    ck_assert_int_eq(get_part(vc, h, CG_PART_STATE, NULL, 0), 1);
    ck_assert_int_eq(get_part(ttl, h, CG_PART_STATE, NULL, 0), 1);
    cg_core_stats_get(none, &s1);
    ck_assert_int_eq(get_part(none, h, CG_PART_STATE, NULL, 0), 1);
    ck_assert_int_eq(get_part(none, h, CG_PART_STATE, NULL, 0), 1);
    cg_core_stats_get(none, &s2);
    ck_assert_uint_eq(s2.repository_reads, s1.repository_reads + 2);
    ck_assert_uint_eq(s2.cache_entries, 0);

    update_part(w, h, CG_PART_STATE, 1, "{\"n\":1}");
    ck_assert_int_eq(get_part(vc, h, CG_PART_STATE, NULL, 0), 2);   /* version check sees it */
    ck_assert_int_eq(get_part(none, h, CG_PART_STATE, NULL, 0), 2); /* always queries */
    ck_assert_int_eq(get_part(ttl, h, CG_PART_STATE, NULL, 0), 1);  /* cached, not expired */
    usleep(300000);
    ck_assert_int_eq(get_part(ttl, h, CG_PART_STATE, NULL, 0), 2); /* expired */
    cg_core_stats_get(ttl, &s1);
    ck_assert_uint_ge(s1.cache_expirations, 1);
    cg_core_close(vc);
    cg_core_close(none);
    cg_core_close(ttl);
    cg_core_close(w);
}
END_TEST

START_TEST(bad_input_gets_clear_errors)
{
    cg_core *a = cgt_core_open(dsn, "bad-a", "g-bad"), *x = cgt_core_open(dsn, "bad-x", "g-other");
    int64_t h = create(a, "{\"n\":0}", NULL), xh = create(x, "{\"secret\":1}", NULL), v;
    cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
    char longname[300];
    cg_call *call;
    const cg_part *p;

    memset(longname, 'n', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    CGT_OK(cg_call_begin(&call, a));
    CGT_EXPECT(CG_EINVALID, cg_name_bind(call, CG_ROOT_FOLDER, NULL, h));
    CGT_EXPECT(CG_EINVALID, cg_name_bind(call, CG_ROOT_FOLDER, "", h));
    CGT_EXPECT(CG_EINVALID, cg_name_bind(call, CG_ROOT_FOLDER, longname, h));
    ck_assert(strstr(cg_error_last()->message, "at most 255"));
    CGT_EXPECT(CG_EINVALID, cg_name_bind(call, CG_ROOT_FOLDER, "a/b", h));
    CGT_EXPECT(CG_EINVALID, cg_name_bind(call, CG_ROOT_FOLDER, "tab\there", h));
    CGT_EXPECT(CG_EINVALID, cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"n\":"));
    ck_assert(strstr(cg_error_last()->message, "not valid JSON"));
    CGT_EXPECT(CG_EINVALID, cg_part_update(&v, call, h, CG_PART_STATE, 1, NULL));
    CGT_EXPECT(CG_EINVALID, cg_part_update(&v, call, h, CG_PART_STATE, -1, "{}"));
    ck_assert(strstr(cg_error_last()->message, "versions start at 1"));
    CGT_EXPECT(CG_EINVALID, cg_part_update(&v, call, h, CG_PART_STATE, 0, "{}"));
    CGT_EXPECT(CG_EINVALID, cg_part_get(&p, call, -5, CG_PART_STATE));
    CGT_EXPECT(CG_EINVALID, cg_part_get(&p, call, h, (cg_part_kind)7));
    CGT_EXPECT(CG_ENOTFOUND, cg_part_get(&p, call, 987654321, CG_PART_STATE));
    CGT_EXPECT(CG_ENOTFOUND, cg_part_update(&v, call, 987654321, CG_PART_STATE, 1, "{}"));
    /* a handle of another group does not exist here */
    CGT_EXPECT(CG_ENOTFOUND, cg_part_get(&p, call, xh, CG_PART_STATE));
    CGT_EXPECT(CG_ENOTFOUND, cg_part_update(&v, call, xh, CG_PART_STATE, 1, "{\"stolen\":1}"));
    o.kind = "Bad Kind";
    CGT_EXPECT(CG_EINVALID, cg_resource_create(&v, call, &o));
    o.kind = NULL;
    o.state = "[unclosed";
    CGT_EXPECT(CG_EINVALID, cg_resource_create(&v, call, &o));
    ck_assert(strstr(cg_error_last()->message, "state: body is not valid JSON"));
    o.state = NULL;
    o.service_id = longname;
    CGT_EXPECT(CG_EINVALID, cg_resource_create(&v, call, &o));
    /* none of that ended the call */
    CGT_OK(cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"n\":1}"));
    CGT_OK(cg_call_commit(call));
    ck_assert_int_eq(db_version("g-other", xh, CG_PART_STATE), 1);
    ck_assert_int_eq(db_version("g-bad", h, CG_PART_STATE), 2);
    CGT_EXPECT(CG_EINVALID, cg_part_kind_parse((cg_part_kind *)&v, "colour"));
    cg_core_close(a);
    cg_core_close(x);
}
END_TEST

typedef struct {
    cg_core *core;
    int failures;
} thread_arg;

static void *own_resources(void *arg)
{
    thread_arg *t = arg;
    int i;
    for (i = 0; i < 40; i++) {
        cg_call *call;
        const cg_part *p = NULL;
        int64_t h, v;
        cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
        if (cg_call_begin(&call, t->core) < 0 || cg_resource_create(&h, call, &o) < 0 ||
            cg_part_update(&v, call, h, CG_PART_STATE, 1, "{\"x\":1}") < 0 ||
            cg_call_commit(call) < 0) {
            t->failures++;
            continue;
        }
        if (cg_call_begin(&call, t->core) < 0 || cg_part_get(&p, call, h, CG_PART_STATE) < 0 ||
            cg_part_version(p) != 2)
            t->failures++;
        cg_call_commit(call);
    }
    return NULL;
}

START_TEST(threads_share_a_core)
{
    cg_config *cfg = cgt_core_config(dsn, "threads", "g-threads");
    cg_core *a;
    pthread_t t[8];
    thread_arg args[8];
    cg_core_stats st;
    int i;
    cfg->pool_size = 3; /* fewer connections than threads: calls wait for one */
    a = cgt_core_open_cfg(cfg);
    for (i = 0; i < 8; i++) {
        args[i] = (thread_arg){a, 0};
        pthread_create(&t[i], NULL, own_resources, &args[i]);
    }
    for (i = 0; i < 8; i++) {
        pthread_join(t[i], NULL);
        ck_assert_int_eq(args[i].failures, 0);
    }
    cg_core_stats_get(a, &st);
    ck_assert_uint_eq(st.calls_committed, 8 * 40 * 2);
    ck_assert_int_le(db_count("SELECT count(*) FROM pg_stat_activity WHERE application_name = "
                              "'threads'"),
                     3);
    cg_core_close(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("call");
    TCase *tc;

    tc = tcase_create("core");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, open_registers_the_core);
    tcase_add_test(tc, open_refuses_bad_input);
    tcase_add_test(tc, threads_share_a_core);
    suite_add_tcase(s, tc);

    tc = tcase_create("operations");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, resources_parts_and_replicas);
    tcase_add_test(tc, own_writes_are_visible_only_to_the_call);
    tcase_add_test(tc, one_read_calls);
    tcase_add_test(tc, read_cached_never_waits);
    tcase_add_test(tc, names_in_folders);
    tcase_add_test(tc, refresh_and_lock);
    tcase_add_test(tc, bad_input_gets_clear_errors);
    suite_add_tcase(s, tc);

    tc = tcase_create("consistency");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, stale_update_is_named_evicted_and_rolled_back);
    tcase_add_test(tc, call_rolls_back_with_its_cache);
    tcase_add_test(tc, late_stale_fill_is_refused);
    tcase_add_test(tc, names_lists_and_finds_are_cached);
    tcase_add_test(tc, aborted_bind_publishes_nothing);
    tcase_add_test(tc, late_stale_list_fill_is_refused);
    tcase_add_test(tc, names_not_cached_beside_an_older_core);
    tcase_add_test(tc, names_follow_the_lease_and_the_ttl);
    tcase_add_test(tc, names_load_in_single_flight);
    tcase_add_test(tc, retry_helper_reruns_stale_calls);
    tcase_add_test(tc, fenced_incarnation_cannot_write);
    tcase_add_test(tc, a_call_from_before_a_rejoin_cannot_commit);
    tcase_add_test(tc, cache_strategies);
    suite_add_tcase(s, tc);

    tc = tcase_create("outbox");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, outbox_numbers_and_publisher);
    tcase_add_test(tc, event_numbers_are_gap_free_under_concurrency);
    tcase_add_test(tc, invalidation_interface);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
