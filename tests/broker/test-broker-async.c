/* The broker's asynchronous producer calls against a real redis-server:
 * each accepted call answers exactly once, on the loop it named, with every
 * outcome (a result, an exception, an unknown name, a deadline while the
 * server is stopped, the handle freed or the supervisor stopped meanwhile);
 * a refused call answers never; many calls made from the handle's own loop
 * thread share a few waiting connections, each blocking on 256 lists at
 * most. Counts and order only; time bounds are generous. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"
#include "handlers.h"

#define STREAM "ctasker:{default}:stream:normal"

/* One answer, as a callback saw it. */
typedef struct {
  atomic_int count; /* callbacks run */
  int rc;
  pthread_t thread;
  char id[CT_BROKER_ID_SIZE];
  ct_broker_status_t status;
  json_t *result; /* a reference of the test's own */
  double at;      /* ct_now() when it ran */
} answer_t;

static void note(answer_t *a, int rc) {
  a->rc = rc;
  a->thread = pthread_self();
  a->at = ct_now();
}

static void on_submit(int rc, const char *id, void *data) {
  answer_t *a = data;
  note(a, rc);
  CHECK((rc == 0) == (id != NULL));
  if (id)
    memcpy(a->id, id, CT_BROKER_ID_SIZE);
  atomic_fetch_add(&a->count, 1);
}

static void on_get(int rc, const ct_broker_info_t *info, void *data) {
  answer_t *a = data;
  note(a, rc);
  CHECK((rc == 0) == (info != NULL));
  if (info) {
    a->status = info->status;
    a->result = json_incref(info->result);
  }
  atomic_fetch_add(&a->count, 1);
}

static void on_call(int rc, json_t *result, void *data) {
  answer_t *a = data;
  note(a, rc);
  if (rc != 0)
    CHECK(result == NULL);
  a->result = json_incref(result);
  atomic_fetch_add(&a->count, 1);
}

typedef struct {
  pthread_t thread;
  atomic_bool set;
} thread_of_t;

static void note_thread(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  thread_of_t *t = data;
  t->thread = pthread_self();
  atomic_store(&t->set, true);
}

/* The thread a loop runs on. */
static pthread_t thread_of(ct_loop_t *loop) {
  thread_of_t t = {.set = false};
  CHECK_OK(ct_loop_call(loop, note_thread, &t));
  WAIT_FOR(atomic_load(&t.set));
  return t.thread;
}

/* Nothing more comes for a call that has answered: a later call on the
 * same loop answers after anything still queued for it. */
static void settle(ct_broker_t *b, ct_loop_t *loop) {
  answer_t last = {0};
  CHECK_OK(ct_broker_get_async(b, "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b", loop, on_get, &last));
  WAIT_FOR(atomic_load(&last.count) == 1);
  CHECK_EQ_INT(last.rc, CT_ENOENT);
}

