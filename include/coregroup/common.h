/**
 * @file coregroup/common.h
 * @brief Shared definitions of the coregroup public API: export macro, version.
 *
 * Every public header includes this one. Applications include <coregroup.h>.
 */
#ifndef COREGROUP_COMMON_H
#define COREGROUP_COMMON_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define CG_EXTERN(type) extern __attribute__((visibility("default"))) type
#else
#define CG_EXTERN(type) extern type
#endif

/** Library version, also reported by every program's --version. */
#define CG_VERSION       "0.1.0"
#define CG_VERSION_MAJOR 0
#define CG_VERSION_MINOR 1

#endif
