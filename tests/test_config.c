/*
 * test_config.c — repository.ini: what parses, what defaults apply, and that every kind of
 * bad input is refused with the file, the line and the key named.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "coregroup.h"
#include "testutil.h"

static cg_config *parse_ok(const char *text)
{
    cg_config *cfg = NULL;
    int err = cg_config_parse(&cfg, text, strlen(text), "test.ini");
    ck_assert_msg(err == 0, "parse failed: %s", cg_error_last()->message);
    ck_assert_ptr_nonnull(cfg);
    return cfg;
}

/* Parse text that must fail with CG_EINVALID and a message containing every `want`. */
static void parse_bad(const char *text, const char *want1, const char *want2)
{
    cg_config *cfg = (cg_config *)1;
    int err = cg_config_parse(&cfg, text, strlen(text), "test.ini");
    const char *msg = cg_error_last()->message;
    ck_assert_int_eq(err, CG_EINVALID);
    ck_assert_ptr_null(cfg);
    ck_assert_int_eq(cg_error_last()->klass, CG_ERRCLASS_CONFIG);
    ck_assert_msg(strstr(msg, want1) != NULL, "\"%s\" not in \"%s\"", want1, msg);
    if (want2)
        ck_assert_msg(strstr(msg, want2) != NULL, "\"%s\" not in \"%s\"", want2, msg);
}

#define MINIMAL "[repository]\ndsn = dbname=x\n[core]\nname = core-a\n"

START_TEST(full_file)
{
    cg_config *cfg = parse_ok("; comment\n"
                              "[repository]\n"
                              "dsn = host=db port=5433 dbname=cg\n"
                              "pool_size = 8\n"
                              "[core]\n"
                              "name = core-a\n"
                              "group = payments\n"
                              "[bus]\n"
                              "publish = tcp://127.0.0.1:1, tcp://127.0.0.1:2\n"
                              "subscribe = tcp://127.0.0.1:3 tcp://127.0.0.1:4\n"
                              "poll_interval_ms = 250\n"
                              "[retry]\n"
                              "attempts = 3\n"
                              "interval_ms = 100\n"
                              "sqlstates = 08, 40001 53300\n"
                              "[cache]\n"
                              "strategy = version-check\n"
                              "max_entries = 5000\n"
                              "ttl_ms = 60000\n");
    ck_assert_str_eq(cfg->dsn, "host=db port=5433 dbname=cg");
    ck_assert_int_eq(cfg->pool_size, 8);
    ck_assert_str_eq(cfg->core_name, "core-a");
    ck_assert_str_eq(cfg->group_id, "payments");
    ck_assert_int_eq(cfg->group_is_private, 0);
    ck_assert_uint_eq(cfg->n_publish, 2);
    ck_assert_str_eq(cfg->publish[1], "tcp://127.0.0.1:2");
    ck_assert_uint_eq(cfg->n_subscribe, 2);
    ck_assert_str_eq(cfg->subscribe[0], "tcp://127.0.0.1:3");
    ck_assert_int_eq(cfg->poll_interval_ms, 250);
    ck_assert_int_eq(cfg->retry_attempts, 3);
    ck_assert_int_eq(cfg->retry_interval_ms, 100);
    ck_assert_uint_eq(cfg->n_sqlstates, 3);
    ck_assert_str_eq(cfg->sqlstates[2], "53300");
    ck_assert_int_eq(cfg->strategy, CG_CACHE_VERSION_CHECK);
    ck_assert_int_eq(cfg->max_entries, 5000);
    ck_assert_int_eq(cfg->ttl_ms, 60000);
    cg_config_free(cfg);
}
END_TEST