TEST(every_outcome_answers_once_on_the_named_loop) {
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  ct_supervisor_t *sup = test_sup_start();
  ct_loop_t *loop;
  CHECK_OK(ct_loop_create(sup, "answers", &loop));
  pthread_t loop_thread = thread_of(loop);
  pthread_t default_thread = thread_of(ct_supervisor_loop(sup));
  ct_broker_t *b = test_broker_open(sup, r.url, 10, NULL);
  CHECK_OK(ct_broker_register(b, "echo", echo, NULL));
  CHECK_OK(ct_broker_register(b, "fail", fail, NULL));
  CHECK_OK(ct_broker_worker_start(b, NULL));

  answer_t s = {0}, g = {0}, c = {0}, e = {0}, u = {0}, n = {0}, d = {0};
  json_t *kw = json_pack("{s:i}", "x", 7);
  CHECK_OK(ct_broker_submit_async(b, "echo", kw, NULL, loop, on_submit, &s));
  json_decref(kw); /* borrowed only during the call */
  WAIT_FOR(atomic_load(&s.count) == 1);
  CHECK_OK(s.rc);
  CHECK(pthread_equal(s.thread, loop_thread));
  CHECK_EQ_INT((int)strlen(s.id), CT_BROKER_ID_SIZE - 1);
  ct_broker_info_t info;
  WAIT_FOR(ct_broker_get(b, s.id, &info) == 0 && info.status == CT_BROKER_COMPLETED);
  json_decref(info.result);
  CHECK_OK(ct_broker_get_async(b, s.id, loop, on_get, &g));
  WAIT_FOR(atomic_load(&g.count) == 1);
  CHECK_OK(g.rc);
  CHECK(pthread_equal(g.thread, loop_thread));
  CHECK_EQ_INT(g.status, CT_BROKER_COMPLETED);
  CHECK_EQ_INT((int)json_integer_value(json_object_get(g.result, "x")), 7);

  kw = json_pack("{s:i}", "x", 8);
  CHECK_OK(ct_broker_call_async(b, "echo", kw, NULL, 30, loop, on_call, &c));
  json_decref(kw);
  CHECK_OK(ct_broker_call_async(b, "fail", NULL, NULL, 30, loop, on_call, &e));
  CHECK_OK(ct_broker_call_async(b, "never.registered", NULL, NULL, 30, loop, on_call, &u));
  CHECK_OK(ct_broker_submit_async(b, "never.registered", NULL, NULL, loop, on_submit, &n));
  CHECK_OK(ct_broker_call_async(b, "echo", NULL, NULL, INFINITY, NULL, on_call, &d));
  WAIT_FOR(atomic_load(&c.count) == 1 && atomic_load(&e.count) == 1 &&
           atomic_load(&u.count) == 1 && atomic_load(&n.count) == 1 &&
           atomic_load(&d.count) == 1);
  CHECK_OK(c.rc);
  CHECK_EQ_INT((int)json_integer_value(json_object_get(c.result, "x")), 8);
  CHECK_OK(e.rc);
  CHECK(ct_result_is_error(e.result));
  CHECK_EQ_INT(u.rc, CT_ENOENT);
  CHECK(u.result == NULL);
  CHECK_EQ_INT(n.rc, CT_ENOENT);
  CHECK_OK(d.rc);
  CHECK(pthread_equal(d.thread, default_thread)); /* NULL: the default loop */
  CHECK(pthread_equal(c.thread, loop_thread) && pthread_equal(e.thread, loop_thread) &&
        pthread_equal(u.thread, loop_thread) && pthread_equal(n.thread, loop_thread));

  settle(b, loop);
  settle(b, NULL);
  answer_t *all[] = {&s, &g, &c, &e, &u, &n, &d};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
    CHECK_EQ_INT(atomic_load(&all[i]->count), 1);
    json_decref(all[i]->result);
  }
  ct_broker_free(b);
  test_sup_end(sup);
  test_redis_stop(&r);
}

/* The deadline is the handle's own timer: a stopped server (SIGSTOP) holds
 * neither the submission nor the wait past it, with a command timeout far
 * longer; and a worker that takes the task after it does not run it. */
