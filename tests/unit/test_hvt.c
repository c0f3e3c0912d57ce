/* Solo5 hvt: ABI note checks, manifest validation, page tables, and the
 * loader's note parsing on a synthetic hvt ELF. */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "monitor/hvt/hvt.h"
#include "monitor/boot/loader.h"

#define MIB (1ULL << 20)

static uint8_t *make_mft(unsigned entries, size_t *len)
{
	*len = sizeof(struct hvt_mft) + entries * sizeof(struct hvt_mft_entry);
	uint8_t *b = calloc(1, *len);
	struct hvt_mft *m = (struct hvt_mft *)b;
	m->version = HVT_MFT_VERSION;
	m->entries = entries;
	m->e[0].type = HVT_MFT_RESERVED_FIRST;
	for (unsigned i = 1; i < entries; i++) {
		snprintf(m->e[i].name, sizeof(m->e[i].name), "dev%u", i);
		m->e[i].type = i % 2 ? HVT_MFT_BLOCK : HVT_MFT_NET;
	}
	return b;
}

static void test_manifest_good(void **state)
{
	size_t len;
	uint8_t *b = make_mft(3, &len);
	struct hvt_manifest m;
	char err[256];
	struct hvt_mft *h = (struct hvt_mft *)b;
	h->e[1].attached = 1; /* what the image claims is ignored */
	assert_int_equal(hvt_parse_manifest(b, len, &m, err, sizeof(err)), 0);
	assert_int_equal(m.nr, 3);
	assert_string_equal(m.e[1].name, "dev1");
	assert_int_equal(m.e[2].type, HVT_MFT_NET);
	assert_int_equal(m.e[1].attached, 0);
	free(b);

	b = make_mft(HVT_MFT_MAX_ENTRIES, &len);
	assert_int_equal(hvt_parse_manifest(b, len, &m, err, sizeof(err)), 0);
	free(b);
}

static void expect_bad(uint8_t *b, size_t len, const char *what)
{
	struct hvt_manifest m;
	char err[256] = "";
	assert_int_equal(hvt_parse_manifest(b, len, &m, err, sizeof(err)), -EINVAL);
	if (!strstr(err, what))
		fail_msg("expected '%s' in '%s'", what, err);
}

static void test_manifest_bad(void **state)
{
	size_t len;
	uint8_t *b = make_mft(3, &len);
	struct hvt_mft *h = (struct hvt_mft *)b;

	expect_bad(b, 4, "too short");
	expect_bad(b, len - 1, "do not hold");
	expect_bad(b, len + 104, "do not hold");
	h->version = 2;
	expect_bad(b, len, "version 2");
	h->version = 1;
	h->entries = 0;
	expect_bad(b, len, "0 entries");
	h->entries = 65;
	expect_bad(b, len, "65 entries");
	h->entries = 1000000;
	expect_bad(b, len, "entries");
	h->entries = 3;
	h->e[0].type = HVT_MFT_BLOCK;
	expect_bad(b, len, "reserved first");
	h->e[0].type = HVT_MFT_RESERVED_FIRST;
	memset(h->e[1].name, 'x', sizeof(h->e[1].name));
	expect_bad(b, len, "not terminated");
	h->e[1].name[0] = '\0';
	expect_bad(b, len, "empty name");
	strcpy(h->e[1].name, "dev2");
	expect_bad(b, len, "appears twice");
	strcpy(h->e[1].name, "dev1");
	h->e[2].type = 9;
	expect_bad(b, len, "unknown device type 9");
	free(b);
}

static void test_abi_check(void **state)
{
	uint8_t dummy = 0;
	char err[256];
	struct hvt_notes n = {.has_abi = true, .target = 1, .version = 2, .mft = &dummy};
	assert_int_equal(hvt_check_abi(&n, err, sizeof(err)), 0);
	n.target = 2;
	assert_int_equal(hvt_check_abi(&n, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "spt"));
	assert_non_null(strstr(err, "target 2"));
	n.target = 1;
	n.version = 1;
	assert_int_equal(hvt_check_abi(&n, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "version 1"));
	n.version = 2;
	n.mft = NULL;
	assert_int_equal(hvt_check_abi(&n, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "manifest"));
}

