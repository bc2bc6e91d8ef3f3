/* Error codes and their messages, from the one table in common.h. */
#include "ctasker/common.h"

#include "base/clock.h"

const char *ct_strerror(int err) {
  if (err == 0)
    return "success";
  switch (err) {
#define CT__ERR_MSG(name, val, msg)                                            \
  case CT_##name:                                                              \
    return msg;
    CT_ERRNO_MAP(CT__ERR_MSG)
#undef CT__ERR_MSG
  default:
    return "unknown error";
  }
}

const char *ct_err_name(int err) {
  switch (err) {
  case CT_OK:
    return "CT_OK";
#define CT__ERR_NAME(name, val, msg)                                           \
  case CT_##name:                                                              \
    return "CT_" #name;
    CT_ERRNO_MAP(CT__ERR_NAME)
#undef CT__ERR_NAME
  default:
    return "CT_UNKNOWN";
  }
}

double ct_now(void) { return ct__now(); }