TEST(a_call_answers_at_its_deadline_while_the_server_is_stopped) {
  test_env_t e;
  test_env_start(&e, 0, 30, NULL);
  test_redis_register_name(&e.r, "echo"); /* no worker yet: nobody answers */

  answer_t c = {0};
  CHECK(kill(e.r.pid, SIGSTOP) == 0); /* before the call: its submission stalls */
  double start = ct_now();
  CHECK_OK(ct_broker_call_async(e.b, "echo", NULL, NULL, 0.5, NULL, on_call, &c));
  WAIT_FOR(atomic_load(&c.count) == 1); /* while the server is still stopped */
  CHECK(kill(e.r.pid, SIGCONT) == 0);
  CHECK_EQ_INT(c.rc, CT_ETIMEDOUT);
  CHECK(c.at - start >= 0.49); /* not before its deadline */
  CHECK(c.at - start < 20);    /* and not at the command timeout's 30 s */

  /* Whether that submission ran is settled once a later command of the
   * handle's connection has its reply (here: none did, the server having
   * lost the script, and the call having answered already). */
  settle(e.b, NULL);
  long long queued = test_redis_int(&e.r, "XLEN " STREAM);
  answer_t w = {0};
  start = ct_now();
  CHECK_OK(ct_broker_call_async(e.b, "echo", NULL, NULL, 2, NULL, on_call, &w));
  WAIT_FOR(test_redis_int(&e.r, "XLEN " STREAM) == queued + 1); /* submitted: it waits */
  CHECK(kill(e.r.pid, SIGSTOP) == 0);
  WAIT_FOR(atomic_load(&w.count) == 1);
  CHECK(kill(e.r.pid, SIGCONT) == 0);
  CHECK_EQ_INT(w.rc, CT_ETIMEDOUT);
  CHECK(w.at - start >= 1.99);
  CHECK(w.at - start < 20);

  /* A worker now finds the deadlines passed: nothing runs. */
  ct_broker_t *wb = test_broker_open(e.sup, e.r.url, 10, NULL);
  CHECK_OK(ct_broker_register(wb, "echo", echo, NULL));
  CHECK_OK(ct_broker_worker_start(wb, NULL));
  WAIT_FOR(test_redis_int(&e.r, "XLEN " STREAM) == 0);
  redisReply *k = test_redis(&e.r, "KEYS ctasker:{default}:task:*");
  CHECK_EQ_INT((int)k->elements, (int)queued + 1);
  for (size_t i = 0; i < k->elements; i++) {
    ct_broker_info_t info;
    const char *id = strrchr(k->element[i]->str, ':') + 1;
    WAIT_FOR(ct_broker_get(e.b, id, &info) == 0 && info.status != CT_BROKER_QUEUED);
    CHECK_EQ_INT(info.status, CT_BROKER_EXPIRED);
    CHECK_EQ_INT(info.attempts, 0);
    json_decref(info.result);
  }
  freeReplyObject(k);
  settle(e.b, NULL);
  CHECK_EQ_INT(atomic_load(&c.count), 1);
  CHECK_EQ_INT(atomic_load(&w.count), 1);
  ct_broker_free(wb);
  test_env_end(&e);
}

#define IN_FLIGHT 8

/* Calls of every kind in flight when the handle is freed (some waiting for
 * a stopped server, some for a task no worker runs) answer CT_ESHUTDOWN,
 * once each, on their loop; so do calls in flight when the supervisor
 * stops. Nothing is leaked (ASan). */
