/*
 * fuzz_config.c — libFuzzer target for cg_config_parse(), the decoder of repository.ini.
 *
 * Built only with -DCG_FUZZ=ON (clang). The input is the file's bytes, not NUL-terminated.
 * The parser must return 0 or CG_EINVALID (CG_ERROR only when memory runs out), never crash,
 * never read outside the buffer and never leak; an accepted configuration must validate again.
 */
#include <stdint.h>
#include <stdlib.h>

#include "coregroup/config.h"
#include "coregroup/errors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cg_config *cfg = NULL;
    int err = cg_config_parse(&cfg, (const char *)data, size, "fuzz.ini");
    if (err == 0) {
        if (cfg == NULL || cg_config_validate(cfg) != 0)
            abort();
    } else if ((err != CG_EINVALID && err != CG_ERROR) || cfg != NULL) {
        abort();
    }
    cg_config_free(cfg);
    return 0;
}
