/*
 * proglog.c — see proglog.h: one line per event, "prog[name]: ...", for every program, and
 * the two ways an untrusted value is made safe to print (printable, quoted).
 *
 * A line is formatted into memory first (a stack buffer, or the heap for a long one) and then
 * written with one fwrite under flockfile(), so no other thread's line can land inside it even
 * on a stream that another part of the program writes with plain stdio. When memory runs out
 * for a long line, it is written cut to the stack buffer rather than not at all.
 */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "proglog.h"

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const char *cg_prog__level_name(int level)
{
    return level >= CG_PROG_ERROR && level <= CG_PROG_DEBUG ? level_names[level] : "?";
}

/* Write prefix + text + newline as one locked, flushed write. */
static void put_line(FILE *f, const char *prefix, size_t plen, const char *text, size_t tlen)
{
    flockfile(f);
    fwrite(prefix, 1, plen, f);
    fwrite(text, 1, tlen, f);
    putc('\n', f);
    fflush(f);
    funlockfile(f);
}

void cg_prog__vline(FILE *f, const char *prog, const char *name, const char *tag, const char *fmt,
                    va_list ap)
{
    char prefix[256], small[2048], *text = small;
    int plen, tlen;
    va_list again;

    if (name && name[0])
        plen = snprintf(prefix, sizeof(prefix), "%s[%s]: %s", prog, name, tag ? tag : "");
    else
        plen = snprintf(prefix, sizeof(prefix), "%s: %s", prog, tag ? tag : "");
    if (plen < 0)
        plen = 0;
    else if ((size_t)plen >= sizeof(prefix))
        plen = (int)sizeof(prefix) - 1;

    va_copy(again, ap);
    tlen = vsnprintf(small, sizeof(small), fmt, ap);
    if (tlen < 0) {
        tlen = 0;
        small[0] = '\0';
    } else if ((size_t)tlen >= sizeof(small)) {
        char *big = malloc((size_t)tlen + 1);
        if (big) {
            vsnprintf(big, (size_t)tlen + 1, fmt, again);
            text = big;
        } else {
            tlen = (int)sizeof(small) - 1;
        }
    }
    va_end(again);
    put_line(f, prefix, (size_t)plen, text, (size_t)tlen);
    if (text != small)
        free(text);
}

void cg_prog__line(FILE *f, const char *prog, const char *name, const char *tag, const char *fmt,
                   ...)
{
    va_list ap;
    va_start(ap, fmt);
    cg_prog__vline(f, prog, name, tag, fmt, ap);
    va_end(ap);
}

void cg_prog__vevent(FILE *f, const char *prog, const char *name, int level, const char *event,
                     const char *fmt, va_list ap)
{
    char rest[4096];
    rest[0] = '\0';
    if (fmt)
        vsnprintf(rest, sizeof(rest), fmt, ap);
    cg_prog__line(f, prog, name, NULL, "level=%s event=%s%s%s", cg_prog__level_name(level), event,
                  rest[0] ? " " : "", rest);
}

static int is_printable(unsigned char c)
{
    return c >= 0x20 && c < 0x7f;
}

const char *cg_prog__printable(char *dst, size_t dstsz, const char *src, size_t n)
{
    size_t i, room;
    assert(dstsz >= 4);
    room = n <= dstsz - 1 ? n : dstsz - 4;
    for (i = 0; i < room; i++) {
        unsigned char c = (unsigned char)src[i];
        dst[i] = is_printable(c) && c != '"' && c != '\\' ? (char)c : '?';
    }
    if (room < n)
        memcpy(dst + i, "...", 4);
    else
        dst[i] = '\0';
    return dst;
}

const char *cg_prog__quoted(char *dst, size_t dstsz, const char *s, size_t max)
{
    size_t o = 0, i;
    assert(dstsz >= 8);
    dst[o++] = '"';
    /* room for an escaped character, "...", the closing quote and the NUL */
    for (i = 0; s[i] && i < max && o + 7 <= dstsz; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            dst[o++] = '\\', dst[o++] = (char)c;
        else
            dst[o++] = is_printable(c) ? (char)c : '?';
    }
    if (s[i]) {
        memcpy(dst + o, "...", 3);
        o += 3;
    }
    dst[o++] = '"';
    dst[o] = '\0';
    return dst;
}
