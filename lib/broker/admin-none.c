/* The operator API without the redis feature: every call that needs Redis
 * says CT_ENOTSUP, as broker-none.c does for the rest. */
#include "ctasker/broker-admin.h"

const char *ct_broker_status_name(ct_broker_status_t status) {
  static const char *const names[] = {"queued", "running",  "completed", "failed",
                                      "dead",   "delayed", "retrying",  "expired"};
  return status >= 0 && status < (int)(sizeof names / sizeof *names) ? names[status] : NULL;
}

int ct_broker_queue_stats(ct_broker_t *broker, json_t **out) {
  (void)broker;
  if (out)
    *out = NULL;
  return CT_ENOTSUP;
}

int ct_broker_dead_list(ct_broker_t *broker, const char *after, size_t count, json_t **out) {
  (void)broker;
  (void)after;
  (void)count;
  if (out)
    *out = NULL;
  return CT_ENOTSUP;
}

int ct_broker_dead_get(ct_broker_t *broker, const char *entry, json_t **out) {
  (void)broker;
  (void)entry;
  if (out)
    *out = NULL;
  return CT_ENOTSUP;
}

int ct_broker_dead_retry(ct_broker_t *broker, const char *entry, char id[CT_BROKER_ID_SIZE]) {
  (void)broker;
  (void)entry;
  (void)id;
  return CT_ENOTSUP;
}

int ct_broker_dead_purge(ct_broker_t *broker, const char *entry, long long *removed) {
  (void)broker;
  (void)entry;
  if (removed)
    *removed = 0;
  return CT_ENOTSUP;
}

int ct_broker_workers(ct_broker_t *broker, json_t **out) {
  (void)broker;
  if (out)
    *out = NULL;
  return CT_ENOTSUP;
}

int ct_broker_worker_observe(ct_broker_t *broker, ct_broker_observe_fn fn, void *data) {
  (void)broker;
  (void)fn;
  (void)data;
  return CT_ENOTSUP;
}
