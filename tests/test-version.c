/* Version: the macros, ct_version() and ct_version_string() all say the
 * project's version, which meson passes as argv[1]. */
#include <ctasker.h>

#include "check.h"

static const char *project_version;

TEST(macros_and_functions_agree_with_the_project_version) {
  char macros[64];
  snprintf(macros, sizeof macros, "%d.%d.%d", CT_VERSION_MAJOR, CT_VERSION_MINOR,
           CT_VERSION_PATCH);
  CHECK_EQ_STR(macros, project_version);
  CHECK_EQ_STR(CT_VERSION_STRING, project_version);
  CHECK_EQ_STR(ct_version_string(), project_version);
  CHECK_EQ_INT(ct_version(), CT_VERSION_HEX);
  CHECK_EQ_INT(CT_VERSION_HEX,
               (CT_VERSION_MAJOR << 16) | (CT_VERSION_MINOR << 8) | CT_VERSION_PATCH);
}

TEST(version_numbers_order_as_versions) {
  CHECK(CT_VERSION_NUM(0, 1, 10) < CT_VERSION_NUM(0, 2, 0));
  CHECK(CT_VERSION_NUM(0, 255, 255) < CT_VERSION_NUM(1, 0, 0));
  CHECK(CT_VERSION_HEX >= CT_VERSION_NUM(0, 1, 0));
}

int main(int argc, char **argv) {
  CHECK(argc == 2);
  project_version = argv[1];
  RUN(macros_and_functions_agree_with_the_project_version);
  RUN(version_numbers_order_as_versions);
  return check_done();
}
