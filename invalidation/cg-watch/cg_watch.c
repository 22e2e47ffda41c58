/*
 * cg-watch — the operator's view of the invalidation bus: every message, decoded, one line each.
 *
 * It connects one SUB socket to every --connect endpoint (forwarder backends, or a core's own
 * bound PUB), subscribes to "<group>/" (or to everything), and decodes each payload with
 * cg_bus_msg_decode(), the same decoder the cores use, so what it shows as dropped is exactly
 * what a core would drop. It never writes anything to the bus or the repository.
 *
 * What it adds to the raw stream:
 *  - Sequence marks, per group, on invalidations (the only numbered messages). It keeps the
 *    highest seq seen and a window of the last 1024 seqs that arrived:
 *      seq == last + 1             normal
 *      seq >  last + 1             GAP(missed N): N numbers never arrived (yet)
 *      seq <= last, seen before    DUP: with two forwarders every message comes twice
 *      seq <= last, never seen     LATE: it fills an earlier gap (reordered between the two
 *                                  forwarders); the simple "seq <= last is a duplicate" rule
 *                                  would hide that the hole was filled
 *      seq older than the window   DUP (it can no longer be told apart)
 *    Tracking covers every invalidation received, also the ones --part does not display.
 *  - lag = receive time - the message's "at" (commit time for invalidations, send time
 *    otherwise), in milliseconds; only meaningful when the clocks agree.
 *  - --stats: per interval, messages and rates per type and the max and mean lag per origin;
 *    since the start, gaps, missed numbers, duplicates, late arrivals and drops by reason.
 *
 * Output: stdout carries the events, one line each — human-readable by default, one compact
 * JSON object per line with --json (then the stats are JSON objects with "type":"stats" too,
 * so stdout stays a clean stream for jq). stderr carries one line per dropped message
 * ("cg-watch: dropped malformed message: <why>") and per failed --exec command. A bad
 * message is counted and reported, never a reason to stop.
 *
 * --exec CMD runs /bin/sh -c CMD for each displayed event, with the event's JSON line on its
 * stdin, one at a time; receiving waits meanwhile (ZeroMQ queues up to the high-water mark,
 * beyond it the forwarder drops — a slow CMD costs messages, and the DUP/GAP marks say so).
 *
 * Exit status: 0 on SIGINT/SIGTERM (after a final stats line with --stats), 1 when it cannot
 * set up (ZeroMQ, CURVE keys unusable by this libzmq), 2 bad usage (arguments, malformed
 * endpoints, unreadable or malformed key files).
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <zmq.h>

#include "coregroup.h"
#include "curve.h"
#include "message.h"
#include "program.h"
#include "proglog.h"
#include "coregroup/sys/clock.h"
#include "coregroup/sys/item.h"

extern char **environ;

enum { EXIT_SETUP = 1, EXIT_USAGE = 2 };

#define HWM         100000
#define BATCH       1024
#define MAX_CONNECT 16
#define WINDOW      1024 /* seqs remembered per group, a multiple of 64 */
#define MAX_GROUPS  4096
#define MAX_ORIGINS 256

/* Drop reasons: the decoder's, then the two only a receiver of whole messages can see. */
#define DROP_FRAMES CG_DROP_COUNT       /* not exactly two frames */
#define DROP_TOPIC  (CG_DROP_COUNT + 1) /* the topic frame is not "<payload group>/" */
#define N_DROPS     (CG_DROP_COUNT + 2)

/* ---- signals --------------------------------------------------------------------------- */

/* (invalidation/program.c: the handlers set flags and wake the loop through a self-pipe; an
 * --exec command that does not read its stdin cannot kill us with SIGPIPE) */
static int sig_fd = -1;

/* ---- state ----------------------------------------------------------------------------- */

typedef struct {
    char group[CG_NAME_MAX + 1];
    int64_t last;               /* highest invalidation seq seen; 0: none yet */
    uint64_t seen[WINDOW / 64]; /* bit seq % WINDOW: seq arrived, for (last - WINDOW, last] */
} seq_track;

typedef enum { SEQ_NEW, SEQ_GAP, SEQ_DUP, SEQ_LATE } seq_class;

typedef struct {
    char key[2 * CG_NAME_MAX + 2]; /* "group/origin" */
    double max_ms, sum_ms;
    unsigned long n;
} lag_stat;

