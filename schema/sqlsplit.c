/*
 * sqlsplit.c — split a migration file into statements.
 *
 * The migration runner executes a file one statement at a time so that a failure can name the
 * statement and its line (PostgreSQL reports positions relative to the string it was sent).
 * This is a lexer, not a parser: it knows exactly the token kinds in which a semicolon does not
 * end a statement — quoted strings (with '' doubling, and backslash escapes in E'' strings),
 * quoted identifiers, dollar-quoted bodies ($$ or $tag$; "$1" is a parameter, not a quote),
 * line comments and nested block comments. Anything unterminated at the end of the file is an
 * error naming the line where it began. It never executes anything.
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "coregroup/sys/error.h"
#include "sqlsplit.h"

typedef struct {
    const char *text;
    size_t len;
    const char *source;
    cg_sql_script *out;
    size_t cap;
} splitter;

void cg_sql_script_dispose(cg_sql_script *script)
{
    size_t i;
    if (script == NULL)
        return;
    for (i = 0; i < script->n; i++)
        free(script->stmts[i].sql);
    free(script->stmts);
    script->stmts = NULL;
    script->n = 0;
}

static int line_at(const char *text, size_t pos)
{
    int line = 1;
    size_t i;
    for (i = 0; i < pos; i++)
        if (text[i] == '\n')
            line++;
    return line;
}

static int is_ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_';
}

/* The offset just after the (nested) block comment that starts at i, or NOT_CLOSED. */
#define NOT_CLOSED ((size_t)-1)
static size_t block_comment_end(const char *t, size_t i, size_t end)
{
    int depth = 0;
    while (i < end) {
        if (t[i] == '/' && i + 1 < end && t[i + 1] == '*') {
            depth++;
            i += 2;
        } else if (t[i] == '*' && i + 1 < end && t[i + 1] == '/') {
            i += 2;
            if (--depth == 0)
                return i;
        } else {
            i++;
        }
    }
    return NOT_CLOSED;
}

/* Skip white space and comments from `i` (within [i, end)); returns the first other offset. */
static size_t skip_blank(const char *t, size_t i, size_t end)
{
    while (i < end) {
        if (isspace((unsigned char)t[i])) {
            i++;
        } else if (t[i] == '-' && i + 1 < end && t[i + 1] == '-') {
            while (i < end && t[i] != '\n')
                i++;
        } else if (t[i] == '/' && i + 1 < end && t[i + 1] == '*') {
            i = block_comment_end(t, i, end);
            if (i == NOT_CLOSED)
                return end;
        } else {
            break;
        }
    }
    return i;
}

/* Whether the statement s[0..len) starts with a transaction-control keyword. The text is not
 * NUL-terminated: a last statement ending in its first word ends at the end of the buffer. */
static int transaction_control(const char *s, size_t len)
{
    static const char *words[] = {"BEGIN", "COMMIT",    "ROLLBACK", "START",
                                  "END",   "SAVEPOINT", "RELEASE",  "ABORT"};
    size_t i, n = 0;
    while (n < len && is_ident_char(s[n]))
        n++;
    for (i = 0; i < sizeof(words) / sizeof(words[0]); i++)
        if (strlen(words[i]) == n && strncasecmp(s, words[i], n) == 0)
            return 1;
    return 0;
}

static int emit(splitter *sp, size_t start, size_t end)
{
    size_t first = skip_blank(sp->text, start, end);
    cg_sql_stmt *st;

    if (first >= end)
        return 0; /* only blanks and comments */
    while (end > first && isspace((unsigned char)sp->text[end - 1]))
        end--;
    if (transaction_control(sp->text + first, end - first))
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_MIGRATION,
                            "%s:%d: transaction control is not allowed in a migration (the runner "
                            "runs each migration in its own transaction)",
                            sp->source, line_at(sp->text, first));
    if (sp->out->n == sp->cap) {
        size_t ncap = sp->cap ? sp->cap * 2 : 16;
        cg_sql_stmt *ns = realloc(sp->out->stmts, ncap * sizeof(*ns));
        if (ns == NULL)
            return cg_error_nomem();
        sp->out->stmts = ns;
        sp->cap = ncap;
    }
    st = &sp->out->stmts[sp->out->n];
    if ((st->sql = malloc(end - first + 1)) == NULL)
        return cg_error_nomem();
    memcpy(st->sql, sp->text + first, end - first);
    st->sql[end - first] = '\0';
    st->line = line_at(sp->text, first);
    st->offset = first;
    sp->out->n++;
    return 0;
}

