/* Out of file descriptors: every call that needs one returns CT_EMFILE and
 * the process lives on (supervisor, extra loop and process pool creation;
 * the cases run in a forked child, so an abort is a failed case, not a dead
 * test binary); a stopped extra loop gives its
 * descriptors back; loop threads name themselves, and creating and
 * stopping loops from many threads at once is clean (run under TSan and
 * ASan too). */
#include <ctasker.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "gate.h"

static json_t *nothing(ct_task_t *self, void *arg) {
  (void)self;
  (void)arg;
  return NULL;
}

/* Run fn in a child process; the case fails unless the child exits 0. */
static void in_child(void (*fn)(void)) {
  fflush(stderr);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    fn();
    exit(0);
  }
  int status;
  CHECK(waitpid(pid, &status, 0) == pid);
  if (WIFSIGNALED(status))
    fprintf(stderr, "   the child died of signal %d (%s)\n", WTERMSIG(status),
            strsignal(WTERMSIG(status)));
  CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

/* Open descriptors: from /proc, or, when there is no descriptor left to
 * read it with, by asking each one below the (then lowered) limit. */
static int count_fds(void) {
  DIR *d = opendir("/proc/self/fd");
  if (d) {
    int n = -1; /* the directory's own descriptor */
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
      n += e->d_name[0] != '.';
    closedir(d);
    return n;
  }
  struct rlimit rl;
  CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  int n = 0, top = rl.rlim_cur < 65536 ? (int)rl.rlim_cur : 65536;
  for (int fd = 0; fd < top; fd++)
    n += fcntl(fd, F_GETFD) != -1;
  return n;
}

/* Descriptors held to use up the limit. */
#define HOARD_MAX 512
static int hoard[HOARD_MAX];
static int hoarded;

/* Lower the limit near what is open, then dup until EMFILE. */
static void use_up_descriptors(void) {
  struct rlimit rl;
  CHECK(getrlimit(RLIMIT_NOFILE, &rl) == 0);
  rl.rlim_cur = (rlim_t)count_fds() + 64;
  CHECK(setrlimit(RLIMIT_NOFILE, &rl) == 0);
  for (;;) {
    int fd = dup(2);
    if (fd < 0) {
      CHECK(errno == EMFILE);
      return;
    }
    CHECK(hoarded < HOARD_MAX);
    hoard[hoarded++] = fd;
  }
}

/* Give `n` hoarded descriptors back. */
static void spare(int n) {
  while (n-- > 0 && hoarded > 0)
    close(hoard[--hoarded]);
}

static void give_all_back(void) { spare(hoarded); }

static void run_one_task(ct_supervisor_t *sup) {
  ct_task_t *t = submit(sup, nothing, NULL, CT_PRIORITY_NORMAL);
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  CHECK_EQ_INT(ct_task_status(t), CT_TASK_COMPLETED);
  ct_task_unref(t);
}

static void mark_call(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  atomic_fetch_add((atomic_int *)data, 1);
}

/* ct_supervisor_new() with 0, 1, 2, 3 descriptors to spare: CT_EMFILE or
 * a working supervisor, and no descriptor kept after a failure. */
static void new_supervisor_without_descriptors(void) {
  use_up_descriptors();
  for (int n = 0; n <= 3; n++) {
    spare(n);
    int before = count_fds();
    ct_supervisor_t *sup = NULL;
    int rc = ct_supervisor_new(NULL, &sup);
    if (n == 0)
      CHECK_EQ_INT(rc, CT_EMFILE);
    CHECK(rc == 0 || rc == CT_EMFILE);
    if (rc == 0) {
      CHECK_OK(ct_supervisor_start(sup));
      run_one_task(sup);
      stop_and_free(sup);
    } else {
      CHECK(sup == NULL);
    }
    CHECK_EQ_INT(count_fds(), before);
    use_up_descriptors();
  }
  give_all_back();
}

TEST(supervisor_new_out_of_descriptors_returns_emfile) {
  in_child(new_supervisor_without_descriptors);
}

