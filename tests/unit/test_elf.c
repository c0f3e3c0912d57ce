/* ELF/PVH loader against synthetic and hostile images, and the checked
 * guest-memory accessor it relies on. */
#include <elf.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "base/guest_mem.h"
#include "monitor/layout.h"
#include "monitor/boot/loader.h"

#define MIB (1ULL << 20)

/* An ELF64 image: header, 3 program headers (2 LOAD, 1 NOTE), payload. */
struct image {
	uint8_t buf[0x3000];
	size_t len;
	Elf64_Ehdr *eh;
	Elf64_Phdr *ph;
};

static void make_image(struct image *im, bool pvh_note)
{
	memset(im, 0, sizeof(*im));
	im->eh = (Elf64_Ehdr *)im->buf;
	im->ph = (Elf64_Phdr *)(im->buf + sizeof(Elf64_Ehdr));
	Elf64_Ehdr *eh = im->eh;
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_entry = 0x100000;
	eh->e_phoff = sizeof(Elf64_Ehdr);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = 3;
	eh->e_ehsize = sizeof(Elf64_Ehdr);

	im->ph[0] = (Elf64_Phdr){.p_type = PT_LOAD, .p_offset = 0x1000, .p_paddr = 0x100000,
	                         .p_vaddr = 0x100000, .p_filesz = 0x100, .p_memsz = 0x2000};
	im->ph[1] = (Elf64_Phdr){.p_type = PT_LOAD, .p_offset = 0x1100, .p_paddr = 0x200000,
	                         .p_vaddr = 0x200000, .p_filesz = 0x10, .p_memsz = 0x10};
	memset(im->buf + 0x1000, 0xcc, 0x110);
	/* note: namesz 4 "Xen", descsz 4, type 18 */
	uint32_t note[6] = {4, 4, 18, 0, 0x100010, 0};
	memcpy(&note[3], "Xen", 4);
	if (!pvh_note)
		note[2] = 99; /* some other note */
	memcpy(im->buf + 0x2000, note, 20);
	im->ph[2] = (Elf64_Phdr){.p_type = PT_NOTE, .p_offset = 0x2000, .p_filesz = 20};
	im->len = 0x2014;
}

struct fix {
	struct gmem m;
	struct load_result res;
	char err[256];
};

static int setup(void **state)
{
	struct fix *f = calloc(1, sizeof(*f));
	assert_int_equal(gmem_init(&f->m, 16 * MIB), 0);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fix *f = *state;
	gmem_free(&f->m);
	free(f);
	return 0;
}

static int load(struct fix *f, struct image *im)
{
	f->err[0] = '\0';
	return loader_elf(&f->m, im->buf, im->len, &f->res, f->err, sizeof(f->err));
}

static void test_pvh_image(void **state)
{
	struct fix *f = *state;
	struct image im;
	make_image(&im, true);
	assert_int_equal(loader_probe(im.buf, im.len), KFMT_ELF);
	assert_int_equal(load(f, &im), 0);
	assert_int_equal(f->res.proto, BOOT_PVH);
	assert_int_equal(f->res.entry, 0x100010);
	assert_int_equal(f->res.kernel_start, 0x100000);
	assert_int_equal(f->res.kernel_end, 0x200010);
	uint8_t *p = gmem_ptr(&f->m, 0x100000, 0x2000);
	assert_int_equal(p[0], 0xcc);
	assert_int_equal(p[0xff], 0xcc);
	assert_int_equal(p[0x100], 0); /* bss zeroed */
}

static void test_no_note_is_linux64(void **state)
{
	struct fix *f = *state;
	struct image im;
	make_image(&im, false);
	assert_int_equal(load(f, &im), 0);
	assert_int_equal(f->res.proto, BOOT_LINUX64);
	assert_int_equal(f->res.entry, 0x100000);
}

static void test_truncated_everywhere(void **state)
{
	struct fix *f = *state;
	struct image im;
	make_image(&im, true);
	size_t full = im.len;
	/* Every prefix shorter than the whole image must be refused cleanly. */
	for (size_t n = 0; n < full; n += (n < 0x100 ? 1 : 0x40)) {
		im.len = n;
		assert_int_not_equal(load(f, &im), 0);
		assert_true(strlen(f->err) > 0);
	}
}

static void test_hostile_headers(void **state)
{
	struct fix *f = *state;
	struct image im;

	make_image(&im, true);
	im.eh->e_machine = EM_AARCH64;
	assert_int_equal(load(f, &im), -ENOEXEC);
	assert_non_null(strstr(f->err, "machine"));

	make_image(&im, true);
	im.eh->e_type = ET_DYN;
	assert_int_equal(load(f, &im), -ENOEXEC);
	assert_non_null(strstr(f->err, "type"));

	make_image(&im, true);
	im.eh->e_phnum = 0xffff;
	assert_int_equal(load(f, &im), -ENOEXEC);

	make_image(&im, true);
	im.eh->e_phoff = UINT64_MAX - 8;
	assert_int_equal(load(f, &im), -ENOEXEC);
	assert_non_null(strstr(f->err, "past the end"));

	make_image(&im, true);
	im.eh->e_phentsize = 12;
	assert_int_equal(load(f, &im), -ENOEXEC);

	make_image(&im, true);
	im.eh->e_ident[EI_CLASS] = 7;
	assert_int_equal(load(f, &im), -ENOEXEC);
}

