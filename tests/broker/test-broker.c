/* The broker handle against a real redis-server (one per test, on a Unix
 * socket in a temporary folder): connecting, AUTH and SELECT, deadlines
 * and reconnection, submission by name into one stream per priority
 * class, task records, TTLs, and calls from many threads.
 * Never asserts a duration: deadlines are short, bounds are generous. */
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "ctasker.h"
#include "env.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static char log_text[8192];

static void log_line(int level, const char *msg, void *data) {
  (void)level;
  (void)data;
  pthread_mutex_lock(&log_lock);
  size_t have = strlen(log_text);
  snprintf(log_text + have, sizeof log_text - have, "%s\n", msg);
  pthread_mutex_unlock(&log_lock);
}

static bool log_says(const char *part) {
  pthread_mutex_lock(&log_lock);
  bool found = strstr(log_text, part) != NULL;
  pthread_mutex_unlock(&log_lock);
  return found;
}

static void log_clear(void) {
  pthread_mutex_lock(&log_lock);
  log_text[0] = '\0';
  pthread_mutex_unlock(&log_lock);
}

TEST(unreachable_server_is_a_timeout_and_a_log_line) {
  ct_supervisor_t *sup = test_sup_start();
  char dir[] = "/tmp/ct-none-XXXXXX", url[96];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(url, sizeof url, "unix://%s/none.sock", dir);
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = url;
  o.log = log_line;
  ct_broker_t *b = (ct_broker_t *)&o;
  log_clear();
  CHECK_EQ_INT(ct_broker_new(sup, &o, &b), CT_ETIMEDOUT);
  CHECK(b == NULL);
  CHECK(log_says("cannot connect"));
  CHECK(log_says("none.sock"));
  o.url = "redis://127.0.0.1:1"; /* nothing listens on port 1 */
  CHECK_EQ_INT(ct_broker_new(sup, &o, &b), CT_ETIMEDOUT);
  CHECK(log_says("127.0.0.1:1"));
  rmdir(dir);
  test_sup_end(sup);
}

/* A server that takes the connection and never answers (here a socket
 * that listens and never accepts): the connection, holding its commands
 * until PING says the server has loaded its data, gives PING the command
 * timeout, then drops the connection and makes it again, as for a command
 * that overruns; it does not wait for PING for ever. */
TEST(a_server_that_never_answers_ping_is_dropped_and_tried_again) {
  ct_supervisor_t *sup = test_sup_start();
  char dir[] = "/tmp/ct-mute-XXXXXX", path[64], url[96];
  CHECK(mkdtemp(dir) != NULL);
  snprintf(path, sizeof path, "%s/mute.sock", dir);
  snprintf(url, sizeof url, "unix://%s", path);
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(fd >= 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  memcpy(a.sun_path, path, strlen(path) + 1);
  CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
  CHECK(listen(fd, 16) == 0);
  log_clear();
  ct_broker_t *b = test_broker_open(sup, url, 0.3, log_line); /* connected */
  WAIT_FOR(log_says("no reply to PING within the command timeout"));
  WAIT_FOR(log_says("connecting again"));
  ct_broker_free(b);
  close(fd);
  unlink(path);
  rmdir(dir);
  test_sup_end(sup);
}

TEST(bad_options_are_refused) {
  ct_supervisor_t *sup = test_sup_start();
  ct_broker_t *b;
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  CHECK_EQ_INT(ct_broker_new(sup, &o, &b), CT_EINVAL); /* no URL */
  CHECK_EQ_INT(ct_broker_new(sup, NULL, &b), CT_EINVAL);
  o.url = "redis://host:99999";
  CHECK_EQ_INT(ct_broker_new(sup, &o, &b), CT_EINVAL);
  o.url = "unix:///x.sock";
  o.queue = "a}b";
  CHECK_EQ_INT(ct_broker_new(sup, &o, &b), CT_EINVAL);
  o.queue = NULL;
  o.ns = "";
  CHECK_EQ_INT(ct_broker_new(sup, &o, &b), CT_EINVAL);
  o.ns = NULL;
  o.command_timeout = -1;
  CHECK_EQ_INT(ct_broker_new(sup, &o, &b), CT_EINVAL);
  o.command_timeout = 0;
  o.size = 1;
  CHECK_EQ_INT(ct_broker_new(sup, &o, &b), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_new(sup, &o, NULL), CT_EINVAL);
  ct_broker_free(NULL);
  test_sup_end(sup);
}

TEST(unknown_name_is_refused_and_nothing_written) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  char id[CT_BROKER_ID_SIZE] = "";
  CHECK_EQ_INT(ct_broker_submit(e.b, "never.registered", NULL, NULL, id), CT_ENOENT);
  CHECK_EQ_INT(test_redis_int(&e.r, "DBSIZE"), 0);
  test_redis_register_name(&e.r, "other");
  CHECK_EQ_INT(ct_broker_submit(e.b, "never.registered", NULL, NULL, id), CT_ENOENT);
  CHECK_EQ_INT(test_redis_int(&e.r, "DBSIZE"), 1); /* the names set only */
  CHECK_EQ_STR(id, "");
  CHECK_EQ_INT(ct_broker_submit(e.b, "", NULL, NULL, id), CT_EINVAL);
  CHECK_EQ_INT(ct_broker_submit(e.b, "a\tb", NULL, NULL, id), CT_EINVAL);
  json_t *list = json_array();
  CHECK_EQ_INT(ct_broker_submit(e.b, "other", list, NULL, id), CT_EINVAL);
  json_decref(list);
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.priority = 256;
  CHECK_EQ_INT(ct_broker_submit(e.b, "other", NULL, &so, id), CT_EINVAL);
  so.priority = 0;
  so.result_ttl = -1;
  CHECK_EQ_INT(ct_broker_submit(e.b, "other", NULL, &so, id), CT_EINVAL);
  CHECK_EQ_INT(test_redis_int(&e.r, "DBSIZE"), 1);
  test_env_end(&e);
}

