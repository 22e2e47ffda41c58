/*
 * test_concurrency.c — many writers against one repository, as fixed-order scenarios in the
 * manner of PostgreSQL's isolation tester:
 *  - no lost update (I2): 4 processes x 4 threads increment one counter 500 times in all with
 *    read -> update-with-version -> retry on stale; the final counter equals the number of
 *    successful commits, and stale errors were really seen;
 *  - the root-folder race (e-Speak design §2.7.3): two cores bind different names in the root
 *    folder at the same time and both bindings survive; the same name: exactly one wins and
 *    the other gets "exists".
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "testutil.h"

#define PROCS      4
#define THREADS    4
#define INCREMENTS 500

static char *dsn;

static void setup(void)
{
    dsn = cgt_createdb("conc", 1);
}

static void teardown(void)
{
    free(dsn);
}

/* Shared between the processes (MAP_SHARED). */
typedef struct {
    atomic_int claimed;   /* increments handed out so far */
    atomic_int committed; /* increments that committed */
    atomic_int stale;     /* stale errors seen */
    atomic_int failed;    /* calls that gave up or failed otherwise */
    int64_t handle;
} shared_state;

typedef struct {
    shared_state *sh;
    cg_core *core;
} worker;

/* One increment as one call: read the counter, write it + 1 based on the version read. */
static int increment(cg_call *call, void *arg)
{
    worker *w = arg;
    const cg_part *p; /* lent by the call */
    cJSON *j;
    char body[64];
    int64_t v;
    int err, n;
    if ((err = cg_part_get(&p, call, w->sh->handle, CG_PART_STATE)) < 0)
        return err;
    j = cg_part_json(p);
    n = cJSON_GetObjectItem(j, "n")->valueint;
    cJSON_Delete(j);
    snprintf(body, sizeof(body), "{\"n\":%d}", n + 1);
    err = cg_part_update(&v, call, w->sh->handle, CG_PART_STATE, cg_part_version(p), body);
    if (err == CG_ESTALE)
        atomic_fetch_add(&w->sh->stale, 1);
    return err;
}

static void *work(void *arg)
{
    worker *w = arg;
    cg_retry_options o = CG_RETRY_OPTIONS_INIT;
    o.max_attempts = 1000;
    o.base_delay_ms = 1;
    o.max_delay_ms = 20;
    while (atomic_fetch_add(&w->sh->claimed, 1) < INCREMENTS) {
        if (cg_call_run(w->core, increment, w, &o, NULL) == 0)
            atomic_fetch_add(&w->sh->committed, 1);
        else
            atomic_fetch_add(&w->sh->failed, 1);
    }
    return NULL;
}

