/*
 * test_repo.c — the repository access layer (schema/repo.h) on its own, against the harness's
 * real PostgreSQL, with no core, cache or bus above it: a session of one group (connect, group
 * and membership rows), resources and their parts, the conditional update that turns a stale
 * expected version into CG_ESTALE naming both versions, names in folders, and the end of a
 * transaction: a commit with items appends exactly one outbox row numbered by the group's
 * event_seq, which outbox_items reads back; a fenced incarnation's commit appends nothing; and
 * the audit's one statement: cached versions against the repository's, with the age of the
 * first newer version from the outbox (unknown once pruned).
 *
 * Every test uses a group of its own on one migrated database, logged in as the core's role
 * (row-level security applies), so the tests neither see nor disturb each other.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "repo.h"
#include "testutil.h"
#include "coregroup/sys/error.h"
#include "coregroup/sys/part.h"

#define CORE "repo-core"

static char *dsn;

static void setup(void)
{
    dsn = cgt_createdb("repo", 1);
}

static void teardown(void)
{
    free(dsn);
}

/* A session of `group` as the core's role, the group created; with `inc`, CORE registered in
 * it and *inc its incarnation. */
static cg_conn *session(const char *group, int64_t *inc)
{
    cg_config *cfg = cgt_core_config(dsn, CORE, group);
    cg_conn *c = NULL;
    CGT_OK(cg_repo_connect(&c, cfg, "test_repo"));
    cg_config_free(cfg);
    CGT_OK(cg_repo_group_ensure(c, group));
    if (inc) {
        *inc = 0;
        CGT_OK(cg_repo_core_register(inc, c, group, CORE, "test-host", (int)getpid(), 0));
        ck_assert_int_ge(*inc, 1);
    }
    return c;
}

/* Commit what the transaction wrote, without outbox items. */
static void commit(cg_conn *c, const char *group, int64_t inc)
{
    int64_t seq, at;
    CGT_OK(cg_repo_commit(&seq, &at, c, group, CORE, inc, NULL, 0));
    ck_assert_int_eq(seq, 0); /* no items, no event */
    ck_assert(!c->in_tx);
}

static int64_t event_seq(cg_conn *c, const char *group)
{
    int64_t seq = -1;
    CGT_OK(cg_repo_event_seq(&seq, NULL, c, group));
    return seq;
}

/* A resource with the given state body, created and committed; its handle. */
static int64_t create(cg_conn *c, const char *group, int64_t inc, const char *service_id,
                      const char *state)
{
    const char *bodies[CG_PART_COUNT] = {"{}", "{}", state};
    int64_t h = -1;
    CGT_OK(cg_repo_resource_create(&h, c, group, "service", service_id, bodies));
    ck_assert_int_gt(h, 0); /* 0 is the root folder */
    commit(c, group, inc);
    return h;
}

/* The part's version and body as the repository has them now, in a call of its own. */
static int64_t version_of(cg_conn *c, const char *group, int64_t h, int kind, char *body, size_t n)
{
    cg_part *p = NULL;
    int64_t v;
    CGT_OK(cg_repo_part_read_once(&p, c, group, h, kind));
    ck_assert_int_eq(cg_part_handle(p), h);
    ck_assert_int_eq(cg_part_kind_of(p), kind);
    v = cg_part_version(p);
    if (body)
        snprintf(body, n, "%s", cg_part_body(p));
    cg_part_free(p);
    return v;
}

/* ---- sessions ------------------------------------------------------------------------- */

START_TEST(a_session_belongs_to_one_group)
{
    cg_conn *c = session("repo-session", NULL);
    PGconn *dba = cgt_connect(dsn);
    int64_t seq = -1;

    ck_assert(cg_repo_usable(c));
    ck_assert(cg_repo_reusable(c));
    ck_assert_int_eq(event_seq(c, "repo-session"), 0); /* a new group: no event yet */
    CGT_OK(cg_repo_group_ensure(c, "repo-session"));   /* again: nothing changes */
    ck_assert_int_eq(event_seq(c, "repo-session"), 0);
    /* another group exists, but row-level security hides it from this session */
    free(cgt_query1(dba, "INSERT INTO core_groups (group_id) VALUES ('repo-other')"));
    CGT_EXPECT(CG_ENOTFOUND, cg_repo_event_seq(&seq, NULL, c, "repo-other"));
    ck_assert_int_eq(seq, -1);
    PQfinish(dba);
    cg_repo_close(c);
    cg_repo_close(NULL);
}
END_TEST