/* Each bad submission option alone is refused, and nothing is written. */
TEST(bad_submit_options_are_refused_and_nothing_written) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  test_redis_register_name(&e.r, "other");
  char id[CT_BROKER_ID_SIZE] = "";
  const ct_broker_submit_opts_t init = CT_BROKER_SUBMIT_OPTS_INIT;
  ct_broker_submit_opts_t bad[] = {init, init, init, init, init, init,
                                   init, init, init, init, init};
  bad[0].delay = -1;
  bad[1].delay = NAN;
  bad[2].eta = INFINITY;
  bad[3].delay = 1, bad[3].eta = 2e9; /* both */
  bad[4].key = "";
  bad[5].key = "a\nb";
  bad[6].max_attempts = -1;
  bad[7].backoff = -0.5;
  bad[8].backoff_max = NAN;
  bad[9].timeout = -1;
  bad[10].size = 2;
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
    CHECK_EQ_INT(ct_broker_submit(e.b, "other", NULL, &bad[i], id), CT_EINVAL);
  CHECK_EQ_STR(id, "");
  /* kwargs over max_payload bytes (as compact JSON) are refused. */
  ct_broker_submit_opts_t so = init;
  so.max_payload = 16;
  json_t *kwargs = json_pack("{s:s}", "k", "0123456789"); /* {"k":"0123456789"}: 18 */
  CHECK_EQ_INT(ct_broker_submit(e.b, "other", kwargs, &so, id), CT_EINVAL);
  so.max_payload = 18;
  CHECK_OK(ct_broker_submit(e.b, "other", kwargs, &so, id));
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal"), 1);
  json_decref(kwargs);
  /* kwargs that JSON cannot write (a string or a key that is not UTF-8,
   * made with jansson's *_nocheck calls) are bad input, not a want of
   * memory (they were CT_ENOMEM, which a caller may retry for ever). */
  json_t *bad_kwargs[] = {json_pack("{s:o}", "s", json_stringn_nocheck("\xff\xfe", 2)),
                          json_object()};
  json_object_set_new_nocheck(bad_kwargs[1], "caf\xe9", json_true());
  for (int i = 0; i < 2; i++) {
    CHECK_EQ_INT(ct_broker_submit(e.b, "other", bad_kwargs[i], NULL, id), CT_EINVAL);
    json_decref(bad_kwargs[i]);
  }
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal"), 1);
  /* An options struct of the first published size (ending at result_ttl)
   * is still taken, the later fields at their defaults. */
  so = init;
  so.size = offsetof(ct_broker_submit_opts_t, delay);
  so.delay = NAN; /* beyond its size: not read */
  CHECK_OK(ct_broker_submit(e.b, "other", NULL, &so, id));
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal"), 2);
  test_env_end(&e);
}

