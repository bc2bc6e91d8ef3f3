/* The worker's Prometheus metrics and their HTTP endpoint (libmicrohttpd). */
#ifndef CTASKER_CLI_PROM_H
#define CTASKER_CLI_PROM_H

#include <ctasker.h>
#include <ctasker/broker-admin.h>

typedef struct prom prom_t;

/* One queue the worker serves, for the per-queue labels and reads. */
typedef struct prom_queue {
  prom_t *prom;
  const char *name;
  ct_broker_t *broker;
} prom_queue_t;

prom_t *prom_new(ct_supervisor_t *sup, prom_queue_t *queues, int nqueues);

/* A ct_broker_observe_fn; data is the event's prom_queue_t. */
void prom_observe(const ct_broker_event_t *e, void *data);

/* One more attempt to connect to Redis again. */
void prom_reconnect(prom_t *p);

/* Serve /metrics on "HOST:PORT" (port 0: any free one). Returns 0 and
 * *port, or -1 after a log line saying why. */
int prom_serve(prom_t *p, const char *hostport, int *port);

/* Stop serving (if serving) and free. */
void prom_free(prom_t *p);

#endif
