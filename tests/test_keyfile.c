/*
 * test_keyfile.c — CURVE key files (invalidation/keyfile.c), the one reader behind a core's
 * [bus] keys and every program's key options: comment and blank lines are skipped, white space
 * around a key is ignored, anything else is refused naming the file and the line; and a core's
 * bus opened with key files that carry comment lines talks CURVE to a server (no repository:
 * the bus alone, against a CURVE PUB socket of the test's own). Error messages of the bus name
 * the [bus] key and the file.
 */
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zmq.h>

#include "bus.h"
#include "bustest.h"
#include "keyfile.h"
#include "testutil.h"

static char *dir;
static char srv_pub[41], srv_sec[41], cli_pub[41], cli_sec[41];

static void setup(void)
{
    dir = cgt_tmpdir();
    ck_assert_int_eq(zmq_curve_keypair(srv_pub, srv_sec), 0);
    ck_assert_int_eq(zmq_curve_keypair(cli_pub, cli_sec), 0);
}

static void teardown(void)
{
    free(dir);
}

/* Write `text` to DIR/name; returns the path (static buffer of 4, round robin). */
static const char *file(const char *name, const char *text)
{
    static char paths[4][1024];
    static int next;
    char *p = paths[next++ % 4];
    snprintf(p, sizeof(paths[0]), "%s/%s", dir, name);
    cgt_write_file(p, text);
    return p;
}

static void expect_key(const uint8_t got[32], const char *z85)
{
    uint8_t want[32];
    ck_assert_ptr_nonnull(zmq_z85_decode(want, z85));
    ck_assert_msg(memcmp(got, want, 32) == 0, "not the key %s", z85);
}

/* cg_keyfile_read must refuse `path` with CG_EINVALID and a message containing `want`. */
static void expect_refused(const char *path, const char *want)
{
    uint8_t key[32];
    int err = cg_keyfile_read(key, path);
    ck_assert_msg(err == CG_EINVALID, "%s: read, %d", path, err);
    ck_assert_msg(strstr(cg_error_last()->message, want) != NULL, "\"%s\" lacks \"%s\"",
                  cg_error_last()->message, want);
    ck_assert_msg(strstr(cg_error_last()->message, path) != NULL, "\"%s\" does not name %s",
                  cg_error_last()->message, path);
}

/* ---- the reader ----------------------------------------------------------------------- */

START_TEST(comment_and_blank_lines_are_skipped)
{
    char text[1400];
    uint8_t key[32];

    snprintf(text, sizeof(text), "# the forwarder's public key\n\n   \t\n  %s \t\r\n", srv_pub);
    CGT_OK(cg_keyfile_read(key, file("a.pub", text)));
    expect_key(key, srv_pub);

    /* as cg-busd --keygen writes it: the key and a newline; and without the newline */
    snprintf(text, sizeof(text), "%s\n", cli_sec);
    CGT_OK(cg_keyfile_read(key, file("b.key", text)));
    expect_key(key, cli_sec);
    CGT_OK(cg_keyfile_read(key, file("c.key", cli_sec)));
    expect_key(key, cli_sec);

    /* a comment longer than any line buffer is still one comment */
    memset(text, 'c', 1200);
    text[0] = '#';
    snprintf(text + 1200, sizeof(text) - 1200, "\n%s\n", cli_pub);
    CGT_OK(cg_keyfile_read(key, file("d.pub", text)));
    expect_key(key, cli_pub);

    /* the first key line is the file's key */
    snprintf(text, sizeof(text), "# two keys\n%s\n%s\n", cli_pub, srv_pub);
    CGT_OK(cg_keyfile_read(key, file("e.pub", text)));
    expect_key(key, cli_pub);
}
END_TEST

