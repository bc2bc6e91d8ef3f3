/* RPC against a real redis-server: a call, blocking or asynchronous, is
 * answered by the entry its task's end pushes onto the done list, which
 * carries the status and the result, so that no read of the record follows
 * (INFO commandstats counts none); an entry that is a bare status (a late
 * duplicate completion, a dead letter, a worker that pushes the older
 * form) sends the call to the record, whose answer is the first
 * completion's. Counts and order only; time bounds are generous. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"
#include "handlers.h"

#define PREFIX "ctasker:{default}:"
#define STREAM PREFIX "stream:normal"

/* One asynchronous answer. */
typedef struct {
  atomic_int count;
  int rc;
  json_t *result;
} answer_t;

static void on_call(int rc, json_t *result, void *data) {
  answer_t *a = data;
  a->rc = rc;
  /* A copy: the library drops its reference on its thread after this
   * returns, while the test may drop its own. */
  a->result = json_deep_copy(result);
  atomic_fetch_add(&a->count, 1);
}

/* A blocking call on a thread of its own. */
typedef struct {
  pthread_t thread;
  ct_broker_t *b;
  const char *name;
  json_t *kwargs;
  double timeout;
  int rc;
  json_t *result;
} caller_t;

static void *caller_main(void *arg) {
  caller_t *c = arg;
  c->rc = ct_broker_call(c->b, c->name, c->kwargs, NULL, c->timeout, &c->result);
  return NULL;
}

static void caller_start_within(caller_t *c, ct_broker_t *b, const char *name, json_t *kwargs,
                                double timeout) {
  *c = (caller_t){.b = b, .name = name, .kwargs = kwargs, .timeout = timeout};
  CHECK_OK(pthread_create(&c->thread, NULL, caller_main, c));
}

static void caller_start(caller_t *c, ct_broker_t *b, const char *name, json_t *kwargs) {
  caller_start_within(c, b, name, kwargs, 60);
}

static void caller_join(caller_t *c) {
  CHECK_OK(pthread_join(c->thread, NULL));
  json_decref(c->kwargs);
}

/* The task id of the only entry in the stream, once there is one. */
static void only_entry_id(test_redis_t *r, char id[CT_BROKER_ID_SIZE]) {
  WAIT_FOR(test_redis_int(r, "XLEN " STREAM) == 1);
  redisReply *x = test_redis(r, "XRANGE " STREAM " - +");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 1);
  const redisReply *f = x->element[0]->element[1];
  id[0] = '\0';
  for (size_t j = 0; j + 1 < f->elements; j += 2)
    if (strcmp(f->element[j]->str, "id") == 0 && f->element[j + 1]->len == CT_BROKER_ID_SIZE - 1)
      memcpy(id, f->element[j + 1]->str, CT_BROKER_ID_SIZE);
  CHECK(id[0] != '\0');
  freeReplyObject(x);
}

/* The test's server and handle, with a worker on the handle that serves
 * "echo" and "gate". */
static void start_with_worker(test_env_t *e) {
  test_env_start(e, 0, 30, NULL);
  CHECK_OK(ct_broker_register(e->b, "echo", echo, NULL));
  CHECK_OK(ct_broker_register(e->b, "gate", gate, NULL));
  CHECK_OK(ct_broker_worker_start(e->b, NULL));
}

TEST(a_call_is_answered_by_its_done_list_without_reading_the_record) {
  test_env_t e;
  start_with_worker(&e);
  freeReplyObject(test_redis(&e.r, "CONFIG RESETSTAT"));

  json_t *kw = json_pack("{s:i}", "x", 1), *result = NULL;
  CHECK_OK(ct_broker_call(e.b, "echo", kw, NULL, 60, &result));
  CHECK(json_equal(result, kw));
  json_decref(result);
  answer_t a = {0};
  json_object_set_new(kw, "x", json_integer(2));
  CHECK_OK(ct_broker_call_async(e.b, "echo", kw, NULL, 60, NULL, on_call, &a));
  WAIT_FOR(atomic_load(&a.count) == 1);
  CHECK_OK(a.rc);
  CHECK(json_equal(a.result, kw));
  json_decref(a.result);
  json_decref(kw);

  CHECK_EQ_INT(test_redis_calls(&e.r, "blpop"), 2);
  CHECK_EQ_INT(test_redis_calls(&e.r, "hgetall"), 0);
  test_env_end(&e);
}

