/*
 * keyfile.c — see keyfile.h: reading CURVE key files, for the bus and for the programs.
 *
 * There is exactly one reader so that a key file means the same thing everywhere: a file that
 * cg-busd accepts (with an operator's "# forwarder A, rotated 2026-03" line above the key) is
 * accepted as a core's [bus] key too, and a file one of them refuses is refused by all with the
 * same message. Lines are read whole (getline), so a long comment cannot be split into pieces
 * that are then mistaken for lines of their own.
 *
 * Deliberately not here: whether a public key belongs to a secret key, allow-lists and their
 * reloading (curve.c, the programs'), and setting keys on sockets (bus.c). Nothing here keeps
 * a key beyond the caller's buffer.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zmq.h>

#include "keyfile.h"
#include "coregroup/sys/error.h"

/* A line holding a key: 1 and key filled; 0 for a blank or comment line; -1 for anything
 * else. Leading and trailing white space is ignored; the line is trimmed in place. */
static int parse_line(uint8_t key[32], char *line)
{
    char *end;
    while (*line == ' ' || *line == '\t')
        line++;
    end = line + strlen(line);
    while (end > line && strchr(" \t\r\n", end[-1]))
        *--end = '\0';
    if (*line == '\0' || *line == '#')
        return 0;
    if (end - line != CG_KEY_Z85_LEN || zmq_z85_decode(key, line) == NULL)
        return -1;
    return 1;
}

/*
 * Read the keys of `path` in order, calling take(arg, key) for each until it returns non-zero
 * (stop: 0 is returned) or a negative code (returned). The whole file must be keys and
 * comments up to where reading stops. *found gets the number of keys taken.
 */
static int each_key(const char *path, int (*take)(void *arg, const uint8_t key[32]), void *arg,
                    size_t *found)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int err = 0, r;

    *found = 0;
    if (f == NULL)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_OS, "cannot open \"%s\": %s", path,
                            strerror(errno));
    for (;;) {
        uint8_t key[32];
        errno = 0;
        if (getline(&line, &cap, f) < 0) {
            if (ferror(f))
                err = cg_error_set(CG_EINVALID, CG_ERRCLASS_OS, "cannot read \"%s\": %s", path,
                                   strerror(errno ? errno : EIO));
            else if (errno == ENOMEM)
                err = cg_error_nomem();
            break;
        }
        lineno++;
        if ((r = parse_line(key, line)) == 0)
            continue;
        if (r < 0) {
            err = cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT,
                               "\"%s\" line %ld: not a Z85 CURVE key (%d characters)", path, lineno,
                               CG_KEY_Z85_LEN);
            break;
        }
        (*found)++;
        if ((r = take(arg, key)) != 0) {
            err = r < 0 ? r : 0;
            break;
        }
    }
    free(line);
    fclose(f);
    return err;
}

static int take_first(void *arg, const uint8_t key[32])
{
    memcpy(arg, key, 32);
    return 1; /* stop */
}

int cg_keyfile_read(uint8_t key[32], const char *path)
{
    size_t found;
    int err = each_key(path, take_first, key, &found);
    if (err < 0)
        return err;
    if (found == 0)
        return cg_error_set(CG_EINVALID, CG_ERRCLASS_INPUT, "\"%s\" holds no key", path);
    return 0;
}

typedef struct {
    uint8_t (*keys)[32];
    size_t n, cap;
} key_array;

static int take_all(void *arg, const uint8_t key[32])
{
    key_array *a = arg;
    if (a->n == a->cap) {
        size_t cap = a->cap ? a->cap * 2 : 16;
        void *grown = realloc(a->keys, cap * sizeof(a->keys[0]));
        if (grown == NULL)
            return cg_error_nomem();
        a->keys = grown;
        a->cap = cap;
    }
    memcpy(a->keys[a->n++], key, 32);
    return 0;
}

int cg_keyfile_read_all(uint8_t (**keys)[32], size_t *n, const char *path)
{
    key_array a = {NULL, 0, 0};
    size_t found;
    int err = each_key(path, take_all, &a, &found);
    *keys = NULL;
    *n = 0;
    if (err < 0) {
        free(a.keys);
        return err;
    }
    *keys = a.keys;
    *n = a.n;
    return 0;
}