/* The one entry of a stream, as a field -> value JSON object. */
static json_t *only_entry(test_redis_t *r, const char *stream) {
  redisReply *x = test_redis(r, "XRANGE %s - +", stream);
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements == 1);
  redisReply *fields = x->element[0]->element[1];
  json_t *o = json_object();
  for (size_t i = 0; i + 1 < fields->elements; i += 2)
    json_object_set_new(o, fields->element[i]->str, json_string(fields->element[i + 1]->str));
  freeReplyObject(x);
  return o;
}

TEST(submit_writes_entry_and_record_and_get_reads_it) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  test_redis_register_name(&e.r, "resize");
  json_t *kwargs = json_pack("{s:i,s:s}", "width", 640, "path", "/img/a.png");
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "resize", kwargs, NULL, id));
  CHECK_EQ_INT(strlen(id), 36);
  json_t *entry = only_entry(&e.r, "ctasker:{default}:stream:normal");
  CHECK_EQ_STR(json_string_value(json_object_get(entry, "id")), id);
  CHECK_EQ_STR(json_string_value(json_object_get(entry, "name")), "resize");
  json_t *sent = json_loads(json_string_value(json_object_get(entry, "kwargs")), 0, NULL);
  CHECK(json_equal(sent, kwargs));
  json_decref(sent);
  json_decref(entry);
  long long ttl = test_redis_int(&e.r, "TTL ctasker:{default}:task:%s", id);
  CHECK(ttl > 86000 && ttl <= 86400);
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(e.b, id, &info));
  CHECK_EQ_INT(info.status, CT_BROKER_QUEUED);
  CHECK_EQ_INT(info.attempts, 0);
  CHECK(info.created > 1.6e9);
  CHECK(info.started == 0 && info.finished == 0 && info.result == NULL);
  char other[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "resize", NULL, NULL, other));
  CHECK(strcmp(other, id) != 0);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal"), 2);
  json_decref(kwargs);
  test_env_end(&e);
}

TEST(each_priority_class_has_its_stream) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  test_redis_register_name(&e.r, "t");
  static const int prio[] = {0, 1, 50, 51, 100, 101, 255, 100};
  for (size_t i = 0; i < sizeof prio / sizeof *prio; i++) {
    ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
    so.priority = prio[i];
    char id[CT_BROKER_ID_SIZE];
    CHECK_OK(ct_broker_submit(e.b, "t", NULL, &so, id));
  }
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:critical"), 1);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:high"), 2);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal"), 3);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:low"), 2);
  test_env_end(&e);
}

TEST(get_reads_results_and_refuses_bad_records) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  const char *id = "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b";
  ct_broker_info_t info;
  CHECK_EQ_INT(ct_broker_get(e.b, id, &info), CT_ENOENT);
  CHECK_EQ_INT(ct_broker_get(e.b, "not-an-id", &info), CT_EINVAL);
  /* As a worker leaves a completed task (wire format). */
  freeReplyObject(test_redis(&e.r,
      "HSET ctasker:{default}:task:%s status completed name t created 1000 started 2000 "
      "finished 3500 attempts 1 result %s", id, "{\"area\":42}"));
  CHECK_OK(ct_broker_get(e.b, id, &info));
  CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
  CHECK_EQ_INT(info.attempts, 1);
  CHECK(info.finished == 3.5);
  CHECK_EQ_INT(json_integer_value(json_object_get(info.result, "area")), 42);
  json_decref(info.result);
  freeReplyObject(test_redis(&e.r, "HSET ctasker:{default}:task:%s status failed result %s", id,
                             "{\"exception\":{\"class\":\"ValueError\",\"args\":[\"x\"],"
                             "\"str\":\"x\"}}"));
  CHECK_OK(ct_broker_get(e.b, id, &info));
  CHECK_EQ_INT(info.status, CT_BROKER_FAILED);
  CHECK_EQ_STR(ct_result_error_class(info.result), "ValueError");
  json_decref(info.result);
  freeReplyObject(test_redis(&e.r, "HSET ctasker:{default}:task:%s status finished", id));
  log_clear();
  CHECK_EQ_INT(ct_broker_get(e.b, id, &info), CT_EINVAL);
  CHECK(info.result == NULL);
  CHECK(log_says("malformed: missing or bad status"));
  freeReplyObject(test_redis(&e.r, "SET ctasker:{default}:task:%s not-a-hash", id));
  log_clear();
  CHECK_EQ_INT(ct_broker_get(e.b, id, &info), CT_EINVAL); /* WRONGTYPE */
  CHECK(log_says("malformed: not a hash: WRONGTYPE"));
  test_env_end(&e);
}

