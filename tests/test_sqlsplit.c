/*
 * test_sqlsplit.c — splitting migration files into statements: every quoting form keeps its
 * semicolons, lines are right, and malformed files are refused with the line named.
 */
#include <stdlib.h>
#include <string.h>

#include "coregroup.h"
#include "sqlsplit.h"
#include "testutil.h"

static cg_sql_script split_ok(const char *text)
{
    cg_sql_script s;
    int err = cg_sql_split(&s, text, strlen(text), "m.sql");
    ck_assert_msg(err == 0, "%s", cg_error_last()->message);
    return s;
}

START_TEST(plain_statements)
{
    cg_sql_script s = split_ok("CREATE TABLE a (x int);\n\n-- comment; not a statement\n"
                               "CREATE TABLE b (y int);\n/* block; */ SELECT 1");
    ck_assert_uint_eq(s.n, 3);
    ck_assert_str_eq(s.stmts[0].sql, "CREATE TABLE a (x int)");
    ck_assert_int_eq(s.stmts[0].line, 1);
    ck_assert_str_eq(s.stmts[1].sql, "CREATE TABLE b (y int)");
    ck_assert_int_eq(s.stmts[1].line, 4);
    ck_assert_str_eq(s.stmts[2].sql, "SELECT 1");
    ck_assert_int_eq(s.stmts[2].line, 5);
    cg_sql_script_dispose(&s);
}
END_TEST

START_TEST(quoting_keeps_semicolons)
{
    cg_sql_script s = split_ok("SELECT 'a;b', 'it''s;', E'x\\';y', \"we;ird\";\n"
                               "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\n"
                               "DO $body$ BEGIN PERFORM 1; END $body$;\n"
                               "SELECT $1::int; /* a /* nested; */ comment */ SELECT 2;");
    ck_assert_uint_eq(s.n, 5);
    ck_assert_str_eq(s.stmts[0].sql, "SELECT 'a;b', 'it''s;', E'x\\';y', \"we;ird\"");
    ck_assert(strstr(s.stmts[1].sql, "SELECT 1; $$") != NULL);
    ck_assert_int_eq(s.stmts[2].line, 3);
    ck_assert_str_eq(s.stmts[3].sql, "SELECT $1::int");
    ck_assert_str_eq(s.stmts[4].sql, "SELECT 2");
    cg_sql_script_dispose(&s);
}
END_TEST

static void split_bad(const char *text, const char *want)
{
    cg_sql_script s;
    ck_assert_int_eq(cg_sql_split(&s, text, strlen(text), "m.sql"), CG_EINVALID);
    ck_assert_uint_eq(s.n, 0);
    ck_assert_msg(strstr(cg_error_last()->message, want) != NULL, "\"%s\" not in \"%s\"", want,
                  cg_error_last()->message);
}

START_TEST(malformed)
{
    split_bad("SELECT 1;\nSELECT 'oops;\n", "m.sql:2: unterminated string");
    split_bad("SELECT 1;\n\nSELECT \"x;\n", "m.sql:3: unterminated quoted identifier");
    split_bad("SELECT 1; /* never closed", "m.sql:1: unterminated block comment");
    split_bad("DO $$ BEGIN\nEND;", "m.sql:1: unterminated dollar-quoted string");
    split_bad("CREATE TABLE a (x int);\nCOMMIT;", "m.sql:2: transaction control");
    split_bad("begin;\nCREATE TABLE a (x int);", "m.sql:1: transaction control");
}
END_TEST

START_TEST(empty_and_comments_only)
{
    cg_sql_script s = split_ok("-- nothing here\n/* nor here */\n;;\n");
    ck_assert_uint_eq(s.n, 0);
    cg_sql_script_dispose(&s);
}
END_TEST

START_TEST(keyword_at_the_very_end_is_not_overread)
{
    /* Found by fuzz_sqlsplit: a first word ending exactly at the end of an input that is not
     * NUL-terminated was read one byte past it. An exact-size heap copy lets the sanitizer
     * build catch any read beyond. */
    static const char text[] = "SELECT 1;\nBEGIN";
    char *exact = malloc(sizeof(text) - 1);
    cg_sql_script s;
    memcpy(exact, text, sizeof(text) - 1);
    ck_assert_int_eq(cg_sql_split(&s, exact, sizeof(text) - 1, "m.sql"), CG_EINVALID);
    ck_assert(strstr(cg_error_last()->message, "m.sql:2: transaction control") != NULL);
    free(exact);
    exact = malloc(16);
    memcpy(exact, "SELECT 1;\nVALUES", 16);
    ck_assert_int_eq(cg_sql_split(&s, exact, 16, "m.sql"), 0);
    ck_assert_uint_eq(s.n, 2);
    ck_assert_str_eq(s.stmts[1].sql, "VALUES");
    cg_sql_script_dispose(&s);
    free(exact);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("sqlsplit");
    TCase *tc = tcase_create("split");
    tcase_add_test(tc, plain_statements);
    tcase_add_test(tc, quoting_keeps_semicolons);
    tcase_add_test(tc, empty_and_comments_only);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_add_test(tc, malformed);
    tcase_add_test(tc, keyword_at_the_very_end_is_not_overread);
    suite_add_tcase(s, tc);
    return cgt_run_suite(s);
}
