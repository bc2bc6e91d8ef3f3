/** @file
 * ctasker — background work inside multithreaded C programs.
 * Include this umbrella header; each concept has its own header below. */
#ifndef CTASKER_H
#define CTASKER_H

#include "ctasker/common.h"
#include "ctasker/version.h"
#include "ctasker/result.h"
#include "ctasker/task.h"
#include "ctasker/supervisor.h"
#include "ctasker/loop.h"
#include "ctasker/worker.h"
#include "ctasker/process.h"
#include "ctasker/broker.h"
#include "ctasker/locker.h"
#include "ctasker/broker-admin.h"

#endif
