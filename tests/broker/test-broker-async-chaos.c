/* Allocation failure in the broker's asynchronous calls, against a real
 * redis-server: the 1st, 2nd, 3rd... allocation the library makes on the
 * handle's own loop thread fails in turn, from the call itself (made on
 * that thread) through its whole life there (sending, waiting, reading
 * the result, answering), and each time the call either returns CT_ENOMEM
 * and never answers, or answers exactly once (a result, or the error that
 * the failure caused); nothing leaks (the sanitizer build checks leaks).
 *
 * The library's allocations fail on demand through tests/chaos.h (the
 * linker's --wrap, as in tests/test-chaos.c); only the armed thread's are
 * counted, so the worker and the other loops are not disturbed.
 */
#include <stdatomic.h>
#include <string.h>

#include "../chaos.h"
#include "ctasker.h"
#include "env.h"
#include "handlers.h"

enum { SUBMIT, GET, CALL };

/* One try: a call of `kind` made on the handle's loop thread with its
 * k-th allocation there failing. */
typedef struct {
  ct_broker_t *b;
  int kind;
  long k;
  int rc;            /* what the call returned */
  atomic_bool made;
  atomic_int answers;
  int answer_rc;
  bool right;        /* the answer's result is the one expected */
  bool reached;      /* the k-th allocation was made */
  atomic_bool disarmed;
} try_t;

static void on_submit(int rc, const char *id, void *data) {
  try_t *t = data;
  t->answer_rc = rc;
  t->right = (rc == 0) == (id != NULL);
  atomic_fetch_add(&t->answers, 1);
}

static void on_get(int rc, const ct_broker_info_t *info, void *data) {
  try_t *t = data;
  t->answer_rc = rc;
  t->right = rc != 0 ? info == NULL : info->status == CT_BROKER_COMPLETED;
  atomic_fetch_add(&t->answers, 1);
}

static void on_call(int rc, json_t *result, void *data) {
  try_t *t = data;
  t->answer_rc = rc;
  t->right = rc != 0 ? result == NULL : json_integer_value(json_object_get(result, "x")) == 7;
  atomic_fetch_add(&t->answers, 1);
}

static char done_id[CT_BROKER_ID_SIZE]; /* a task that has completed */

static void try_on_loop(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)ev;
  try_t *t = data;
  json_t *kw = json_pack("{s:i}", "x", 7); /* jansson's allocator is not wrapped */
  chaos_arm(t->k);
  if (t->kind == SUBMIT)
    t->rc = ct_broker_submit_async(t->b, "echo", kw, NULL, loop, on_submit, t);
  else if (t->kind == GET)
    t->rc = ct_broker_get_async(t->b, done_id, loop, on_get, t);
  else
    t->rc = ct_broker_call_async(t->b, "echo", kw, NULL, 60, loop, on_call, t);
  json_decref(kw);
  atomic_store(&t->made, true); /* still armed: the call goes on here */
}

static void disarm_on_loop(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  try_t *t = data;
  t->reached = chaos_disarm();
  atomic_store(&t->disarmed, true);
}

/* A fresh supervisor and handle each time, so that the handle's
 * asynchronous side and its waiting connection are made under the failure
 * too. Returns whether the k-th allocation was reached. */
static bool try_failing(test_redis_t *r, int kind, bool flush, long k) {
  ct_supervisor_t *sup = test_sup_start();
  try_t t = {.b = test_broker_open(sup, r->url, 30, NULL), .kind = kind, .k = k};
  ct_loop_t *loop = test_handle_loop(sup);
  if (flush) /* the server forgets the submit script: it is sent again */
    freeReplyObject(test_redis(r, "SCRIPT FLUSH"));
  CHECK_OK(ct_loop_call(loop, try_on_loop, &t));
  WAIT_FOR(atomic_load(&t.made));
  if (t.rc == 0) {
    WAIT_FOR(atomic_load(&t.answers) == 1);
    CHECK(t.answer_rc == 0 || t.answer_rc == CT_ENOMEM);
    CHECK(t.right);
  } else {
    CHECK_EQ_INT(t.rc, CT_ENOMEM);
  }
  CHECK_OK(ct_loop_call(loop, disarm_on_loop, &t));
  WAIT_FOR(atomic_load(&t.disarmed));
  ct_broker_free(t.b);
  CHECK_EQ_INT(atomic_load(&t.answers), t.rc == 0);
  test_sup_end(sup);
  if (!t.reached)
    CHECK(t.rc == 0 && t.answer_rc == 0);
  return t.reached;
}

static void each_allocation_fails_once(test_redis_t *r, int kind, bool flush, const char *what) {
  long k = 0;
  while (try_failing(r, kind, flush, k))
    k++;
  CHECK(k >= 3);
  fprintf(stderr, "   %s: %ld allocations, each failed once\n", what, k);
}

static ct_broker_t *worker_start(ct_supervisor_t *sup, const char *url) {
  ct_broker_t *wb = test_broker_open(sup, url, 30, NULL);
  CHECK_OK(ct_broker_register(wb, "echo", echo, NULL));
  CHECK_OK(ct_broker_worker_start(wb, NULL));
  return wb;
}

/* A failure anywhere in a call's life on the handle's loop thread: made
 * there, so the call's own allocations count too. Submissions and reads
 * also meet a server that has forgotten the submit script (SCRIPT FLUSH,
 * while no worker runs: a worker's own scripts would meet it too). */
TEST(asynchronous_calls_without_memory) {
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  ct_supervisor_t *sup = test_sup_start();
  ct_broker_t *wb = worker_start(sup, r.url);
  CHECK_OK(ct_broker_submit(wb, "echo", NULL, NULL, done_id));
  ct_broker_info_t info;
  WAIT_FOR(ct_broker_get(wb, done_id, &info) == 0 && info.status == CT_BROKER_COMPLETED);
  json_decref(info.result);
  ct_broker_free(wb);
  each_allocation_fails_once(&r, SUBMIT, true, "submit");
  each_allocation_fails_once(&r, GET, true, "get");
  wb = worker_start(sup, r.url);
  each_allocation_fails_once(&r, CALL, false, "call");
  WAIT_FOR(test_redis_int(&r, "XLEN ctasker:{default}:stream:normal") == 0); /* all ran */
  ct_broker_free(wb);
  test_sup_end(sup);
  test_redis_stop(&r);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(asynchronous_calls_without_memory);
  return check_done();
}
