/*
 * error.c — the thread-local error detail behind cg_error_last().
 *
 * libgit2's model: a function returns a small negative code and leaves a one-line message on
 * the thread. The detail is a fixed struct in thread-local storage, so raising an error never
 * allocates (it must work when memory ran out) and never races with other threads.
 * Messages are one line: any newline a lower layer (libpq) put in is folded to a space.
 *
 * It sits in include/coregroup/sys/ because every folder raises errors: the repository layer,
 * the bus and the core. Below all three, it makes none of them depend on another for it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "coregroup/sys/error.h"

static _Thread_local cg_error tls_error;

static void fold_newlines(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == ' '))
        s[--n] = '\0';
    for (; *s; s++)
        if (*s == '\n' || *s == '\r' || *s == '\t')
            *s = ' ';
}

static int vset(int code, int klass, const char *sqlstate, const char *fmt, va_list ap)
{
    char message[sizeof(tls_error.message)];
    /* format first: an argument may be the current message itself (re-raising it) */
    vsnprintf(message, sizeof(message), fmt, ap);
    memset(&tls_error, 0, sizeof(tls_error));
    tls_error.code = code;
    tls_error.klass = klass;
    tls_error.actual_version = -1;
    tls_error.expected_version = -1;
    memcpy(tls_error.message, message, sizeof(message));
    fold_newlines(tls_error.message);
    if (sqlstate)
        snprintf(tls_error.sqlstate, sizeof(tls_error.sqlstate), "%s", sqlstate);
    return code;
}

int cg_error_set(int code, int klass, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(code, klass, NULL, fmt, ap);
    va_end(ap);
    return code;
}

int cg_error_set_sqlstate(int code, const char *sqlstate, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vset(code, CG_ERRCLASS_REPOSITORY, sqlstate, fmt, ap);
    va_end(ap);
    return code;
}

int cg_error_nomem(void)
{
    return cg_error_set(CG_ERROR, CG_ERRCLASS_NOMEMORY, "out of memory");
}

cg_error *cg_error__mut(void)
{
    return &tls_error;
}

const cg_error *cg_error_last(void)
{
    return &tls_error;
}

void cg_error_clear(void)
{
    memset(&tls_error, 0, sizeof(tls_error));
}

const char *cg_error_name(int code)
{
    switch (code) {
    case CG_OK:
        return "ok";
    case CG_ENOTFOUND:
        return "not-found";
    case CG_EEXISTS:
        return "exists";
    case CG_ESTALE:
        return "stale";
    case CG_ERETRYABLE:
        return "retryable";
    case CG_EINVALID:
        return "invalid";
    case CG_EDEGRADED:
        return "degraded";
    case CG_EFENCED:
        return "fenced";
    case CG_ECHECKSUM:
        return "checksum";
    default:
        return "error";
    }
}