typedef struct {
    /* options */
    const char *group; /* NULL: every group */
    int part;          /* an item kind (coregroup/sys/item.h), or -1 */
    int json;
    double stats_s; /* 0: no stats */
    const char *exec_cmd;
    /* sequence tracking */
    seq_track *groups;
    size_t n_groups, cap_groups;
    /* statistics: per interval */
    unsigned long long interval_type[4]; /* by cg_bus_msg_type */
    lag_stat lags[MAX_ORIGINS];
    size_t n_lags;
    int64_t interval_start_us;
    /* statistics: since the start */
    unsigned long long total, gaps, missed, dups, late, exec_failures;
    unsigned long long drops[N_DROPS];
} watch;

/* One line on stderr: "cg-watch: <tag><text>" (tag "error: ", "--exec: "; proglog.c). */
static void errline(const char *tag, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void errline(const char *tag, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    cg_prog__vline(stderr, "cg-watch", NULL, tag, fmt, ap);
    va_end(ap);
}

/* "2026-11-22T04:30:00.123456Z" */
static const char *iso_time(char buf[40], int64_t us)
{
    time_t s = (time_t)(us / 1000000);
    struct tm tm;
    gmtime_r(&s, &tm);
    strftime(buf, 24, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + strlen(buf), 16, ".%06dZ", (int)(us % 1000000));
    return buf;
}

static const char *drop_name(int reason)
{
    if (reason == DROP_FRAMES)
        return "frames";
    if (reason == DROP_TOPIC)
        return "topic";
    return cg_bus_drop_reason_name(reason);
}

static void dropped(watch *w, int reason, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void dropped(watch *w, int reason, const char *fmt, ...)
{
    va_list ap;
    w->drops[reason]++;
    va_start(ap, fmt);
    cg_prog__vline(stderr, "cg-watch", NULL, "dropped malformed message: ", fmt, ap);
    va_end(ap);
}

/* ---- sequence marks -------------------------------------------------------------------- */

/* The tracker of `group`, created on first sight; NULL beyond MAX_GROUPS (or without memory):
 * that group's messages are then shown without marks. */
static seq_track *track_of(watch *w, const char *group)
{
    size_t i;
    for (i = 0; i < w->n_groups; i++)
        if (strcmp(w->groups[i].group, group) == 0)
            return &w->groups[i];
    if (w->n_groups == MAX_GROUPS)
        return NULL;
    if (w->n_groups == w->cap_groups) {
        size_t cap = w->cap_groups ? w->cap_groups * 2 : 8;
        seq_track *grown = realloc(w->groups, cap * sizeof(*grown));
        if (grown == NULL)
            return NULL;
        w->groups = grown;
        w->cap_groups = cap;
    }
    memset(&w->groups[w->n_groups], 0, sizeof(w->groups[0]));
    memcpy(w->groups[w->n_groups].group, group, strlen(group) + 1);
    return &w->groups[w->n_groups++];
}

#define BIT(seq)     ((uint64_t)1 << ((uint64_t)(seq) % WINDOW % 64))
#define WORD(t, seq) ((t)->seen[(uint64_t)(seq) % WINDOW / 64])

/* Classify an invalidation's seq (>= 1) against what this group has seen; *missed gets the
 * count of numbers skipped for SEQ_GAP. */
static seq_class classify(seq_track *t, int64_t seq, int64_t *missed)
{
    int64_t s;
    *missed = 0;
    if (t->last == 0 || seq > t->last) {
        if (t->last != 0)
            *missed = seq - t->last - 1;
        if (t->last == 0 || seq - t->last >= WINDOW)
            memset(t->seen, 0, sizeof(t->seen));
        else
            for (s = t->last + 1; s < seq; s++)
                WORD(t, s) &= ~BIT(s);
        WORD(t, seq) |= BIT(seq);
        t->last = seq;
        return *missed > 0 ? SEQ_GAP : SEQ_NEW;
    }
    if (t->last - seq >= WINDOW || (WORD(t, seq) & BIT(seq)))
        return SEQ_DUP;
    WORD(t, seq) |= BIT(seq);
    return SEQ_LATE;
}

/* ---- output ---------------------------------------------------------------------------- */

static int shown_item(const watch *w, const cg_bus_item *it)
{
    return w->part < 0 || it->kind == w->part;
}

/* cJSON's number printer rounds near 2^53; integers go in as exact text (as message.c does). */
static int add_int(cJSON *o, const char *k, int64_t v)
{
    char t[24];
    snprintf(t, sizeof(t), "%lld", (long long)v);
    return cJSON_AddRawToObject(o, k, t) != NULL;
}

/* The event as one compact JSON line (no newline), a new string the caller frees with
 * cJSON_free(); NULL when memory ran out. */
static char *event_json(const watch *w, const cg_bus_msg *m, int64_t recv_us, double lag_ms,
                        seq_class cls, int64_t missed)
{
    cJSON *o = cJSON_CreateObject(), *arr = NULL, *it = NULL;
    char ts[40], lag[40];
    char *text = NULL;
    size_t i;
    int ok = o != NULL;

    ok = ok && cJSON_AddStringToObject(o, "received", iso_time(ts, recv_us)) &&
         add_int(o, "v", m->version) &&
         cJSON_AddStringToObject(o, "type", cg_bus_msg_type_name(m->type)) &&
         cJSON_AddStringToObject(o, "group", m->group);
    if (ok && m->type != CG_MSG_MEMBERSHIP)
        ok = add_int(o, "seq", m->seq);
    ok = ok && cJSON_AddStringToObject(o, "origin", m->origin) &&
         add_int(o, "inc", m->incarnation) && add_int(o, "at", m->at_us);
    switch (m->type) {
    case CG_MSG_INVALIDATION:
        ok = ok && (arr = cJSON_AddArrayToObject(o, "items")) != NULL;
        for (i = 0; ok && i < m->n_items; i++) {
            if (!shown_item(w, &m->items[i]))
                continue;
            ok = (it = cJSON_CreateObject()) != NULL;
            if (ok) {
                cJSON_AddItemToArray(arr, it);
                ok = add_int(it, "h", m->items[i].handle) &&
                     cJSON_AddStringToObject(it, "p", cg_item_kind_name(m->items[i].kind)) &&
                     add_int(it, "v", m->items[i].version);
            }
        }
        if (ok && w->part >= 0)
            ok = add_int(o, "items_total", (int64_t)m->n_items);
        break;
    case CG_MSG_HEARTBEAT:
        ok = ok && add_int(o, "applied", m->applied_seq);
        break;
    case CG_MSG_MEMBERSHIP:
        ok = ok && cJSON_AddStringToObject(o, "event", cg_member_event_name(m->event)) &&
             cJSON_AddStringToObject(o, "member", m->member) &&
             add_int(o, "minc", m->member_incarnation);
        break;
    }
    snprintf(lag, sizeof(lag), "%.3f", lag_ms);
    ok = ok && cJSON_AddRawToObject(o, "lag_ms", lag);
    if (ok && cls == SEQ_GAP)
        ok = cJSON_AddTrueToObject(o, "gap") && add_int(o, "missed", missed);
    if (ok && cls == SEQ_DUP)
        ok = cJSON_AddTrueToObject(o, "duplicate") != NULL;
    if (ok && cls == SEQ_LATE)
        ok = cJSON_AddTrueToObject(o, "late") != NULL;
    if (ok)
        text = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}

/* The event as one human-readable line on stdout. */
static void print_human(const watch *w, const cg_bus_msg *m, int64_t recv_us, double lag_ms,
                        seq_class cls, int64_t missed)
{
    char ts[40];
    size_t i, shown = 0;

    flockfile(stdout);
    printf("%s %s", iso_time(ts, recv_us), m->group);
    if (m->type != CG_MSG_MEMBERSHIP)
        printf(" seq=%lld", (long long)m->seq);
    if (cls == SEQ_GAP)
        printf(" GAP(missed %lld)", (long long)missed);
    else if (cls == SEQ_DUP)
        fputs(" DUP", stdout);
    else if (cls == SEQ_LATE)
        fputs(" LATE", stdout);
    printf(" %s %s#%lld lag=%.3fms", cg_bus_msg_type_name(m->type), m->origin,
           (long long)m->incarnation, lag_ms);
    switch (m->type) {
    case CG_MSG_INVALIDATION:
        for (i = 0; i < m->n_items; i++)
            shown += (size_t)shown_item(w, &m->items[i]);
        if (shown == m->n_items)
            printf(" items=%zu", m->n_items);
        else
            printf(" items=%zu/%zu", shown, m->n_items);
        for (i = 0; i < m->n_items; i++)
            if (shown_item(w, &m->items[i]))
                printf(" %lld:%s@%lld", (long long)m->items[i].handle,
                       cg_item_kind_name(m->items[i].kind), (long long)m->items[i].version);
        break;
    case CG_MSG_HEARTBEAT:
        printf(" applied=%lld", (long long)m->applied_seq);
        break;
    case CG_MSG_MEMBERSHIP:
        printf(" %s %s#%lld", cg_member_event_name(m->event), m->member,
               (long long)m->member_incarnation);
        break;
    }
    putchar('\n');
    fflush(stdout);
    funlockfile(stdout);
}

/* Run --exec for one event: /bin/sh -c CMD with `json` and a newline on its stdin. Waits for
 * it; a non-zero status or a failure to start is reported on stderr and counted. */
static void run_exec(watch *w, const char *json, const cg_bus_msg *m)
{
    char *argv[] = {"sh", "-c", (char *)w->exec_cmd, NULL};
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, dflt;
    int fds[2], err, status;
    size_t len = strlen(json), off = 0;
    pid_t pid;
    char what[160];

    if (m->type == CG_MSG_MEMBERSHIP)
        snprintf(what, sizeof(what), "member %s %s", m->group, cg_member_event_name(m->event));
    else
        snprintf(what, sizeof(what), "%s %s seq=%lld", cg_bus_msg_type_name(m->type), m->group,
                 (long long)m->seq);
    if (pipe(fds) < 0) {
        errline("--exec: ", "cannot make a pipe for %s: %s", what, strerror(errno));
        w->exec_failures++;
        return;
    }
    fcntl(fds[0], F_SETFD, FD_CLOEXEC);
    fcntl(fds[1], F_SETFD, FD_CLOEXEC); /* dup2 onto 0 clears it for the child's stdin */
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, fds[0], 0);
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigemptyset(&dflt);
    sigaddset(&dflt, SIGPIPE);
    sigaddset(&dflt, SIGINT);
    sigaddset(&dflt, SIGTERM);
    sigaddset(&dflt, SIGUSR1);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &dflt);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    err = posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
    close(fds[0]);
    if (err != 0) {
        errline("--exec: ", "cannot start /bin/sh for %s: %s", what, strerror(err));
        close(fds[1]);
        w->exec_failures++;
        return;
    }
    while (off <= len) { /* the JSON, then the newline */
        const char *p = off < len ? json + off : "\n";
        size_t n = off < len ? len - off : 1;
        ssize_t k = write(fds[1], p, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            break; /* EPIPE: the command does not read its stdin; that is its business */
        off += (size_t)k;
    }
    close(fds[1]);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            errline("--exec: ", "waitpid: %s", strerror(errno));
            w->exec_failures++;
            return;
        }
    if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
        errline("--exec: ", "command exited with status %d for %s", WEXITSTATUS(status), what);
        w->exec_failures++;
    } else if (WIFSIGNALED(status) && !cg_prog__stop_signal) { /* Ctrl-C reaches the command too */
        errline("--exec: ", "command killed by signal %d for %s", WTERMSIG(status), what);
        w->exec_failures++;
    }
}