START_TEST(defaults_and_private_group)
{
    cg_config *cfg = parse_ok(MINIMAL);
    ck_assert_str_eq(cfg->group_id, "private.core-a");
    ck_assert_int_eq(cfg->group_is_private, 1);
    ck_assert_int_eq(cfg->pool_size, 4);
    ck_assert_int_eq(cfg->retry_attempts, 5);
    ck_assert_uint_eq(cfg->n_sqlstates, 6);
    ck_assert_str_eq(cfg->sqlstates[0], "08");
    ck_assert_int_eq(cfg->strategy, CG_CACHE_INVALIDATE);
    ck_assert_int_eq(cfg->max_entries, 100000);
    ck_assert_int_eq(cfg->ttl_ms, 0);
    cg_config_free(cfg);
    /* the same name gives the same private group: data stays its own across restarts */
    cfg = parse_ok(MINIMAL);
    ck_assert_str_eq(cfg->group_id, "private.core-a");
    cg_config_free(cfg);
}
END_TEST

START_TEST(missing_required)
{
    parse_bad("[core]\nname = a\n", "test.ini: [repository] dsn", "required");
    parse_bad("[repository]\ndsn = x\n", "test.ini: [core] name", "required");
    parse_bad("", "[repository] dsn", "required");
}
END_TEST

START_TEST(unknown_key_and_section)
{
    parse_bad(MINIMAL "[cache]\nmax_entires = 5\n", "test.ini:6: [cache] max_entires",
              "unknown key");
    parse_bad(MINIMAL "[cahce]\nmax_entries = 5\n", "test.ini:6: [cahce] max_entries",
              "unknown section");
    parse_bad("dsn = x\n" MINIMAL, "test.ini:1: dsn", "outside any section");
}
END_TEST

START_TEST(wrong_type_and_range)
{
    parse_bad(MINIMAL "[cache]\nmax_entries = lots\n", "test.ini:6: [cache] max_entries",
              "got \"lots\"");
    parse_bad(MINIMAL "[cache]\nmax_entries = 0\n", "test.ini:6: [cache] max_entries", "from 1 to");
    parse_bad(MINIMAL "[cache]\nttl_ms = 1.5\n", "test.ini:6: [cache] ttl_ms", "got \"1.5\"");
}
END_TEST

START_TEST(more_wrong_values)
{
    parse_bad(MINIMAL "[retry]\nattempts = -1\n", "test.ini:6: [retry] attempts", "from 0 to 1000");
    parse_bad(MINIMAL "[retry]\ninterval_ms = 12abc\n", "test.ini:6: [retry] interval_ms", "12abc");
    parse_bad(MINIMAL "[retry]\nsqlstates = 08, 4000\n", "test.ini:6: [retry] sqlstates",
              "\"4000\"");
    parse_bad(MINIMAL "[retry]\nsqlstates = 08, 40p01\n", "[retry] sqlstates", "40p01");
    parse_bad(MINIMAL "[cache]\nstrategy = sometimes\n", "test.ini:6: [cache] strategy",
              "sometimes");
    parse_bad(MINIMAL "[bus]\npublish = localhost:5555\n", "test.ini:6: [bus] publish",
              "not a ZeroMQ endpoint");
    parse_bad("[repository]\ndsn = x\n[core]\nname = -bad\n", "test.ini:4: [core] name",
              "not a valid name");
    parse_bad(MINIMAL "group = private.other\n", "test.ini:5: [core] group", "reserved");
    parse_bad(MINIMAL "[repository]\npool_size = 65\n", "test.ini:6: [repository] pool_size",
              "from 1 to 64");
}
END_TEST

START_TEST(bad_lines)
{
    parse_bad(MINIMAL "this is not ini\n", "test.ini:5:", "syntax error");
    parse_bad(MINIMAL "[core\n", "test.ini:5:", "syntax error");
    parse_bad(MINIMAL "name = core-b\n", "test.ini:5: [core] name", "set twice (first at line 4)");
}
END_TEST

START_TEST(long_line_is_refused_not_cut)
{
    char text[4096];
    char longdsn[1500];
    memset(longdsn, 'a', sizeof(longdsn) - 1);
    longdsn[sizeof(longdsn) - 1] = '\0';
    snprintf(text, sizeof(text), "[core]\nname = a\n[repository]\ndsn = dbname=%s\n", longdsn);
    parse_bad(text, "test.ini:4:", "too long");
}
END_TEST

