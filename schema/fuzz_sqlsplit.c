/*
 * fuzz_sqlsplit.c — libFuzzer target for cg_sql_split(), the decoder of migration files.
 *
 * Built only with -DCG_FUZZ=ON (clang). The input is a migration file's bytes, not
 * NUL-terminated. The splitter must return 0 or CG_EINVALID (CG_ERROR only when memory runs
 * out), never crash, never read outside the buffer and never leak. Every statement it returns
 * must lie inside the input: its offset within the text and its SQL a copy of bytes found
 * there, non-empty.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "coregroup/errors.h"
#include "sqlsplit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cg_sql_script script;
    size_t i, n;
    int err = cg_sql_split(&script, (const char *)data, size, "fuzz.sql");
    if (err == 0) {
        for (i = 0; i < script.n; i++) {
            const cg_sql_stmt *st = &script.stmts[i];
            n = strlen(st->sql);
            if (n == 0 || st->line < 1 || st->offset + n > size ||
                memcmp(data + st->offset, st->sql, n) != 0)
                abort();
        }
    } else if ((err != CG_EINVALID && err != CG_ERROR) || script.n != 0) {
        abort();
    }
    cg_sql_script_dispose(&script);
    return 0;
}
