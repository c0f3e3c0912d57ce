/* libFuzzer harness for the state file (snapshot/format.c's reader and
 * monitor/snap_check.c's record checks): the input is a state file whose
 * CRC trailer is recomputed after every mutation, so the fuzzer reaches
 * past the checksum into the records a crafted snapshot controls.  After
 * a file is accepted, what a restore would build from must hold: a
 * configuration that passes cfg_validate_machine(), its strings ending
 * in their buffers, the header agreeing with it.  Seeds: real state
 * files of ember's test guests (tests/fuzz/corpus/snapstate). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "monitor/snap_records.h"
#include "snapshot/snapshot.h"
#include "tests/fuzz/fuzz.h"

static int terminated(const char *s, size_t n)
{
	return memchr(s, '\0', n) != NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static uint8_t buf[1 << 20];
	static struct vm_config cfg;
	char err[SNAP_ERR_MAX + CFG_ERR_MAX];
	if (size < 4 || size > sizeof(buf))
		return 0;
	memcpy(buf, data, size);
	uint32_t crc = snap_crc32(0, buf, size - 4);
	memcpy(buf + size - 4, &crc, 4); /* little-endian hosts only, as ember */
	struct snap_reader rd;
	err[0] = '\0';
	if (snap_r_open_mem(&rd, buf, size, "fuzz.state", err, sizeof(err))) {
		CHECK(err[0] != '\0' && terminated(err, sizeof(err)));
		return 0;
	}
	err[0] = '\0';
	int r = snap_check_records(&rd, "fuzz.state", &cfg, err, sizeof(err));
	if (r) {
		CHECK(err[0] != '\0' && terminated(err, sizeof(err)));
	} else {
		char why[CFG_ERR_MAX];
		CHECK(cfg_validate_machine(&cfg, why, sizeof(why)) == 0);
		CHECK(terminated(cfg.name, sizeof(cfg.name)) && terminated(cfg.kernel, sizeof(cfg.kernel)));
		CHECK(cfg.cmdline_len == strlen(cfg.cmdline));
		CHECK(cfg.nr_blocks <= CFG_MAX_BLOCKS && cfg.nr_nets <= CFG_MAX_NETS);
		CHECK(rd.h.nr_vcpus == cfg.vcpus && rd.h.mem_size == cfg.mem_size);
		for (unsigned i = 0; i < cfg.vcpus; i++)
			CHECK(snap_r_find(&rd, SNAP_TAG('V', 'C', 'P', 'U'), i, NULL) != NULL);
	}
	snap_r_close(&rd);
	return 0;
}