static void test_hostile_segments(void **state)
{
	struct fix *f = *state;
	struct image im;

	make_image(&im, true); /* file offset + size wraps around */
	im.ph[0].p_offset = UINT64_MAX - 0x10;
	assert_int_equal(load(f, &im), -ENOEXEC);
	assert_non_null(strstr(f->err, "past the end of the file"));

	make_image(&im, true); /* filesz > memsz */
	im.ph[0].p_filesz = 0x3000;
	assert_int_equal(load(f, &im), -ENOEXEC);
	assert_non_null(strstr(f->err, "exceeds memory size"));

	make_image(&im, true); /* outside RAM (16 MiB) */
	im.ph[1].p_paddr = 32 * MIB;
	assert_int_equal(load(f, &im), -ENOEXEC);
	assert_non_null(strstr(f->err, "outside guest RAM"));

	make_image(&im, true); /* address + size wraps */
	im.ph[1].p_paddr = UINT64_MAX - 4;
	assert_int_equal(load(f, &im), -ENOEXEC);

	make_image(&im, true); /* huge memsz */
	im.ph[1].p_memsz = UINT64_MAX;
	assert_int_equal(load(f, &im), -ENOEXEC);

	make_image(&im, true); /* into the boot data below 1 MiB */
	im.ph[1].p_paddr = 0x7000;
	assert_int_equal(load(f, &im), -ENOEXEC);
	assert_non_null(strstr(f->err, "below 1 MiB"));

	make_image(&im, true); /* overlapping segments */
	im.ph[1].p_paddr = 0x101000;
	assert_int_equal(load(f, &im), -ENOEXEC);
	assert_non_null(strstr(f->err, "overlap"));

	make_image(&im, true); /* PVH entry outside every segment */
	uint32_t bad = 0x900000;
	memcpy(im.buf + 0x2010, &bad, 4);
	assert_int_equal(load(f, &im), -ENOEXEC);
	assert_non_null(strstr(f->err, "entry point"));

	make_image(&im, true); /* note claims more than its segment */
	uint32_t big = 0x10000;
	memcpy(im.buf + 0x2004, &big, 4);
	assert_int_equal(load(f, &im), -ENOEXEC);
	assert_non_null(strstr(f->err, "note"));
}

static void test_refused_image_leaves_memory_untouched(void **state)
{
	struct fix *f = *state;
	struct image im;
	make_image(&im, true);
	im.ph[1].p_paddr = 32 * MIB; /* second segment bad, first fine */
	assert_int_not_equal(load(f, &im), 0);
	uint8_t *p = gmem_ptr(&f->m, 0x100000, 1);
	assert_int_equal(p[0], 0);
}

static void test_probe(void **state)
{
	uint8_t b[0x300] = {0};
	assert_int_equal(loader_probe(b, sizeof(b)), KFMT_UNKNOWN);
	b[0x1fe] = 0x55;
	b[0x1ff] = 0xaa;
	memcpy(b + 0x202, "HdrS", 4);
	assert_int_equal(loader_probe(b, sizeof(b)), KFMT_BZIMAGE);
	assert_int_equal(loader_probe(b, 0x205), KFMT_UNKNOWN);
	assert_int_equal(loader_probe((const uint8_t *)"\x7f" "ELF", 4), KFMT_ELF);
	assert_int_equal(loader_probe((const uint8_t *)"\x7f" "EL", 3), KFMT_UNKNOWN);
}

static void test_gmem_ptr_bounds(void **state)
{
	struct gmem m;
	assert_int_equal(gmem_init(&m, 16 * MIB), 0);
	assert_non_null(gmem_ptr(&m, 0, 16 * MIB));
	assert_null(gmem_ptr(&m, 0, 16 * MIB + 1));
	assert_non_null(gmem_ptr(&m, 16 * MIB - 1, 1));
	assert_null(gmem_ptr(&m, 16 * MIB, 1));
	assert_null(gmem_ptr(&m, 1, UINT64_MAX));
	assert_null(gmem_ptr(&m, UINT64_MAX, 2));
	assert_null(gmem_ptr(&m, 0, 0));
	gmem_free(&m);

	/* 3.5 GiB: 3 GiB below the hole, 0.5 GiB from 4 GiB on */
	assert_int_equal(gmem_init(&m, 3584 * MIB), 0);
	assert_int_equal(m.nr, 2);
	assert_int_equal(gmem_low_end(&m), GMEM_HOLE_START);
	assert_non_null(gmem_ptr(&m, GMEM_HOLE_START - 8, 8));
	assert_null(gmem_ptr(&m, GMEM_HOLE_START - 8, 16)); /* runs into the hole */
	assert_null(gmem_ptr(&m, GMEM_HOLE_START, 8));
	assert_non_null(gmem_ptr(&m, GMEM_HOLE_END, 512 * MIB));
	assert_null(gmem_ptr(&m, GMEM_HOLE_END, 512 * MIB + 1));
	/* the two regions are one host mapping, but never one guest range */
	assert_ptr_equal((uint8_t *)gmem_ptr(&m, GMEM_HOLE_END, 1),
	                 (uint8_t *)gmem_ptr(&m, GMEM_HOLE_START - 1, 1) + 1);
	gmem_free(&m);
	assert_int_equal(gmem_init(&m, 4097), -EINVAL);
}