START_TEST(nul_byte)
{
    const char text[] = "[repository]\ndsn = x\0y\n[core]\nname = a\n";
    cg_config *cfg = NULL;
    ck_assert_int_eq(cg_config_parse(&cfg, text, sizeof(text) - 1, "nul.ini"), CG_EINVALID);
    ck_assert_ptr_null(cfg);
    ck_assert_msg(strstr(cg_error_last()->message, "nul.ini:2: NUL") != NULL, "%s",
                  cg_error_last()->message);
}
END_TEST

START_TEST(load_files)
{
    char path[512];
    cg_config *cfg = NULL;
    char *dir = cgt_tmpdir();

    snprintf(path, sizeof(path), "%s/none.ini", dir);
    ck_assert_int_eq(cg_config_load(&cfg, path), CG_ENOTFOUND);
    ck_assert_msg(strstr(cg_error_last()->message, path) != NULL, "%s", cg_error_last()->message);

    snprintf(path, sizeof(path), "%s/repository.ini", dir);
    cgt_write_file(path, MINIMAL "[cache]\nttl_ms = soon\n");
    ck_assert_int_eq(cg_config_load(&cfg, path), CG_EINVALID);
    ck_assert_msg(strstr(cg_error_last()->message, "repository.ini:6: [cache] ttl_ms") != NULL,
                  "%s", cg_error_last()->message);

    /* the shipped, documented example parses */
    snprintf(path, sizeof(path), "%s/repository.ini.example", cgt_source_dir());
    ck_assert_msg(cg_config_load(&cfg, path) == 0, "%s", cg_error_last()->message);
    ck_assert_str_eq(cfg->group_id, "payments");
    ck_assert_uint_eq(cfg->n_publish, 2);
    cg_config_free(cfg);
    free(dir);
}
END_TEST

/* [daemon] metrics_listen: HOST:PORT (coregroup/sys/hostport.h), refused with file, line, key */
START_TEST(metrics_listen_is_host_and_port)
{
    static const char *const good[] = {"127.0.0.1:9101", "[::1]:9101", "metrics.example:1",
                                       "0.0.0.0:65535"};
    static const char *const bad[] = {"localhost",     "127.0.0.1:", ":9101",     "127.0.0.1:0",
                                      "1.2.3.4:65536", "::1:9101",   "[::1]9101", "[]:1",
                                      "a/b:1",         "1.2.3.4:9x"};
    char text[400];
    size_t i;

    for (i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        cg_config *cfg;
        snprintf(text, sizeof(text), MINIMAL "[daemon]\nmetrics_listen = %s\n", good[i]);
        cfg = parse_ok(text);
        ck_assert_str_eq(cfg->metrics_listen, good[i]);
        cg_config_free(cfg);
    }
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        snprintf(text, sizeof(text), MINIMAL "[daemon]\nmetrics_listen = %s\n", bad[i]);
        parse_bad(text, "test.ini:6: [daemon] metrics_listen", bad[i]);
    }
    {
        cg_config *cfg = parse_ok(MINIMAL);
        ck_assert_ptr_null(cfg->metrics_listen); /* unset: no endpoint */
        cg_config_free(cfg);
    }
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");
    TCase *tc = tcase_create("parse");
    tcase_add_test(tc, full_file);
    tcase_add_test(tc, defaults_and_private_group);
    suite_add_tcase(s, tc);
    tc = tcase_create("bad-input");
    tcase_add_test(tc, missing_required);
    tcase_add_test(tc, unknown_key_and_section);
    tcase_add_test(tc, wrong_type_and_range);
    tcase_add_test(tc, more_wrong_values);
    tcase_add_test(tc, bad_lines);
    tcase_add_test(tc, long_line_is_refused_not_cut);
    tcase_add_test(tc, nul_byte);
    tcase_add_test(tc, metrics_listen_is_host_and_port);
    suite_add_tcase(s, tc);
    tc = tcase_create("files");
    tcase_add_test(tc, load_files);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return cgt_run_suite(config_suite());
}
