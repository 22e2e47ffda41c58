/**
 * @file coregroup/errors.h
 * @brief Error codes and the thread-local error detail.
 *
 * Every function that can fail returns an int: 0 on success, one of the negative CG_E* codes
 * on failure. The codes are few on purpose; each is something a caller acts on. The detail
 * (a one-line message, the SQLSTATE, the place in a file, the versions of a stale update) is
 * kept per thread and read with cg_error_last() right after the failing call.
 */
#ifndef COREGROUP_ERRORS_H
#define COREGROUP_ERRORS_H

#include "common.h"

/** Return codes. 0 is success; every failure is negative. */
typedef enum {
    CG_OK = 0,
    CG_ERROR = -1,      /**< anything not covered below (a bug, out of memory, I/O) */
    CG_ENOTFOUND = -3,  /**< the handle, name, file or row does not exist */
    CG_EEXISTS = -4,    /**< the name or row already exists */
    CG_ESTALE = -5,     /**< version mismatch: the cached copy was stale; re-read and retry */
    CG_ERETRYABLE = -6, /**< connection lost, serialization failure, deadlock: retry the call */
    CG_EINVALID = -7,   /**< bad input: configuration, request, JSON, name, version */
    CG_EDEGRADED = -8,  /**< the core cannot prove its cache is fresh and refuses to guess */
    CG_EFENCED = -9,    /**< this core's incarnation was fenced by its group; rejoin */
    CG_ECHECKSUM = -10, /**< an applied migration's file changed since it was applied */
} cg_error_code;

/** Broad origin of an error, for logs and metrics. */
typedef enum {
    CG_ERRCLASS_NONE = 0,
    CG_ERRCLASS_NOMEMORY,
    CG_ERRCLASS_OS,         /**< a system call; message carries strerror */
    CG_ERRCLASS_CONFIG,     /**< repository.ini */
    CG_ERRCLASS_REPOSITORY, /**< PostgreSQL; sqlstate is set where the server sent one */
    CG_ERRCLASS_MIGRATION,
    CG_ERRCLASS_CACHE,
    CG_ERRCLASS_BUS,
    CG_ERRCLASS_INPUT, /**< caller's arguments */
} cg_error_class;

/** The detail of the last error on this thread. */
typedef struct cg_error {
    int code;           /**< the cg_error_code returned */
    int klass;          /**< a cg_error_class */
    char message[1024]; /**< one line, no trailing newline */
    char sqlstate[6];   /**< five-character SQLSTATE, or "" */
    /** Set for CG_ESTALE: the handle and part, the version the caller expected and the
     *  version the repository holds (-1 when the row is gone). */
    int64_t handle;
    int part;
    int64_t expected_version;
    int64_t actual_version;
} cg_error;

/**
 * The last error raised on the calling thread. Never NULL: when no error was raised the
 * code is CG_OK and the message is empty. The pointer stays valid until the thread's next
 * failing call into the library.
 */
CG_EXTERN(const cg_error *) cg_error_last(void);

/** Clear the calling thread's error detail. */
CG_EXTERN(void) cg_error_clear(void);

/** A short constant name for a code, such as "stale" for CG_ESTALE. */
CG_EXTERN(const char *) cg_error_name(int code);

#endif