START_TEST(unreachable_is_retryable_and_a_bad_login_is_invalid)
{
    cg_config *cfg = cgt_core_config(dsn, CORE, "repo-login");
    cg_conn *c = NULL;
    char buf[1200];

    ck_assert_int_eq(cg_config_set_string(&cfg->dsn, "host=127.0.0.1 port=1 connect_timeout=5"), 0);
    CGT_EXPECT(CG_ERETRYABLE, cg_repo_connect(&c, cfg, "test_repo"));
    ck_assert_ptr_null(c);
    snprintf(buf, sizeof(buf), "%s user=no_such_role", dsn);
    ck_assert_int_eq(cg_config_set_string(&cfg->dsn, buf), 0);
    CGT_EXPECT(CG_EINVALID, cg_repo_connect(&c, cfg, "test_repo"));
    ck_assert_ptr_null(c);
    cg_config_free(cfg);
}
END_TEST

START_TEST(registering_again_takes_the_row_over_with_a_new_incarnation)
{
    int64_t inc, inc2 = 0, stale = 0;
    cg_conn *c = session("repo-register", &inc);
    cg_member_list members;

    CGT_OK(cg_repo_core_register(&inc2, c, "repo-register", CORE, "test-host", 2, inc));
    ck_assert_int_eq(inc2, inc + 1);
    /* a second process that saw the old incarnation loses the race */
    CGT_EXPECT(CG_EEXISTS,
               cg_repo_core_register(&stale, c, "repo-register", CORE, "test-host", 3, inc));
    CGT_OK(cg_repo_members(&members, c, "repo-register"));
    ck_assert_uint_eq(members.n, 1);
    ck_assert_int_eq(members.members[0].incarnation, inc2);
    cg_member_list_dispose(&members);
    cg_repo_close(c);
}
END_TEST

/* ---- resources ------------------------------------------------------------------------ */

