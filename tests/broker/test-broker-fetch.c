/* A worker takes no more tasks than it has free slots even when a fetch
 * reply holds more than it asked for (a server, proxy or script that does
 * not keep to the request): the worker talks to Redis through a small
 * proxy in this test that raises the count of every fetch, and the tasks
 * it did not ask for stay pending, taken over after their lease, each run
 * once, never more at a time than the concurrency. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "ctasker.h"
#include "redis.h"

#define PREFIX "ctasker:{default}:"
#define INFLATED "4"

typedef struct {
  char dir[64], path[128], url[160];
  const char *redis_sock;
  int listen_fd;
} proxy_t;

/* One proxied connection: client and server sockets, closed by whichever
 * of its two copying threads ends last. */
typedef struct {
  int client, server;
  atomic_int refs;
} conn_t;

typedef struct {
  int from, to;
  conn_t *conn;
} pipe_t;

static void pipe_end(pipe_t *c) {
  shutdown(c->to, SHUT_RDWR); /* ends the other direction too */
  if (atomic_fetch_sub(&c->conn->refs, 1) == 1) {
    close(c->conn->client);
    close(c->conn->server);
    free(c->conn);
  }
  free(c);
}

static void write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR)
      continue;
    if (w <= 0)
      return;
    p += w;
    n -= (size_t)w;
  }
}

/* Server to client: bytes as they come. */
static void *copy_down(void *p) {
  pipe_t *c = p;
  char buf[65536];
  for (ssize_t n; (n = read(c->from, buf, sizeof buf)) > 0;)
    write_all(c->to, buf, (size_t)n);
  pipe_end(c);
  return NULL;
}

/* The fetch script's SHA1, learnt from the worker's SCRIPT LOAD. */
static pthread_mutex_t sha_lock = PTHREAD_MUTEX_INITIALIZER;
static char fetch_sha[41];
static const char *redis_path;

static void learn_fetch_sha(const char *text, size_t len) {
  redisContext *c = redisConnectUnix(redis_path);
  CHECK(c && !c->err);
  redisReply *r = redisCommand(c, "SCRIPT LOAD %b", text, len);
  CHECK(r && r->type == REDIS_REPLY_STRING && r->len == 40);
  pthread_mutex_lock(&sha_lock);
  memcpy(fetch_sha, r->str, 41);
  pthread_mutex_unlock(&sha_lock);
  freeReplyObject(r);
  redisFree(c);
}

static bool is_fetch_sha(const char *sha) {
  pthread_mutex_lock(&sha_lock);
  bool is = memcmp(sha, fetch_sha, 40) == 0;
  pthread_mutex_unlock(&sha_lock);
  return is;
}

/* Client to server, one command at a time (hiredis sends multibulk
 * requests): the fetch script's count (its third ARGV) is raised. The
 * script runs by its SHA1, which the proxy learns when it sees it loaded. */
static void *copy_up(void *p) {
  pipe_t *c = p;
  FILE *in = fdopen(dup(c->from), "r"); /* its own descriptor to close */
  char line[64];
  while (in && fgets(line, sizeof line, in) && line[0] == '*') {
    int argc = atoi(line + 1);
    char **argv = calloc((size_t)argc, sizeof *argv);
    size_t *len = calloc((size_t)argc, sizeof *len);
    CHECK(argv && len);
    for (int i = 0; i < argc; i++) {
      CHECK(fgets(line, sizeof line, in) && line[0] == '$');
      len[i] = (size_t)atol(line + 1);
      argv[i] = malloc(len[i] + 2);
      CHECK(argv[i] && fread(argv[i], 1, len[i] + 2, in) == len[i] + 2);
    }
    if (argc == 3 && len[0] == 6 && memcmp(argv[0], "SCRIPT", 6) == 0 &&
        memmem(argv[2], len[2], "XAUTOCLAIM", 10))
      learn_fetch_sha(argv[2], len[2]);
    if (argc > 3 && len[0] == 7 && memcmp(argv[0], "EVALSHA", 7) == 0 && len[1] == 40 &&
        is_fetch_sha(argv[1])) {
      int count_at = 3 + atoi(argv[2]) + 2;
      CHECK(count_at < argc);
      free(argv[count_at]);
      argv[count_at] = strdup(INFLATED "\r\n");
      len[count_at] = strlen(INFLATED);
    }
    char head[32];
    snprintf(head, sizeof head, "*%d\r\n", argc);
    write_all(c->to, head, strlen(head));
    for (int i = 0; i < argc; i++) {
      snprintf(head, sizeof head, "$%zu\r\n", len[i]);
      write_all(c->to, head, strlen(head));
      write_all(c->to, argv[i], len[i] + 2);
      free(argv[i]);
    }
    free(argv);
    free(len);
  }
  if (in)
    fclose(in);
  pipe_end(c);
  return NULL;
}

