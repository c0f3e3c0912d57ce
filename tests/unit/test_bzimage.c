/* loader_bzimage() and boot_zero_page() against synthetic bzImages built
 * here, byte by byte, from the Linux boot protocol's offsets. */
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

#define MiB (1024ULL * 1024)
#define RAM (64 * MiB)
#define SETUP_SECTS 2
#define KOFS ((SETUP_SECTS + 1) * 512)
#define PAYLOAD 0x1000
#define IMG_LEN (KOFS + PAYLOAD)
#define INIT_SIZE 0x200000u
#define HDR_END 0x26c /* 0x202 + jump byte 0x6a, as real kernels */

static uint8_t img[0x40000];
static struct gmem mem;
static struct load_result res;
static char err[256];

static void put(size_t off, unsigned n, uint64_t v)
{
	for (unsigned i = 0; i < n; i++)
		img[off + i] = (uint8_t)(v >> (8 * i));
}

static uint64_t get(const uint8_t *p, size_t off, unsigned n)
{
	uint64_t x = 0;
	for (unsigned i = 0; i < n; i++)
		x |= (uint64_t)p[off + i] << (8 * i);
	return x;
}

/* A well-formed protocol 2.15 image: 2 setup sectors, 4 KiB payload. */
static void make_image(void)
{
	memset(img, 0, sizeof(img));
	put(0x1f1, 1, SETUP_SECTS);
	put(0x1f4, 4, PAYLOAD / 16); /* syssize */
	put(0x1fe, 2, 0xaa55);	     /* boot_flag */
	put(0x200, 2, 0xeb | (HDR_END - 0x202) << 8);
	memcpy(img + 0x202, "HdrS", 4);
	put(0x206, 2, 0x020f);	   /* version 2.15 */
	put(0x211, 1, 0x01);	   /* loadflags: LOADED_HIGH */
	put(0x214, 4, 0x100000);   /* code32_start */
	put(0x22c, 4, 0x7fffffff); /* initrd_addr_max */
	put(0x230, 4, 0x200000);   /* kernel_alignment */
	put(0x234, 1, 1);	   /* relocatable_kernel */
	put(0x236, 2, 0x0001);	   /* xloadflags: XLF_KERNEL_64 */
	put(0x238, 4, 0x7ff);	   /* cmdline_size */
	put(0x258, 8, 0x1000000);  /* pref_address */
	put(0x260, 4, INIT_SIZE);  /* init_size */
	for (size_t i = 0; i < PAYLOAD; i++)
		img[KOFS + i] = (uint8_t)(i * 7 + 3);
}

static int setup(void **state)
{
	make_image();
	memset(&res, 0, sizeof(res));
	err[0] = '\0';
	return gmem_init(&mem, RAM);
}

static int teardown(void **state)
{
	gmem_free(&mem);
	return 0;
}

static int load(size_t len)
{
	err[0] = '\0';
	return loader_bzimage(&mem, img, len, &res, err, sizeof(err));
}

static void expect_fail(size_t len, int rc, const char *needle)
{
	assert_int_equal(load(len), rc);
	if (!strstr(err, needle))
		fail_msg("len %zu: error \"%s\" lacks \"%s\"", len, err, needle);
}

static void test_good_image(void **state)
{
	assert_int_equal(load(IMG_LEN), 0);
	assert_int_equal(res.proto, BOOT_LINUX64);
	assert_true(res.is_linux);
	assert_int_equal(res.kernel_start, 0x1000000);
	assert_int_equal(res.entry, 0x1000200);
	assert_int_equal(res.kernel_end, 0x1000000 + INIT_SIZE);
	assert_int_equal(res.cmdline_max, 0x7ff);
	assert_int_equal(res.initrd_max, 0x7fffffff);
	assert_int_equal(res.setup_hdr_len, HDR_END - 0x1f1);
	assert_memory_equal(res.setup_hdr, img + 0x1f1, HDR_END - 0x1f1);
	const uint8_t *k = gmem_ptr(&mem, 0x1000000, PAYLOAD);
	assert_non_null(k);
	assert_memory_equal(k, img + KOFS, PAYLOAD);
	assert_int_equal(loader_probe(img, IMG_LEN), KFMT_BZIMAGE);
}

