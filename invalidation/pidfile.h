/*
 * pidfile.h — pid files, for the daemon that owns one (coregroupd) and the client that reads
 * it (cgctl start/stop): program plumbing like program.h, never part of the library.
 *
 * The owner opens the file and takes an exclusive flock() before anything else and holds it for
 * its lifetime, so a second daemon configured alike finds it held; the lock, not the file's
 * existence, says "running", and it goes away with the process however that ends. A file
 * nobody holds is stale unless it names a live process (which might be a daemon started
 * without the lock, or something unrelated that got the pid: refused either way, the operator
 * decides). A process is live when kill(pid, 0) finds it and it is not a zombie.
 */
#ifndef CG_PIDFILE_H
#define CG_PIDFILE_H

typedef struct cg_prog__pidfile {
    const char *path; /* not owned */
    int fd;           /* open and locked while held; -1 otherwise */
} cg_prog__pidfile;

/* What cg_prog__pidfile_lock() found. */
enum {
    CG_PIDFILE_OURS = 0,  /* locked: pf->fd is held; *other is the dead pid a stale file named */
    CG_PIDFILE_HELD,      /* another process holds the lock; *other is the pid the file names */
    CG_PIDFILE_NAMES_LIVE /* nobody holds the lock, but the file names live process *other */
};
#define CG_PIDFILE_EOPEN (-1) /* cannot open (errno set) */
#define CG_PIDFILE_ELOCK (-2) /* cannot lock (errno set) */

/* Open (creating it, mode 0644, close-on-exec) and lock pf->path. Returns one of the values
 * above; only CG_PIDFILE_OURS leaves pf->fd open, and the file is not changed unless ours. */
int cg_prog__pidfile_lock(cg_prog__pidfile *pf, long *other);

/* Write this process's pid into the held file (replacing what it held). 0, or -1 (errno). */
int cg_prog__pidfile_write(cg_prog__pidfile *pf);

/* Remove and close the held file (at exit; nothing when not held). Removing it while the lock
 * is still held means nobody else can have taken it over in between. */
void cg_prog__pidfile_release(cg_prog__pidfile *pf);

/* The pid the file at `path` names when that process is live, else 0 (also for a NULL path or
 * a file that cannot be read). For clients: it takes no lock. */
long cg_prog__pidfile_live(const char *path);

#endif