static void test_e820(void **state)
{
	struct gmem m;
	struct e820_entry e[8];
	assert_int_equal(gmem_init(&m, 64 * MIB), 0);
	int n = boot_e820(&m, e, 8);
	assert_int_equal(n, 3);
	assert_int_equal(e[0].addr, 0);
	assert_int_equal(e[0].size, LAYOUT_EBDA);
	assert_int_equal(e[0].type, E820_RAM);
	assert_int_equal(e[1].addr, LAYOUT_EBDA);
	assert_int_equal(e[1].type, E820_RESERVED);
	assert_int_equal(e[1].addr + e[1].size, 1 * MIB);
	assert_int_equal(e[2].addr, 1 * MIB);
	assert_int_equal(e[2].size, 63 * MIB);
	assert_int_equal(boot_e820(&m, e, 2), -ENOSPC);
	gmem_free(&m);

	assert_int_equal(gmem_init(&m, 4096 * MIB), 0);
	n = boot_e820(&m, e, 8);
	assert_int_equal(n, 4);
	assert_int_equal(e[2].addr + e[2].size, GMEM_HOLE_START);
	assert_int_equal(e[3].addr, GMEM_HOLE_END);
	assert_int_equal(e[3].size, 1024 * MIB);
	gmem_free(&m);
}

static void test_page_tables(void **state)
{
	struct gmem m;
	assert_int_equal(gmem_init(&m, 16 * MIB), 0);
	assert_int_equal(boot_page_tables(&m), 0);
	uint64_t *pml4 = gmem_ptr(&m, LAYOUT_PML4, 4096);
	uint64_t *pdpt = gmem_ptr(&m, LAYOUT_PDPT, 4096);
	uint64_t *pd = gmem_ptr(&m, LAYOUT_PD, 4096);
	assert_int_equal(pml4[0], LAYOUT_PDPT | 3);
	assert_int_equal(pml4[1], 0);
	assert_int_equal(pdpt[0], LAYOUT_PD | 3);
	assert_int_equal(pdpt[1], 0);
	/* 512 x 2 MiB pages identity-map the first 1 GiB */
	for (uint64_t i = 0; i < 512; i++)
		assert_int_equal(pd[i], (i << 21) | 0x83);
	gmem_free(&m);
}

static void test_cmdline_and_initrd(void **state)
{
	struct fix *f = *state;
	char line[3000];
	memset(line, 'a', sizeof(line));
	assert_int_equal(boot_cmdline(&f->m, line, 2047, 2047), 0);
	assert_int_equal(boot_cmdline(&f->m, line, 2048, 2047), -E2BIG);
	assert_int_equal(boot_cmdline(&f->m, line, 100, 50), -E2BIG);
	char *p = gmem_ptr(&f->m, LAYOUT_CMDLINE, 2048);
	assert_int_equal(p[2047], '\0');

	struct load_result r = {.kernel_end = 0x200010, .initrd_max = UINT64_MAX};
	uint8_t rd[5000];
	memset(rd, 0x5a, sizeof(rd));
	uint64_t gpa = 0;
	assert_int_equal(loader_initrd(&f->m, &r, rd, sizeof(rd), &gpa, f->err, sizeof(f->err)),
	                 0);
	assert_int_equal(gpa & 0xfff, 0);
	assert_true(gpa + sizeof(rd) <= 16 * MIB);
	assert_true(gpa >= 0x201000);
	assert_int_equal(*(uint8_t *)gmem_ptr(&f->m, gpa + 4999, 1), 0x5a);
	/* does not fit above the kernel */
	r.kernel_end = 16 * MIB - 4096;
	assert_int_not_equal(loader_initrd(&f->m, &r, rd, sizeof(rd), &gpa, f->err, sizeof(f->err)),
	                     0);
	assert_non_null(strstr(f->err, "does not fit"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_pvh_image, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_note_is_linux64, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_truncated_everywhere, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hostile_headers, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hostile_segments, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_refused_image_leaves_memory_untouched, setup,
	                                    teardown),
	    cmocka_unit_test(test_probe),
	    cmocka_unit_test(test_gmem_ptr_bounds),
	    cmocka_unit_test(test_e820),
	    cmocka_unit_test(test_page_tables),
	    cmocka_unit_test_setup_teardown(test_cmdline_and_initrd, setup, teardown),
	};
	return cmocka_run_group_tests_name("elf", tests, NULL, NULL);
}