/* A running supervisor whose host has run out of descriptors: its tasks
 * still run, ct_loop_create() returns CT_EMFILE (or works, given a spare
 * descriptor), and stop and free complete. */
static void create_loop_without_descriptors(void) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  use_up_descriptors();
  run_one_task(sup);
  for (int n = 0; n <= 3; n++) {
    spare(n);
    int before = count_fds();
    char name[32];
    snprintf(name, sizeof name, "spare-%d", n);
    ct_loop_t *loop = NULL;
    int rc = ct_loop_create(sup, name, &loop);
    if (n == 0)
      CHECK_EQ_INT(rc, CT_EMFILE);
    CHECK(rc == 0 || rc == CT_EMFILE);
    if (rc == 0) {
      atomic_int calls = 0;
      CHECK_OK(ct_loop_call(loop, mark_call, &calls));
      CHECK_OK(ct_loop_stop(loop, -1));
      CHECK_EQ_INT(atomic_load(&calls), 1);
    } else {
      CHECK(loop == NULL);
      CHECK_EQ_INT(ct_loop_get(sup, name, &loop), CT_ENOENT);
    }
    CHECK_EQ_INT(count_fds(), before);
    run_one_task(sup);
    use_up_descriptors();
  }
  stop_and_free(sup);
  give_all_back();
}

TEST(loop_create_out_of_descriptors_returns_emfile) {
  in_child(create_loop_without_descriptors);
}

/* A running supervisor out of descriptors: ct_process_pool_create() has no
 * descriptor for the fork server's socket and returns CT_EMFILE, keeping
 * nothing; with descriptors back, the same supervisor gets its pool. */
static void process_pool_without_descriptors(void) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  use_up_descriptors();
  int before = count_fds();
  ct_process_pool_opts_t o = CT_PROCESS_POOL_OPTS_INIT;
  o.pool_size = 1;
  CHECK_EQ_INT(ct_process_pool_create(sup, &o), CT_EMFILE);
  CHECK_EQ_INT(count_fds(), before);
  give_all_back();
  CHECK_OK(ct_process_pool_create(sup, &o));
  CHECK_OK(ct_process_pool_stop(sup, -1));
  stop_and_free(sup);
}

TEST(process_pool_create_out_of_descriptors_returns_emfile) {
  in_child(process_pool_without_descriptors);
}

TEST(emfile_has_a_name_and_a_message) {
  CHECK_EQ_INT(CT_EMFILE, -EMFILE);
  CHECK_EQ_STR(ct_err_name(CT_EMFILE), "CT_EMFILE");
  CHECK_EQ_STR(ct_strerror(CT_EMFILE), "out of file descriptors");
}

/* Stopping an extra loop gives its descriptors back at once (waiting) or
 * once its thread has ended (not waiting): create/stop cycles do not add
 * up. */
TEST(stopped_loops_give_descriptors_back) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  int before = count_fds();
  static atomic_int calls[200]; /* one per loop: calls may run after a stop(0) */
  for (int i = 0; i < 200; i++) {
    char name[32];
    snprintf(name, sizeof name, "cycle-%d", i);
    ct_loop_t *loop;
    CHECK_OK(ct_loop_create(sup, name, &loop));
    CHECK_OK(ct_loop_call(loop, mark_call, &calls[i]));
    bool wait = i < 100; /* the first half waits for each stop */
    CHECK_OK(ct_loop_stop(loop, wait ? -1 : 0));
    if (wait) {
      CHECK_EQ_INT(atomic_load(&calls[i]), 1);
      CHECK_EQ_INT(count_fds(), before);
      CHECK_EQ_INT(ct_loop_call(loop, mark_call, &calls[i]), CT_ESHUTDOWN);
    }
  }
  WAIT_FOR(count_fds() == before);
  for (int i = 0; i < 200; i++)
    CHECK_EQ_INT(atomic_load(&calls[i]), 1);
  stop_and_free(sup);
}

static void record_name(ct_loop_t *loop, struct ev_loop *ev, void *data) {
  (void)loop;
  (void)ev;
  CHECK_OK(pthread_getname_np(pthread_self(), data, 16));
}