static void test_setup_sects_zero_means_four(void **state)
{
	/* Move the payload to (4 + 1) * 512. */
	memmove(img + 5 * 512, img + KOFS, PAYLOAD);
	put(0x1f1, 1, 0);
	assert_int_equal(load(5 * 512 + PAYLOAD), 0);
	const uint8_t *k = gmem_ptr(&mem, 0x1000000, PAYLOAD);
	assert_memory_equal(k, img + 5 * 512, PAYLOAD);
}

static void test_pref_address(void **state)
{
	put(0x258, 8, 0x200000);
	assert_int_equal(load(IMG_LEN), 0);
	assert_int_equal(res.kernel_start, 0x200000);
	assert_int_equal(res.entry, 0x200200);
	/* Below 1 MiB: the protocol's 0x100000 instead. */
	put(0x258, 8, 0x8000);
	assert_int_equal(load(IMG_LEN), 0);
	assert_int_equal(res.kernel_start, 0x100000);
	assert_int_equal(res.entry, 0x100200);
}

static void test_payload_larger_than_init_size(void **state)
{
	put(0x260, 4, 0x10);
	assert_int_equal(load(IMG_LEN), 0);
	assert_int_equal(res.kernel_end, 0x1000000 + PAYLOAD);
}

static void test_cmdline_max_from_header(void **state)
{
	put(0x238, 4, 255);
	assert_int_equal(load(IMG_LEN), 0);
	assert_int_equal(res.cmdline_max, 255);
	put(0x238, 4, 0x100000); /* kernels say 2 MiB; our buffer holds 2047 */
	assert_int_equal(load(IMG_LEN), 0);
	assert_int_equal(res.cmdline_max, LAYOUT_CMDLINE_MAX - 1);
}

static void test_initrd_max(void **state)
{
	put(0x22c, 4, 0x37ffffff);
	assert_int_equal(load(IMG_LEN), 0);
	assert_int_equal(res.initrd_max, 0x37ffffff);
	put(0x236, 2, 0x0003); /* XLF_CAN_BE_LOADED_ABOVE_4G: any low RAM */
	assert_int_equal(load(IMG_LEN), 0);
	assert_int_equal(res.initrd_max, GMEM_HOLE_START - 1);
}

static void test_truncated(void **state)
{
	static const size_t cuts[] = {0, 1, 0x1f1, 0x1ff, 0x203, 0x205};
	for (size_t i = 0; i < sizeof(cuts) / sizeof(cuts[0]); i++)
		expect_fail(cuts[i], -ENOEXEC, "truncated");
	expect_fail(0x207, -ENOEXEC, "version");
	expect_fail(0x237, -ENOEXEC, "setup header");
	expect_fail(HDR_END - 1, -ENOEXEC, "setup header");
	expect_fail(KOFS, -ENOEXEC, "setup_sects");
	expect_fail(KOFS + 1, -ENOEXEC, "syssize");
	expect_fail(IMG_LEN - 1, -ENOEXEC, "syssize");
	/* Every shorter file fails cleanly (run under ASan: no read past len). */
	for (size_t len = 0; len < IMG_LEN; len++) {
		uint8_t *copy = malloc(len ? len : 1);
		memcpy(copy, img, len);
		assert_int_not_equal(loader_bzimage(&mem, copy, len, &res, err, sizeof(err)), 0);
		assert_true(err[0] != '\0');
		free(copy);
	}
}

static void test_bad_magic(void **state)
{
	memcpy(img + 0x202, "HdrX", 4);
	expect_fail(IMG_LEN, -ENOEXEC, "not a bzImage");
	make_image();
	put(0x1fe, 2, 0x55aa);
	expect_fail(IMG_LEN, -ENOEXEC, "boot_flag 0x55aa");
}

static void test_old_version(void **state)
{
	put(0x206, 2, 0x020b);
	expect_fail(IMG_LEN, -ENOEXEC, "2.11");
	assert_non_null(strstr(err, "too old"));
}

static void test_no_kernel_64(void **state)
{
	put(0x236, 2, 0x0002);
	expect_fail(IMG_LEN, -ENOEXEC, "XLF_KERNEL_64");
}

static void test_short_header(void **state)
{
	/* The jump byte says the header ends before init_size. */
	put(0x201, 1, 0x30);
	expect_fail(IMG_LEN, -ENOEXEC, "before init_size");
	/* ... or past the end of the file. */
	put(0x201, 1, 0xff);
	expect_fail(0x280, -ENOEXEC, "setup header");
}