static void child(shared_state *sh, int id)
{
    char name[32];
    cg_config *cfg;
    cg_core *core = NULL;
    pthread_t t[THREADS];
    worker w = {sh, NULL};
    int i;
    snprintf(name, sizeof(name), "writer-%d", id);
    cfg = cgt_core_config(dsn, name, "g-race");
    cfg->pool_size = THREADS;
    if (cg_core_open_config(&core, cfg) < 0) {
        fprintf(stderr, "%s: %s\n", name, cg_error_last()->message);
        _exit(1);
    }
    cg_config_free(cfg);
    w.core = core;
    for (i = 0; i < THREADS; i++)
        pthread_create(&t[i], NULL, work, &w);
    for (i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    cg_core_close(core);
    _exit(0);
}

START_TEST(no_lost_update)
{
    shared_state *sh =
        mmap(NULL, sizeof(*sh), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    cg_core *setup_core = cgt_core_open(dsn, "race-setup", "g-race");
    cg_resource_options o = CG_RESOURCE_OPTIONS_INIT;
    cg_call *call;
    pid_t pids[PROCS];
    PGconn *dba;
    char *final;
    int i, status;

    ck_assert(sh != MAP_FAILED);
    memset(sh, 0, sizeof(*sh));
    o.state = "{\"n\":0}";
    CGT_OK(cg_call_begin(&call, setup_core));
    CGT_OK(cg_resource_create(&sh->handle, call, &o));
    CGT_OK(cg_call_commit(call));
    cg_core_close(setup_core);

    for (i = 0; i < PROCS; i++)
        if ((pids[i] = fork()) == 0)
            child(sh, i);
    for (i = 0; i < PROCS; i++) {
        ck_assert_int_eq(waitpid(pids[i], &status, 0), pids[i]);
        ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "writer %d failed", i);
    }

    dba = cgt_connect(dsn);
    {
        char sql[256];
        snprintf(sql, sizeof(sql),
                 "SELECT (body->>'n') || '/' || version FROM resource_parts WHERE group_id = "
                 "'g-race' AND handle = %lld AND part = 'state'",
                 (long long)sh->handle);
        final = cgt_query1(dba, sql);
    }
    {
        char want[64];
        snprintf(want, sizeof(want), "%d/%d", atomic_load(&sh->committed),
                 atomic_load(&sh->committed) + 1);
        ck_assert_msg(strcmp(final, want) == 0, "counter/version %s, but %d commits", final,
                      atomic_load(&sh->committed));
    }
    ck_assert_int_eq(atomic_load(&sh->committed), INCREMENTS);
    ck_assert_int_eq(atomic_load(&sh->failed), 0);
    ck_assert_msg(atomic_load(&sh->stale) > 0, "no stale error was seen: the race never happened");
    printf("no_lost_update: %d commits, %d stale errors retried\n", atomic_load(&sh->committed),
           atomic_load(&sh->stale));
    free(final);
    PQfinish(dba);
    munmap(sh, sizeof(*sh));
}
END_TEST

typedef struct {
    cg_core *core;
    const char *name;
    int64_t target;
    int bind_result, commit_result;
    atomic_int bound; /* the bind statement returned */
} binder;

static void *bind_and_commit(void *arg)
{
    binder *b = arg;
    cg_call *call;
    cg_call_begin(&call, b->core);
    b->bind_result = cg_name_bind(call, CG_ROOT_FOLDER, b->name, b->target);
    atomic_store(&b->bound, 1);
    b->commit_result = cg_call_commit(call);
    return NULL;
}

START_TEST(root_folder_race)
{
    cg_core *a = cgt_core_open(dsn, "root-a", "g-root"),
            *b = cgt_core_open(dsn, "root-b", "g-root");
    int64_t ha = cgt_create(a), hb = cgt_create(b), target;
    cg_name_list list;
    cg_call *ca, *check;
    binder second;
    pthread_t t;
    int i;

    /* Step 1: a binds "alpha" and holds its transaction open.
     * Step 2: b binds "beta" meanwhile (it must not wait for a) and commits.
     * Step 3: a commits. Both names are there. */
    CGT_OK(cg_call_begin(&ca, a));
    CGT_OK(cg_name_bind(ca, CG_ROOT_FOLDER, "alpha", ha));
    second = (binder){b, "beta", hb, -99, -99, 0};
    pthread_create(&t, NULL, bind_and_commit, &second);
    pthread_join(t, NULL);
    CGT_OK(second.bind_result);
    CGT_OK(second.commit_result);
    CGT_OK(cg_call_commit(ca));

    /* Step 1: a binds "gamma" and holds its transaction open.
     * Step 2: b binds "gamma" too: it must wait for a's outcome.
     * Step 3: a commits; b's bind returns "exists". */
    CGT_OK(cg_call_begin(&ca, a));
    CGT_OK(cg_name_bind(ca, CG_ROOT_FOLDER, "gamma", ha));
    second = (binder){b, "gamma", hb, -99, -99, 0};
    pthread_create(&t, NULL, bind_and_commit, &second);
    for (i = 0; i < 20; i++)
        usleep(10000);
    ck_assert_int_eq(atomic_load(&second.bound), 0); /* b waits on a's uncommitted binding */
    CGT_OK(cg_call_commit(ca));
    pthread_join(t, NULL);
    CGT_EXPECT(CG_EEXISTS, second.bind_result);
    CGT_OK(second.commit_result); /* "exists" did not break b's call */

    CGT_OK(cg_call_begin(&check, b));
    CGT_OK(cg_name_list_get(&list, check, CG_ROOT_FOLDER));
    ck_assert_uint_eq(list.n, 3);
    ck_assert_str_eq(list.entries[0].name, "alpha");
    ck_assert_str_eq(list.entries[1].name, "beta");
    ck_assert_str_eq(list.entries[2].name, "gamma");
    cg_name_list_dispose(&list);
    CGT_OK(cg_name_lookup(&target, check, CG_ROOT_FOLDER, "gamma"));
    ck_assert_int_eq(target, ha); /* the winner's binding, not a mix */
    CGT_OK(cg_call_commit(check));
    cg_core_close(a);
    cg_core_close(b);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("concurrency");
    TCase *tc = tcase_create("writers");
    tcase_add_unchecked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, no_lost_update);
    tcase_add_test(tc, root_folder_race);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
