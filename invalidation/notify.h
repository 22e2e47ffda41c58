/*
 * notify.h — telling a service manager (systemd's sd_notify protocol) how a long-running
 * program is doing: READY=1 once it serves, STOPPING=1 when it begins to stop, STATUS= lines,
 * and WATCHDOG=1 keep-alives. Program plumbing like program.h, never part of the library.
 *
 * Every function does nothing (and cg_notify__watchdog_ms() returns 0) when the program was
 * built without libsystemd (CG_HAVE_SYSTEMD undefined) or runs without NOTIFY_SOCKET in its
 * environment: the program then behaves exactly as it would without this file. Sending never
 * blocks and never fails the program; a message the manager does not take is lost, which the
 * protocol allows. Safe to call from any thread.
 */
#ifndef CG_NOTIFY_H
#define CG_NOTIFY_H

#include <stdint.h>

/* Send one notification, printf-style, e.g. "READY=1\nSTATUS=serving". */
void cg_notify__send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* How often to send WATCHDOG=1, in milliseconds: half of WATCHDOG_USEC when the manager asked
 * for keep-alives from this process (WATCHDOG_PID unset or ours), else 0. Read it once, at
 * start-up. */
int64_t cg_notify__watchdog_ms(void);

/* Send WATCHDOG=1. Call it every cg_notify__watchdog_ms() while the program is well. */
void cg_notify__watchdog(void);

#endif