START_TEST(resource_create_get_find_and_delete)
{
    const char *g = "repo-res";
    const char *bodies[CG_PART_COUNT] = {"{\"spec\":1}", "[\"d\"]", "{\"n\":0}"};
    int64_t inc, h, h2;
    cg_bus_item *ditems = NULL;
    size_t dn = 0;
    cg_conn *c = session(g, &inc);
    cg_resource r;
    cg_handle_list found;
    char body[256];
    int k;

    CGT_OK(cg_repo_resource_create(&h, c, g, "service", "svc-repo", bodies));
    ck_assert(c->in_tx && c->wrote);
    commit(c, g, inc);
    h2 = create(c, g, inc, "svc-repo", "{}");

    CGT_OK(cg_repo_resource_get(&r, c, g, h));
    ck_assert_int_eq(r.handle, h);
    ck_assert_str_eq(r.kind, "service");
    ck_assert_str_eq(r.service_id, "svc-repo");
    /* every part starts at version 1 with its body (as jsonb prints it) */
    for (k = 0; k < CG_PART_COUNT; k++) {
        cg_part *p = NULL;
        CGT_OK(cg_repo_part_get(&p, c, g, h, k, 0));
        ck_assert_int_eq(cg_part_version(p), 1);
        cg_part_free(p);
    }
    CGT_OK(cg_repo_resource_find(&found, NULL, c, g, "svc-repo"));
    ck_assert_uint_eq(found.n, 2);
    ck_assert_int_eq(found.handles[0], h); /* by handle */
    ck_assert_int_eq(found.handles[1], h2);
    cg_handle_list_dispose(&found);
    commit(c, g, inc); /* read-only: a deferred COMMIT */
    ck_assert_int_eq(version_of(c, g, h, CG_PART_SPECIFICATION, body, sizeof(body)), 1);
    ck_assert_str_eq(body, "{\"spec\": 1}");
    ck_assert_int_eq(version_of(c, g, h, CG_PART_DESCRIPTION, body, sizeof(body)), 1);
    ck_assert_str_eq(body, "[\"d\"]");

    /* delete reports what it invalidates: each part at its version + 1, the service key */
    CGT_OK(cg_repo_resource_delete(&ditems, &dn, c, g, h));
    ck_assert_uint_eq(dn, CG_PART_COUNT + 1);
    for (k = 0; k < (int)dn; k++)
        if (ditems[k].kind < CG_PART_COUNT) {
            ck_assert_int_eq(ditems[k].handle, h);
            ck_assert_int_eq(ditems[k].version, 2);
        } else {
            ck_assert_int_eq(ditems[k].kind, CG_ITEM_FIND);
            ck_assert_int_eq(ditems[k].handle, cg_service_key("svc-repo"));
        }
    free(ditems);
    commit(c, g, inc);
    CGT_EXPECT(CG_ENOTFOUND, cg_repo_resource_get(&r, c, g, h));
    cg_repo_rollback(c);
    CGT_EXPECT(CG_ENOTFOUND, cg_repo_resource_delete(&ditems, &dn, c, g, h));
    cg_repo_rollback(c);
    CGT_EXPECT(CG_ENOTFOUND, cg_repo_part_read_once(&(cg_part *){NULL}, c, g, h, CG_PART_STATE));
    CGT_OK(cg_repo_resource_find(&found, NULL, c, g, "svc-repo"));
    ck_assert_uint_eq(found.n, 1);
    cg_handle_list_dispose(&found);
    cg_repo_rollback(c);
    cg_repo_close(c);
}
END_TEST

START_TEST(an_aborted_create_leaves_nothing)
{
    const char *g = "repo-abort";
    const char *bodies[CG_PART_COUNT] = {"{}", "{}", "{}"};
    int64_t inc, h;
    cg_conn *c = session(g, &inc);
    cg_handle_list found;

    CGT_OK(cg_repo_resource_create(&h, c, g, "service", "svc-abort", bodies));
    cg_repo_rollback(c);
    ck_assert(!c->in_tx);
    CGT_OK(cg_repo_resource_find(&found, NULL, c, g, "svc-abort"));
    ck_assert_uint_eq(found.n, 0);
    cg_handle_list_dispose(&found);
    cg_repo_rollback(c);
    ck_assert_int_eq(event_seq(c, g), 0);
    cg_repo_close(c);
}
END_TEST

/* ---- parts ---------------------------------------------------------------------------- */

START_TEST(a_conditional_update_moves_the_version_on)
{
    const char *g = "repo-update";
    int64_t inc, h, v = 0;
    cg_conn *c = session(g, &inc);
    cg_part *p = NULL;
    char body[256];

    h = create(c, g, inc, NULL, "{\"n\":0}");
    CGT_OK(cg_repo_part_update(&p, c, g, h, CG_PART_STATE, 1, "{\"n\":1,\"m\":[true]}"));
    ck_assert_int_eq(cg_part_version(p), 2);
    ck_assert_str_eq(cg_part_body(p), "{\"m\": [true], \"n\": 1}"); /* as jsonb stores it */
    cg_part_free(p);
    CGT_OK(cg_repo_part_version(&v, c, g, h, CG_PART_STATE)); /* the transaction sees it */
    ck_assert_int_eq(v, 2);
    commit(c, g, inc);
    ck_assert_int_eq(version_of(c, g, h, CG_PART_STATE, body, sizeof(body)), 2);
    ck_assert_str_eq(body, "{\"m\": [true], \"n\": 1}");
    /* only the updated part moved */
    ck_assert_int_eq(version_of(c, g, h, CG_PART_DESCRIPTION, NULL, 0), 1);

    /* a locked read, then an update based on it */
    CGT_OK(cg_repo_part_get(&p, c, g, h, CG_PART_STATE, 1));
    ck_assert_int_eq(cg_part_version(p), 2);
    cg_part_free(p);
    CGT_OK(cg_repo_part_update(&p, c, g, h, CG_PART_STATE, 2, "{}"));
    ck_assert_int_eq(cg_part_version(p), 3);
    cg_part_free(p);
    commit(c, g, inc);
    ck_assert_int_eq(version_of(c, g, h, CG_PART_STATE, NULL, 0), 3);
    cg_repo_close(c);
}
END_TEST