/* ---- statistics ------------------------------------------------------------------------ */

static void note_lag(watch *w, const cg_bus_msg *m, double lag_ms)
{
    char key[sizeof(w->lags[0].key)];
    lag_stat *l = NULL;
    size_t i;
    snprintf(key, sizeof(key), "%s/%s", m->group, m->origin);
    for (i = 0; i < w->n_lags && l == NULL; i++)
        if (strcmp(w->lags[i].key, key) == 0)
            l = &w->lags[i];
    if (l == NULL) {
        if (w->n_lags == MAX_ORIGINS)
            return; /* more origins than any group has: the rest go uncounted this interval */
        l = &w->lags[w->n_lags++];
        memset(l, 0, sizeof(*l));
        memcpy(l->key, key, strlen(key) + 1);
        l->max_ms = lag_ms;
    }
    if (lag_ms > l->max_ms)
        l->max_ms = lag_ms;
    l->sum_ms += lag_ms;
    l->n++;
}

static unsigned long long total_drops(const watch *w)
{
    unsigned long long n = 0;
    int i;
    for (i = 0; i < N_DROPS; i++)
        n += w->drops[i];
    return n;
}

/* Print one stats line for the interval now ending, then start the next. */
static void print_stats(watch *w, const char *why)
{
    int64_t now = cg_clock_wall_us();
    double secs = (double)(now - w->interval_start_us) / 1e6;
    const unsigned long long *t = w->interval_type;
    size_t i;
    int r;

    if (secs <= 0)
        secs = 1e-6;
    flockfile(stdout);
    if (w->json) {
        printf("{\"type\":\"stats\",\"why\":\"%s\",\"interval_s\":%.3f,"
               "\"messages\":{\"invalidations\":%llu,\"heartbeats\":%llu,\"members\":%llu},"
               "\"per_s\":{\"invalidations\":%.3f,\"heartbeats\":%.3f,\"members\":%.3f},"
               "\"total\":%llu,\"gaps\":%llu,\"missed\":%llu,\"duplicates\":%llu,\"late\":%llu,"
               "\"drops\":%llu,\"drop_reasons\":{",
               why, secs, t[CG_MSG_INVALIDATION], t[CG_MSG_HEARTBEAT], t[CG_MSG_MEMBERSHIP],
               (double)t[CG_MSG_INVALIDATION] / secs, (double)t[CG_MSG_HEARTBEAT] / secs,
               (double)t[CG_MSG_MEMBERSHIP] / secs, w->total, w->gaps, w->missed, w->dups, w->late,
               total_drops(w));
        for (r = 1, i = 0; r < N_DROPS; r++)
            if (w->drops[r])
                printf("%s\"%s\":%llu", i++ ? "," : "", drop_name(r), w->drops[r]);
        printf("},\"exec_failures\":%llu,\"lag_ms\":{", w->exec_failures);
        for (i = 0; i < w->n_lags; i++)
            printf("%s\"%s\":{\"max\":%.3f,\"mean\":%.3f,\"n\":%lu}", i ? "," : "", w->lags[i].key,
                   w->lags[i].max_ms, w->lags[i].sum_ms / (double)w->lags[i].n, w->lags[i].n);
        fputs("}}\n", stdout);
    } else {
        printf("cg-watch: stats interval_s=%.3f inval=%llu inval_per_s=%.1f heartbeat=%llu "
               "heartbeat_per_s=%.1f member=%llu member_per_s=%.1f total=%llu gaps=%llu "
               "missed=%llu dups=%llu late=%llu drops=%llu",
               secs, t[CG_MSG_INVALIDATION], (double)t[CG_MSG_INVALIDATION] / secs,
               t[CG_MSG_HEARTBEAT], (double)t[CG_MSG_HEARTBEAT] / secs, t[CG_MSG_MEMBERSHIP],
               (double)t[CG_MSG_MEMBERSHIP] / secs, w->total, w->gaps, w->missed, w->dups, w->late,
               total_drops(w));
        for (r = 1; r < N_DROPS; r++)
            if (w->drops[r])
                printf(" drop_%s=%llu", drop_name(r), w->drops[r]);
        if (w->exec_cmd)
            printf(" exec_failures=%llu", w->exec_failures);
        for (i = 0; i < w->n_lags; i++)
            printf(" lag[%s]=max:%.3fms,mean:%.3fms,n:%lu", w->lags[i].key, w->lags[i].max_ms,
                   w->lags[i].sum_ms / (double)w->lags[i].n, w->lags[i].n);
        printf(" why=%s\n", why);
    }
    fflush(stdout);
    funlockfile(stdout);
    memset(w->interval_type, 0, sizeof(w->interval_type));
    w->n_lags = 0;
    w->interval_start_us = now;
}