TEST(calls_in_flight_answer_shutdown_when_the_handle_goes) {
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  ct_supervisor_t *sup = test_sup_start();
  ct_loop_t *loop;
  CHECK_OK(ct_loop_create(sup, "answers", &loop));
  pthread_t loop_thread = thread_of(loop);
  ct_broker_t *b = test_broker_open(sup, r.url, 30, NULL);
  test_redis_register_name(&r, "t");
  answer_t waiting[IN_FLIGHT] = {0}, stalled[3 * IN_FLIGHT] = {0};
  for (int i = 0; i < IN_FLIGHT; i++)
    CHECK_OK(ct_broker_call_async(b, "t", NULL, NULL, 60, loop, on_call, &waiting[i]));
  WAIT_FOR(test_redis_int(&r, "XLEN " STREAM) == IN_FLIGHT);
  CHECK(kill(r.pid, SIGSTOP) == 0);
  for (int i = 0; i < IN_FLIGHT; i++) {
    CHECK_OK(ct_broker_submit_async(b, "t", NULL, NULL, loop, on_submit, &stalled[i]));
    CHECK_OK(ct_broker_get_async(b, "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b", loop, on_get,
                                 &stalled[IN_FLIGHT + i]));
    CHECK_OK(ct_broker_call_async(b, "t", NULL, NULL, 60, loop, on_call,
                                  &stalled[2 * IN_FLIGHT + i]));
  }
  ct_broker_free(b);
  CHECK(kill(r.pid, SIGCONT) == 0);
  for (int i = 0; i < IN_FLIGHT; i++)
    WAIT_FOR(atomic_load(&waiting[i].count) == 1);
  for (int i = 0; i < 3 * IN_FLIGHT; i++)
    WAIT_FOR(atomic_load(&stalled[i].count) == 1);
  for (int i = 0; i < IN_FLIGHT; i++) {
    CHECK_EQ_INT(waiting[i].rc, CT_ESHUTDOWN);
    CHECK(pthread_equal(waiting[i].thread, loop_thread));
  }
  for (int i = 0; i < 3 * IN_FLIGHT; i++) {
    CHECK_EQ_INT(stalled[i].rc, CT_ESHUTDOWN);
    CHECK(pthread_equal(stalled[i].thread, loop_thread));
  }

  /* The supervisor stops under calls waiting: each answers once. Another
   * queue: what the server had read before the first handle went may
   * still be submitted. */
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = r.url;
  o.queue = "late";
  CHECK_OK(ct_broker_new(sup, &o, &b));
  freeReplyObject(test_redis(&r, "SADD ctasker:{late}:names t"));
  answer_t late[IN_FLIGHT] = {0};
  for (int i = 0; i < IN_FLIGHT; i++)
    CHECK_OK(ct_broker_call_async(b, "t", NULL, NULL, 60, NULL, on_call, &late[i]));
  WAIT_FOR(test_redis_int(&r, "XLEN ctasker:{late}:stream:normal") == IN_FLIGHT);
  CHECK_OK(ct_supervisor_stop(sup, CT_STOP_DRAIN, -1));
  for (int i = 0; i < IN_FLIGHT; i++) {
    WAIT_FOR(atomic_load(&late[i].count) == 1);
    CHECK_EQ_INT(late[i].rc, CT_ESHUTDOWN);
  }
  answer_t after = {0};
  CHECK_EQ_INT(ct_broker_submit_async(b, "t", NULL, NULL, NULL, on_submit, &after),
               CT_ESHUTDOWN);
  ct_broker_free(b);
  CHECK_EQ_INT(atomic_load(&after.count), 0);
  for (int i = 0; i < IN_FLIGHT; i++)
    CHECK_EQ_INT(atomic_load(&late[i].count), 1);
  CHECK_OK(ct_supervisor_free(sup));
  test_redis_stop(&r);
}

#define MANY 1000
#define WAIT_KEYS 256 /* most done lists one blocking read names (async.c) */
#define WAITERS ((MANY + WAIT_KEYS - 1) / WAIT_KEYS)

typedef struct {
  ct_broker_t *b;
  ct_loop_t *loop;
  pthread_t thread;
  atomic_int answered, right, on_loop;
  int made, deadlk;
} many_t;

static many_t many;

static void on_many(int rc, json_t *result, void *data) {
  intptr_t i = (intptr_t)data;
  if (rc == 0 && json_integer_value(json_object_get(result, "i")) == i)
    atomic_fetch_add(&many.right, 1);
  if (pthread_equal(pthread_self(), many.thread))
    atomic_fetch_add(&many.on_loop, 1);
  atomic_fetch_add(&many.answered, 1);
}

/* On the handle's own loop thread: the blocking forms refuse, the
 * asynchronous ones are accepted, all at once. */
static void make_many(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)ev;
  (void)data;
  ct_broker_info_t info;
  many.deadlk = ct_broker_get(many.b, "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b", &info);
  for (intptr_t i = 0; i < MANY; i++) {
    json_t *kw = json_pack("{s:I}", "i", (json_int_t)i);
    many.made += ct_broker_call_async(many.b, "echo", kw, NULL, 60, loop, on_many,
                                      (void *)i) == 0;
    json_decref(kw);
  }
}

/* How many of the server's clients last sent a BLPOP. */
static int blpop_clients(test_redis_t *r) {
  redisReply *x = test_redis(r, "CLIENT LIST");
  CHECK(x->type == REDIS_REPLY_STRING);
  int n = 0;
  for (const char *p = x->str; (p = strstr(p, " cmd=blpop ")); p++)
    n++;
  freeReplyObject(x);
  return n;
}