START_TEST(a_stale_expected_version_is_estale_naming_both_versions)
{
    const char *g = "repo-stale";
    int64_t inc, h;
    cg_conn *c = session(g, &inc), *other = session(g, NULL);
    cg_part *p = (cg_part *)1;
    const cg_error *e;

    h = create(c, g, inc, NULL, "{}");
    /* another session moves the part to version 3 */
    CGT_OK(cg_repo_part_update(&p, other, g, h, CG_PART_STATE, 1, "{\"by\":\"other\"}"));
    cg_part_free(p);
    CGT_OK(cg_repo_part_update(&p, other, g, h, CG_PART_STATE, 2, "{\"by\":\"other\"}"));
    cg_part_free(p);
    commit(other, g, inc);

    /* this session still believes in version 1 */
    p = (cg_part *)1;
    CGT_EXPECT(CG_ESTALE, cg_repo_part_update(&p, c, g, h, CG_PART_STATE, 1, "{\"by\":\"me\"}"));
    ck_assert_ptr_null(p);
    e = cg_error_last();
    ck_assert_int_eq(e->handle, h);
    ck_assert_int_eq(e->part, CG_PART_STATE);
    ck_assert_int_eq(e->expected_version, 1);
    ck_assert_int_eq(e->actual_version, 3);
    ck_assert_msg(strstr(e->message, "expected version 1") && strstr(e->message, "has 3"), "%s",
                  e->message);
    cg_repo_rollback(c);
    ck_assert_int_eq(version_of(c, g, h, CG_PART_STATE, NULL, 0), 3);

    /* a resource that does not exist is not found, not stale */
    CGT_EXPECT(CG_ENOTFOUND, cg_repo_part_update(&p, c, g, h + 1000, CG_PART_STATE, 1, "{}"));
    cg_repo_rollback(c);
    CGT_EXPECT(CG_ENOTFOUND, cg_repo_part_get(&p, c, g, h + 1000, CG_PART_STATE, 0));
    cg_repo_rollback(c);
    cg_repo_close(other);
    cg_repo_close(c);
}
END_TEST

/* ---- names ---------------------------------------------------------------------------- */

