/**
 * @file coregroup.h
 * @brief The coregroup library: several broker cores sharing one PostgreSQL repository.
 *
 * Include this header; it pulls in the public API. Link with `pkg-config --libs coregroup`.
 */
#ifndef COREGROUP_H
#define COREGROUP_H

#include "coregroup/common.h"
#include "coregroup/errors.h"
#include "coregroup/config.h"
#include "coregroup/core.h"

#endif
