/* An idle worker's fetch thread goes back to its blocking read straight
 * after a fetch that took fewer entries than it had free slots: that
 * fetch has read every stream to its end, and returns the streams'
 * last-generated ids to block on, so a second fetch would find nothing
 * (it used to run one after every task taken: a script call and a round
 * trip more per task). MONITOR shows the fetch connection's commands in
 * the order it sent them, whatever the timing: between two of its
 * blocking reads there is exactly one fetch (a read that times out after
 * its second is followed by one fetch too), besides a take-over that falls
 * due (at most once a second), which is a fetch of its own.
 *
 * That fetch goes behind the blocking read, in the same write, and runs as
 * soon as the read returns: while the read blocks, the fetch waits in the
 * connection's query buffer (CLIENT LIST), so each call's task is taken
 * without a round trip more. And an idle worker waits: a second of idling is a read
 * or two, not a loop. Such a fetch learns the id of the stream it read
 * from the entry it took (the last one XREADGROUP returned, having
 * returned fewer than asked for), and of an empty stream from its XLEN:
 * with the other streams and the wake stream empty, it reads no XREVRANGE
 * (each one did before). Counts and order only.
 *
 * The ids a fetch returns to block on are each stream's newest entry, or
 * 0-0 for an empty one (XREAD returns only entries newer than the id:
 * deleted ones never come back), read with XLEN and XREVRANGE and not
 * XINFO STREAM, whose reply cost Redis about 8 us a stream. With a task
 * still running, its entry is the newest of its stream: the worker blocks
 * on it (a second of idling is still a read or two), and wakes for a new
 * entry behind it: each call is answered at once, not after a read that
 * ran out (five calls take milliseconds; five reads that ran out, five
 * seconds; the bound is four). */
#include <stdlib.h>
#include <string.h>

#include "ctasker.h"
#include "handlers.h"
#include "redis.h"

#define CALLS 10
#define MARK "end-of-test-broker-wait"

/* Whether the quoted argument n (0: the command's name) of a MONITOR line
 * is `want` (the arguments here hold no quote). */
static bool arg_is(const char *line, int n, const char *want) {
  const char *p = strchr(line, '"');
  for (int i = 0; p && i < n; i++)
    p = strchr(strchr(p + 1, '"') + 1, '"');
  return p && strncmp(p + 1, want, strlen(want)) == 0 && p[1 + strlen(want)] == '"';
}

/* A MONITOR line's command: 'F' for the fetch script (six keys, the
 * critical stream first), 'O' for one that takes over (its sixth argument,
 * after the keys, is 1), 'X' for the blocking read, 'E' for the end mark, 0
 * for anything else. Commands run by scripts ("[0 lua]") are not the
 * connection's own. */
static char kind_of(const char *line) {
  if (strstr(line, "[0 lua]"))
    return 0;
  if (strstr(line, "\"XREAD\" \"COUNT\" \"1\" \"BLOCK\""))
    return 'X';
  if (strstr(line, "\"6\" \"ctasker:{default}:stream:critical\""))
    return arg_is(line, 3 + 6 + 5, "1") ? 'O' : 'F';
  return strstr(line, MARK) ? 'E' : 0;
}

/* Whether a connection is blocked in XREAD with a command already waiting
 * behind it in its query buffer (CLIENT LIST: flags with b, cmd xread,
 * qbuf above 0): the worker's fetch, sent in the same write as its read. */
static bool fetch_waits_behind_read(test_redis_t *r) {
  redisReply *x = test_redis(r, "CLIENT LIST");
  bool found = false;
  for (char *line = x->str; line && *line && !found;) {
    char *end = strchr(line, '\n'), *flags = strstr(line, " flags="), *q = strstr(line, " qbuf=");
    if (end)
      *end = '\0';
    bool blocked = flags && memchr(flags + 7, 'b', strcspn(flags + 7, " ")) != NULL;
    found = blocked && q && strstr(line, " cmd=xread") && atol(q + 6) > 0;
    line = end ? end + 1 : NULL;
  }
  freeReplyObject(x);
  return found;
}