/* ---- one message ----------------------------------------------------------------------- */

static void handle(watch *w, const char *topic, size_t tlen, const char *payload, size_t plen)
{
    cg_bus_msg *m = NULL;
    seq_class cls = SEQ_NEW;
    int64_t missed = 0, recv_us;
    double lag_ms;
    size_t glen, i;
    int display;
    char ex[68];

    if (cg_bus_msg_decode(&m, payload, plen, w->group) < 0) {
        int reason = cg_bus_msg_decode_reason();
        if (reason == CG_DROP_NONE) { /* out of memory: the message was not judged */
            errline("error: ", "%s", cg_error_last()->message);
            return;
        }
        dropped(w, reason, "%s", cg_error_last()->message);
        return;
    }
    glen = strlen(m->group);
    if (tlen != glen + 1 || memcmp(topic, m->group, glen) != 0 || topic[glen] != '/') {
        dropped(w, DROP_TOPIC, "topic \"%s\" does not match the payload's group \"%s\"",
                cg_prog__printable(ex, sizeof(ex), topic, tlen), m->group);
        cg_bus_msg_free(m);
        return;
    }
    recv_us = cg_clock_wall_us();
    lag_ms = (double)(recv_us - m->at_us) / 1000.0;
    w->total++;
    w->interval_type[m->type]++;
    note_lag(w, m, lag_ms);
    if (m->type == CG_MSG_INVALIDATION) {
        seq_track *t = track_of(w, m->group);
        if (t)
            cls = classify(t, m->seq, &missed);
        if (cls == SEQ_GAP) {
            w->gaps++;
            w->missed += (unsigned long long)missed;
        } else if (cls == SEQ_DUP) {
            w->dups++;
        } else if (cls == SEQ_LATE) {
            w->late++;
        }
    }

    display = w->part < 0;
    for (i = 0; !display && m->type == CG_MSG_INVALIDATION && i < m->n_items; i++)
        display = shown_item(w, &m->items[i]);
    if (display) {
        char *json = NULL;
        if (w->json || w->exec_cmd) {
            if ((json = event_json(w, m, recv_us, lag_ms, cls, missed)) == NULL)
                errline("error: ", "out of memory formatting an event");
        }
        if (!w->json)
            print_human(w, m, recv_us, lag_ms, cls, missed);
        else if (json) {
            flockfile(stdout);
            fputs(json, stdout);
            putchar('\n');
            fflush(stdout);
            funlockfile(stdout);
        }
        if (w->exec_cmd && json)
            run_exec(w, json, m);
        cJSON_free(json);
    }
    cg_bus_msg_free(m);
}