/* All the calls wait at once (no worker runs until they are all
 * submitted), on a connection per WAIT_KEYS calls, not one per call nor
 * one for all (whose BLPOP, sent again after each answer, would cost
 * Redis O(calls waiting) each time); the worker then answers them all. */
TEST(many_calls_from_the_handles_own_loop_share_a_few_connections) {
  test_env_t e;
  test_env_start(&e, 0, 30, NULL);
  many.b = e.b;
  many.loop = test_handle_loop(e.sup);
  many.thread = thread_of(many.loop);
  ct_broker_t *wb = test_broker_open(e.sup, e.r.url, 30, NULL);
  CHECK_OK(ct_broker_register(wb, "echo", echo, NULL));
  test_redis_register_name(&e.r, "echo");
  double start = ct_now();
  CHECK_OK(ct_loop_call(many.loop, make_many, NULL));
  WAIT_FOR(test_redis_int(&e.r, "XLEN " STREAM) == MANY);
  settle(e.b, NULL); /* every submission's reply is in: all wait */
  WAIT_FOR(blpop_clients(&e.r) == WAITERS);
  double waited = ct_now() - start;
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = 8;
  CHECK_OK(ct_broker_worker_start(wb, &wo));
  WAIT_FOR(atomic_load(&many.answered) == MANY);
  double took = ct_now() - start;
  CHECK_EQ_INT(many.deadlk, CT_EDEADLK);
  CHECK_EQ_INT(many.made, MANY);
  CHECK_EQ_INT(atomic_load(&many.right), MANY);
  CHECK_EQ_INT(atomic_load(&many.on_loop), MANY);
  CHECK_EQ_INT(blpop_clients(&e.r), WAITERS); /* not one per call */
  redisReply *x = test_redis(&e.r, "INFO commandstats");
  const char *blpop = strstr(x->str, "cmdstat_blpop:");
  CHECK(blpop != NULL);
  printf("%d asynchronous calls: all waiting after %.3f s, all answered after %.3f s; %.*s\n",
         MANY, waited, took, (int)strcspn(blpop, "\r\n"), blpop);
  freeReplyObject(x);
  ct_broker_free(wb);
  test_env_end(&e);
}

/* Whether the server has read its data back (it answers LOADING until). */
static bool loaded(test_redis_t *r) {
  redisReply *x = test_redis(r, "XLEN " STREAM);
  bool up = x->type == REDIS_REPLY_INTEGER;
  freeReplyObject(x);
  return up;
}

/* Calls waiting while the server restarts (with its data: AOF) are
 * answered once it is back: the waiting connection is made again and
 * blocks again on their lists. */
TEST(calls_waiting_through_a_server_restart_are_answered) {
  static const char *const aof[] = {"--appendonly", "yes", NULL};
  test_redis_t r = {0};
  test_redis_start(&r, aof);
  ct_supervisor_t *sup = test_sup_start();
  ct_broker_t *b = test_broker_open(sup, r.url, 5, NULL);
  test_redis_register_name(&r, "echo");
  answer_t c[IN_FLIGHT] = {0};
  for (int i = 0; i < IN_FLIGHT; i++) {
    json_t *kw = json_pack("{s:i}", "x", i);
    CHECK_OK(ct_broker_call_async(b, "echo", kw, NULL, 60, NULL, on_call, &c[i]));
    json_decref(kw);
  }
  WAIT_FOR(test_redis_int(&r, "XLEN " STREAM) == IN_FLIGHT);
  settle(b, NULL);
  WAIT_FOR(blpop_clients(&r) == 1);
  test_redis_halt(&r, false);
  test_redis_start(&r, aof);
  WAIT_FOR(loaded(&r));
  CHECK_EQ_INT(test_redis_int(&r, "XLEN " STREAM), IN_FLIGHT);
  ct_broker_t *wb = test_broker_open(sup, r.url, 5, NULL);
  CHECK_OK(ct_broker_register(wb, "echo", echo, NULL));
  CHECK_OK(ct_broker_worker_start(wb, NULL));
  for (int i = 0; i < IN_FLIGHT; i++) {
    WAIT_FOR(atomic_load(&c[i].count) == 1);
    CHECK_OK(c[i].rc);
    CHECK_EQ_INT((int)json_integer_value(json_object_get(c[i].result, "x")), i);
  }
  settle(b, NULL);
  for (int i = 0; i < IN_FLIGHT; i++) {
    CHECK_EQ_INT(atomic_load(&c[i].count), 1);
    json_decref(c[i].result);
  }
  ct_broker_free(wb);
  ct_broker_free(b);
  test_sup_end(sup);
  test_redis_stop(&r);
}

