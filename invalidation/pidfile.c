/*
 * pidfile.c — see pidfile.h: taking, writing and releasing a daemon's pid file, and reading
 * another process's. No output: the callers (coregroupd's log, cgctl's messages) say what an
 * outcome means to their user.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "pidfile.h"

/* The pid an open pid file names (a positive number alone on its first line), or 0. */
static long read_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    char *end;
    long pid;
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    pid = strtol(buf, &end, 10);
    return pid > 0 && (*end == '\0' || *end == '\n') ? pid : 0;
}

/* 1 when process `pid` exists (ours to signal or not) and has not exited: a zombie has. */
static int pid_live(long pid)
{
    char path[64], st[512], *p;
    FILE *f;
    if (pid <= 0 || (kill((pid_t)pid, 0) < 0 && errno != EPERM))
        return 0;
    snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
    if ((f = fopen(path, "r")) == NULL)
        return 1; /* no /proc: kill() said it exists */
    p = fgets(st, sizeof(st), f) ? strrchr(st, ')') : NULL;
    fclose(f);
    return !(p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X'));
}

int cg_prog__pidfile_lock(cg_prog__pidfile *pf, long *other)
{
    *other = 0;
    pf->fd = open(pf->path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (pf->fd < 0)
        return CG_PIDFILE_EOPEN;
    if (flock(pf->fd, LOCK_EX | LOCK_NB) < 0) {
        int e = errno;
        *other = read_pid(pf->fd);
        close(pf->fd);
        pf->fd = -1;
        errno = e;
        return e == EWOULDBLOCK ? CG_PIDFILE_HELD : CG_PIDFILE_ELOCK;
    }
    *other = read_pid(pf->fd);
    if (*other > 0 && *other != (long)getpid() && pid_live(*other)) {
        close(pf->fd); /* not ours: leave the file alone */
        pf->fd = -1;
        return CG_PIDFILE_NAMES_LIVE;
    }
    if (*other == (long)getpid())
        *other = 0;
    return CG_PIDFILE_OURS;
}

int cg_prog__pidfile_write(cg_prog__pidfile *pf)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    ssize_t w;
    if (ftruncate(pf->fd, 0) < 0 || (w = pwrite(pf->fd, buf, (size_t)n, 0)) < 0)
        return -1;
    if (w != n) { /* short write: no errno of its own */
        errno = EIO;
        return -1;
    }
    return 0;
}

void cg_prog__pidfile_release(cg_prog__pidfile *pf)
{
    if (pf->fd < 0)
        return;
    unlink(pf->path);
    close(pf->fd);
    pf->fd = -1;
}

long cg_prog__pidfile_live(const char *path)
{
    long pid;
    int fd;
    if (path == NULL || (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
        return 0;
    pid = read_pid(fd);
    close(fd);
    return pid_live(pid) ? pid : 0;
}
