/* Process handlers (ct_broker_register_process()) against a real
 * redis-server: a task name served by a process function in the
 * supervisor's pool — its result stored as the task's, a crash and a
 * hard timeout stored as exceptions, bad registrations refused. Counts
 * and outcomes only; every wait has a generous bound. */
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "ctasker.h"
#include "redis.h"

/* In the child: {"pid": its pid, "sum": a + b}. */
static json_t *fn_add(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  return json_pack("{s:i,s:I}", "pid", (int)getpid(), "sum",
                   json_integer_value(json_object_get(args, "a")) +
                       json_integer_value(json_object_get(args, "b")));
}

static json_t *fn_crash(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  raise(SIGKILL);
  return NULL;
}

static json_t *fn_hang(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)args;
  (void)data;
  for (;;)
    pause();
  return NULL;
}

static const char *class_of(const json_t *r) {
  return json_string_value(json_object_get(json_object_get(r, "exception"), "class"));
}

TEST(process_handlers_run_in_the_pool_and_store_their_outcomes) {
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  ct_supervisor_t *sup;
  CHECK_OK(ct_supervisor_new(NULL, &sup));
  CHECK_OK(ct_supervisor_start(sup));
  ct_process_pool_opts_t po = CT_PROCESS_POOL_OPTS_INIT;
  po.pool_size = 1;
  CHECK_OK(ct_process_pool_create(sup, &po));
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = r.url;
  o.command_timeout = 10;
  ct_broker_t *b;
  CHECK_OK(ct_broker_new(sup, &o, &b));
  CHECK_EQ_INT(ct_broker_register_process(NULL, "add", "add", 10), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_register_process(b, "add", NULL, 10), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_register_process(b, "add", "", 10), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_register_process(b, "add", "add", 0), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_register_process(b, "a\tb", "add", 10), CT_EINVAL);
  CHECK_OK(ct_broker_register_process(b, "add", "add", 30));
  CHECK_EQ_INT(ct_broker_register_process(b, "add", "add", 30), CT_EBUSY);
  CHECK_OK(ct_broker_register_process(b, "crash", "crash", 30));
  CHECK_OK(ct_broker_register_process(b, "hang", "hang", 0.5));
  CHECK_OK(ct_broker_register_process(b, "missing", "no.such.function", 30));
  CHECK_OK(ct_broker_worker_start(b, NULL));
  CHECK_EQ_INT(ct_broker_register_process(b, "late", "add", 10), CT_EBUSY);

  json_t *kw = json_pack("{s:i,s:i}", "a", 20, "b", 22), *res = NULL;
  CHECK_OK(ct_broker_call(b, "add", kw, NULL, 60, &res));
  json_decref(kw);
  CHECK(!ct_result_is_error(res));
  CHECK_EQ_INT(json_integer_value(json_object_get(res, "sum")), 42);
  CHECK(json_integer_value(json_object_get(res, "pid")) != getpid()); /* a child ran it */
  json_decref(res);

  CHECK_OK(ct_broker_call(b, "crash", NULL, NULL, 60, &res));
  CHECK_EQ_STR(class_of(res), "ProcessCrashed");
  json_decref(res);
  CHECK_OK(ct_broker_call(b, "hang", NULL, NULL, 60, &res));
  CHECK_EQ_STR(class_of(res), "TimeoutError");
  json_decref(res);
  CHECK_OK(ct_broker_call(b, "missing", NULL, NULL, 60, &res));
  CHECK_EQ_STR(class_of(res), "UnknownTask");
  json_decref(res);

  /* The pool works on after a crash and a kill. */
  kw = json_pack("{s:i,s:i}", "a", 1, "b", 2);
  CHECK_OK(ct_broker_call(b, "add", kw, NULL, 60, &res));
  json_decref(kw);
  CHECK_EQ_INT(json_integer_value(json_object_get(res, "sum")), 3);
  json_decref(res);

  /* A submitted task: its record says completed, its entry is gone. */
  char id[CT_BROKER_ID_SIZE];
  kw = json_pack("{s:i,s:i}", "a", 2, "b", 2);
  CHECK_OK(ct_broker_submit(b, "add", kw, NULL, id));
  json_decref(kw);
  redisReply *st = NULL;
  for (int i = 0; i < 600; i++) {
    freeReplyObject(st);
    st = test_redis(&r, "HGET ctasker:{default}:task:%s status", id);
    if (st->type == REDIS_REPLY_STRING && strcmp(st->str, "completed") == 0)
      break;
    usleep(50000);
  }
  CHECK_EQ_STR(st->str, "completed");
  freeReplyObject(st);
  CHECK_EQ_INT(test_redis_int(&r, "XLEN ctasker:{default}:stream:normal"), 0);

  CHECK_OK(ct_broker_worker_stop(b, -1));
  ct_broker_free(b);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  CHECK_OK(ct_supervisor_free(sup));
  test_redis_stop(&r);
}

int main(void) {
  CHECK_OK(ct_process_register("add", fn_add, NULL));
  CHECK_OK(ct_process_register("crash", fn_crash, NULL));
  CHECK_OK(ct_process_register("hang", fn_hang, NULL));
  RUN(process_handlers_run_in_the_pool_and_store_their_outcomes);
  return check_done();
}
