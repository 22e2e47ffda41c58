/*
 * error.h — raising errors inside the library (private).
 *
 * Every failing path ends in one of these, which fill the thread-local cg_error and return the
 * code, so a caller writes `return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT, "...")`.
 * A lower layer's code is passed up unchanged; only the layer that knows the cause sets it.
 */
#ifndef CG_ERROR_INTERNAL_H
#define CG_ERROR_INTERNAL_H

#include "coregroup/errors.h"

#if defined(__GNUC__)
#define CG_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define CG_PRINTF(a, b)
#endif

/* Set the detail and return `code`. */
int cg_error_set(int code, int klass, const char *fmt, ...) CG_PRINTF(3, 4);

/* As cg_error_set, with a SQLSTATE (may be NULL). */
int cg_error_set_sqlstate(int code, const char *sqlstate, const char *fmt, ...) CG_PRINTF(3, 4);

/* Out of memory: sets the detail and returns CG_ERROR. */
int cg_error_nomem(void);

/* Writable access to this thread's detail, for the stale fields. */
cg_error *cg_error__mut(void);

#endif