TEST(record_is_gone_after_its_ttl) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  test_redis_register_name(&e.r, "t");
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.result_ttl = 0.2; /* rounded up to a second: EXPIRE's unit */
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "t", NULL, &so, id));
  CHECK_EQ_INT(test_redis_int(&e.r, "TTL ctasker:{default}:task:%s", id), 1);
  ct_broker_info_t info;
  WAIT_FOR(ct_broker_get(e.b, id, &info) == CT_ENOENT);
  test_env_end(&e);
}

TEST(huge_ttl_is_kept_whole_and_expiring) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  test_redis_register_name(&e.r, "t");
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  const double ttls[] = {1e9, 1e17, 1e300};
  for (int i = 0; i < 3; i++) {
    so.result_ttl = ttls[i];
    char id[CT_BROKER_ID_SIZE];
    CHECK_OK(ct_broker_submit(e.b, "t", NULL, &so, id));
    /* an expiring record (-1 would be one kept for ever), and its entry */
    CHECK(test_redis_int(&e.r, "TTL ctasker:{default}:task:%s", id) > 0);
    ct_broker_info_t info;
    CHECK_OK(ct_broker_get(e.b, id, &info));
    CHECK_EQ_INT(info.status, CT_BROKER_QUEUED);
  }
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal"), 3);
  test_env_end(&e);
}

TEST(auth_and_select_come_from_the_url) {
  test_redis_t r = {0};
  static const char *const conf[] = {"--requirepass", "s3cr@t", NULL};
  test_redis_start(&r, conf);
  freeReplyObject(test_redis(&r, "AUTH s3cr@t"));
  freeReplyObject(test_redis(&r, "SELECT 3"));
  test_redis_register_name(&r, "t");
  ct_supervisor_t *sup = test_sup_start();
  char url[256];
  snprintf(url, sizeof url, "unix://:s3cr%%40t@%s?db=3", r.sock);
  ct_broker_t *b = test_broker_open(sup, url, 10, log_line);
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(b, "t", NULL, NULL, id));
  CHECK_EQ_INT(test_redis_int(&r, "XLEN ctasker:{default}:stream:normal"), 1);
  ct_broker_free(b);
  snprintf(url, sizeof url, "unix://:wrong@%s?db=3", r.sock);
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  o.url = url;
  o.log = log_line;
  log_clear();
  CHECK_EQ_INT(ct_broker_new(sup, &o, &b), CT_ETIMEDOUT);
  CHECK(log_says("AUTH or SELECT refused"));
  CHECK(!log_says("wrong")); /* the password is never logged */
  test_sup_end(sup);
  test_redis_stop(&r);
}

TEST(a_silent_server_is_a_command_timeout_then_recovers) {
  test_env_t e;
  test_env_start(&e, 0, 0.5, log_line);
  const char *id = "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b";
  ct_broker_info_t info;
  /* Answered once connected: on a loaded machine the first command may
   * take more than the 0.5 s it is given. */
  WAIT_FOR(ct_broker_get(e.b, id, &info) == CT_ENOENT);
  log_clear();
  CHECK(kill(e.r.pid, SIGSTOP) == 0);
  CHECK_EQ_INT(ct_broker_get(e.b, id, &info), CT_ETIMEDOUT);
  CHECK(log_says("no reply within the command timeout"));
  CHECK(kill(e.r.pid, SIGCONT) == 0);
  WAIT_FOR(ct_broker_get(e.b, id, &info) == CT_ENOENT);
  CHECK(log_says("connected"));
  test_env_end(&e);
}