/* A call of "echo" (blocking or asynchronous) whose task the test ends by
 * hand: the record says `status` with `result`, and the done list gets the
 * answer `["status",result]` (in_list) or the bare status. Returns the
 * call's code, and its result in *out. */
static int call_answered_by_hand(test_redis_t *r, ct_broker_t *b, bool async,
                                 const char *status, const char *result,
                                 bool in_list, json_t **out) {
  caller_t c;
  answer_t a = {0};
  if (async)
    CHECK_OK(
        ct_broker_call_async(b, "echo", NULL, NULL, 60, NULL, on_call, &a));
  else
    caller_start(&c, b, "echo", NULL);
  char id[CT_BROKER_ID_SIZE], entry[256];
  only_entry_id(r, id);
  freeReplyObject(test_redis(r, "HSET " PREFIX "task:%s status %s result %s",
                             id, status, result));
  freeReplyObject(test_redis(r, "DEL " STREAM));
  if (in_list)
    snprintf(entry, sizeof entry, "[\"%s\",%s]", status, result);
  else
    snprintf(entry, sizeof entry, "%s", status);
  freeReplyObject(test_redis(r, "RPUSH " PREFIX "done:%s %s", id, entry));
  if (async) {
    WAIT_FOR(atomic_load(&a.count) == 1);
    *out = a.result;
    return a.rc;
  }
  caller_join(&c);
  *out = c.result;
  return c.rc;
}

/* What a worker that pushes a bare status does (and the bury script, for
 * a dead letter): the call reads the answer from the record. */
TEST(a_bare_status_in_the_done_list_sends_the_call_to_the_record) {
  test_env_t e;
  test_env_start(&e, 0, 30, NULL);
  test_redis_register_name(&e.r, "echo");
  for (int async = 0; async <= 1; async++) {
    json_t *result;
    CHECK_OK(call_answered_by_hand(
        &e.r, e.b, async, "failed",
        "{\"exception\":{\"class\":\"E\",\"args\":[],\"str\":\"old\"}}", false,
        &result));
    CHECK(ct_result_is_error(result));
    CHECK(strcmp(ct_result_error_class(result), "E") == 0);
    json_decref(result);
  }
  test_env_end(&e);
}

/* A task a worker did not run because its caller's deadline had passed
 * (EXPIRED) answers its caller CT_ETIMEDOUT, as the caller's own timer
 * would, whether its answer comes in the done list or from the record,
 * and whichever comes first: the caller's timer (60 s here) or the answer. */
TEST(an_expired_task_answers_its_caller_timed_out) {
  test_env_t e;
  test_env_start(&e, 0, 30, NULL);
  test_redis_register_name(&e.r, "echo");
  const char *timeout_error =
      "{\"exception\":{\"class\":\"TimeoutError\",\"args\":[],"
      "\"str\":\"the caller's deadline passed\"}}";
  for (int way = 0; way < 4; way++) {
    json_t *result;
    CHECK_EQ_INT(call_answered_by_hand(&e.r, e.b, way & 1, "expired", timeout_error,
                                       way & 2, &result),
                 CT_ETIMEDOUT);
    CHECK(result == NULL);
  }
  test_env_end(&e);
}

/* A run that ends after another has stored its result (a late duplicate,
 * after a take-over) stores nothing, and its caller is answered with the
 * first result, not its own. */