TEST(after_taking_a_task_with_slots_left_the_worker_blocks_without_fetching_again) {
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  redisContext *mon = redisConnectUnix(r.sock);
  CHECK(mon != NULL && mon->err == 0);
  redisReply *ok = redisCommand(mon, "MONITOR");
  CHECK(ok != NULL && ok->type == REDIS_REPLY_STATUS);
  freeReplyObject(ok);

  ct_supervisor_t *sup = test_sup_start();
  ct_broker_t *b = test_broker_open(sup, r.url, 30, NULL);
  CHECK_OK(ct_broker_register(b, "echo", echo, NULL));
  /* One call at a time leaves slots free whatever the timing: a task's
   * slot is let go once its result is stored, which its caller may learn
   * first, so a few may still be taken as the next call comes. */
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = 16;
  CHECK_OK(ct_broker_worker_start(b, &wo));
  freeReplyObject(test_redis(&r, "CONFIG RESETSTAT"));
  for (int i = 0; i < CALLS; i++) {
    json_t *kw = json_pack("{s:i}", "i", i), *result = NULL;
    CHECK_OK(ct_broker_call(b, "echo", kw, NULL, 60, &result));
    CHECK(json_equal(result, kw));
    json_decref(result);
    json_decref(kw);
  }
  CHECK_EQ_INT(test_redis_int(&r, "XLEN ctasker:{default}:stream:normal"), 0); /* all acked */
  /* A take-over that falls due while a task runs reads its entry's id. */
  CHECK(test_redis_calls(&r, "xrevrange") <= 2);
  check_sleep(1.5); /* idle */
  WAIT_FOR(fetch_waits_behind_read(&r));
  ct_broker_free(b); /* the fetch thread has ended: its sequence is complete */
  test_sup_end(sup);
  freeReplyObject(test_redis(&r, "ECHO " MARK));

  char seq[4096];
  size_t n = 0;
  for (;;) {
    redisReply *line = NULL;
    CHECK(redisGetReply(mon, (void **)&line) == REDIS_OK && line != NULL);
    CHECK(line->type == REDIS_REPLY_STATUS);
    char k = kind_of(line->str);
    freeReplyObject(line);
    if (k == 'E')
      break;
    if (k && n + 1 < sizeof seq)
      seq[n++] = k;
  }
  seq[n] = '\0';
  redisFree(mon);
  test_redis_stop(&r);

  size_t fetches = 0, reads = 0;
  for (size_t i = 0; i < n; i++) {
    fetches += seq[i] == 'F' || seq[i] == 'O';
    reads += seq[i] == 'X';
  }
  /* Each call's task was taken by a fetch, the fetch behind a read never
   * takes over (a stop's unblocking runs it), and no fetch is in an idle
   * loop. */
  const char *first = strchr(seq, 'X');
  bool as_expected = fetches >= CALLS && reads <= 3 * CALLS + 10 &&
                     first && !strstr(first, "FF") && !strstr(first, "OF") &&
                     !strstr(first, "OO") && !strstr(first, "XO");
  if (!as_expected)
    fprintf(stderr, "fetch connection's commands (F fetch, O one that takes over, X blocking "
            "read): %s\n", seq);
  CHECK(as_expected);
}

TEST(with_a_task_running_the_worker_blocks_on_its_entry_and_wakes_behind_it) {
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  ct_supervisor_t *sup = test_sup_start();
  ct_broker_t *b = test_broker_open(sup, r.url, 30, NULL);
  CHECK_OK(ct_broker_register(b, "echo", echo, NULL));
  CHECK_OK(ct_broker_register(b, "gate", gate, NULL));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = 4;
  CHECK_OK(ct_broker_worker_start(b, &wo));
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(b, "gate", NULL, NULL, id));
  WAIT_FOR(atomic_load(&gate_handler_started));
  CHECK_EQ_INT(test_redis_int(&r, "XLEN ctasker:{default}:stream:normal"), 1);
  freeReplyObject(test_redis(&r, "CONFIG RESETSTAT"));
  check_sleep(1.5); /* idle, but for the running task */
  long long reads = test_redis_calls(&r, "xread");
  CHECK(reads >= 1 && reads <= 4);
  double t0 = ct_now();
  for (int i = 0; i < 5; i++) {
    json_t *kw = json_pack("{s:i}", "i", i), *result = NULL;
    CHECK_OK(ct_broker_call(b, "echo", kw, NULL, 60, &result));
    CHECK(json_equal(result, kw));
    json_decref(result);
    json_decref(kw);
  }
  CHECK(ct_now() - t0 < 4);
  CHECK_EQ_INT(test_redis_calls(&r, "xinfo|stream"), 0);
  atomic_store(&gate_handler_open, true);
  ct_broker_free(b);
  test_sup_end(sup);
  CHECK_EQ_INT(test_redis_int(&r, "XLEN ctasker:{default}:stream:normal"), 0);
  test_redis_stop(&r);
}

int main(void) {
  RUN(after_taking_a_task_with_slots_left_the_worker_blocks_without_fetching_again);
  RUN(with_a_task_running_the_worker_blocks_on_its_entry_and_wakes_behind_it);
  return check_done();
}
