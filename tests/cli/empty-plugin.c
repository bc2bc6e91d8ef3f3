/* A plugin whose entry point registers nothing: `ctasker worker` must
 * refuse it rather than serve no name. */
#include <ctasker/plugin.h>

static int register_none(ct_broker_t *broker) {
  (void)broker;
  return 0;
}
CT_PLUGIN_ENTRY(register_none)