/* Receive one whole message and handle it: 1 when one was waiting, 0 when none, -1 on a
 * receive error (errno set). */
static int receive_one(watch *w, void *sock)
{
    zmq_msg_t f[2], extra;
    int n = 0, more = 0, rc = 1;
    size_t moresz = sizeof(more);

    zmq_msg_init(&f[0]);
    zmq_msg_init(&f[1]);
    do {
        zmq_msg_t *dst = n < 2 ? &f[n] : &extra;
        if (n >= 2)
            zmq_msg_init(&extra);
        if (zmq_msg_recv(dst, sock, ZMQ_DONTWAIT) < 0) {
            int e = errno;
            if (n >= 2)
                zmq_msg_close(&extra);
            rc = n == 0 && (e == EAGAIN || e == EINTR) ? 0 : -1;
            errno = e;
            goto done;
        }
        if (n >= 2)
            zmq_msg_close(&extra);
        n++;
        zmq_getsockopt(sock, ZMQ_RCVMORE, &more, &moresz);
    } while (more);

    if (n != 2)
        dropped(w, DROP_FRAMES, "%d frame%s (a bus message is two: [topic][payload])", n,
                n == 1 ? "" : "s");
    else
        handle(w, zmq_msg_data(&f[0]), zmq_msg_size(&f[0]), zmq_msg_data(&f[1]),
               zmq_msg_size(&f[1]));
done:
    zmq_msg_close(&f[0]);
    zmq_msg_close(&f[1]);
    return rc;
}