START_TEST(names_bind_look_up_list_and_unbind)
{
    const char *g = "repo-names";
    const char *bodies[CG_PART_COUNT] = {"{}", "{}", "{}"};
    int64_t inc, a, b, folder, target = -1;
    cg_conn *c = session(g, &inc);
    cg_name_list list;

    a = create(c, g, inc, NULL, "{}");
    b = create(c, g, inc, NULL, "{}");
    CGT_OK(cg_repo_resource_create(&folder, c, g, "folder", NULL, bodies));
    CGT_OK(cg_repo_name_bind(c, g, CG_ROOT_FOLDER, "zeta", a));
    CGT_OK(cg_repo_name_bind(c, g, CG_ROOT_FOLDER, "alpha", b));
    CGT_OK(cg_repo_name_bind(c, g, folder, "inner", a));
    commit(c, g, inc);

    CGT_OK(cg_repo_name_lookup(&target, c, g, CG_ROOT_FOLDER, "zeta"));
    ck_assert_int_eq(target, a);
    CGT_OK(cg_repo_name_lookup(&target, c, g, folder, "inner"));
    ck_assert_int_eq(target, a);
    CGT_OK(cg_repo_name_list(&list, NULL, c, g, CG_ROOT_FOLDER));
    ck_assert_uint_eq(list.n, 2);
    ck_assert_str_eq(list.entries[0].name, "alpha"); /* by name */
    ck_assert_int_eq(list.entries[0].target, b);
    ck_assert_str_eq(list.entries[1].name, "zeta");
    cg_name_list_dispose(&list);
    commit(c, g, inc);

    /* taken, missing target, missing folder, not a folder */
    CGT_EXPECT(CG_EEXISTS, cg_repo_name_bind(c, g, CG_ROOT_FOLDER, "zeta", b));
    cg_repo_rollback(c);
    CGT_EXPECT(CG_ENOTFOUND, cg_repo_name_bind(c, g, CG_ROOT_FOLDER, "ghost", b + 1000));
    cg_repo_rollback(c);
    CGT_EXPECT(CG_ENOTFOUND, cg_repo_name_bind(c, g, b + 1000, "x", a));
    cg_repo_rollback(c);
    CGT_EXPECT(CG_EINVALID, cg_repo_name_bind(c, g, a, "x", b));
    cg_repo_rollback(c);
    CGT_EXPECT(CG_EINVALID, cg_repo_name_list(&list, NULL, c, g, a));
    cg_repo_rollback(c);

    CGT_OK(cg_repo_name_unbind(c, g, CG_ROOT_FOLDER, "zeta"));
    commit(c, g, inc);
    CGT_EXPECT(CG_ENOTFOUND, cg_repo_name_lookup(&target, c, g, CG_ROOT_FOLDER, "zeta"));
    cg_repo_rollback(c);
    CGT_EXPECT(CG_ENOTFOUND, cg_repo_name_unbind(c, g, CG_ROOT_FOLDER, "zeta"));
    cg_repo_rollback(c);
    CGT_OK(cg_repo_name_list(&list, NULL, c, g, folder));
    ck_assert_uint_eq(list.n, 1);
    cg_name_list_dispose(&list);
    cg_repo_rollback(c);
    cg_repo_close(c);
}
END_TEST

/* ---- the outbox ----------------------------------------------------------------------- */

START_TEST(a_commit_with_items_appends_one_numbered_outbox_row)
{
    const char *g = "repo-outbox";
    int64_t inc, h, e0, seq = 0, at = 0, seq2 = 0;
    cg_conn *c = session(g, &inc);
    cg_outbox_rows rows;
    cg_part *p;

    h = create(c, g, inc, NULL, "{}");
    e0 = event_seq(c, g);
    ck_assert_int_eq(e0, 0); /* commits without items are no events */

    CGT_OK(cg_repo_part_update(&p, c, g, h, CG_PART_STATE, 1, "{\"n\":1}"));
    cg_part_free(p);
    CGT_OK(cg_repo_part_update(&p, c, g, h, CG_PART_DESCRIPTION, 1, "{\"d\":1}"));
    cg_part_free(p);
    {
        cg_bus_item items[2] = {{h, CG_PART_STATE, 2}, {h, CG_PART_DESCRIPTION, 2}};
        CGT_OK(cg_repo_commit(&seq, &at, c, g, CORE, inc, items, 2));
    }
    ck_assert_int_eq(seq, e0 + 1);
    ck_assert_int_gt(at, 0);
    ck_assert_int_eq(event_seq(c, g), seq);

    CGT_OK(cg_repo_part_update(&p, c, g, h, CG_PART_STATE, 2, "{\"n\":2}"));
    cg_part_free(p);
    {
        cg_bus_item item = {h, CG_PART_STATE, 3};
        CGT_OK(cg_repo_commit(&seq2, &at, c, g, CORE, inc, &item, 1));
    }
    ck_assert_int_eq(seq2, seq + 1); /* gap-free */
    ck_assert_int_eq(event_seq(c, g), seq2);

    /* (e0, seq2]: three items in event order, each with its event's number */
    CGT_OK(cg_repo_outbox_items(&rows, c, g, e0, seq2));
    ck_assert_uint_eq(rows.n, 3);
    ck_assert_int_eq(rows.seq[0], seq);
    ck_assert_int_eq(rows.seq[1], seq);
    ck_assert_int_eq(rows.seq[2], seq2);
    ck_assert_int_eq(rows.items[2].handle, h);
    ck_assert_int_eq(rows.items[2].kind, CG_PART_STATE);
    ck_assert_int_eq(rows.items[2].version, 3);
    ck_assert(rows.items[0].version == 2 && rows.items[1].version == 2);
    ck_assert(rows.items[0].kind != rows.items[1].kind);
    cg_outbox_rows_dispose(&rows);
    /* (seq, seq2]: only the second event; (seq2, seq2]: nothing */
    CGT_OK(cg_repo_outbox_items(&rows, c, g, seq, seq2));
    ck_assert_uint_eq(rows.n, 1);
    ck_assert_int_eq(rows.seq[0], seq2);
    cg_outbox_rows_dispose(&rows);
    CGT_OK(cg_repo_outbox_items(&rows, c, g, seq2, seq2));
    ck_assert_uint_eq(rows.n, 0);
    cg_outbox_rows_dispose(&rows);
    cg_repo_close(c);
}
END_TEST

