/**
 * @file coregroup/config.h
 * @brief repository.ini: how a core finds its repository, its group, its bus and its limits.
 *
 * The file has five sections (see repository.ini.example, which documents every key):
 *
 *     [repository]  dsn (required), pool_size, keepalive_idle_s, lock_timeout_ms,
 *                   idle_in_transaction_timeout_ms
 *     [core]        name (required), group (optional), failure_timeout_ms, log_level
 *     [bus]         publish, subscribe, poll_interval_ms, heartbeat_interval_ms,
 *                   reorder_window_ms, outbox_retention_s, curve_server_key,
 *                   curve_public_key, curve_secret_key
 *     [retry]       attempts, interval_ms, sqlstates
 *     [cache]       strategy, max_entries, ttl_ms, max_staleness_ms
 *     [daemon]      listen, workers, pidfile, curve_secret_key, curve_public_key,
 *                   curve_clients, metrics_listen (read by coregroupd; ignored by the
 *                   library)
 *
 * A core without a group gets the private group "private.<name>", so its data stays its own
 * across restarts and no other core shares it (e-Speak design §2.7.1). Configured group ids
 * may not start with "private.".
 *
 * Errors name the file, the line and the key, for example
 *     repository.ini:12: [cache] max_entries: expected an integer from 1 to 100000000, got "x"
 * Unknown sections and keys are errors (a typo must not silently fall back to a default);
 * a key given twice is an error.
 */
#ifndef COREGROUP_CONFIG_H
#define COREGROUP_CONFIG_H

#include "common.h"

/** How a core keeps its cache coherent with the repository (a runtime setting). */
typedef enum {
    CG_CACHE_INVALIDATE = 0,    /**< cache, evicted by bus invalidations (the default) */
    CG_CACHE_VERSION_CHECK = 1, /**< cache, but check the version in the repository per read */
    CG_CACHE_NONE = 2,          /**< no cache: every read queries the repository */
} cg_cache_strategy;

#define CG_CONFIG_MAX_ENDPOINTS 4
#define CG_CONFIG_MAX_SQLSTATES 16
#define CG_NAME_MAX             63 /**< longest core name or group id */

