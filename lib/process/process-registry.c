/* The process function table: a growing array of (name, fn, data) under
 * one mutex. Registration happens before pools exist; look-ups happen in
 * pool children, single-threaded copies of the table, so a linear scan is
 * fine for the few dozen names a program registers.
 *
 * Registration is closed while any pool exists (`pools`, counted under the
 * same mutex by ct__process_registry_hold/release): a name added then would
 * be unknown to that pool's children (its tasks would end as UnknownTask)
 * and known to the children of a fork server restarted later, so the
 * caller is told at once instead (CT_ENOTSUP).
 */
#include "process/process-registry.h"
#include "base/utf8.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CT__PROCESS_NAME_MAX 255

typedef struct {
  char *name;
  ct_process_fn fn;
  void *data;
} ct__process_entry_t;

static pthread_mutex_t table_lock = PTHREAD_MUTEX_INITIALIZER;
static ct__process_entry_t *table;
static size_t table_len, table_cap;
static size_t pools; /* pools created and not yet freed */

static ct__process_entry_t *find(const char *name) {
  for (size_t i = 0; i < table_len; i++)
    if (strcmp(table[i].name, name) == 0)
      return &table[i];
  return NULL;
}

static int grow(void) {
  if (table_len < table_cap)
    return 0;
  size_t cap = table_cap ? table_cap * 2 : 16;
  ct__process_entry_t *t = realloc(table, cap * sizeof *t);
  if (!t)
    return CT_ENOMEM;
  table = t;
  table_cap = cap;
  return 0;
}

int ct_process_register(const char *name, ct_process_fn fn, void *data) {
  /* The name crosses to the fork server in JSON, which must be UTF-8. */
  if (!name || !fn || !name[0] || strlen(name) > CT__PROCESS_NAME_MAX ||
      !ct__utf8_valid(name, strlen(name)))
    return CT_EINVAL;
  pthread_mutex_lock(&table_lock);
  int rc = pools ? CT_ENOTSUP : find(name) ? CT_EBUSY : grow();
  char *copy = rc == 0 ? strdup(name) : NULL;
  if (rc == 0 && !copy)
    rc = CT_ENOMEM;
  if (rc == 0)
    table[table_len++] = (ct__process_entry_t){copy, fn, data};
  pthread_mutex_unlock(&table_lock);
  return rc;
}

ct_process_fn ct__process_lookup(const char *name, void **data) {
  pthread_mutex_lock(&table_lock);
  ct__process_entry_t *e = find(name);
  ct_process_fn fn = e ? e->fn : NULL;
  if (e)
    *data = e->data;
  pthread_mutex_unlock(&table_lock);
  return fn;
}

void ct__process_registry_lock(void) { pthread_mutex_lock(&table_lock); }
void ct__process_registry_unlock(void) { pthread_mutex_unlock(&table_lock); }

void ct__process_registry_hold(void) {
  pthread_mutex_lock(&table_lock);
  pools++;
  pthread_mutex_unlock(&table_lock);
}

void ct__process_registry_release(void) {
  pthread_mutex_lock(&table_lock);
  pools--;
  pthread_mutex_unlock(&table_lock);
}
