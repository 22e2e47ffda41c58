/*
 * program.h — plumbing shared by coregroup's programs (coregroupd, cgctl, cg-busd, cg-watch),
 * never part of the library: a library must not install signal handlers. The rest of the
 * programs' shared helpers, each a header of its own beside this one: proglog.h (log lines,
 * printable values), pidfile.h (pid files), curve.h (CURVE keys and the ZAP handler), notify.h
 * (systemd). Clocks are the library's coregroup/sys/clock.h; key files its keyfile.h.
 * cg-migrate, which lives in schema/, uses none of them (schema/ does not include
 * invalidation/).
 */
#ifndef CG_PROGRAM_H
#define CG_PROGRAM_H

#include <signal.h>

/* Set by the handlers installed by cg_prog__signals(); the program's loop reads and clears
 * them. stop_signal is SIGTERM or SIGINT once either arrived. */
extern volatile sig_atomic_t cg_prog__stop_signal, cg_prog__usr1, cg_prog__hup;

/*
 * Install handlers for SIGTERM and SIGINT (stop), and for SIGUSR1 and SIGHUP when asked; ignore
 * SIGPIPE. Every handled signal sets its flag and writes a byte to a non-blocking,
 * close-on-exec self-pipe, so a loop that polls the returned descriptor wakes at once and acts
 * from ordinary code (no stdio in a handler). Returns that descriptor, or -1 (errno set).
 */
int cg_prog__signals(int want_usr1, int want_hup);

/* Wake the loop as a signal would (async-signal-safe; for other threads too). */
void cg_prog__wake(void);

/* Read away the pending wake-up bytes. */
void cg_prog__drain(void);

/* 1 when an ipc:// endpoint's socket file has a live listener: binding it anyway would let
 * ZeroMQ silently unlink the other process's socket and take it over. 0 otherwise. */
int cg_prog__ipc_in_use(const char *endpoint);

/* A duration option in seconds (--stats-interval 0.5): a decimal number from 0.001 to one year
 * (31536000), nothing else on the string. 0 and *out set, or -1. */
int cg_prog__parse_seconds(const char *s, double *out);

#endif