static json_t *nap(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)data;
  check_sleep((double)json_integer_value(json_object_get(kwargs, "ms")) / 1000);
  return json_deep_copy(kwargs);
}

#define RACED 300

/* Deadlines that fire as replies come, and the handle freed under calls
 * of every kind: still one answer each, with a right result, a deadline
 * or the shutdown. */
TEST(deadlines_replies_and_free_race_yet_answer_once) {
  test_env_t e; /* e.b: the worker's handle; b below, the callers' */
  test_env_start(&e, 0, 30, NULL);
  CHECK_OK(ct_broker_register(e.b, "nap", nap, NULL));
  CHECK_OK(ct_broker_worker_start(e.b, NULL));
  ct_broker_t *b = test_broker_open(e.sup, e.r.url, 30, NULL);
  static answer_t a[RACED];
  memset(a, 0, sizeof a);
  for (int i = 0; i < RACED; i++) {
    json_t *kw = json_pack("{s:i,s:i}", "ms", i % 7, "i", i);
    if (i % 3 == 0)
      CHECK_OK(ct_broker_submit_async(b, "nap", kw, NULL, NULL, on_submit, &a[i]));
    else if (i % 3 == 1)
      CHECK_OK(ct_broker_get_async(b, "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b", NULL, on_get,
                                   &a[i]));
    else
      CHECK_OK(ct_broker_call_async(b, "nap", kw, NULL, 0.001 * (i % 50 + 1), NULL, on_call,
                                    &a[i]));
    json_decref(kw);
  }
  WAIT_FOR(atomic_load(&a[RACED / 2].count) == 1);
  ct_broker_free(b);
  int ok = 0, late = 0, gone = 0;
  for (int i = 0; i < RACED; i++) {
    WAIT_FOR(atomic_load(&a[i].count) == 1);
    int rc = a[i].rc;
    CHECK(rc == 0 || rc == CT_ENOENT || rc == CT_ETIMEDOUT || rc == CT_ESHUTDOWN);
    if (rc == 0 && i % 3 == 2)
      CHECK_EQ_INT((int)json_integer_value(json_object_get(a[i].result, "i")), i);
    ok += rc == 0 || rc == CT_ENOENT;
    late += rc == CT_ETIMEDOUT;
    gone += rc == CT_ESHUTDOWN;
  }
  settle(e.b, NULL);
  for (int i = 0; i < RACED; i++) {
    CHECK_EQ_INT(atomic_load(&a[i].count), 1);
    json_decref(a[i].result);
  }
  printf("raced: %d answered, %d past their deadline, %d shut down\n", ok, late, gone);
  test_env_end(&e);
}

/* What the blocking forms refuse is refused at once, with their codes, and
 * never answered; kwargs over the payload limit too. */