TEST(a_late_duplicate_answers_its_caller_with_the_first_result) {
  test_env_t e;
  start_with_worker(&e);
  for (int async = 0; async <= 1; async++) {
    atomic_store(&gate_handler_started, false);
    atomic_store(&gate_handler_open, false);
    caller_t c;
    answer_t a = {0};
    if (async)
      CHECK_OK(ct_broker_call_async(e.b, "gate", NULL, NULL, 60, NULL, on_call, &a));
    else
      caller_start(&c, e.b, "gate", NULL);
    WAIT_FOR(atomic_load(&gate_handler_started));
    char id[CT_BROKER_ID_SIZE];
    only_entry_id(&e.r, id);
    freeReplyObject(
        test_redis(&e.r, "HSET " PREFIX "task:%s status completed result \"first\"", id));
    atomic_store(&gate_handler_open, true);
    json_t *result;
    if (async) {
      WAIT_FOR(atomic_load(&a.count) == 1);
      CHECK_OK(a.rc);
      result = a.result;
    } else {
      caller_join(&c);
      CHECK_OK(c.rc);
      result = c.result;
    }
    CHECK(json_is_string(result) && strcmp(json_string_value(result), "first") == 0);
    json_decref(result);
    WAIT_FOR(test_redis_int(&e.r, "XLEN " STREAM) == 0);
  }
  test_env_end(&e);
}

#define READY 8

/* The order in which the READY calls below answer. */
static atomic_int ready_next;
static int ready_order[READY];

static void on_ready(int rc, json_t *result, void *data) {
  (void)data;
  int at = atomic_load(&ready_next);
  if (at < READY)
    ready_order[at] = rc == 0 ? (int)json_integer_value(json_object_get(result, "i")) : -1;
  atomic_store(&ready_next, at + 1); /* after the write: the test reads it then; one loop */
}

static void on_nothing(int rc, const ct_broker_info_t *info, void *data) {
  (void)rc;
  (void)info;
  atomic_store((atomic_bool *)data, true);
}

/* Every reply the handle's connection owed before now has come: a read
 * sent after them is answered after them. */
static void settle(ct_broker_t *b) {
  atomic_bool done = false;
  CHECK_OK(ct_broker_get_async(b, "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b", NULL, on_nothing,
                               &done));
  WAIT_FOR(atomic_load(&done));
}

/* Calls whose answers are all in their done lists at once are answered in
 * the order the server accepted their submissions (the stream's), the
 * oldest first, whether or not a blocking read naming only some of them
 * was still waiting when the answers came (it takes the first one pushed,
 * here the oldest; the next reads find the rest waiting). That order is
 * not always the order of the calls: the scripts are flushed before each
 * round, and a submission sent again after NOSCRIPT lands behind those
 * sent meanwhile (with the calls spaced by about a round trip, now and
 * then), which is what made a test expecting the calls' order fail. */
