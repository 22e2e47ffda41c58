/*
 * reclaim.h — read-side sections and deferred reclamation for lock-free readers (private).
 *
 * A cache hit takes no lock (cache.c): it reads the table and the part inside a READ-SIDE
 * SECTION, and whatever it found stays valid until the section ends, because nothing a reader
 * can reach is freed until every section that was open when it became unreachable has ended
 * (a grace period). This module is that rule, on userspace RCU's "bulletproof" flavour
 * (liburcu-bp):
 *
 *  - cg_read_lock() / cg_read_unlock() open and close a section. They nest, cost a few plain
 *    loads and stores on the calling thread's own data (no atomic instruction, no shared line
 *    written), and need no registration: liburcu-bp registers a thread on its first section
 *    and forgets it when it exits, which is why this flavour and not QSBR or urcu-memb, whose
 *    callers (here: every thread of every program that links the library) would have to
 *    register threads or announce quiescent states themselves. A section may block (a call
 *    holds one across its repository round trips, call.c): that only delays reclamation.
 *  - cg_retire(fn, arg) runs fn(arg) after a grace period. A writer unlinks an object under its
 *    own lock, then retires it; it never waits. One reclaimer thread per process (started on
 *    first use, restarted after fork) lets a batch gather (up to 256 objects or 10 ms), takes
 *    every pending object, waits for one grace period (synchronize_rcu, membarrier-expedited:
 *    an interrupt on each CPU running a thread of the process) and runs them all, so the cost
 *    of a grace period is shared by everything retired meanwhile. Nothing is retired twice,
 *    by construction of the callers (a table is unlinked once; each retire of a part drops
 *    one cache reference of its own).
 *  - Out of memory for the queue, the caller reclaims inline (synchronize_rcu, then fn) unless
 *    it is itself inside a section, where that would wait for itself: the object is then kept
 *    (a leak counted in cg_reclaim_leaked(), never a use after free).
 *  - fork(): liburcu-bp's locks are held across fork and its registry pruned in the child
 *    (pthread_atfork, installed by cg_reclaim_init()); the child starts its own reclaimer.
 *
 * ThreadSanitizer does not see the ordering a grace period gives (liburcu is not built with
 * it), so under TSan every section's end releases, and the reclaimer acquires after each grace
 * period, one address: exactly the happens-before edge that synchronize_rcu() guarantees.
 */
#ifndef CG_RECLAIM_H
#define CG_RECLAIM_H

/* liburcu's read side is inlined (_LGPL_SOURCE: its small functions, as liburcu intends),
 * except under UndefinedBehaviorSanitizer (CG_URCU_OUT_OF_LINE, set by CMake's CG_SANITIZE and
 * the fuzz build). liburcu-bp 0.13 hands each thread a reader record at a 32-byte offset in
 * its registry arena, while the record's type declares 128-byte alignment, and
 * -fsanitize=alignment reports every inlined access to it. Out of line, the same accesses
 * happen inside the (uninstrumented) library. The two forms do the same thing. */
#ifndef CG_URCU_OUT_OF_LINE
#define _LGPL_SOURCE
#endif
#include <urcu-bp.h>
#undef _LGPL_SOURCE

#include <stdint.h>

#if defined(__SANITIZE_THREAD__)
#define CG_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define CG_TSAN 1
#endif
#endif

#ifdef CG_TSAN
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
extern char cg_reclaim__tsan_sync;
#endif

/* Install the fork handlers (once per process). Call before the first cg_retire(). */
void cg_reclaim_init(void);

/* Open a read-side section on this thread (they nest). */
static inline void cg_read_lock(void)
{
    urcu_bp_read_lock();
}

/* Close the innermost section opened by this thread. */
static inline void cg_read_unlock(void)
{
#ifdef CG_TSAN
    __tsan_release(&cg_reclaim__tsan_sync);
#endif
    urcu_bp_read_unlock();
}

/* 1 when this thread is inside a section. */
static inline int cg_read_ongoing(void)
{
    return urcu_bp_read_ongoing();
}

/* Run fn(arg) once every section open now has ended. Never blocks on readers (see above). */
void cg_retire(void (*fn)(void *), void *arg);

/* Wait until everything retired before this call has been reclaimed (tests; must not be
 * called inside a section). */
void cg_reclaim_drain(void);

/* Objects kept because the queue could not grow while the caller was inside a section. */
uint64_t cg_reclaim_leaked(void);

#endif
