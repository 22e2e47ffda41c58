/*
 * hostport.h — the one reading of "HOST:PORT" (private to the library and its programs;
 * header-only), so that repository.ini's [daemon] metrics_listen and cg-busd's --metrics refuse
 * exactly the same values.
 *
 * HOST is an IPv4 address or a host name (letters, digits, '.', '-', '_'; at most 253
 * characters), or an IPv6 address in brackets ("[::1]:9101"); PORT is a decimal number from 1
 * to 65535. No wildcard shorthand: "0.0.0.0" or "[::]" say "every address" in so many words.
 * Nothing is resolved here: a name that does not resolve is found when the program binds.
 */
#ifndef CG_SYS_HOSTPORT_H
#define CG_SYS_HOSTPORT_H

#include <ctype.h>
#include <stddef.h>
#include <string.h>

#define CG_HOSTPORT_HOST_MAX 253

/*
 * Split `text` into host (brackets removed, NUL-terminated, at most CG_HOSTPORT_HOST_MAX
 * characters; host must hold CG_HOSTPORT_HOST_MAX + 1) and *port. Returns 0, or -1 with *why
 * a static sentence saying what is wrong.
 */
static inline int cg_hostport_split(char host[CG_HOSTPORT_HOST_MAX + 1], int *port,
                                    const char *text, const char **why)
{
    const char *colon, *h = text, *p;
    size_t n, i;
    long v = 0;

    *why = "expected HOST:PORT, e.g. 127.0.0.1:9101 or [::1]:9101";
    host[0] = '\0';
    *port = 0;
    if (text == NULL || text[0] == '\0')
        return -1;
    if (text[0] == '[') { /* [IPv6]:PORT */
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            return -1;
        h = text + 1;
        n = (size_t)(close - h);
        colon = close + 1;
        for (i = 0; i < n; i++)
            if (!isxdigit((unsigned char)h[i]) && h[i] != ':' && h[i] != '.') {
                *why = "the address in brackets is not an IPv6 address";
                return -1;
            }
        if (n < 2) {
            *why = "the address in brackets is not an IPv6 address";
            return -1;
        }
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL)
            return -1;
        n = (size_t)(colon - text);
        for (i = 0; i < n; i++)
            if (!isalnum((unsigned char)h[i]) && h[i] != '.' && h[i] != '-' && h[i] != '_') {
                *why = h[i] == ':' ? "an IPv6 address goes in brackets, e.g. [::1]:9101"
                                   : "the host has a character outside A-Z a-z 0-9 . - _";
                return -1;
            }
    }
    if (n == 0) {
        *why = "the host is missing (0.0.0.0 listens on every IPv4 address)";
        return -1;
    }
    if (n > CG_HOSTPORT_HOST_MAX) {
        *why = "the host is longer than 253 characters";
        return -1;
    }
    for (p = colon + 1; *p; p++) {
        if (!isdigit((unsigned char)*p) || v > 65535) {
            *why = "the port is not a number from 1 to 65535";
            return -1;
        }
        v = v * 10 + (*p - '0');
    }
    if (p == colon + 1 || v < 1 || v > 65535) {
        *why = "the port is not a number from 1 to 65535";
        return -1;
    }
    memcpy(host, h, n);
    host[n] = '\0';
    *port = (int)v;
    return 0;
}

#endif