static int unix_socket(const char *path, bool listening) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  CHECK(fd >= 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  size_t len = strlen(path);
  CHECK(len < sizeof a.sun_path); /* a cut path would name another socket */
  memcpy(a.sun_path, path, len + 1);
  if (listening) {
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof a) == 0);
    CHECK(listen(fd, 16) == 0);
  } else {
    CHECK(connect(fd, (struct sockaddr *)&a, sizeof a) == 0);
  }
  return fd;
}

static void spawn(void *(*fn)(void *), int from, int to, conn_t *conn) {
  pipe_t *c = malloc(sizeof *c);
  CHECK(c != NULL);
  *c = (pipe_t){from, to, conn};
  pthread_t th;
  CHECK(pthread_create(&th, NULL, fn, c) == 0);
  pthread_detach(th);
}

static void *accept_main(void *p) {
  proxy_t *x = p;
  for (int cfd; (cfd = accept(x->listen_fd, NULL, NULL)) >= 0;) {
    int sfd = unix_socket(x->redis_sock, false);
    conn_t *conn = malloc(sizeof *conn);
    CHECK(conn != NULL);
    conn->client = cfd;
    conn->server = sfd;
    atomic_init(&conn->refs, 2);
    spawn(copy_up, cfd, sfd, conn);
    spawn(copy_down, sfd, cfd, conn);
  }
  return NULL;
}

static void proxy_start(proxy_t *x, const char *redis_sock) {
  strcpy(x->dir, "/tmp/ct-proxy-XXXXXX");
  CHECK(mkdtemp(x->dir) != NULL);
  snprintf(x->path, sizeof x->path, "%s/proxy.sock", x->dir);
  snprintf(x->url, sizeof x->url, "unix://%s", x->path);
  x->redis_sock = redis_sock;
  redis_path = redis_sock;
  x->listen_fd = unix_socket(x->path, true);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, accept_main, x) == 0);
  pthread_detach(th);
}

static void proxy_stop(proxy_t *x) {
  shutdown(x->listen_fd, SHUT_RDWR); /* ends accept() */
  unlink(x->path);
  rmdir(x->dir);
}

static atomic_int active, most, runs;

static json_t *busy(ct_task_t *self, const json_t *kwargs, void *data) {
  (void)self;
  (void)kwargs;
  (void)data;
  int now = atomic_fetch_add(&active, 1) + 1;
  for (int m = atomic_load(&most); now > m && !atomic_compare_exchange_weak(&most, &m, now);)
    ;
  atomic_fetch_add(&runs, 1);
  check_sleep(0.1);
  atomic_fetch_sub(&active, 1);
  return json_true();
}

TEST(a_fetch_reply_larger_than_asked_starts_no_more_than_free_slots) {
  test_redis_t r = {0};
  test_redis_start(&r, NULL);
  proxy_t x;
  proxy_start(&x, r.sock);
  ct_supervisor_t *sup = test_sup_start();
  ct_broker_t *b = test_broker_open(sup, x.url, 10, NULL); /* through the proxy */
  CHECK_OK(ct_broker_register(b, "busy", busy, NULL));
  freeReplyObject(test_redis(&r, "SADD " PREFIX "names busy"));
  enum { N = 4 };
  char ids[N][CT_BROKER_ID_SIZE];
  for (int i = 0; i < N; i++)
    CHECK_OK(ct_broker_submit(b, "busy", NULL, NULL, ids[i]));
  ct_broker_worker_opts_t wo = CT_BROKER_WORKER_OPTS_INIT;
  wo.concurrency = 1;
  wo.lease = 0.3; /* what was not asked for is taken over soon */
  CHECK_OK(ct_broker_worker_start(b, &wo));
  for (int i = 0; i < N; i++) {
    ct_broker_info_t info = {0};
    for (int t = 0; t < 3000 && info.status != CT_BROKER_COMPLETED; t++) {
      json_decref(info.result);
      CHECK_OK(ct_broker_get(b, ids[i], &info));
      check_sleep(0.01);
    }
    CHECK_EQ_INT(info.status, CT_BROKER_COMPLETED);
    json_decref(info.result);
  }
  CHECK_EQ_INT(atomic_load(&most), 1);
  CHECK_EQ_INT(atomic_load(&runs), N);
  CHECK_OK(ct_broker_worker_stop(b, -1));
  CHECK_EQ_INT(test_redis_int(&r, "XLEN " PREFIX "stream:normal"), 0);
  ct_broker_free(b);
  test_sup_end(sup);
  proxy_stop(&x);
  test_redis_stop(&r);
}

int main(void) {
  if (!test_redis_installed())
    return 77;
  RUN(a_fetch_reply_larger_than_asked_starts_no_more_than_free_slots);
  return check_done();
}
