/* The slab on its own (core layer): records allocated on one thread and
 * freed on another come back to their pages, pages whose records are all
 * free go back to the system once they have stayed free CT__SLAB_DECAY
 * seconds, a burst that follows sooner reuses them, a thread's
 * cache is handed back when it exits, and a page that cannot be mapped is
 * a NULL record, not a crash. mmap is wrapped (tests/meson.build) so that
 * the test can make it fail on the calling thread (as mmap64: the build
 * asks for 64-bit file offsets). */
#include <ctasker.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/mman.h>
#include <time.h>

#include "check.h"
#include "core/slab.h"

void *__real_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);
void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off);

static _Thread_local bool mmap_fails;
static atomic_long maps; /* pages mapped, by any thread */

void *__wrap_mmap64(void *addr, size_t len, int prot, int flags, int fd, off_t off) {
  if (mmap_fails)
    return MAP_FAILED;
  atomic_fetch_add(&maps, 1);
  return __real_mmap64(addr, len, prot, flags, fd, off);
}

/* Each test has a slab of its own, so its counts start at 0. */
static ct__slab_t burst_slab = CT__SLAB_INIT(80, 2);
static ct__slab_t exit_slab = CT__SLAB_INIT(128, 3);
static ct__slab_t fail_slab = CT__SLAB_INIT(48, 4);
static ct__slab_t reuse_slab = CT__SLAB_INIT(80, 5);

#define BURST 200000
/* The reuse test's bursts: well beyond the spares that always stay (31
 * pages), small enough that a try fits in the decay under TSan too. */
#define REUSE_BURST 25000

static void *records[BURST];

/* Free the first n records (n passed as the argument). */
static void *free_all(void *arg) {
  int n = (int)(intptr_t)arg;
  for (int i = 0; i < n; i++)
    ct__slab_free(records[i]);
  ct__slab_idle();
  return NULL;
}

static void alloc_all(ct__slab_t *s, int n) {
  for (int i = 0; i < n; i++) {
    records[i] = ct__slab_alloc(s);
    CHECK(records[i]);
    CHECK_EQ_INT((uintptr_t)records[i] % 8, 0);
    memset(records[i], 0xab, 80); /* the whole record is the caller's */
  }
}

static void free_all_on_another_thread(int n) {
  pthread_t th;
  CHECK_OK(pthread_create(&th, NULL, free_all, (void *)(intptr_t)n));
  CHECK_OK(pthread_join(th, NULL));
}

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Idle passes until the slab has nothing left to give back: each waits
 * until the spares of the last are old enough. */
static void idle_until_trimmed(void) {
  while (ct__slab_idle()) {
    struct timespec pause = {0, (long)(CT__SLAB_DECAY * 1e9)};
    nanosleep(&pause, NULL);
  }
}

TEST(burst_freed_on_another_thread_comes_back_when_idle) {
  alloc_all(&burst_slab, BURST);
  size_t held = ct__slab_bytes(&burst_slab);
  CHECK(held >= (size_t)BURST * 80);
  free_all_on_another_thread(BURST);
  idle_until_trimmed();
  /* Only the spare pages are left (4 of 64 KiB), and the page of the
   * records this thread still caches. */
  CHECK(ct__slab_bytes(&burst_slab) <= (size_t)5 << 16);
  /* And the records are reused: a second burst maps what the first did. */
  for (int i = 0; i < BURST; i++)
    CHECK((records[i] = ct__slab_alloc(&burst_slab)) != NULL);
  CHECK(ct__slab_bytes(&burst_slab) <= held);
  free_all_on_another_thread(BURST);
  idle_until_trimmed();
  CHECK(ct__slab_bytes(&burst_slab) <= (size_t)5 << 16);
}

/* A burst that comes before the last one's pages have been spares for
 * CT__SLAB_DECAY seconds takes them back: it maps no page, and faults none
 * in again. A try tells only if the whole of it, from before the pages
 * became spares (the freeing thread's idle pass stamps them) to the end of
 * the burst (its last look at their age), took less than the decay: then
 * no spare can have been old enough when the burst looked. Timed from after
 * the freeing thread was joined instead, a stall between its pass and that
 * point (once in ~15 runs beside two busy loops) let the burst unmap and
 * map every page again while the try still counted. A try the machine
 * stalls past the decay tells nothing and is made again. */
TEST(a_burst_soon_after_the_last_maps_no_pages) {
  alloc_all(&reuse_slab, REUSE_BURST);
  size_t held = ct__slab_bytes(&reuse_slab);
  bool told = false;
  for (int try = 0; try < 20 && !told; try++) {
    double before_spares = now();
    free_all_on_another_thread(REUSE_BURST); /* that thread went idle: a pass */
    long maps_before = atomic_load(&maps);
    alloc_all(&reuse_slab, REUSE_BURST);
    told = now() - before_spares < CT__SLAB_DECAY;
    if (told) {
      CHECK_EQ_INT(atomic_load(&maps), maps_before);
      CHECK_EQ_INT(ct__slab_bytes(&reuse_slab), held);
    }
  }
  CHECK(told);
  free_all_on_another_thread(REUSE_BURST);
  idle_until_trimmed();
  CHECK(ct__slab_bytes(&reuse_slab) <= (size_t)5 << 16);
}

static void *alloc_and_exit(void *arg) {
  void **out = arg;
  for (int i = 0; i < 100; i++)
    ct__slab_free(ct__slab_alloc(&exit_slab));
  *out = ct__slab_alloc(&exit_slab);
  return NULL; /* its cache holds the other records */
}

TEST(a_thread_that_exits_hands_its_cache_back) {
  void *kept = NULL;
  pthread_t th;
  CHECK_OK(pthread_create(&th, NULL, alloc_and_exit, &kept));
  CHECK_OK(pthread_join(th, NULL));
  CHECK(kept);
  ct__slab_free(kept);
  ct__slab_idle(); /* this thread's one record, and the exited thread's chain */
  /* Every record is free: the page is a spare, still mapped, and the next
   * record comes from it without mapping another. */
  size_t one_page = ct__slab_bytes(&exit_slab);
  CHECK_EQ_INT(one_page, (size_t)1 << 16);
  void *again = ct__slab_alloc(&exit_slab);
  CHECK(again);
  CHECK_EQ_INT(ct__slab_bytes(&exit_slab), one_page);
  ct__slab_free(again);
  ct__slab_idle();
}

TEST(a_page_that_cannot_be_mapped_is_a_null_record) {
  mmap_fails = true;
  CHECK(ct__slab_alloc(&fail_slab) == NULL);
  CHECK_EQ_INT(ct__slab_bytes(&fail_slab), 0);
  mmap_fails = false;
  void *r = ct__slab_alloc(&fail_slab);
  CHECK(r);
  ct__slab_free(r);
  ct__slab_idle();
}

int main(void) {
  RUN(burst_freed_on_another_thread_comes_back_when_idle);
  RUN(a_burst_soon_after_the_last_maps_no_pages);
  RUN(a_thread_that_exits_hands_its_cache_back);
  RUN(a_page_that_cannot_be_mapped_is_a_null_record);
  return check_done();
}