typedef struct {
  ct_broker_t *b;
  double timeout;
  int rc;
  double took;
} stalled_call_t;

static void *call_thread(void *p) {
  stalled_call_t *c = p;
  json_t *result = NULL;
  double start = ct_now();
  c->rc = ct_broker_call(c->b, "t", NULL, NULL, c->timeout, &result);
  c->took = ct_now() - start;
  json_decref(result);
  return NULL;
}

/* A call of 0.5 s to a server stopped (SIGSTOP) before it ends by its
 * deadline (plus a grace), not the command timeout (10 s) later. */
static void a_call_to_a_stopped_server_ends_by_its_deadline(test_env_t *e) {
  CHECK(kill(e->r.pid, SIGSTOP) == 0);
  stalled_call_t c = {e->b, 0.5, 0, 0};
  call_thread(&c);
  CHECK(kill(e->r.pid, SIGCONT) == 0);
  CHECK_EQ_INT(c.rc, CT_ETIMEDOUT);
  CHECK(c.took < 5);
}

/* The first call in a process loads the submit script (SCRIPT LOAD) before
 * it runs it: a stalled server holds the call no longer than its own
 * timeout (plus a grace), not the command timeout more. Run first in this
 * process, before any submission has loaded the script. */
TEST(a_call_that_loads_the_script_keeps_its_deadline) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  test_redis_register_name(&e.r, "t");
  a_call_to_a_stopped_server_ends_by_its_deadline(&e);
  test_env_end(&e);
}

/* A server that stops answering (SIGSTOP) holds a call no longer than its
 * own timeout (plus a grace), not its timeout plus the command timeout:
 * neither while it submits nor while it waits for the answer. */
TEST(a_call_ends_by_its_deadline_when_the_server_stalls) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  test_redis_register_name(&e.r, "t"); /* no worker: nobody answers */
  /* Stalled before the call: its submission. */
  a_call_to_a_stopped_server_ends_by_its_deadline(&e);
  /* Stalled while the call waits: its blocking read. */
  WAIT_FOR(ct_broker_submit(e.b, "t", NULL, NULL, (char[CT_BROKER_ID_SIZE]){0}) == 0);
  freeReplyObject(test_redis(&e.r, "DEL ctasker:{default}:stream:normal"));
  stalled_call_t c = {e.b, 2, 0, 0};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, call_thread, &c) == 0);
  WAIT_FOR(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal") == 1);
  CHECK(kill(e.r.pid, SIGSTOP) == 0);
  pthread_join(th, NULL);
  CHECK(kill(e.r.pid, SIGCONT) == 0);
  CHECK_EQ_INT(c.rc, CT_ETIMEDOUT);
  CHECK(c.took < 7); /* 2 s, and not the command timeout's 10 s more */
  ct_broker_info_t info;
  WAIT_FOR(ct_broker_get(e.b, "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b", &info) == CT_ENOENT);
  test_env_end(&e);
}

/* A server that goes away while a call waits, and comes back before the
 * call's end: the call waits again on a new connection for what is left,
 * not for what was left when the server went away (it used to end 3 s
 * late here). Nobody answers. */
TEST(a_call_ends_by_its_deadline_when_the_server_comes_back) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  test_redis_register_name(&e.r, "t");
  stalled_call_t c = {e.b, 0.3, 0, 0};
  call_thread(&c); /* the handle learns the name */
  CHECK_EQ_INT(c.rc, CT_ETIMEDOUT);
  c = (stalled_call_t){e.b, 6, 0, 0};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, call_thread, &c) == 0);
  WAIT_FOR(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal") == 2);
  test_redis_halt(&e.r, false);
  check_sleep(3);
  test_redis_start(&e.r, NULL);
  pthread_join(th, NULL);
  CHECK_EQ_INT(c.rc, CT_ETIMEDOUT);
  CHECK(c.took < 7.5); /* 6 s (and a grace of 0.25 s) */
  test_env_end(&e);
}

/* Restart the server with 8000 keys more to read back, slowly (about 4 s,
 * a key every 0.5 ms): it answers LOADING meanwhile. */
