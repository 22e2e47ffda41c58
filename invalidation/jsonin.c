/*
 * jsonin.c — see jsonin.h: what the bus decoder (message.c) and the request decoder
 * (daemon_request.c) share when they report untrusted JSON. Pure functions, no state.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "jsonin.h"

const char *cg_json__excerpt(char buf[48], const char *s)
{
    size_t i;
    for (i = 0; s[i] && i < 40; i++) {
        unsigned char c = (unsigned char)s[i];
        buf[i] = c >= 0x20 && c < 0x7f && c != '"' && c != '\\' ? (char)c : '?';
    }
    if (s[i])
        memcpy(buf + i, "...", 4);
    else
        buf[i] = '\0';
    return buf;
}

const char *cg_json__number_text(char buf[40], double d)
{
    if (d == floor(d) && fabs(d) < 1e18)
        snprintf(buf, 40, "%.0f", d);
    else
        snprintf(buf, 40, "%.6g", d);
    return buf;
}

const char *cg_json__kind(const cJSON *j)
{
    if (cJSON_IsNumber(j))
        return "a number";
    if (cJSON_IsString(j))
        return "a string";
    if (cJSON_IsArray(j))
        return "an array";
    if (cJSON_IsObject(j))
        return "an object";
    if (cJSON_IsBool(j))
        return "a boolean";
    return "null";
}

size_t cg_json__nul_escape(const char *data, size_t len)
{
    size_t i, run = 0;
    for (i = 0; i < len; i++) {
        if (data[i] == '\\') {
            run++;
            continue;
        }
        if (data[i] == 'u' && run % 2 == 1 && len - i >= 5 && memcmp(data + i + 1, "0000", 4) == 0)
            return i - 1;
        run = 0;
    }
    return len;
}
