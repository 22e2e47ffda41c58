/*
 * keyfile.h — CURVE key files (private): the one reader of every key file, whoever names it —
 * the library's bus ([bus] curve_server_key, curve_public_key, curve_secret_key of
 * repository.ini) and the programs (cg-busd, coregroupd, cgctl, cg-watch, through curve.h).
 *
 * The format, as `cg-busd --keygen` writes it and an operator edits it: a key is 40 characters
 * of Z85 (ZeroMQ RFC 32) on a line of its own; white space around it is ignored; blank lines
 * and lines whose first non-blank character is '#' are comments. A key file's key is its first
 * key line; a client list holds any number of key lines. Any other line is an error naming the
 * file and the line, so a damaged file is never half read.
 */
#ifndef CG_KEYFILE_H
#define CG_KEYFILE_H

#include <stddef.h>
#include <stdint.h>

#define CG_KEY_Z85_LEN 40

/*
 * The key of the key file at `path`: its first key line, decoded into `key`. Returns 0, or
 * CG_EINVALID with cg_error_last() naming the file (and the line): it cannot be opened or read,
 * a line before the first key is neither a key nor a comment, or it holds no key. The message
 * does not say which setting named the file: the caller prefixes that ("[bus]
 * curve_secret_key: ...").
 */
int cg_keyfile_read(uint8_t key[32], const char *path);

/*
 * Every key of the file at `path`, in file order: 0 with *keys (a new array the caller frees
 * with free(); NULL when *n is 0) and *n. A file of comments only gives *n == 0; whether that
 * is acceptable is the caller's decision. CG_EINVALID as for cg_keyfile_read when a line is
 * neither a key nor a comment, CG_ERROR when memory ran out; *keys is NULL and *n 0 then.
 */
int cg_keyfile_read_all(uint8_t (**keys)[32], size_t *n, const char *path);

#endif