TEST(loop_threads_name_themselves) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  char name[16] = "";
  ct_loop_t *loop;
  CHECK_OK(ct_loop_create(sup, "named", &loop));
  CHECK_OK(ct_loop_call(loop, record_name, name));
  CHECK_OK(ct_loop_stop(loop, -1));
  CHECK_EQ_STR(name, "ct-aloop");
  CHECK_OK(ct_loop_call(ct_supervisor_loop(sup), record_name, name));
  ct_task_t *t;
  ct_task_opts_t o = CT_TASK_OPTS_INIT;
  o.loop = ct_supervisor_loop(sup);
  CHECK_OK(ct_background_task(sup, nothing, NULL, &o, &t)); /* after the call */
  CHECK_OK(ct_task_wait(t, WAIT_BOUND_S));
  ct_task_unref(t);
  CHECK_EQ_STR(name, "ct-loop");
  stop_and_free(sup);
}

/* Many threads create, use and stop extra loops, and start and stop
 * supervisors, at once: each loop thread is named, read and joined only
 * while it surely exists. */
#define CHURN_THREADS 4
#define CHURN_ROUNDS 100

typedef struct {
  ct_supervisor_t *sup;
  int id;
  atomic_int calls[CHURN_ROUNDS];
} churn_t;

static void *churn(void *arg) {
  churn_t *c = arg;
  for (int i = 0; i < CHURN_ROUNDS; i++) {
    char name[32];
    snprintf(name, sizeof name, "churn-%d-%d", c->id, i);
    ct_loop_t *loop;
    CHECK_OK(ct_loop_create(c->sup, name, &loop));
    CHECK_OK(ct_loop_call(loop, mark_call, &c->calls[i]));
    ct_loop_t *found;
    CHECK_OK(ct_loop_get(c->sup, name, &found));
    CHECK(found == loop);
    CHECK_OK(ct_loop_stop(found, i % 3 == 0 ? 0 : -1));
    if (i % 3 != 0)
      CHECK_EQ_INT(atomic_load(&c->calls[i]), 1);
    if (i % 10 == 0) { /* a whole supervisor, its own loop thread included */
      ct_supervisor_t *s = start_supervisor(1, 0, 0);
      run_one_task(s);
      CHECK_OK(ct_supervisor_stop(s, i % 20 ? CT_STOP_CANCEL : CT_STOP_DRAIN, i % 20 ? 0 : -1));
      CHECK_OK(ct_supervisor_stop(s, CT_STOP_DRAIN, -1));
      CHECK_OK(ct_supervisor_free(s));
    }
  }
  return NULL;
}

TEST(loops_created_and_stopped_from_many_threads) {
  ct_supervisor_t *sup = start_supervisor(2, 0, 0);
  int before = count_fds();
  pthread_t th[CHURN_THREADS];
  churn_t c[CHURN_THREADS];
  for (int i = 0; i < CHURN_THREADS; i++) {
    c[i].sup = sup;
    c[i].id = i;
    for (int k = 0; k < CHURN_ROUNDS; k++)
      atomic_init(&c[i].calls[k], 0);
    CHECK_OK(pthread_create(&th[i], NULL, churn, &c[i]));
  }
  for (int i = 0; i < CHURN_THREADS; i++)
    CHECK_OK(pthread_join(th[i], NULL));
  WAIT_FOR(count_fds() == before);
  for (int i = 0; i < CHURN_THREADS; i++)
    for (int k = 0; k < CHURN_ROUNDS; k++)
      CHECK_EQ_INT(atomic_load(&c[i].calls[k]), 1);
  stop_and_free(sup);
}

int main(void) {
  /* The forking cases first, while this process has no other threads. */
  RUN(supervisor_new_out_of_descriptors_returns_emfile);
  RUN(loop_create_out_of_descriptors_returns_emfile);
  RUN(process_pool_create_out_of_descriptors_returns_emfile);
  RUN(emfile_has_a_name_and_a_message);
  RUN(stopped_loops_give_descriptors_back);
  RUN(loop_threads_name_themselves);
  RUN(loops_created_and_stopped_from_many_threads);
  return check_done();
}
