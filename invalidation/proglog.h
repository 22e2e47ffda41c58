/*
 * proglog.h — the lines coregroup's programs write (coregroupd, cgctl, cg-busd, cg-watch), and
 * the text helpers that keep them one line: program plumbing like program.h, never part of the
 * library (a library never prints).
 *
 * Every line starts with the program and, once known, the name of what it serves:
 *     coregroupd[core-a]: level=info event=started group=payments listen=tcp://...
 *     cg-busd[fwd-a]: stats msgs=12 bytes=3400 ...
 *     cgctl: stale: version 3 is not 2 ...
 * so that `grep 'coregroupd\[core-a\]'` finds one core's lines in a shared log. A line is
 * formatted whole and written with one call under the stream's lock, then flushed: lines from
 * several threads (the ZAP handler's, the workers') never interleave, and a line is out before
 * the program can die.
 *
 * Values that come from outside (a client's id, a peer's address, a topic) go through
 * cg_prog__quoted() or cg_prog__printable() first, so a hostile value cannot break a line,
 * forge another one, or fill the log.
 */
#ifndef CG_PROGLOG_H
#define CG_PROGLOG_H

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>

/* The levels of event lines, in the order of [core] log_level (0 error ... 3 debug). */
enum { CG_PROG_ERROR = 0, CG_PROG_WARN, CG_PROG_INFO, CG_PROG_DEBUG };

/* "error", "warn", "info" or "debug" ("?" for anything else). */
const char *cg_prog__level_name(int level);

/*
 * Write one line to `f`: "PROG[NAME]: TAG TEXT" — "PROG: ..." when name is NULL or "", and
 * TAG (for example "error: ") only when given — with TEXT formatted from fmt. A newline
 * inside TEXT is the caller's mistake and is written as is; nothing is clipped.
 */
void cg_prog__vline(FILE *f, const char *prog, const char *name, const char *tag, const char *fmt,
                    va_list ap);
void cg_prog__line(FILE *f, const char *prog, const char *name, const char *tag, const char *fmt,
                   ...) __attribute__((format(printf, 5, 6)));

/* An event line: "PROG[NAME]: level=LEVEL event=EVENT TEXT" (TEXT may be NULL: no fields). The
 * caller decides whether the level is wanted. */
void cg_prog__vevent(FILE *f, const char *prog, const char *name, int level, const char *event,
                     const char *fmt, va_list ap);

/*
 * Untrusted bytes (`n` of them, NULs included) as printable text in dst: anything outside
 * printable ASCII, and '"' and '\', becomes '?'; when they do not fit in dstsz - 1 characters,
 * as many as fit before a closing "...". dstsz must be at least 4. Returns dst.
 */
const char *cg_prog__printable(char *dst, size_t dstsz, const char *src, size_t n);

/*
 * A value for a key=value line: `s` in double quotes, '"' and '\' escaped with '\', anything
 * not printable ASCII shown as '?'. At most `max` characters of s are shown (SIZE_MAX: all
 * that fit), and "..." marks a value cut short, by max or by dstsz (which must be at least
 * 8). Returns dst.
 */
const char *cg_prog__quoted(char *dst, size_t dstsz, const char *s, size_t max);

#endif