/** The parsed configuration. Strings are owned by the struct and freed by cg_config_free(). */
typedef struct cg_config {
    unsigned int version; /**< CG_CONFIG_VERSION */
    char *source;         /**< the file name it came from, used in messages */

    /* [repository] */
    char *dsn;            /**< libpq connection string or URI (required) */
    int pool_size;        /**< connections per core, 1..64 (default 4) */
    int keepalive_idle_s; /**< TCP keepalive idle seconds on every connection (default 10) */
    int lock_timeout_ms;  /**< a statement waiting this long for a row lock fails retryable
                               (PostgreSQL lock_timeout; default 2000) */
    int idle_in_transaction_timeout_ms; /**< the repository ends a session idle this long inside
                                             a transaction: the last fence against a paused
                                             core holding locks (default 30000) */

    /* [core] */
    char *core_name;        /**< [A-Za-z0-9][A-Za-z0-9._-]*, at most 63 (required) */
    char *group_id;         /**< the configured group, or "private.<core_name>" */
    int group_is_private;   /**< 1 when group_id was derived from the core name */
    int failure_timeout_ms; /**< a member silent this long is suspected, twice this long
                                 declared failed and fenced (default 5000) */
    int log_level;          /**< for programs: 0 error, 1 warn, 2 info (default), 3 debug */

    /* [bus] */
    char *publish[CG_CONFIG_MAX_ENDPOINTS]; /**< ZeroMQ endpoints this core publishes to */
    size_t n_publish;
    char *subscribe[CG_CONFIG_MAX_ENDPOINTS]; /**< ZeroMQ endpoints this core subscribes to */
    size_t n_subscribe;
    int poll_interval_ms; /**< backstop: compare applied seq with the repository (default 1000) */
    int heartbeat_interval_ms; /**< heartbeat on the bus this often; the bus counts as silent
                                    after 3 intervals without a message (default 1000) */
    int reorder_window_ms;     /**< an event missing this long after a later one arrived is
                                    a gap, caught up from the outbox; earlier it is only
                                    reordering (0..60000, default 20) */
    long outbox_retention_s;   /**< outbox rows older than this are pruned; 0 keeps them
                                    (default 3600) */
    char *curve_server_key;    /**< file with the forwarders' CURVE public key (Z85); with the
                                    two below it turns CURVE on for this core's bus sockets */
    char *curve_public_key;    /**< file with this core's CURVE public key (Z85) */
    char *curve_secret_key;    /**< file with this core's CURVE secret key (Z85) */

    /* [retry] (e-Speak design §1.2.4.2: JDBCConnectionRetrials / JDBCConnectionErrorCodes) */
    int retry_attempts;    /**< reconnect attempts at the start of a call, 0..1000 (default 5) */
    int retry_interval_ms; /**< pause between attempts (default 500) */
    char sqlstates[CG_CONFIG_MAX_SQLSTATES][6]; /**< classes ("08") or codes ("40001") */
    size_t n_sqlstates;

    /* [cache] */
    cg_cache_strategy strategy;
    long max_entries;     /**< bound on cached parts, 1..100000000 (default 100000) */
    long ttl_ms;          /**< expiry of a cached part, 0 = none (default 0) */
    int max_staleness_ms; /**< the freshness bound: a read never returns a version older than
                               what the repository held this long before the read started,
                               or it fails CG_EDEGRADED (20..86400000, default 2000) */

    /* [daemon] */
    char *listen;  /**< coregroupd's request endpoint (ZeroMQ ROUTER, bound); NULL: none */
    int workers;   /**< coregroupd's worker threads, 1..64 (default 4) */
    char *pidfile; /**< where coregroupd writes its pid; NULL: none */
    char *daemon_curve_secret_key; /**< [daemon] curve_secret_key: file with coregroupd's CURVE
                                        secret key (Z85); with the two below it makes the
                                        request endpoint a CURVE server */
    char *daemon_curve_public_key; /**< [daemon] curve_public_key: its public key (Z85) */
    char *daemon_curve_clients;    /**< [daemon] curve_clients: file of the client public keys
                                        admitted, one per line */
    char *metrics_listen;          /**< [daemon] metrics_listen: HOST:PORT of coregroupd's
                                        Prometheus endpoint (GET /metrics); NULL: none */
} cg_config;

#define CG_CONFIG_VERSION 1

/**
 * Make a configuration holding the defaults and no dsn or name.
 * The caller frees it with cg_config_free(). Returns 0 or CG_ERROR (out of memory).
 */
CG_EXTERN(int) cg_config_new(cg_config **out);

/**
 * Parse repository.ini text. A pure function: no file, no network; `source` names the text in
 * error messages. On success *out is a new configuration the caller frees with
 * cg_config_free(); on failure *out is NULL, the return is CG_EINVALID and cg_error_last()
 * names the source, line and key.
 */
CG_EXTERN(int) cg_config_parse(cg_config **out, const char *text, size_t len, const char *source);

/**
 * Read and parse the file at `path`. As cg_config_parse(); an unreadable file is CG_ENOTFOUND
 * (missing) or CG_ERROR (other I/O errors) with the path and the reason.
 */
CG_EXTERN(int) cg_config_load(cg_config **out, const char *path);

/**
 * Check a configuration built or changed by hand: required keys present, ranges respected,
 * group derived when absent. cg_config_parse() calls it. Returns 0 or CG_EINVALID.
 */
CG_EXTERN(int) cg_config_validate(cg_config *cfg);

/** Replace the string at *slot with a copy of value (NULL clears it). 0 or CG_ERROR. */
CG_EXTERN(int) cg_config_set_string(char **slot, const char *value);

/** Free a configuration and every string it owns. Accepts NULL. */
CG_EXTERN(void) cg_config_free(cg_config *cfg);

/** The name of a strategy as written in repository.ini ("invalidate", ...). */
CG_EXTERN(const char *) cg_cache_strategy_name(cg_cache_strategy s);

/** 1 when `name` is a valid core name or group id, else 0. */
CG_EXTERN(int) cg_name_valid(const char *name);

#endif