START_TEST(the_audit_compares_cached_versions_in_one_statement)
{
    const char *g = "repo-audit";
    int64_t inc, h1, h2, h3, seq, at, deleted = 0;
    cg_conn *c = session(g, &inc);
    cg_repo_audit_row rows[6];
    cg_part *p;

    h1 = create(c, g, inc, NULL, "{}");
    h2 = create(c, g, inc, NULL, "{}");
    h3 = create(c, g, inc, NULL, "{}");
    CGT_OK(cg_repo_audit(rows, 0, c, g)); /* nothing to compare, nothing sent */

    /* h2's state moves to 2 and, a little later, to 3 (an outbox row each); h3 is deleted */
    CGT_OK(cg_repo_part_update(&p, c, g, h2, CG_PART_STATE, 1, "{\"n\":2}"));
    cg_part_free(p);
    {
        cg_bus_item item = {h2, CG_PART_STATE, 2};
        CGT_OK(cg_repo_commit(&seq, &at, c, g, CORE, inc, &item, 1));
    }
    usleep(50000);
    CGT_OK(cg_repo_part_update(&p, c, g, h2, CG_PART_STATE, 2, "{\"n\":3}"));
    cg_part_free(p);
    {
        cg_bus_item item = {h2, CG_PART_STATE, 3};
        CGT_OK(cg_repo_commit(&seq, &at, c, g, CORE, inc, &item, 1));
    }
    {
        cg_bus_item *items = NULL; /* each part at its version + 1, as a call invalidates it */
        size_t n = 0;
        CGT_OK(cg_repo_resource_delete(&items, &n, c, g, h3));
        ck_assert_uint_eq(n, CG_PART_COUNT);
        CGT_OK(cg_repo_commit(&seq, &at, c, g, CORE, inc, items, n));
        free(items);
    }

    memset(rows, 0, sizeof(rows));
    rows[0] = (cg_repo_audit_row){h1, CG_PART_STATE, 1, 0, 0};       /* consistent */
    rows[1] = (cg_repo_audit_row){h2, CG_PART_STATE, 1, 0, 0};       /* two versions behind */
    rows[2] = (cg_repo_audit_row){h2, CG_PART_STATE, 2, 0, 0};       /* one behind */
    rows[3] = (cg_repo_audit_row){h3, CG_PART_STATE, 1, 0, 0};       /* deleted */
    rows[4] = (cg_repo_audit_row){h1, CG_PART_DESCRIPTION, 5, 0, 0}; /* ahead of it */
    rows[5] = (cg_repo_audit_row){999999999, CG_PART_SPECIFICATION, 1, 0, 0}; /* never was */
    CGT_OK(cg_repo_audit(rows, 6, c, g));
    ck_assert_int_eq(rows[0].repository, 1);
    ck_assert_int_eq(rows[0].age_ms, -1);
    ck_assert_int_eq(rows[1].repository, 3);
    ck_assert_int_eq(rows[2].repository, 3);
    /* the age is the FIRST newer version's: version 2 for a cached 1, version 3 for a cached 2 */
    ck_assert_int_ge(rows[2].age_ms, 0);
    ck_assert_int_ge(rows[1].age_ms, rows[2].age_ms + 40);
    ck_assert_int_lt(rows[1].age_ms, 60000);
    ck_assert_int_eq(rows[3].repository, -1); /* gone */
    ck_assert_int_ge(rows[3].age_ms, 0);      /* when it went: the delete's outbox row */
    ck_assert_int_le(rows[3].age_ms, rows[2].age_ms);
    ck_assert_int_eq(rows[4].repository, 1); /* older than the cache: the caller's finding */
    ck_assert_int_eq(rows[4].age_ms, -1);
    ck_assert_int_eq(rows[5].repository, -1);
    ck_assert_int_eq(rows[5].age_ms, -1); /* gone, and no outbox row says when */

    /* the outbox pruned: the versions are still compared, the ages unknown */
    CGT_OK(cg_repo_outbox_prune(&deleted, c, g, 0, 100));
    ck_assert_int_eq(deleted, 3);
    CGT_OK(cg_repo_audit(rows, 6, c, g));
    ck_assert_int_eq(rows[1].repository, 3);
    ck_assert_int_eq(rows[1].age_ms, -1);
    ck_assert_int_eq(rows[3].repository, -1);
    ck_assert_int_eq(rows[3].age_ms, -1);
    ck_assert_int_eq(rows[0].repository, 1);
    cg_repo_close(c);
}
END_TEST

