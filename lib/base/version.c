/* The library's version at run time. The values are the CT_VERSION_* macros
 * of the headers this file was compiled with, which are generated from the
 * project's version: a program compares them with the macros it was built
 * against to learn which library it actually loaded. */
#include "ctasker/version.h"

unsigned int ct_version(void) {
  return CT_VERSION_HEX;
}

const char *ct_version_string(void) {
  return CT_VERSION_STRING;
}