static void restart_loading(test_redis_t *r) {
  redisReply *x =
      test_redis(r, "EVAL %s 0", "for i = 1, 8000 do redis.call('SET', 'k' .. i, i) end");
  CHECK(x->type != REDIS_REPLY_ERROR);
  freeReplyObject(x);
  x = test_redis(r, "SAVE");
  CHECK(x->type == REDIS_REPLY_STATUS);
  freeReplyObject(x);
  test_redis_halt(r, false);
  static const char *const slow[] = {"--dbfilename", "dump.rdb", "--key-load-delay", "500",
                                     "--loading-process-events-interval-bytes", "1024", NULL};
  test_redis_start(r, slow);
  x = test_redis(r, "GET k1");
  CHECK(x->type == REDIS_REPLY_ERROR && strncmp(x->str, "LOADING", 7) == 0);
  freeReplyObject(x);
}

/* A server restarted with its data reads it back before it answers
 * commands (LOADING until then, here for seconds: key-load-delay makes
 * each key slow): a get or a submission in that time waits for it, within
 * the command timeout, rather than failing. */
TEST(commands_wait_while_a_restarted_server_loads_its_data) {
  test_env_t e;
  test_env_start(&e, 0, 30, log_line);
  test_redis_register_name(&e.r, "t");
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "t", NULL, NULL, id));
  restart_loading(&e.r);
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(e.b, id, &info)); /* not CT_EINVAL */
  CHECK_EQ_INT(info.status, CT_BROKER_QUEUED);
  CHECK_OK(ct_broker_submit(e.b, "t", NULL, NULL, id));
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal"), 2);
  test_env_end(&e);
}

/* A known name's submission is a MULTI/EXEC transaction. A server loading
 * its data runs MULTI and EXEC but refuses the commands between; the
 * connection sends nothing until the server has loaded (it asks with
 * PING), so a submission made meanwhile waits, is written once, whole, and
 * says so (it was written, its caller told CT_EINVAL, when its commands
 * were sent again on their own). */
TEST(a_submission_made_while_a_restarted_server_loads_is_written_once) {
  test_env_t e;
  test_env_start(&e, 0, 30, log_line);
  test_redis_register_name(&e.r, "t");
  char first[CT_BROKER_ID_SIZE], id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "t", NULL, NULL, first)); /* the name is known now */
  restart_loading(&e.r);
  CHECK_OK(ct_broker_submit(e.b, "t", NULL, NULL, id));
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal"), 2);
  CHECK_EQ_INT(test_broker_status(e.b, id), CT_BROKER_QUEUED);
  test_env_end(&e);
}

TEST(a_restarted_server_is_reconnected) {
  test_env_t e;
  test_env_start(&e, 0, 0.5, log_line);
  test_redis_register_name(&e.r, "t");
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "t", NULL, NULL, id));
  log_clear();
  test_redis_halt(&e.r, false);
  CHECK_EQ_INT(ct_broker_submit(e.b, "t", NULL, NULL, id), CT_ETIMEDOUT);
  /* hiredis answers the commands it held before it reports the loss. */
  WAIT_FOR(log_says("connection lost") || log_says("cannot connect"));
  test_redis_start(&e.r, NULL);
  test_redis_register_name(&e.r, "t"); /* a fresh server without persistence */
  WAIT_FOR(ct_broker_submit(e.b, "t", NULL, NULL, id) == 0);
  CHECK(log_says("connecting again"));
  test_env_end(&e);
}

enum { THREADS = 4, PER_THREAD = 50 };

static void *submit_many(void *arg) {
  ct_broker_t *b = arg;
  for (int i = 0; i < PER_THREAD; i++) {
    char id[CT_BROKER_ID_SIZE];
    json_t *kw = json_pack("{s:i}", "i", i);
    CHECK_OK(ct_broker_submit(b, "t", kw, NULL, id));
    json_decref(kw);
  }
  return NULL;
}

TEST(calls_from_many_threads_all_land) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  test_redis_register_name(&e.r, "t");
  pthread_t th[THREADS];
  for (int i = 0; i < THREADS; i++)
    CHECK(pthread_create(&th[i], NULL, submit_many, e.b) == 0);
  for (int i = 0; i < THREADS; i++)
    pthread_join(th[i], NULL);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN ctasker:{default}:stream:normal"), THREADS * PER_THREAD);
  test_env_end(&e);
}