static int unterminated(splitter *sp, const char *what, size_t at)
{
    return cg_error_set(CG_EINVALID, CG_ERRCLASS_MIGRATION, "%s:%d: unterminated %s", sp->source,
                        line_at(sp->text, at), what);
}

int cg_sql_split(cg_sql_script *out, const char *text, size_t len, const char *source)
{
    splitter sp = {text, len, source ? source : "sql", out, 0};
    size_t i = 0, start = 0;
    int err = 0;

    out->stmts = NULL;
    out->n = 0;
    if (memchr(text, '\0', len) != NULL) {
        err = cg_error_set(CG_EINVALID, CG_ERRCLASS_MIGRATION, "%s:%d: NUL byte in the file",
                           sp.source,
                           line_at(text, (size_t)((const char *)memchr(text, 0, len) - text)));
        goto done;
    }
    while (i < len) {
        char c = text[i];
        if (c == '\'' || c == '"') {
            /* E'...' (escape string): a backslash escapes the next character */
            int escapes = c == '\'' && i > 0 && (text[i - 1] == 'E' || text[i - 1] == 'e') &&
                          (i < 2 || !is_ident_char(text[i - 2]));
            size_t at = i++;
            for (;;) {
                if (i >= len) {
                    err = unterminated(&sp, c == '"' ? "quoted identifier" : "string", at);
                    goto done;
                }
                if (escapes && text[i] == '\\') {
                    i += 2;
                    continue;
                }
                if (text[i] == c) {
                    if (i + 1 < len && text[i + 1] == c) {
                        i += 2; /* doubled quote */
                        continue;
                    }
                    i++;
                    break;
                }
                i++;
            }
        } else if (c == '-' && i + 1 < len && text[i + 1] == '-') {
            while (i < len && text[i] != '\n')
                i++;
        } else if (c == '/' && i + 1 < len && text[i + 1] == '*') {
            size_t after = block_comment_end(text, i, len);
            if (after == NOT_CLOSED) {
                err = unterminated(&sp, "block comment", i);
                goto done;
            }
            i = after;
        } else if (c == '$' && (i == 0 || !is_ident_char(text[i - 1])) && i + 1 < len &&
                   (text[i + 1] == '$' || isalpha((unsigned char)text[i + 1]) ||
                    text[i + 1] == '_')) {
            size_t at = i, taglen;
            const char *close;
            size_t j = i + 1;
            while (j < len && is_ident_char(text[j]))
                j++;
            if (j >= len || text[j] != '$') {
                i = j; /* not a dollar quote after all */
                continue;
            }
            taglen = j - i + 1; /* "$tag$" */
            close = NULL;
            for (j = j + 1; j + taglen <= len; j++)
                if (text[j] == '$' && memcmp(text + j, text + i, taglen) == 0) {
                    close = text + j;
                    break;
                }
            if (close == NULL) {
                err = unterminated(&sp, "dollar-quoted string", at);
                goto done;
            }
            i = (size_t)(close - text) + taglen;
        } else if (c == ';') {
            if ((err = emit(&sp, start, i)) < 0)
                goto done;
            start = ++i;
        } else {
            i++;
        }
    }
    err = emit(&sp, start, len);
done:
    if (err < 0)
        cg_sql_script_dispose(out);
    return err;
}