static void test_page_tables(void **state)
{
	struct gmem m;
	assert_int_equal(gmem_init(&m, 64 * MIB), 0);
	assert_int_equal(hvt_page_tables(&m, 64 * MIB, NULL, 0), 0);
	uint64_t *pml4 = gmem_ptr(&m, HVT_PML4, 4096);
	uint64_t *pdpt = gmem_ptr(&m, HVT_PDPT, 4096);
	uint64_t *pd = gmem_ptr(&m, HVT_PD, 4096);
	uint64_t *pt = gmem_ptr(&m, HVT_PT, 4096);
	assert_int_equal(pml4[0], HVT_PDPT | 3);
	assert_int_equal(pdpt[0], HVT_PD | 3);
	assert_int_equal(pd[0], HVT_PT | 3); /* first 2 MiB in 4 KiB pages */
	for (unsigned i = 0; i < 16; i++)
		assert_int_equal(pt[i], 0); /* below 0x10000: not present */
	assert_int_equal(pt[16], 0x10000 | 3);
	assert_int_equal(pt[511], 0x1ff000 | 3);
	assert_int_equal(pd[1], 0x200000 | 0x83);
	assert_int_equal(pd[31], 31 * 0x200000 | 0x83);
	assert_int_equal(pd[32], 0); /* nothing past RAM */
	/* more than 4 GiB, or less than one 2 MiB page */
	assert_int_equal(hvt_page_tables(&m, 4098 * MIB, NULL, 0), -EFAULT);
	assert_int_equal(hvt_page_tables(&m, 1 * MIB, NULL, 0), -EFAULT);
	gmem_free(&m);
}

#define NX (1ULL << 63)

/* Segments as Solo5's linker script lays them out: text R-X at 1 MiB,
 * rodata R-- and data RW- after it, each page-aligned; a large text
 * spanning whole 2 MiB pages gets 2 MiB entries with its protection. */
static void test_page_tables_protect(void **state)
{
	struct gmem m;
	bool w, x;
	const struct hvt_seg seg[] = {
	    {0x100000, 0x500000, HVT_PF_X | 4}, /* text to 6 MiB */
	    {0x600000, 0x1000, 4},		/* rodata: one page */
	    {0x601000, 0x2000, HVT_PF_W | 4},	/* data */
	};
	assert_int_equal(gmem_init(&m, 64 * MIB), 0);
	assert_int_equal(hvt_page_tables(&m, 64 * MIB, seg, 3), 0);
	uint64_t *pd = gmem_ptr(&m, HVT_PD, 4096);
	uint64_t *pt = gmem_ptr(&m, HVT_PT, 2 * 4096);
	assert_int_equal(pt[0x100], 0x100000 | 1);		  /* text: read-only, executable */
	assert_int_equal(pt[0xff], 0xff000 | 3);		  /* below it: as before */
	assert_int_equal(pd[1], 0x200000 | 0x81);		  /* a whole 2 MiB of text */
	assert_int_equal(pd[3], (HVT_PT + 4096) | 3);		  /* 6 MiB: mixed, 4 KiB pages */
	assert_int_equal(pt[512], 0x600000 | 1 | NX);		  /* rodata */
	assert_int_equal(pt[513], 0x601000 | 3 | NX);		  /* data */
	assert_int_equal(pt[515], 0x603000 | 3);		  /* past the image: RWX */
	assert_int_equal(pd[4], 0x800000 | 0x83);
	assert_string_equal(hvt_page_kind(&m, HVT_PML4, 0x300000, &w, &x),
			    "its code (.text, read-only)");
	assert_true(x && !w);
	assert_string_equal(hvt_page_kind(&m, HVT_PML4, 0x600010, &w, &x),
			    "its read-only data (.rodata)");
	assert_string_equal(hvt_page_kind(&m, HVT_PML4, 0x601010, &w, &x),
			    "its data (not executable)");
	assert_null(hvt_page_kind(&m, HVT_PML4, 0x1000, &w, &x)); /* not present */
	assert_null(hvt_page_kind(&m, HVT_PML4, 64 * MIB, &w, &x));
	gmem_free(&m);
}

