/* ct_broker_submit() of a name the handle has found registered: the first
 * submission of a name goes through the submit script, which checks the
 * names set; the next immediate ones write the same record and entry in a
 * MULTI/EXEC transaction, without a script (submit-tx.c). A name never
 * found registered is still refused with nothing written, and an
 * idempotency key or a delay keeps the script. The test counts the
 * server's EVALSHA and EXEC calls (INFO commandstats) to tell the paths
 * apart. */
#include <stdlib.h>
#include <string.h>

#include "ctasker.h"
#include "env.h"

#define PREFIX "ctasker:{default}:"

/* The record's fields but created, as "k=v;" in the hash's order. */
static void record_of(test_redis_t *r, const char *id, char *out, size_t size) {
  redisReply *x = test_redis(r, "HGETALL " PREFIX "task:%s", id);
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements > 0);
  out[0] = '\0';
  for (size_t i = 0; i + 1 < x->elements; i += 2) {
    if (strcmp(x->element[i]->str, "created") == 0)
      continue;
    size_t have = strlen(out);
    snprintf(out + have, size - have, "%s=%s;", x->element[i]->str, x->element[i + 1]->str);
  }
  freeReplyObject(x);
}

/* The field names of the stream's entry `i`, as "k;k;...". */
static void entry_fields(test_redis_t *r, size_t i, char *out, size_t size) {
  redisReply *x = test_redis(r, "XRANGE " PREFIX "stream:normal - +");
  CHECK(x->type == REDIS_REPLY_ARRAY && x->elements > i);
  const redisReply *f = x->element[i]->element[1];
  out[0] = '\0';
  for (size_t j = 0; j + 1 < f->elements; j += 2) {
    size_t have = strlen(out);
    snprintf(out + have, size - have, "%s;", f->element[j]->str);
  }
  freeReplyObject(x);
}

TEST(a_known_name_is_submitted_whole_in_a_transaction) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  test_redis_register_name(&e.r, "known");
  json_t *kw = json_pack("{s:i}", "x", 1);
  char first[CT_BROKER_ID_SIZE], second[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "known", kw, NULL, first));
  long long scripts = test_redis_calls(&e.r, "evalsha"), execs = test_redis_calls(&e.r, "exec");
  CHECK_EQ_INT(execs, 0);
  CHECK_OK(ct_broker_submit(e.b, "known", kw, NULL, second));
  CHECK_EQ_INT(test_redis_calls(&e.r, "evalsha"), scripts); /* no script this time */
  CHECK_EQ_INT(test_redis_calls(&e.r, "exec"), 1);
  char a[512], c[512];
  record_of(&e.r, first, a, sizeof a);
  record_of(&e.r, second, c, sizeof c);
  CHECK_EQ_STR(c, a); /* the same fields and values as the script writes */
  CHECK_EQ_STR(a, "status=queued;name=known;attempts=0;ttl=86400;");
  long long ttl = test_redis_int(&e.r, "TTL " PREFIX "task:%s", second);
  CHECK(ttl > 86000 && ttl <= 86400);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 2);
  entry_fields(&e.r, 0, a, sizeof a);
  entry_fields(&e.r, 1, c, sizeof c);
  CHECK_EQ_STR(c, a);
  ct_broker_info_t info;
  CHECK_OK(ct_broker_get(e.b, second, &info));
  CHECK_EQ_INT(info.status, CT_BROKER_QUEUED);
  json_decref(kw);
  test_env_end(&e);
}

TEST(a_name_never_registered_is_refused_after_a_known_one) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  test_redis_register_name(&e.r, "known");
  char id[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "known", NULL, NULL, id));
  CHECK_OK(ct_broker_submit(e.b, "known", NULL, NULL, id));
  long long keys = test_redis_int(&e.r, "DBSIZE");
  for (int i = 0; i < 2; i++) /* the second time too: a refusal is never kept */
    CHECK_EQ_INT(ct_broker_submit(e.b, "unknown", NULL, NULL, id), CT_ENOENT);
  CHECK_EQ_INT(test_redis_int(&e.r, "DBSIZE"), keys);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 2);
  test_env_end(&e);
}

TEST(a_key_or_a_delay_keeps_the_script) {
  test_env_t e;
  test_env_start(&e, 0, 10, NULL);
  test_redis_register_name(&e.r, "known");
  char id[CT_BROKER_ID_SIZE], again[CT_BROKER_ID_SIZE];
  CHECK_OK(ct_broker_submit(e.b, "known", NULL, NULL, id)); /* the name is known now */
  long long scripts = test_redis_calls(&e.r, "evalsha");
  ct_broker_submit_opts_t o = CT_BROKER_SUBMIT_OPTS_INIT;
  o.key = "once";
  CHECK_OK(ct_broker_submit(e.b, "known", NULL, &o, id));
  CHECK_OK(ct_broker_submit(e.b, "known", NULL, &o, again));
  CHECK_EQ_STR(again, id); /* the key still names the first task */
  o.key = NULL;
  o.delay = 600;
  CHECK_OK(ct_broker_submit(e.b, "known", NULL, &o, id));
  CHECK_EQ_INT(test_redis_calls(&e.r, "evalsha"), scripts + 3);
  CHECK_EQ_INT(test_redis_calls(&e.r, "exec"), 0);
  CHECK_EQ_INT(test_redis_int(&e.r, "XLEN " PREFIX "stream:normal"), 2);
  CHECK_EQ_INT(test_redis_int(&e.r, "ZCARD " PREFIX "delayed"), 1);
  test_env_end(&e);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(a_known_name_is_submitted_whole_in_a_transaction);
  RUN(a_name_never_registered_is_refused_after_a_known_one);
  RUN(a_key_or_a_delay_keeps_the_script);
  return check_done();
}
