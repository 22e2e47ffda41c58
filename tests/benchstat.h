/*
 * benchstat.h — what the benchmark programs share to report a figure measured in rounds.
 *
 * Benchmarks measure a figure and its baseline in alternating rounds, and report the median of
 * each, because one measurement on a shared 2-CPU machine drifts by more than the margins the
 * ratios are judged by.
 */
#ifndef CG_BENCHSTAT_H
#define CG_BENCHSTAT_H

/* The median of n figures (n >= 1), sorting v in place: the middle one, or the mean of the
 * two middle ones when n is even. */
static inline double cg_bench_median(double *v, int n)
{
    int i, j;
    for (i = 1; i < n; i++)
        for (j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#endif
