/* Refusals that say why: the codes stay the ones callers already test for
 * (CT_ESHUTDOWN for a supervisor that is not running, CT_ENOENT for a
 * missing process pool), and the supervisor's log callback gets a line that
 * tells the cases apart, so a program that submits before
 * ct_supervisor_start() does not read "stopped or stopping".
 */
#include "base/log.h"
#include "supervisor/supervisor-internal.h"

int ct__sup_refuse_not_running(ct_supervisor_t *sup, const char *what) {
  if (atomic_load(&sup->state) == CT__SUP_INIT)
    ct__sup_log(sup, CT_LOG_ERROR,
                "ctasker: %s refused: the supervisor is not started "
                "(call ct_supervisor_start() first)",
                what);
  return CT_ESHUTDOWN;
}

int ct__sup_refuse_no_procpool(ct_supervisor_t *sup, const char *what) {
  ct__sup_log(sup, CT_LOG_ERROR,
              "ctasker: %s refused: the supervisor has no process pool "
              "(call ct_process_pool_create() first)",
              what);
  return CT_ENOENT;
}
