/* What a worker tells metrics.c of each task it runs (see metrics.c). */
#ifndef CT_BROKER_METRICS_H
#define CT_BROKER_METRICS_H

#include "message.h"

typedef struct ct__bmetrics ct__bmetrics_t;

/* A task of `level` is about to run (its handler, or its refusal).
 * Returns the start time (ct_now()), for ct__bmetrics_end(). */
double ct__bmetrics_start(ct_broker_t *b, const ct__bmsg_t *m, int level);

/* The run ended: outcome is COMPLETED or FAILED (stored), RETRYING (a
 * retry is scheduled), EXPIRED (its caller's deadline had passed) or
 * RUNNING (its lease was lost: nothing stored). */
void ct__bmetrics_end(ct_broker_t *b, const ct__bmsg_t *m, int level,
                      ct_broker_status_t outcome, double started);

/* The fetch thread is about to wait for work: counts not yet written are
 * written, unless a task runs or the last write is recent. */
void ct__bmetrics_idle(ct_broker_t *b);

/* The fetch thread waits for a slot: counts not yet written are written,
 * unless the last write is under a second old. */
void ct__bmetrics_due(ct_broker_t *b);

/* The worker retires (no task runs): counts not yet written are written. */
void ct__bmetrics_final(ct_broker_t *b);

/* The worker moved an entry of `level` (-1: a member of the delayed set)
 * to the dead letters; name and id as the entry had them ("" if none). */
void ct__bmetrics_dead(ct_broker_t *b, const char *name, const char *id, int level);

/* Free what the handle's metrics hold (NULL does nothing). */
void ct__bmetrics_free(ct__bmetrics_t *m);

#endif
