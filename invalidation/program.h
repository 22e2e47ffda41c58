/*
 * program.h — plumbing shared by coregroup's long-running programs (coregroupd, cg-busd,
 * cg-watch), never part of the library: a library must not install signal handlers.
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

#endif