static void test_setup_sects_huge(void **state)
{
	put(0x1f1, 1, 255);
	expect_fail(IMG_LEN, -ENOEXEC, "setup_sects 255");
}

static void test_syssize_past_file(void **state)
{
	put(0x1f4, 4, 0xffffffff);
	expect_fail(IMG_LEN, -ENOEXEC, "syssize");
}

static void test_init_size_larger_than_ram(void **state)
{
	put(0x260, 4, 0x4000000); /* 64 MiB at 16 MiB in a 64 MiB guest */
	expect_fail(IMG_LEN, -ENOMEM, "only 64 MiB");
	assert_non_null(strstr(err, "0x4000000 bytes at 0x1000000"));
	make_image();
	put(0x258, 8, 0x10000000); /* pref_address past RAM */
	expect_fail(IMG_LEN, -ENOMEM, "only 64 MiB");
	make_image();
	put(0x258, 8, UINT64_MAX - 0x100); /* no overflow into "fits" */
	expect_fail(IMG_LEN, -ENOMEM, "only 64 MiB");
	make_image();
	put(0x260, 4, 0xffffffff);
	expect_fail(IMG_LEN, -ENOMEM, "only 64 MiB");
}

static void test_hostile_headers_no_crash(void **state)
{
	/* Random header bytes: the loader may accept or refuse, never read
	 * past the image or write outside guest RAM. */
	srand(1);
	for (int round = 0; round < 20000; round++) {
		make_image();
		for (int j = 0; j < 6; j++)
			img[0x1f1 + rand() % (HDR_END - 0x1f1)] = (uint8_t)rand();
		size_t len = (size_t)rand() % (IMG_LEN + 1);
		int rc = load(len);
		if (rc == 0) {
			assert_true(res.kernel_end <= gmem_low_end(&mem));
			assert_true(res.setup_hdr_len <= sizeof(res.setup_hdr));
		} else {
			assert_true(err[0] != '\0');
		}
	}
}

/* --- zero page --- */

static const uint8_t *zero_page(void)
{
	const uint8_t *zp = gmem_ptr(&mem, LAYOUT_ZERO_PAGE, 4096);
	assert_non_null(zp);
	return zp;
}

static void test_zero_page_bzimage(void **state)
{
	memset(gmem_ptr(&mem, LAYOUT_ZERO_PAGE, 4096), 0xcc, 4096); /* old garbage */
	assert_int_equal(load(IMG_LEN), 0);
	assert_int_equal(boot_zero_page(&mem, &res, 0x3000000, 0x12345), 0);
	const uint8_t *zp = zero_page();

	assert_int_equal(zp[0], 0);
	assert_int_equal(zp[0x1ef], 0); /* sentinel stays 0: nothing to sanitize */
	assert_int_equal(get(zp, 0x1f1, 1), SETUP_SECTS);
	assert_int_equal(get(zp, 0x1fe, 2), 0xaa55);
	assert_memory_equal(zp + 0x202, "HdrS", 4);
	assert_int_equal(get(zp, 0x206, 2), 0x020f);
	assert_int_equal(zp[0x210], 0xff);		     /* type_of_loader */
	assert_int_equal(zp[0x211], 0x81);		     /* LOADED_HIGH | CAN_USE_HEAP */
	assert_int_equal(get(zp, 0x224, 2), 0xfe00);	     /* heap_end_ptr */
	assert_int_equal(get(zp, 0x228, 4), LAYOUT_CMDLINE); /* cmd_line_ptr */
	assert_int_equal(get(zp, 0xc8, 4), 0);		     /* ext_cmd_line_ptr */
	assert_int_equal(get(zp, 0x238, 4), 0x7ff);	     /* cmdline_size */
	assert_int_equal(get(zp, 0x218, 4), 0x3000000);	     /* ramdisk_image */
	assert_int_equal(get(zp, 0x21c, 4), 0x12345);	     /* ramdisk_size */
	assert_int_equal(get(zp, 0xc0, 4), 0);		     /* ext_ramdisk_image */
	assert_int_equal(get(zp, 0xc4, 4), 0);		     /* ext_ramdisk_size */
	assert_int_equal(get(zp, 0x258, 8), 0x1000000);	     /* pref_address kept */
	assert_int_equal(get(zp, 0x260, 4), INIT_SIZE);

	/* e820: RAM [0, EBDA), reserved [EBDA, 1 MiB), RAM [1 MiB, 64 MiB). */
	struct e820_entry want[4];
	int n = boot_e820(&mem, want, 4);
	assert_int_equal(n, 3);
	assert_int_equal(zp[0x1e8], 3);
	for (int i = 0; i < n; i++) {
		assert_int_equal(get(zp, 0x2d0 + 20 * i, 8), want[i].addr);
		assert_int_equal(get(zp, 0x2d0 + 20 * i + 8, 8), want[i].size);
		assert_int_equal(get(zp, 0x2d0 + 20 * i + 16, 4), want[i].type);
	}
	assert_int_equal(get(zp, 0x2d0 + 20 * 2, 8), LAYOUT_HIMEM);
	assert_int_equal(get(zp, 0x2d0 + 20 * 2 + 8, 8), RAM - LAYOUT_HIMEM);
	for (int i = 0x2d0 + 20 * 3; i < 4096; i++)
		assert_int_equal(zp[i], 0);
}

