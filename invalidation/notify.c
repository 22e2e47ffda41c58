/*
 * notify.c — see notify.h: a thin wrapper over libsystemd's sd_notify(3) and
 * sd_watchdog_enabled(3), so coregroupd and cg-busd name what they report (ready, stopping,
 * well) and never carry #ifdefs themselves. Built without libsystemd, every call is a no-op.
 *
 * What the programs report is their business, not this file's: coregroupd sends WATCHDOG=1
 * only while its core is healthy, cg-busd from every turn of its loop.
 */
#include <stdarg.h>
#include <stdio.h>

#ifdef CG_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "notify.h"

void cg_notify__send(const char *fmt, ...)
{
#ifdef CG_HAVE_SYSTEMD
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof(text), fmt, ap);
    va_end(ap);
    (void)sd_notify(0, text); /* < 0 or 0 (no manager): nothing to do either way */
#else
    (void)fmt;
#endif
}

int64_t cg_notify__watchdog_ms(void)
{
#ifdef CG_HAVE_SYSTEMD
    uint64_t usec = 0;
    if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) {
        int64_t ms = (int64_t)(usec / 2000); /* half the timeout, as sd_watchdog_enabled(3) says */
        return ms > 0 ? ms : 1;
    }
#endif
    return 0;
}

void cg_notify__watchdog(void)
{
#ifdef CG_HAVE_SYSTEMD
    (void)sd_notify(0, "WATCHDOG=1");
#endif
}
