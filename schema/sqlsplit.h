/*
 * sqlsplit.h — split a migration file into statements (private).
 */
#ifndef CG_SQLSPLIT_H
#define CG_SQLSPLIT_H

#include <stddef.h>

typedef struct {
    char *sql;     /* the statement, without its terminating semicolon */
    int line;      /* line of the file where it starts (1-based) */
    size_t offset; /* byte offset in the file where `sql` starts */
} cg_sql_stmt;

typedef struct {
    cg_sql_stmt *stmts;
    size_t n;
} cg_sql_script;

/*
 * Split SQL text into statements at top-level semicolons, honouring '...' and E'...' strings,
 * "..." identifiers, $tag$...$tag$ bodies, -- and nested block comments. Statements made only of
 * white space and comments are dropped. Transaction control (BEGIN, COMMIT, ROLLBACK, START,
 * END, SAVEPOINT, RELEASE) is refused: the runner owns the transaction.
 *
 * A pure function. On success fills *out (free with cg_sql_script_dispose()) and returns 0;
 * on failure returns CG_EINVALID with "source:line: ..." in cg_error_last() and *out empty.
 */
int cg_sql_split(cg_sql_script *out, const char *text, size_t len, const char *source);

/* Free the statements of a script and empty it. Accepts an empty script. */
void cg_sql_script_dispose(cg_sql_script *script);

#endif
