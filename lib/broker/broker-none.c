/* The broker without the redis feature: every call says CT_ENOTSUP, so a
 * program can ask at run time and the exported symbols stay the same. */
#include "ctasker/broker.h"

int ct_broker_new(ct_supervisor_t *sup, const ct_broker_opts_t *opts, ct_broker_t **out) {
  (void)sup;
  (void)opts;
  if (out)
    *out = NULL;
  return CT_ENOTSUP;
}

void ct_broker_free(ct_broker_t *broker) { (void)broker; }

int ct_broker_submit(ct_broker_t *broker, const char *name, const json_t *kwargs,
                     const ct_broker_submit_opts_t *opts, char id[CT_BROKER_ID_SIZE]) {
  (void)broker;
  (void)name;
  (void)kwargs;
  (void)opts;
  (void)id;
  return CT_ENOTSUP;
}

int ct_broker_submit_many(ct_broker_t *broker, size_t n, const char *const names[],
                          const json_t *const kwargs[], const ct_broker_submit_opts_t *opts,
                          char (*ids)[CT_BROKER_ID_SIZE], int rcs[]) {
  (void)broker;
  (void)names;
  (void)kwargs;
  (void)opts;
  (void)ids;
  for (size_t i = 0; rcs && i < n; i++)
    rcs[i] = CT_ENOTSUP;
  return CT_ENOTSUP;
}

int ct_broker_get(ct_broker_t *broker, const char *id, ct_broker_info_t *out) {
  (void)broker;
  (void)id;
  (void)out;
  return CT_ENOTSUP;
}

int ct_broker_register(ct_broker_t *broker, const char *name, ct_broker_handler_fn fn,
                       void *data) {
  (void)broker;
  (void)name;
  (void)fn;
  (void)data;
  return CT_ENOTSUP;
}

int ct_broker_register_process(ct_broker_t *broker, const char *name, const char *function,
                               double timeout) {
  (void)broker;
  (void)name;
  (void)function;
  (void)timeout;
  return CT_ENOTSUP;
}

int ct_broker_worker_start(ct_broker_t *broker, const ct_broker_worker_opts_t *opts) {
  (void)broker;
  (void)opts;
  return CT_ENOTSUP;
}

int ct_broker_worker_stop(ct_broker_t *broker, double timeout) {
  (void)broker;
  (void)timeout;
  return CT_ENOTSUP;
}

int ct_broker_call(ct_broker_t *broker, const char *name, const json_t *kwargs,
                   const ct_broker_submit_opts_t *opts, double timeout, json_t **result) {
  (void)broker;
  (void)name;
  (void)kwargs;
  (void)opts;
  (void)timeout;
  if (result)
    *result = NULL;
  return CT_ENOTSUP;
}

int ct_broker_register_loop(ct_broker_t *broker, const char *name, const char *loop,
                            ct_broker_loop_fn fn, void *data) {
  (void)broker;
  (void)name;
  (void)loop;
  (void)fn;
  (void)data;
  return CT_ENOTSUP;
}

/* No run is ever made without the redis feature: the result is dropped. */
void ct_broker_run_complete(ct_broker_run_t *run, json_t *result) {
  (void)run;
  json_decref(result);
}

bool ct_broker_run_canceled(ct_broker_run_t *run) {
  (void)run;
  return false;
}

void ct_broker_run_on_cancel(ct_broker_run_t *run, ct_broker_cancel_fn fn, void *data) {
  (void)run;
  (void)fn;
  (void)data;
}

int ct_broker_submit_async(ct_broker_t *broker, const char *name, const json_t *kwargs,
                           const ct_broker_submit_opts_t *opts, ct_loop_t *loop,
                           ct_broker_submit_cb cb, void *data) {
  (void)broker;
  (void)name;
  (void)kwargs;
  (void)opts;
  (void)loop;
  (void)cb;
  (void)data;
  return CT_ENOTSUP;
}

int ct_broker_get_async(ct_broker_t *broker, const char *id, ct_loop_t *loop, ct_broker_get_cb cb,
                        void *data) {
  (void)broker;
  (void)id;
  (void)loop;
  (void)cb;
  (void)data;
  return CT_ENOTSUP;
}

int ct_broker_call_async(ct_broker_t *broker, const char *name, const json_t *kwargs,
                         const ct_broker_submit_opts_t *opts, double timeout, ct_loop_t *loop,
                         ct_broker_call_cb cb, void *data) {
  (void)broker;
  (void)name;
  (void)kwargs;
  (void)opts;
  (void)timeout;
  (void)loop;
  (void)cb;
  (void)data;
  return CT_ENOTSUP;
}
