/*
 * jsonin.h — helpers shared by the decoders of untrusted JSON (bus messages, requests), so
 * that both report bad input alike and neither can be fooled by an escaped NUL (private).
 */
#ifndef CG_JSONIN_H
#define CG_JSONIN_H

#include <stddef.h>

#include <cjson/cJSON.h>

/* A printable excerpt of an untrusted string for an error message, written into buf: at most
 * 40 characters, anything outside printable ASCII (and quote, backslash) shown as '?', "..."
 * when clipped. Returns buf. */
const char *cg_json__excerpt(char buf[48], const char *s);

/* A number for an error message, written into buf: exact when it is an integer of sensible
 * size. Returns buf. */
const char *cg_json__number_text(char buf[40], double d);

/* "a number", "a string", "an array", "an object", "a boolean" or "null". */
const char *cg_json__kind(const cJSON *j);

/* The offset of the first \u0000 escape in data, or len. A backslash appears in JSON only
 * inside strings, and a run of backslashes pairs up into "\\" escapes from its start, so the
 * 'u' is an escape exactly when the run before it is odd. Not a JSON parser: it only finds
 * the one escape cJSON would turn into a string-ending NUL. */
size_t cg_json__nul_escape(const char *data, size_t len);

#endif
