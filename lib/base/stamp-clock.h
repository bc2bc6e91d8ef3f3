/* The clock of tasks' timestamps (see stamp-clock.c): ct__now()'s time,
 * read for less where the kernel's own clock is the time-stamp counter. */
#ifndef CT_LIB_STAMP_CLOCK_H
#define CT_LIB_STAMP_CLOCK_H

/* Seconds on CLOCK_MONOTONIC, as ct__now() gives them, within a few tens
 * of nanoseconds (at most about 200); never less than the calling
 * thread's previous value. For timestamps that a caller may read, not for
 * deadlines. */
double ct__stamp_now(void);

#endif