START_TEST(anything_else_is_refused_naming_the_file_and_line)
{
    char text[256], path[1100];

    snprintf(path, sizeof(path), "%s/no-such-file", dir);
    expect_refused(path, "cannot open");
    expect_refused(file("empty", ""), "holds no key");
    expect_refused(file("comments", "# only\n# comments\n\n"), "holds no key");
    snprintf(text, sizeof(text), "# a key cut short\n%.39s\n", srv_pub);
    expect_refused(file("short", text), "line 2: not a Z85 CURVE key (40 characters)");
    snprintf(text, sizeof(text), "%s~\n", srv_pub);
    expect_refused(file("long", text), "line 1: not a Z85 CURVE key");
    /* 40 characters, but not Z85 ('~' is not in its alphabet) */
    snprintf(text, sizeof(text), "\n\n~%.39s\n", srv_pub);
    expect_refused(file("alphabet", text), "line 3: not a Z85 CURVE key");
    /* a key with a trailing remark is not a key line */
    snprintf(text, sizeof(text), "%s # server\n", srv_pub);
    expect_refused(file("remark", text), "line 1: not a Z85 CURVE key");
}
END_TEST

START_TEST(a_client_list_is_every_key_in_order)
{
    char text[512];
    uint8_t(*keys)[32] = NULL;
    size_t n = 99;

    snprintf(text, sizeof(text), "# allowed cores\n%s\n\n  %s  \n# retired: none\n", cli_pub,
             srv_pub);
    CGT_OK(cg_keyfile_read_all(&keys, &n, file("clients", text)));
    ck_assert_uint_eq(n, 2);
    expect_key(keys[0], cli_pub);
    expect_key(keys[1], srv_pub);
    free(keys);

    /* comments only: no keys, and that is for the caller to judge */
    CGT_OK(cg_keyfile_read_all(&keys, &n, file("none", "# nobody yet\n")));
    ck_assert_uint_eq(n, 0);
    ck_assert_ptr_null(keys);

    /* one bad line spoils the list: nothing is returned */
    snprintf(text, sizeof(text), "%s\nnot-a-key\n%s\n", cli_pub, srv_pub);
    n = 99;
    CGT_EXPECT(CG_EINVALID, cg_keyfile_read_all(&keys, &n, file("bad", text)));
    ck_assert_ptr_null(keys);
    ck_assert_uint_eq(n, 0);
    ck_assert_msg(strstr(cg_error_last()->message, "line 2"), "%s", cg_error_last()->message);
}
END_TEST

/* ---- a core's bus --------------------------------------------------------------------- */

static atomic_llong applied_seq;

static void on_apply(void *ctx, int64_t seq, int64_t committed_us, const cg_bus_item *items,
                     size_t n)
{
    (void)ctx, (void)committed_us, (void)items, (void)n;
    atomic_store(&applied_seq, seq);
}

static int64_t on_catch_up(void *ctx, int64_t applied, int64_t upto)
{
    (void)ctx, (void)applied;
    return upto;
}

static cg_bus_options bus_options(const char *const *subscribe, const char *server, const char *pub,
                                  const char *sec)
{
    cg_bus_options o = CG_BUS_OPTIONS_INIT;
    o.group = "keyfile";
    o.origin = "kf-core";
    o.subscribe = subscribe;
    o.n_subscribe = 1;
    o.curve_server_key = server;
    o.curve_public_key = pub;
    o.curve_secret_key = sec;
    o.heartbeat_interval_ms = 1000;
    o.reorder_window_ms = 50;
    o.tick_ms = 50;
    return o;
}

