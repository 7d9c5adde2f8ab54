/* fuzz.h -- shared bits of the libFuzzer targets in fuzz/.
 *
 * Each target is one LLVMFuzzerTestOneInput over product code compiled with
 * -fsanitize=fuzzer-no-link,address,undefined. Besides "no crash, no
 * sanitizer report, no leak", targets check properties with FUZZ_CHECK: a
 * failed property aborts, so libFuzzer saves the input as a crash.
 */
#ifndef CALSYNC_FUZZ_H
#define CALSYNC_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#define FUZZ_CHECK(cond)                                                     \
    do {                                                                     \
        if (!(cond)) {                                                       \
            fprintf(stderr, "%s:%d: property failed: %s\n", __FILE__,        \
                    __LINE__, #cond);                                        \
            abort();                                                         \
        }                                                                    \
    } while (0)

#endif
