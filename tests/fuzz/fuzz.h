/* What every libFuzzer harness here shares: the entry point's prototype
 * and CHECK(), an invariant that aborts (libFuzzer keeps the input) with
 * the file, line and condition that failed. */
#ifndef EMBER_TESTS_FUZZ_H
#define EMBER_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                                                \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__,       \
				#cond);                                                            \
			abort();                                                                   \
		}                                                                                  \
	} while (0)

#endif
