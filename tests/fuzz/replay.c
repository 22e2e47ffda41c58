/*
 * replay.c — a libFuzzer-compatible main() for the fuzz targets, so that any compiler builds
 * them: `replay_<target> PATH...` runs the target's LLVMFuzzerTestOneInput once on every file
 * named, and on every regular file (sorted by name, not recursing) of every directory named.
 *
 * ctest runs each target this way over tests/fuzz/corpus/<target>/ and
 * tests/fuzz/regressions/<target>/ in every build (the fuzz_replay_<target> ctest tests). A
 * target signals a bug by crashing (abort(), or a sanitizer report in the CG_SANITIZE build,
 * which aborts), so the test fails on the input that did it; with -v (as ctest runs it) this
 * driver prints each file's name before running it, so the last name printed is the culprit.
 * What libFuzzer itself adds is not here: no mutation, no coverage, no time or memory limits
 * beyond ctest's timeout.
 *
 * Each input is read into a heap block of exactly its size (one byte for an empty file, passed
 * with size 0), as libFuzzer does, so AddressSanitizer sees a read one byte past the end.
 * Exit status: 0 when every input ran, 2 on a usage error, a path that cannot be read, or no
 * input at all (a missing corpus must not pass as an empty one).
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int verbose;

/* Run the target on the file at path. 0, or -1 when it cannot be read (reported). */
static int run_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    uint8_t *buf;
    long size;
    size_t got;

    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
        fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
        if (f)
            fclose(f);
        return -1;
    }
    if ((buf = malloc(size > 0 ? (size_t)size : 1)) == NULL) {
        fprintf(stderr, "replay: %s: out of memory for %ld bytes\n", path, size);
        fclose(f);
        return -1;
    }
    got = fread(buf, 1, (size_t)size, f);
    fclose(f);
    if (got != (size_t)size) {
        fprintf(stderr, "replay: %s: short read\n", path);
        free(buf);
        return -1;
    }
    if (verbose)
        fprintf(stderr, "replay: %s (%ld bytes)\n", path, size);
    LLVMFuzzerTestOneInput(buf, (size_t)size);
    free(buf);
    return 0;
}

static int regular_file(const struct dirent *d)
{
    return d->d_name[0] != '.';
}

/* Run every regular file of a directory, in name order. The number run, or -1. */
static long run_dir(const char *dir)
{
    struct dirent **names;
    long n = 0;
    int count, i, bad = 0;

    if ((count = scandir(dir, &names, regular_file, alphasort)) < 0) {
        fprintf(stderr, "replay: %s: %s\n", dir, strerror(errno));
        return -1;
    }
    for (i = 0; i < count; i++) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
        if (!bad && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (run_file(path) < 0)
                bad = 1;
            else
                n++;
        }
        free(names[i]);
    }
    free(names);
    return bad ? -1 : n;
}

int main(int argc, char **argv)
{
    long total = 0;
    int i, first = 1;

    if (argc > 1 && strcmp(argv[1], "-v") == 0) {
        verbose = 1;
        first = 2;
    }
    if (argc <= first) {
        fprintf(stderr, "usage: %s [-v] FILE|DIR...  (run the fuzz target on each input)\n",
                argv[0]);
        return 2;
    }
    for (i = first; i < argc; i++) {
        struct stat st;
        long n;
        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "replay: %s: %s\n", argv[i], strerror(errno));
            return 2;
        }
        n = S_ISDIR(st.st_mode) ? run_dir(argv[i]) : run_file(argv[i]) == 0 ? 1 : -1;
        if (n < 0)
            return 2;
        printf("replay: %s: %ld input%s\n", argv[i], n, n == 1 ? "" : "s");
        total += n;
    }
    if (total == 0) {
        fprintf(stderr, "replay: no input at all\n");
        return 2;
    }
    printf("replay: %ld inputs, no crash\n", total);
    return 0;
}
