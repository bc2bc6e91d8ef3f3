/* Process handlers (ct_broker_register_process()) against a real
 * redis-server: a task name served by a process function in the
 * supervisor's pool — its result stored as the task's, a crash and a
 * hard timeout stored as exceptions, bad registrations refused; a run
 * past its run timeout or whose lease was lost has its child killed.
 * Counts and outcomes only; every wait has a generous bound. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "ctasker.h"
#include "../pool.h"
#include "redis.h"

/* In the child: {"pid": its pid, "sum": a + b}. */
static json_t *fn_add(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  return json_pack("{s:i,s:I}", "pid", (int)getpid(), "sum",
                   json_integer_value(json_object_get(args, "a")) +
                       json_integer_value(json_object_get(args, "b")));
}

/* Writes its pid to the file kwargs "path" names, then sleeps a minute. */
static json_t *fn_sleeper(uint64_t id, json_t *args, void *data) {
  (void)id;
  (void)data;
  FILE *f = fopen(json_string_value(json_object_get(args, "path")), "w");
  fprintf(f, "%d\n", (int)getpid());
  fclose(f);
  check_sleep(60);
  return json_string("woke");
}

static const char *class_of(const json_t *r) {
  return json_string_value(json_object_get(json_object_get(r, "exception"), "class"));
}

TEST(process_handlers_run_in_the_pool_and_store_their_outcomes) {
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  ct_supervisor_t *sup = pool_sup_start_pool_last(NULL, 1, 0);
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

#define PREFIX "ctasker:{default}:"

typedef struct {
  test_redis_t r;
  ct_supervisor_t *sup;
  ct_broker_t *b;
  char path[128]; /* where the sleeper writes its pid */
} env_t;

/* Redis, a supervisor with a one-child pool, a broker whose "sleep" is
 * the sleeper (its two minutes' hard timeout would not end it soon) and
 * "add" the adder, and a worker with the given lease (0: the default). */
static void env_start(env_t *e, double lease) {
  memset(e, 0, sizeof *e);
  test_redis_start(&e->r, NULL);
  snprintf(e->path, sizeof e->path, "%s/sleeper.pid", e->r.dir);
  e->sup = pool_sup_start(NULL, 1, 0); /* the pool made before the start */
  e->b = test_broker_open(e->sup, e->r.url, 10, NULL);
  CHECK_OK(ct_broker_register_process(e->b, "sleep", "sleeper", 120));
  CHECK_OK(ct_broker_register_process(e->b, "add", "add", 30));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = lease;
  CHECK_OK(ct_broker_worker_start(e->b, &wo));
}

static void env_end(env_t *e) {
  CHECK_OK(ct_broker_worker_stop(e->b, -1));
  ct_broker_free(e->b);
  CHECK_OK(ct_supervisor_stop(e->sup, CT_STOP_DRAIN, 30));
  CHECK_OK(ct_supervisor_free(e->sup));
  test_redis_stop(&e->r);
}

/* The pid the sleeper wrote, once it has (a run has started in a child). */
static int sleeper_pid(env_t *e) {
  int pid = 0;
  for (int i = 0; pid <= 0; i++) {
    CHECK(i < 2000);
    FILE *f = fopen(e->path, "r");
    if (!f || fscanf(f, "%d", &pid) != 1)
      pid = 0;
    if (f)
      fclose(f);
    if (pid <= 0)
      check_sleep(0.01);
  }
  unlink(e->path);
  return pid;
}

static ct_broker_info_t wait_terminal(env_t *e, const char *id) {
  ct_broker_info_t info;
  for (int i = 0;; i++) {
    CHECK(i < 3000);
    CHECK_OK(ct_broker_get(e->b, id, &info));
    if (info.status == CT_BROKER_COMPLETED || info.status == CT_BROKER_FAILED ||
        info.status == CT_BROKER_DEAD)
      return info;
    json_decref(info.result);
    check_sleep(0.01);
  }
}

TEST(a_run_past_its_timeout_has_its_child_killed) {
  env_t e;
  env_start(&e, 0);
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.timeout = 0.5;
  char id[CT_BROKER_ID_SIZE];
  json_t *kw = json_pack("{s:s}", "path", e.path);
  CHECK_OK(ct_broker_submit(e.b, "sleep", kw, &so, id));
  json_decref(kw);
  int pid = sleeper_pid(&e);
  ct_broker_info_t info = wait_terminal(&e, id);
  CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
  CHECK_EQ_STR(class_of(info.result), "TimeoutError");
  json_decref(info.result);
  WAIT_FOR(pool_gone(pid)); /* killed and reaped, not left to sleep its minute */
  /* The pool's one child is a new one, and serves the next task. */
  kw = json_pack("{s:i,s:i}", "a", 1, "b", 2);
  json_t *res = NULL;
  CHECK_OK(ct_broker_call(e.b, "add", kw, NULL, 60, &res));
  json_decref(kw);
  CHECK_EQ_INT(json_integer_value(json_object_get(res, "sum")), 3);
  CHECK(json_integer_value(json_object_get(res, "pid")) != pid);
  json_decref(res);
  env_end(&e);
}

/* Another worker takes the entry over (as after a pause longer than the
 * lease): this worker learns it at its next renewal and cancels the run,
 * and so its child is killed. */
TEST(a_run_whose_lease_is_lost_has_its_child_killed) {
  env_t e;
  env_start(&e, 0.3);
  char id[CT_BROKER_ID_SIZE];
  json_t *kw = json_pack("{s:s}", "path", e.path);
  CHECK_OK(ct_broker_submit(e.b, "sleep", kw, NULL, id));
  json_decref(kw);
  int pid = sleeper_pid(&e);
  test_redis_take_over_only_entry(&e.r, PREFIX "stream:normal");
  /* Fetch nothing more (the entry, idle under "other", would be taken
   * back after a lease); the running task goes on, and its renewals. */
  CHECK_OK(ct_broker_worker_stop(e.b, 0));
  WAIT_FOR(pool_gone(pid));
  CHECK_OK(ct_broker_worker_stop(e.b, -1)); /* its run has ended */
  /* The entry is still the other worker's, pending: not acknowledged. */
  redisReply *x = test_redis(&e.r, "XPENDING " PREFIX "stream:normal workers - + 10");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 1);
  CHECK_EQ_STR(x->element[0]->element[1]->str, "other");
  freeReplyObject(x);
  env_end(&e);
}

int main(void) {
  CHECK_OK(ct_process_register("add", fn_add, NULL));
  CHECK_OK(ct_process_register("crash", pool_fn_killed, NULL));
  CHECK_OK(ct_process_register("hang", pool_fn_hang, NULL));
  CHECK_OK(ct_process_register("sleeper", fn_sleeper, NULL));
  RUN(process_handlers_run_in_the_pool_and_store_their_outcomes);
  RUN(a_run_past_its_timeout_has_its_child_killed);
  RUN(a_run_whose_lease_is_lost_has_its_child_killed);
  return check_done();
}