TEST(bad_input_is_refused_at_once_and_never_answered) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  test_redis_register_name(&e.r, "t");
  answer_t a = {0};
  CHECK_EQ_INT(ct_broker_submit_async(NULL, "t", NULL, NULL, NULL, on_submit, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_submit_async(e.b, "t", NULL, NULL, NULL, NULL, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_submit_async(e.b, "", NULL, NULL, NULL, on_submit, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_submit_async(e.b, "a\tb", NULL, NULL, NULL, on_submit, &a), CT_EINVAL);
  json_t *list = json_array();
  CHECK_EQ_INT(ct_broker_submit_async(e.b, "t", list, NULL, NULL, on_submit, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_call_async(e.b, "t", list, NULL, 1, NULL, on_call, &a), CT_EINVAL);
  json_decref(list);
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.priority = 256;
  CHECK_EQ_INT(ct_broker_submit_async(e.b, "t", NULL, &so, NULL, on_submit, &a), CT_EINVAL);
  so = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  so.max_payload = 4;
  json_t *big = json_pack("{s:s}", "k", "more than four bytes");
  CHECK_EQ_INT(ct_broker_submit_async(e.b, "t", big, &so, NULL, on_submit, &a), CT_EINVAL);
  json_decref(big);
  so = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  so.key = "k"; /* an RPC is answered to its own caller only */
  CHECK_EQ_INT(ct_broker_call_async(e.b, "t", NULL, &so, 1, NULL, on_call, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_call_async(e.b, "t", NULL, NULL, 0, NULL, on_call, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_call_async(e.b, "t", NULL, NULL, -1, NULL, on_call, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_call_async(e.b, "t", NULL, NULL, NAN, NULL, on_call, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_call_async(e.b, "t", NULL, NULL, 1, NULL, NULL, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_get_async(e.b, "not-an-id", NULL, on_get, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_get_async(e.b, NULL, NULL, on_get, &a), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_get_async(e.b, "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b", NULL, NULL, &a),
               CT_EINVAL);
  CHECK_EQ_INT(ct_broker_get_async(NULL, "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b", NULL, on_get,
                                   &a),
               CT_EINVAL);
  settle(e.b, NULL);
  CHECK_EQ_INT(atomic_load(&a.count), 0);
  CHECK_EQ_INT(test_redis_int(&e.r, "DBSIZE"), 1); /* the names set only */
  test_env_end(&e);
}

/* A server that has forgotten the submit script (SCRIPT FLUSH, a restart)
 * has run nothing: the submission goes again with the script's text. */
TEST(a_forgotten_script_is_sent_again) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  test_redis_register_name(&e.r, "t");
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "t", NULL, NULL, id)); /* the SHA1 is known */
  freeReplyObject(test_redis(&e.r, "SCRIPT FLUSH"));
  answer_t s = {0};
  CHECK_OK(ct_broker_submit_async(e.b, "t", NULL, NULL, NULL, on_submit, &s));
  WAIT_FOR(atomic_load(&s.count) == 1);
  CHECK_OK(s.rc);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " STREAM), 2);
  test_env_end(&e);
}

/* A callback whose loop has ended runs anyway, once, on the handle's loop
 * thread, rather than never. */
TEST(an_answer_for_an_ended_loop_is_not_lost) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  pthread_t handle_thread = thread_of(test_handle_loop(e.sup));
  test_redis_register_name(&e.r, "t");
  ct_loop_t *loop;
  CHECK_OK(ct_loop_create(e.sup, "gone", &loop));
  CHECK_OK(ct_loop_stop(loop, -1));
  answer_t s = {0};
  CHECK_OK(ct_broker_submit_async(e.b, "t", NULL, NULL, loop, on_submit, &s));
  WAIT_FOR(atomic_load(&s.count) == 1);
  CHECK_OK(s.rc);
  CHECK(pthread_equal(s.thread, handle_thread));
  settle(e.b, NULL);
  CHECK_EQ_INT(atomic_load(&s.count), 1);
  test_env_end(&e);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(every_outcome_answers_once_on_the_named_loop);
  RUN(a_call_answers_at_its_deadline_while_the_server_is_stopped);
  RUN(calls_in_flight_answer_shutdown_when_the_handle_goes);
  RUN(many_calls_from_the_handles_own_loop_share_a_few_connections);
  RUN(calls_waiting_through_a_server_restart_are_answered);
  RUN(deadlines_replies_and_free_race_yet_answer_once);
  RUN(bad_input_is_refused_at_once_and_never_answered);
  RUN(a_forgotten_script_is_sent_again);
  RUN(an_answer_for_an_ended_loop_is_not_lost);
  return check_done();
}