START_TEST(a_core_bus_with_commented_key_files_talks_curve)
{
    char text[256], ep[64], server_path[1024], pub_path[1024], sec_path[1024];
    const char *subscribe[1] = {ep};
    cg_bus_handlers h = {NULL, on_apply, on_catch_up, NULL, NULL, NULL};
    cg_bus_options o;
    cg_bus *bus = NULL;
    void *ctx, *pub;
    int port, one = 1;
    int64_t until;

    if (!zmq_has("curve")) {
        fprintf(stderr, "test_keyfile: libzmq without CURVE, skipped\n");
        return;
    }
    /* every key file as an operator keeps it: a comment line above the key */
    snprintf(text, sizeof(text), "# forwarder A, public\n%s\n", srv_pub);
    snprintf(server_path, sizeof(server_path), "%s", file("server.pub", text));
    snprintf(text, sizeof(text), "# core kf-core, public\n\n%s\n", cli_pub);
    snprintf(pub_path, sizeof(pub_path), "%s", file("core.pub", text));
    snprintf(text, sizeof(text), "# core kf-core, secret: mode 0600\n  %s\n", cli_sec);
    snprintf(sec_path, sizeof(sec_path), "%s", file("core.key", text));

    /* the server: a CURVE PUB of the test's own (no ZAP handler: every client key is let in) */
    bt_free_ports(&port, 1);
    snprintf(ep, sizeof(ep), "tcp://127.0.0.1:%d", port);
    ctx = zmq_ctx_new();
    pub = bt_socket(ctx, ZMQ_PUB);
    ck_assert_int_eq(zmq_setsockopt(pub, ZMQ_CURVE_SERVER, &one, sizeof(one)), 0);
    ck_assert_int_eq(zmq_setsockopt(pub, ZMQ_CURVE_SECRETKEY, srv_sec, 41), 0);
    ck_assert_int_eq(zmq_bind(pub, ep), 0);

    o = bus_options(subscribe, server_path, pub_path, sec_path);
    atomic_store(&applied_seq, 0);
    CGT_OK(cg_bus_open(&bus, &o, &h));
    CGT_OK(cg_bus_start(bus, 0));
    /* only a completed CURVE handshake (the right server key, a valid pair) lets it through */
    until = bt_ms() + 5000;
    while (atomic_load(&applied_seq) == 0 && bt_ms() < until) {
        bt_send_inval(pub, "keyfile", "probe", 1);
        usleep(20000);
    }
    ck_assert_msg(atomic_load(&applied_seq) == 1, "nothing arrived over CURVE within 5 s");
    cg_bus_stop(bus);
    zmq_close(pub);
    zmq_ctx_term(ctx);
}
END_TEST

START_TEST(bus_key_errors_name_the_setting_and_the_file)
{
    char text[256], ep[] = "tcp://127.0.0.1:1", server_path[1024], missing[1100];
    const char *subscribe[1] = {ep};
    cg_bus_handlers h = {NULL, on_apply, on_catch_up, NULL, NULL, NULL};
    cg_bus_options o;
    cg_bus *bus = NULL;
    const char *bad, *msg;

    snprintf(text, sizeof(text), "%s\n", srv_pub);
    snprintf(server_path, sizeof(server_path), "%s", file("ok.pub", text));
    snprintf(text, sizeof(text), "# secret\n%.30s\n", cli_sec);
    bad = file("bad.key", text);
    o = bus_options(subscribe, server_path, server_path, bad);
    CGT_EXPECT(CG_EINVALID, cg_bus_open(&bus, &o, &h));
    ck_assert_ptr_null(bus);
    msg = cg_error_last()->message;
    ck_assert_msg(strncmp(msg, "[bus] curve_secret_key: ", 24) == 0 && strstr(msg, bad) &&
                      strstr(msg, "line 2: not a Z85 CURVE key"),
                  "%s", msg);

    snprintf(missing, sizeof(missing), "%s/missing.pub", dir);
    o = bus_options(subscribe, missing, server_path, server_path);
    CGT_EXPECT(CG_EINVALID, cg_bus_open(&bus, &o, &h));
    msg = cg_error_last()->message;
    ck_assert_msg(strncmp(msg, "[bus] curve_server_key: cannot open ", 36) == 0 &&
                      strstr(msg, missing),
                  "%s", msg);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("keyfile");
    TCase *tc = tcase_create("reader");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, comment_and_blank_lines_are_skipped);
    tcase_add_test(tc, anything_else_is_refused_naming_the_file_and_line);
    tcase_add_test(tc, a_client_list_is_every_key_in_order);
    suite_add_tcase(s, tc);
    tc = tcase_create("bus");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_core_bus_with_commented_key_files_talks_curve);
    tcase_add_test(tc, bus_key_errors_name_the_setting_and_the_file);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