TEST(free_after_the_supervisor_stopped) {
  test_env_t e;
  test_env_start(&e, 0, 10, log_line);
  CHECK_OK(ct_supervisor_stop(e.sup, CT_STOP_DRAIN, -1));
  ct_broker_info_t info;
  CHECK_EQ_INT(ct_broker_get(e.b, "0b8a0f9e-5c2d-4e3a-9f1b-2c3d4e5f6a7b", &info), CT_ESHUTDOWN);
  ct_broker_free(e.b); /* its loop has ended: freed without it */
  CHECK_OK(ct_supervisor_free(e.sup));
  test_redis_stop(&e.r);
}

TEST(bad_options_name_their_field_in_the_log) {
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  ct_supervisor_t *sup = test_sup_start();
  ct_broker_opts_t o = CT_BROKER_OPTS_INIT;
  ct_broker_t *b;
  o.url = r.url;
  o.log = log_line;
  o.ns = "a b";
  o.connect_timeout = NAN;
  log_clear();
  CHECK_EQ_INT(ct_broker_new(sup, &o, &b), CT_EINVAL);
  CHECK(log_says("ct_broker_new: invalid ct_broker_opts_t.ns"));
  CHECK(log_says("ct_broker_opts_t.connect_timeout: NaN"));
  b = test_broker_open(sup, r.url, 10, log_line);
  char id[CT_BROKER_ID_SIZE] = "";
  ct_broker_submit_opts_t so = CT_BROKER_SUBMIT_OPTS_INIT;
  so.priority = 256;
  CHECK_EQ_INT(ct_broker_submit(b, "x", NULL, &so, id), CT_EINVAL);
  CHECK(log_says("ct_broker_submit: invalid ct_broker_submit_opts_t.priority: 256 is out"));
  /* A delay or eta beyond what a record's TTL can hold: refused silently. */
  so = (ct_broker_submit_opts_t)CT_BROKER_SUBMIT_OPTS_INIT;
  so.delay = 2e9;
  CHECK_EQ_INT(ct_broker_submit(b, "x", NULL, &so, id), CT_EINVAL);
  CHECK(log_says("ct_broker_submit_opts_t.delay: over 1e9 seconds"));
  so.delay = 0;
  so.eta = ct_now() + 1e10; /* ct_now() is not Unix time, but far smaller */
  CHECK_EQ_INT(ct_broker_submit(b, "x", NULL, &so, id), CT_EINVAL);
  CHECK(log_says("ct_broker_submit_opts_t.eta: over 1e9 seconds"));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.lease = 0.01;
  CHECK_EQ_INT(ct_broker_worker_start(b, &wo), CT_EINVAL);
  CHECK(log_says("ct_broker_worker_start: invalid ct_broker_worker_opts_t.lease"));
  ct_broker_free(b);
  test_sup_end(sup);
  test_redis_stop(&r);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(a_call_that_loads_the_script_keeps_its_deadline); /* first: see there */
  RUN(unreachable_server_is_a_timeout_and_a_log_line);
  RUN(a_server_that_never_answers_ping_is_dropped_and_tried_again);
  RUN(bad_options_are_refused);
  RUN(unknown_name_is_refused_and_nothing_written);
  RUN(bad_submit_options_are_refused_and_nothing_written);
  RUN(submit_writes_entry_and_record_and_get_reads_it);
  RUN(each_priority_class_has_its_stream);
  RUN(get_reads_results_and_refuses_bad_records);
  RUN(record_is_gone_after_its_ttl);
  RUN(huge_ttl_is_kept_whole_and_expiring);
  RUN(auth_and_select_come_from_the_url);
  RUN(a_silent_server_is_a_command_timeout_then_recovers);
  RUN(a_call_ends_by_its_deadline_when_the_server_stalls);
  RUN(a_call_ends_by_its_deadline_when_the_server_comes_back);
  RUN(commands_wait_while_a_restarted_server_loads_its_data);
  RUN(a_submission_made_while_a_restarted_server_loads_is_written_once);
  RUN(a_restarted_server_is_reconnected);
  RUN(calls_from_many_threads_all_land);
  RUN(free_after_the_supervisor_stopped);
  RUN(bad_options_name_their_field_in_the_log);
  return check_done();
}