TEST(calls_ready_together_answer_in_the_order_the_server_took_them) {
  test_env_t e;
  test_env_start(&e, 0, 30, NULL);
  test_redis_register_name(&e.r, "echo");
  for (int round = 0; round < 12; round++) {
    freeReplyObject(test_redis(&e.r, "SCRIPT FLUSH"));
    atomic_store(&ready_next, 0);
    for (int i = 0; i < READY; i++) {
      json_t *kw = json_pack("{s:i}", "i", i);
      CHECK_OK(ct_broker_call_async(e.b, "echo", kw, NULL, 60, NULL, on_ready, NULL));
      json_decref(kw);
      check_sleep(0.00001 * round); /* spaced by about a round trip, some rounds */
    }
    WAIT_FOR(test_redis_int(&e.r, "XLEN " STREAM) == READY);
    settle(e.b); /* every submission's reply is in: all wait */
    redisReply *x = test_redis(&e.r, "XRANGE " STREAM " - +");
    CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == READY);
    const char *argv[3 + 2 * READY];
    size_t argc = 0;
    argv[argc++] = "EVAL";
    argv[argc++] = "for i = 1, #KEYS do redis.call('RPUSH', KEYS[i], "
                   "'[\"completed\",' .. ARGV[i] .. ']') end";
    argv[argc++] = "8";
    char keys[READY][100];
    const char *results[READY];
    int accepted[READY];
    for (size_t i = 0; i < READY; i++) { /* the order the server took them */
      const redisReply *f = x->element[i]->element[1];
      const char *id = NULL;
      for (size_t j = 0; j + 1 < f->elements; j += 2) {
        if (strcmp(f->element[j]->str, "id") == 0)
          id = f->element[j + 1]->str;
        if (strcmp(f->element[j]->str, "kwargs") == 0)
          results[i] = f->element[j + 1]->str; /* {"i": i} */
      }
      CHECK(id != NULL);
      json_t *kw = json_loads(results[i], 0, NULL);
      accepted[i] = (int)json_integer_value(json_object_get(kw, "i"));
      json_decref(kw);
      snprintf(keys[i], sizeof keys[0], PREFIX "done:%s", id);
      argv[argc++] = keys[i];
    }
    for (size_t i = 0; i < READY; i++)
      argv[argc++] = results[i];
    redisReply *y = redisCommandArgv(e.r.client, (int)argc, argv, NULL);
    CHECK(y != NULL && y->type != REDIS_REPLY_ERROR);
    freeReplyObject(y);
    freeReplyObject(x);
    freeReplyObject(test_redis(&e.r, "DEL " STREAM));
    WAIT_FOR(atomic_load(&ready_next) == READY);
    for (int i = 0; i < READY; i++)
      CHECK_EQ_INT(ready_order[i], accepted[i]);
  }
  test_env_end(&e);
}

/* The id of the one client in CLIENT LIST whose line has both `a` and `b`
 * (NULL: any), or 0 if none; more than one fails the test. */
static long long client_with(test_redis_t *r, const char *a, const char *b) {
  redisReply *x = test_redis(r, "CLIENT LIST");
  CHECK(x->type == REDIS_REPLY_STRING);
  long long id = 0;
  for (char *line = x->str, *end; line && *line; line = end ? end + 1 : NULL) {
    end = strchr(line, '\n');
    if (end)
      *end = '\0';
    if (strstr(line, a) && (!b || strstr(line, b))) {
      CHECK(id == 0);
      CHECK(sscanf(line, "id=%lld", &id) == 1);
    }
  }
  freeReplyObject(x);
  return id;
}

/* Seconds client `id` has been idle, from CLIENT LIST. */
static long long client_idle(test_redis_t *r, long long id) {
  char key[64];
  snprintf(key, sizeof key, "id=%lld ", id);
  redisReply *x = test_redis(r, "CLIENT LIST ID %lld", id);
  CHECK(x->type == REDIS_REPLY_STRING);
  const char *idle = strstr(x->str, " idle=");
  CHECK(strncmp(x->str, key, strlen(key)) == 0 && idle);
  long long s = atoll(idle + 6);
  freeReplyObject(x);
  return s;
}

static long long connections_made(test_redis_t *r) {
  redisReply *x = test_redis(r, "INFO stats");
  const char *f = strstr(x->str, "total_connections_received:");
  CHECK(f != NULL);
  long long n = atoll(f + strlen("total_connections_received:"));
  freeReplyObject(x);
  return n;
}

/* Once a call has found its name registered, the next calls submit on
 * their own connection, their blocking read behind the submission: the
 * handle's connection stays idle. The call's connection is kept for the
 * next call. */
