/* The process-wide table of functions pool children may run, by name. */
#ifndef CT_LIB_PROCESS_REGISTRY_H
#define CT_LIB_PROCESS_REGISTRY_H

#include "ctasker/process.h"

/* The function registered under `name`, or NULL (and *data untouched). */
ct_process_fn ct__process_lookup(const char *name, void **data);

/* Hold the table still across fork(), so the fork server gets a consistent
 * copy and an unlocked lock (unlock is called in both processes). */
void ct__process_registry_lock(void);
void ct__process_registry_unlock(void);

/* A pool was created / freed: registration is closed while any exists. */
void ct__process_registry_hold(void);
void ct__process_registry_release(void);

#endif