/* ---- setup ----------------------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: cg-watch --connect ENDPOINT [--connect ENDPOINT2 ...] [OPTIONS]\n"
            "Show the coregroup invalidation bus: one line per message, with gaps,\n"
            "duplicates and lag marked.\n"
            "\n"
            "Options:\n"
            "  -c, --connect ENDPOINT       a forwarder's backend (or a core's PUB); repeat\n"
            "                               for the second forwarder (up to %d)\n"
            "  -g, --group GROUP            only this group (default: every group)\n"
            "  -p, --part PART              only invalidations touching PART (specification,\n"
            "                               description, state, or the wire version 2 kinds\n"
            "                               names and find), and only those items\n"
            "  -j, --json                   one JSON object per line (for jq), with lag_ms and\n"
            "                               \"gap\"/\"missed\", \"duplicate\", \"late\" flags\n"
            "  -s, --stats SECONDS          a statistics line every SECONDS and at exit\n"
            "  -e, --exec CMD               run /bin/sh -c CMD for each shown event, its JSON\n"
            "                               line on stdin; one at a time\n"
            "      --curve-server-key FILE  the forwarder's CURVE public key (Z85)\n"
            "      --curve-secret-key FILE  this watcher's CURVE secret key\n"
            "      --curve-public-key FILE  this watcher's CURVE public key\n"
            "  -h, --help                   show this help\n"
            "  -V, --version                show the version\n"
            "\n"
            "Marks (per group, on invalidations): GAP(missed N) numbers were skipped, DUP seen\n"
            "before (two forwarders deliver everything twice), LATE fills an earlier gap.\n"
            "lag = receive time - commit/send time. Dropped messages are reported on stderr\n"
            "and counted. Stats: messages and rates per type and lag per origin over the\n"
            "interval; gaps, missed, dups, late and drops since the start. SIGUSR1 prints\n"
            "a stats line now.\n"
            "\n"
            "Exit status: 0 on SIGINT or SIGTERM, 1 setup failure, 2 bad usage (arguments,\n"
            "malformed endpoint, bad key file).\n",
            MAX_CONNECT);
}

enum { OPT_SERVER_KEY = 1000, OPT_SECRET, OPT_PUBLIC };

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"connect", required_argument, NULL, 'c'},
        {"group", required_argument, NULL, 'g'},
        {"part", required_argument, NULL, 'p'},
        {"json", no_argument, NULL, 'j'},
        {"stats", required_argument, NULL, 's'},
        {"exec", required_argument, NULL, 'e'},
        {"curve-server-key", required_argument, NULL, OPT_SERVER_KEY},
        {"curve-secret-key", required_argument, NULL, OPT_SECRET},
        {"curve-public-key", required_argument, NULL, OPT_PUBLIC},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0}};
    const char *endpoints[MAX_CONNECT];
    const char *server_path = NULL, *secret_path = NULL, *public_path = NULL;
    int n_endpoints = 0, c, i, rc = 0, curve;
    uint8_t server_key[32], secret[32], public_key[32];
    char topic[CG_BUS_TOPIC_MAX], why[512];
    void *ctx = NULL, *sock = NULL;
    watch w;
    int64_t next_stats = 0;

    memset(&w, 0, sizeof(w));
    w.part = -1;
    while ((c = getopt_long(argc, argv, "c:g:p:js:e:hV", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            if (n_endpoints == MAX_CONNECT) {
                errline("error: ", "more than %d --connect endpoints", MAX_CONNECT);
                return EXIT_USAGE;
            }
            endpoints[n_endpoints++] = optarg;
            break;
        case 'g':
            w.group = optarg;
            break;
        case 'p': {
            int kind = cg_item_kind_parse(optarg, CG_ITEM_COUNT);
            if (kind < 0) {
                errline("error: ",
                        "--part \"%s\": expected specification, description, state, names or find",
                        optarg);
                return EXIT_USAGE;
            }
            w.part = kind;
            break;
        }
        case 'j':
            w.json = 1;
            break;
        case 's':
            if (cg_prog__parse_seconds(optarg, &w.stats_s) < 0) {
                errline("error: ", "--stats \"%s\": expected a positive number of seconds", optarg);
                return EXIT_USAGE;
            }
            break;
        case 'e':
            w.exec_cmd = optarg;
            break;
        case OPT_SERVER_KEY:
            server_path = optarg;
            break;
        case OPT_SECRET:
            secret_path = optarg;
            break;
        case OPT_PUBLIC:
            public_path = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        case 'V':
            printf("cg-watch %s\n", CG_VERSION);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        errline("error: ", "unexpected argument \"%s\"", argv[optind]);
        return EXIT_USAGE;
    }
    if (n_endpoints == 0) {
        errline("error: ", "--connect is required");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (w.group && cg_bus_topic(topic, sizeof(topic), w.group) < 0) {
        errline("error: ",
                "--group \"%s\": 1 to 63 of A-Z a-z 0-9 . _ -, starting with a letter or digit",
                w.group);
        return EXIT_USAGE;
    }
    curve = server_path || secret_path || public_path;
    if (curve) {
        if (!(server_path && secret_path && public_path)) {
            errline("error: ",
                    "CURVE needs all of --curve-server-key, --curve-secret-key and "
                    "--curve-public-key (missing %s)",
                    !server_path   ? "--curve-server-key"
                    : !secret_path ? "--curve-secret-key"
                                   : "--curve-public-key");
            return EXIT_USAGE;
        }
        if (!zmq_has("curve")) {
            errline("error: ", "this libzmq was built without CURVE support");
            return EXIT_SETUP;
        }
        if (cg_key_read(server_key, server_path, why, sizeof(why)) < 0 ||
            cg_key_read(secret, secret_path, why, sizeof(why)) < 0 ||
            cg_key_read(public_key, public_path, why, sizeof(why)) < 0) {
            errline("error: ", "CURVE key: %s", why);
            return EXIT_USAGE;
        }
        if (!cg_key_pair_matches(secret, public_key)) {
            errline("error: ",
                    "--curve-public-key \"%s\" is not the public key of --curve-secret-key \"%s\"",
                    public_path, secret_path);
            return EXIT_USAGE;
        }
    }

    setvbuf(stdout, NULL, _IOLBF, 0);
    if ((sig_fd = cg_prog__signals(1, 0)) < 0) {
        errline("error: ", "cannot install signal handlers: %s", strerror(errno));
        return EXIT_SETUP;
    }
    if ((ctx = zmq_ctx_new()) == NULL || (sock = zmq_socket(ctx, ZMQ_SUB)) == NULL) {
        errline("error: ", "cannot create a ZeroMQ socket: %s", zmq_strerror(errno));
        rc = EXIT_SETUP;
        goto done;
    }
    {
        int hwm = HWM, zero = 0;
        if (zmq_setsockopt(sock, ZMQ_RCVHWM, &hwm, sizeof(hwm)) < 0 ||
            zmq_setsockopt(sock, ZMQ_LINGER, &zero, sizeof(zero)) < 0 ||
            (curve && (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, server_key, 32) < 0 ||
                       zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, public_key, 32) < 0 ||
                       zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, secret, 32) < 0)) ||
            zmq_setsockopt(sock, ZMQ_SUBSCRIBE, w.group ? topic : "", w.group ? strlen(topic) : 0) <
                0) {
            errline("error: ", "cannot set socket options: %s", zmq_strerror(errno));
            rc = EXIT_SETUP;
            goto done;
        }
    }
    for (i = 0; i < n_endpoints; i++)
        if (zmq_connect(sock, endpoints[i]) < 0) {
            int e = errno;
            errline("error: ", "--connect \"%s\": cannot connect: %s", endpoints[i],
                    zmq_strerror(e));
            rc = e == EINVAL || e == EPROTONOSUPPORT || e == ENOCOMPATPROTO || e == ENODEV
                     ? EXIT_USAGE
                     : EXIT_SETUP;
            goto done;
        }

    w.interval_start_us = cg_clock_wall_us();
    if (w.stats_s > 0)
        next_stats = cg_clock_mono_ms() + (int64_t)(w.stats_s * 1000);
    while (!cg_prog__stop_signal) {
        zmq_pollitem_t items[2] = {{sock, 0, ZMQ_POLLIN, 0}, {NULL, sig_fd, ZMQ_POLLIN, 0}};
        long timeout = -1;

        if (w.stats_s > 0) {
            int64_t left = next_stats - cg_clock_mono_ms();
            timeout = left > 0 ? (long)left : 0;
        }
        if (zmq_poll(items, 2, timeout) < 0) {
            if (errno == EINTR)
                continue;
            errline("error: ", "poll failed: %s", zmq_strerror(errno));
            rc = EXIT_SETUP;
            break;
        }
        if (items[1].revents & ZMQ_POLLIN)
            cg_prog__drain();
        if (items[0].revents & ZMQ_POLLIN) {
            int r = 1;
            for (i = 0; i < BATCH && !cg_prog__stop_signal && (r = receive_one(&w, sock)) > 0; i++)
                ;
            if (r < 0) {
                errline("error: ", "receive failed: %s", zmq_strerror(errno));
                rc = EXIT_SETUP;
                break;
            }
        }
        if (cg_prog__usr1) {
            cg_prog__usr1 = 0;
            print_stats(&w, "signal");
        }
        if (w.stats_s > 0 && cg_clock_mono_ms() >= next_stats) {
            print_stats(&w, "interval");
            while (next_stats <= cg_clock_mono_ms())
                next_stats += (int64_t)(w.stats_s * 1000);
        }
    }
    if (cg_prog__stop_signal && rc == 0 && w.stats_s > 0)
        print_stats(&w, "exit");

done:
    if (sock)
        zmq_close(sock);
    if (ctx)
        zmq_ctx_term(ctx);
    free(w.groups);
    return rc;
}