/* 4 GiB: flat RAM, four page directories, the last page mapped. */
static void test_page_tables_4g(void **state)
{
	struct gmem m;
	assert_int_equal(gmem_init(&m, 4096 * MIB), 0);
	assert_int_equal(m.nr, 2); /* around the MMIO hole, until flattened */
	assert_int_equal(gmem_flatten(&m), 0);
	assert_int_equal(m.nr, 1);
	assert_non_null(gmem_ptr(&m, 0xfffff000, 4096));
	assert_int_equal(hvt_page_tables(&m, 4096 * MIB, NULL, 0), 0);
	uint64_t *pdpt = gmem_ptr(&m, HVT_PDPT, 4096);
	uint64_t *pd = gmem_ptr(&m, HVT_PD, 4 * 4096);
	assert_int_equal(pdpt[3], (HVT_PD + 3 * 4096) | 3);
	assert_int_equal(pd[2047], 0xffe00000 | 0x83);
	gmem_free(&m);
}

/* An ELF64 with a PT_LOAD and an 8-aligned PT_NOTE holding an ABI1 note
 * (4-byte aligned, 36 bytes) followed by a manifest note at the next
 * 8-byte boundary, as a linker lays out Solo5's notes in one segment. */
static void test_loader_finds_solo5_notes(void **state)
{
	static uint8_t img[0x3000];
	memset(img, 0, sizeof(img));
	Elf64_Ehdr *eh = (Elf64_Ehdr *)img;
	Elf64_Phdr *ph = (Elf64_Phdr *)(img + sizeof(*eh));
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_entry = 0x100000;
	eh->e_phoff = sizeof(*eh);
	eh->e_phentsize = sizeof(*ph);
	eh->e_phnum = 2;
	ph[0] = (Elf64_Phdr){.p_type = PT_LOAD, .p_offset = 0x1000, .p_paddr = 0x100000,
	                     .p_filesz = 0x10, .p_memsz = 0x5000};
	uint8_t *n = img + 0x2000;
	uint32_t abi[4] = {6, 16, HVT_NOTE_ABI1, 0};
	memcpy(n, abi, 12);
	memcpy(n + 12, "Solo5\0\0", 8);
	uint32_t info[4] = {1, 2, 0, 0};
	memcpy(n + 20, info, 16);
	/* 36 bytes; next note at 40 */
	size_t mlen;
	uint8_t *m = make_mft(2, &mlen);
	uint32_t mh[3] = {6, (uint32_t)(4 + mlen), HVT_NOTE_MFT1};
	memcpy(n + 40, mh, 12);
	memcpy(n + 52, "Solo5\0\0", 8);
	memcpy(n + 40 + 24, m, mlen);
	ph[1] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = 0x2000, .p_filesz = 40 + 24 + mlen,
	                     .p_align = 8};

	struct gmem g;
	struct load_result res;
	char err[256];
	assert_int_equal(gmem_init(&g, 16 * MIB), 0);
	assert_int_equal(loader_elf(&g, img, sizeof(img), &res, err, sizeof(err)), 0);
	assert_int_equal(res.proto, BOOT_HVT);
	assert_true(res.solo5.has_abi);
	assert_int_equal(res.solo5.target, 1);
	assert_int_equal(res.solo5.version, 2);
	assert_non_null(res.solo5.mft);
	assert_int_equal(res.solo5.mft_len, mlen);
	struct hvt_manifest man;
	assert_int_equal(hvt_parse_manifest(res.solo5.mft, res.solo5.mft_len, &man, err,
	                                    sizeof(err)),
	                 0);
	assert_string_equal(man.e[1].name, "dev1");
	gmem_free(&g);
	free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_manifest_good),
	    cmocka_unit_test(test_manifest_bad),
	    cmocka_unit_test(test_abi_check),
	    cmocka_unit_test(test_page_tables),
	    cmocka_unit_test(test_page_tables_protect),
	    cmocka_unit_test(test_page_tables_4g),
	    cmocka_unit_test(test_loader_finds_solo5_notes),
	};
	return cmocka_run_group_tests_name("hvt", tests, NULL, NULL);
}