static void test_zero_page_vmlinux(void **state)
{
	memset(&res, 0, sizeof(res));
	res.proto = BOOT_LINUX64;
	res.entry = 0x1000000;
	res.cmdline_max = LAYOUT_CMDLINE_MAX - 1;
	assert_int_equal(boot_zero_page(&mem, &res, 0, 0), 0);
	const uint8_t *zp = zero_page();
	assert_int_equal(get(zp, 0x1fe, 2), 0xaa55);
	assert_memory_equal(zp + 0x202, "HdrS", 4);
	assert_int_equal(get(zp, 0x206, 2), 0x020c);
	assert_int_equal(get(zp, 0x230, 4), 0x1000000); /* kernel_alignment */
	assert_int_equal(zp[0x210], 0xff);
	assert_true(zp[0x211] & 0x80);
	assert_int_equal(get(zp, 0x228, 4), LAYOUT_CMDLINE);
	assert_int_equal(get(zp, 0x238, 4), LAYOUT_CMDLINE_MAX - 1);
	assert_int_equal(get(zp, 0x218, 8), 0); /* no initrd */
	assert_int_equal(get(zp, 0xc0, 8), 0);
	assert_int_equal(zp[0x1e8], 3);
}

static void test_zero_page_high_initrd_and_ram(void **state)
{
	/* 5 GiB: e820 gains the RAM above 4 GiB; an initrd address above
	 * 4 GiB splits into ramdisk_image and ext_ramdisk_image. */
	gmem_free(&mem);
	assert_int_equal(gmem_init(&mem, 5 * 1024 * MiB), 0);
	assert_int_equal(load(IMG_LEN), 0);
	assert_int_equal(boot_zero_page(&mem, &res, 0x123456000ULL, 0x100000001ULL), 0);
	const uint8_t *zp = zero_page();
	assert_int_equal(get(zp, 0x218, 4), 0x23456000);
	assert_int_equal(get(zp, 0xc0, 4), 0x1);
	assert_int_equal(get(zp, 0x21c, 4), 0x1);
	assert_int_equal(get(zp, 0xc4, 4), 0x1);
	assert_int_equal(zp[0x1e8], 4);
	assert_int_equal(get(zp, 0x2d0 + 20 * 3, 8), GMEM_HOLE_END);
	assert_int_equal(get(zp, 0x2d0 + 20 * 3 + 8, 8), 2 * 1024 * MiB);
	assert_int_equal(get(zp, 0x2d0 + 20 * 3 + 16, 4), E820_RAM);
}

static void test_zero_page_bad_result(void **state)
{
	memset(&res, 0, sizeof(res));
	res.setup_hdr_len = sizeof(res.setup_hdr) + 1;
	assert_int_equal(boot_zero_page(&mem, &res, 0, 0), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_good_image, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setup_sects_zero_means_four, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_pref_address, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_payload_larger_than_init_size, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_cmdline_max_from_header, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_initrd_max, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_truncated, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bad_magic, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_old_version, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_no_kernel_64, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_short_header, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_setup_sects_huge, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_syssize_past_file, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_init_size_larger_than_ram, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_hostile_headers_no_crash, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_zero_page_bzimage, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_zero_page_vmlinux, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_zero_page_high_initrd_and_ram, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_zero_page_bad_result, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