TEST(a_known_name_s_call_is_made_on_its_own_connection_alone) {
  test_env_t e;
  test_env_start(&e, 0, 30, NULL);
  long long handle_conn; /* the only other client: it asks its id as it connects */
  WAIT_FOR((handle_conn = client_with(&e.r, "cmd=client|id", NULL)) != 0);
  ct_broker_t *worker = test_broker_open(e.sup, e.r.url, 30, NULL);
  CHECK_OK(ct_broker_register(worker, "echo", echo, NULL));
  CHECK_OK(ct_broker_worker_start(worker, NULL));
  json_t *kw = json_pack("{s:i}", "x", 1), *result = NULL;
  CHECK_OK(ct_broker_call(e.b, "echo", kw, NULL, 60, &result)); /* the script finds it */
  json_decref(result);
  check_sleep(2.2);
  long long made = connections_made(&e.r);
  for (int i = 0; i < 3; i++) {
    CHECK_OK(ct_broker_call(e.b, "echo", kw, NULL, 60, &result));
    CHECK(json_equal(result, kw));
    json_decref(result);
  }
  CHECK(client_idle(&e.r, handle_conn) >= 2);
  CHECK_EQ_INT(connections_made(&e.r), made);
  json_decref(kw);
  ct_broker_free(worker);
  test_env_end(&e);
}

/* A call's connection closed by the server, idle (kept for the next call)
 * or while the call waits on it, is made again: the call is answered, and
 * writing to the closed socket does not end the program (SIGPIPE). */
TEST(a_call_whose_connection_the_server_closes_is_answered_anyway) {
  test_env_t e;
  start_with_worker(&e);
  json_t *result = NULL;
  for (int i = 0; i < 3; i++) {
    CHECK_OK(ct_broker_call(e.b, "echo", NULL, NULL, 60, &result));
    json_decref(result);
    long long idle_call = client_with(&e.r, "cmd=blpop", "flags=U ");
    CHECK(idle_call != 0);
    CHECK_EQ_INT(test_redis_int(&e.r, "CLIENT KILL ID %lld", idle_call), 1);
  }
  atomic_store(&gate_handler_started, false);
  atomic_store(&gate_handler_open, false);
  caller_t c;
  caller_start(&c, e.b, "gate", NULL);
  WAIT_FOR(atomic_load(&gate_handler_started));
  long long waiting;
  WAIT_FOR((waiting = client_with(&e.r, "cmd=blpop", "flags=bU ")) != 0);
  CHECK_EQ_INT(test_redis_int(&e.r, "CLIENT KILL ID %lld", waiting), 1);
  long long again;
  WAIT_FOR((again = client_with(&e.r, "cmd=blpop", "flags=bU ")) != 0);
  CHECK(again != waiting);
  atomic_store(&gate_handler_open, true);
  caller_join(&c);
  CHECK_OK(c.rc);
  CHECK(json_is_string(c.result) && strcmp(json_string_value(c.result), "gated") == 0);
  json_decref(c.result);
  test_env_end(&e);
}

/* A call made while the server restarts waits for it, as a submission
 * does (within the command timeout): its own connection is made again,
 * the failed attempts paused. The server comes back with its data (SAVE),
 * so the worker finds its group again. */
TEST(a_call_made_while_the_server_restarts_is_answered) {
  test_env_t e;
  start_with_worker(&e);
  json_t *result = NULL;
  CHECK_OK(ct_broker_call(e.b, "echo", NULL, NULL, 60, &result)); /* the name is known */
  json_decref(result);
  redisReply *x = test_redis(&e.r, "SAVE");
  CHECK(x->type == REDIS_REPLY_STATUS);
  freeReplyObject(x);
  test_redis_halt(&e.r, false);
  caller_t c;
  caller_start(&c, e.b, "echo", json_pack("{s:i}", "x", 7));
  check_sleep(0.5);
  static const char *const saved[] = {"--dbfilename", "dump.rdb", NULL};
  test_redis_start(&e.r, saved);
  caller_join(&c);
  CHECK_OK(c.rc);
  CHECK(json_integer_value(json_object_get(c.result, "x")) == 7);
  json_decref(c.result);
  test_env_end(&e);
}

/* A call on the handle's own loop thread, whose replies (and those of a
 * worker on the handle) come on that thread. */
static atomic_int call_on_loop_rc = 1;

static void call_on_loop(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  json_t *result = NULL;
  atomic_store(&call_on_loop_rc, ct_broker_call(data, "echo", NULL, NULL, 5, &result));
  json_decref(result);
}

