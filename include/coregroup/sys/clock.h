/*
 * clock.h — the clocks the library reads, and its programs too (private: not installed;
 * header-only). One definition of "now in milliseconds" for every folder and program.
 *
 * Durations, deadlines and leases use CLOCK_MONOTONIC, which no one can set back; times that
 * leave the process (a commit time in a bus message) use CLOCK_REALTIME. Condition variables
 * here wait on CLOCK_REALTIME (the pthread default), so cg_clock_deadline builds that.
 */
#ifndef CG_SYS_CLOCK_H
#define CG_SYS_CLOCK_H

#include <stdint.h>
#include <time.h>

/* CLOCK_MONOTONIC in microseconds. */
static inline int64_t cg_clock_mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* CLOCK_MONOTONIC in milliseconds. */
static inline int64_t cg_clock_mono_ms(void)
{
    return cg_clock_mono_us() / 1000;
}

/* CLOCK_REALTIME in microseconds since the epoch. */
static inline int64_t cg_clock_wall_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The absolute CLOCK_REALTIME time `ms` from now, for pthread_cond_timedwait. */
static inline struct timespec cg_clock_deadline(int64_t ms)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += ms / 1000;
    until.tv_nsec += (ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    return until;
}

#endif