START_TEST(a_fenced_incarnation_commits_nothing)
{
    const char *g = "repo-fenced";
    int64_t inc, inc2 = 0, h, seq = 0, at = 0;
    cg_conn *c = session(g, &inc);
    cg_part *p;
    cg_bus_item item;

    h = create(c, g, inc, NULL, "{}");
    /* the member is taken over (as after a restart): inc is no longer current */
    CGT_OK(cg_repo_core_register(&inc2, c, g, CORE, "test-host", 2, inc));
    CGT_OK(cg_repo_part_update(&p, c, g, h, CG_PART_STATE, 1, "{\"late\":true}"));
    cg_part_free(p);
    item = (cg_bus_item){h, CG_PART_STATE, 2};
    CGT_EXPECT(CG_EFENCED, cg_repo_commit(&seq, &at, c, g, CORE, inc, &item, 1));
    ck_assert_int_eq(seq, 0);
    ck_assert(!c->in_tx); /* rolled back */
    ck_assert_int_eq(event_seq(c, g), 0);
    ck_assert_int_eq(version_of(c, g, h, CG_PART_STATE, NULL, 0), 1);
    /* the current incarnation commits */
    CGT_OK(cg_repo_part_update(&p, c, g, h, CG_PART_STATE, 1, "{\"late\":false}"));
    cg_part_free(p);
    CGT_OK(cg_repo_commit(&seq, &at, c, g, CORE, inc2, &item, 1));
    ck_assert_int_eq(seq, 1);
    cg_repo_close(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("repo");
    TCase *tc = tcase_create("sessions");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_session_belongs_to_one_group);
    tcase_add_test(tc, unreachable_is_retryable_and_a_bad_login_is_invalid);
    tcase_add_test(tc, registering_again_takes_the_row_over_with_a_new_incarnation);
    suite_add_tcase(s, tc);
    tc = tcase_create("resources");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, resource_create_get_find_and_delete);
    tcase_add_test(tc, an_aborted_create_leaves_nothing);
    suite_add_tcase(s, tc);
    tc = tcase_create("parts");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_conditional_update_moves_the_version_on);
    tcase_add_test(tc, a_stale_expected_version_is_estale_naming_both_versions);
    suite_add_tcase(s, tc);
    tc = tcase_create("names");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, names_bind_look_up_list_and_unbind);
    suite_add_tcase(s, tc);
    tc = tcase_create("outbox");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_commit_with_items_appends_one_numbered_outbox_row);
    tcase_add_test(tc, a_fenced_incarnation_commits_nothing);
    tcase_add_test(tc, the_audit_compares_cached_versions_in_one_statement);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