/* A call made on the handle's own loop thread is refused (CT_EDEADLK),
 * even for a name it knows; stopping the handle's supervisor wakes a call
 * that waits with CT_ESHUTDOWN at once, and a call made after it submits
 * nothing. The producer's handle has a supervisor of its own. */
TEST(a_call_on_the_handle_s_loop_or_after_its_stop_is_refused) {
  test_env_t e;
  start_with_worker(&e);
  ct_supervisor_t *psup = test_sup_start();
  ct_broker_t *p = test_broker_open(psup, e.r.url, 30, NULL);
  json_t *result = NULL;
  CHECK_OK(ct_broker_call(p, "echo", NULL, NULL, 60, &result)); /* the name is known */
  json_decref(result);
  CHECK_OK(ct_loop_call(test_handle_loop(psup), call_on_loop, p));
  WAIT_FOR(atomic_load(&call_on_loop_rc) != 1);
  CHECK_EQ_INT(atomic_load(&call_on_loop_rc), CT_EDEADLK);

  atomic_store(&gate_handler_started, false);
  atomic_store(&gate_handler_open, false);
  caller_t c;
  caller_start(&c, p, "gate", NULL);
  WAIT_FOR(atomic_load(&gate_handler_started));
  WAIT_FOR(client_with(&e.r, "cmd=blpop", "flags=bU ") != 0);
  double t0 = ct_now();
  CHECK_OK(ct_supervisor_stop(psup, CT_STOP_DRAIN, -1));
  caller_join(&c);
  CHECK_EQ_INT(c.rc, CT_ESHUTDOWN);
  CHECK(ct_now() - t0 < 30); /* at once, not after the call's 60 s */
  long long entries = test_redis_int(&e.r, "XLEN " STREAM);
  CHECK_EQ_INT(ct_broker_call(p, "echo", NULL, NULL, 60, &result), CT_ESHUTDOWN);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " STREAM), entries);
  atomic_store(&gate_handler_open, true);
  ct_broker_free(p);
  CHECK_OK(ct_supervisor_free(psup));
  test_env_end(&e);
}

/* A call that waits for ever, whose server has gone away, ends with
 * CT_ESHUTDOWN when its supervisor stops. It went on trying to connect
 * until its own end, which never came: its thread stuck in the call, the
 * handle could never be freed. */
TEST(a_call_whose_server_has_gone_ends_at_a_stop) {
  test_env_t e;
  test_env_start(&e, 0, 1, NULL);
  test_redis_register_name(&e.r, "ghost"); /* no worker runs it */
  caller_t c;
  caller_start_within(&c, e.b, "ghost", NULL, INFINITY);
  WAIT_FOR(client_with(&e.r, "cmd=blpop", "flags=bU ") != 0);
  test_redis_halt(&e.r, false);
  check_sleep(1.0); /* the call tries to connect again, and pauses */
  CHECK_OK(ct_supervisor_stop(e.sup, CT_STOP_DRAIN, -1));
  caller_join(&c);
  CHECK_EQ_INT(c.rc, CT_ESHUTDOWN);
  ct_broker_free(e.b);
  CHECK_OK(ct_supervisor_free(e.sup));
  test_redis_stop(&e.r);
}

int main(void) {
  RUN(a_call_is_answered_by_its_done_list_without_reading_the_record);
  RUN(a_bare_status_in_the_done_list_sends_the_call_to_the_record);
  RUN(an_expired_task_answers_its_caller_timed_out);
  RUN(a_late_duplicate_answers_its_caller_with_the_first_result);
  RUN(calls_ready_together_answer_in_the_order_the_server_took_them);
  RUN(a_known_name_s_call_is_made_on_its_own_connection_alone);
  RUN(a_call_whose_connection_the_server_closes_is_answered_anyway);
  RUN(a_call_made_while_the_server_restarts_is_answered);
  RUN(a_call_on_the_handle_s_loop_or_after_its_stop_is_refused);
  RUN(a_call_whose_server_has_gone_ends_at_a_stop);
  return check_done();
}
