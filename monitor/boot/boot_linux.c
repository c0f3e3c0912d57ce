/* Linux 64-bit boot protocol: load a bzImage and build the zero page.
 *
 * Source of truth: Documentation/arch/x86/boot.rst (the "real-mode kernel
 * header", protocol 2.12+ for the 64-bit entry) and
 * arch/x86/include/uapi/asm/bootparam.h for the byte offsets.  The image is
 * hostile input: the header is copied out of it only as far as the file
 * goes, and each check first makes sure its bytes came from the file. */
#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "monitor/layout.h"
#include "monitor/boot/loader.h"

/* struct setup_header (boot.rst, "THE REAL-MODE KERNEL HEADER"): in the
 * image and in the zero page alike it starts at 0x1f1.  x86 is
 * little-endian, so the packed struct is the on-disk layout. */
struct setup_header {
	uint8_t setup_sects; /* 512-byte sectors of real-mode setup; 0 means 4 */
	uint16_t root_flags;
	uint32_t syssize; /* protected-mode code, 16-byte paragraphs */
	uint16_t ram_size;
	uint16_t vid_mode;
	uint16_t root_dev;
	uint16_t boot_flag; /* 0xAA55 */
	uint16_t jump;	    /* short jmp; its second byte gives the header end */
	uint32_t header;    /* "HdrS" */
	uint16_t version;   /* protocol, major << 8 | minor */
	uint32_t realmode_swtch;
	uint16_t start_sys_seg;
	uint16_t kernel_version;
	uint8_t type_of_loader;
	uint8_t loadflags;
	uint16_t setup_move_size;
	uint32_t code32_start;
	uint32_t ramdisk_image;
	uint32_t ramdisk_size;
	uint32_t bootsect_kludge;
	uint16_t heap_end_ptr;
	uint8_t ext_loader_ver;
	uint8_t ext_loader_type;
	uint32_t cmd_line_ptr;
	uint32_t initrd_addr_max; /* last byte the initrd may occupy */
	uint32_t kernel_alignment;
	uint8_t relocatable_kernel;
	uint8_t min_alignment;
	uint16_t xloadflags;
	uint32_t cmdline_size; /* longest command line, without the NUL */
	uint32_t hardware_subarch;
	uint64_t hardware_subarch_data;
	uint32_t payload_offset;
	uint32_t payload_length;
	uint64_t setup_data;
	uint64_t pref_address;
	uint32_t init_size; /* linear memory the kernel needs at its load address */
	uint32_t handover_offset;
	uint32_t kernel_info_offset;
} __attribute__((packed));

#define HDR_START 0x1f1u
#define HDR_OFF(f) (HDR_START + offsetof(struct setup_header, f))
_Static_assert(HDR_OFF(boot_flag) == 0x1fe, "boot_flag");
_Static_assert(HDR_OFF(jump) == 0x200, "jump");
_Static_assert(HDR_OFF(header) == 0x202, "header");
_Static_assert(HDR_OFF(version) == 0x206, "version");
_Static_assert(HDR_OFF(type_of_loader) == 0x210, "type_of_loader");
_Static_assert(HDR_OFF(ramdisk_image) == 0x218, "ramdisk_image");
_Static_assert(HDR_OFF(heap_end_ptr) == 0x224, "heap_end_ptr");
_Static_assert(HDR_OFF(cmd_line_ptr) == 0x228, "cmd_line_ptr");
_Static_assert(HDR_OFF(initrd_addr_max) == 0x22c, "initrd_addr_max");
_Static_assert(HDR_OFF(xloadflags) == 0x236, "xloadflags");
_Static_assert(HDR_OFF(cmdline_size) == 0x238, "cmdline_size");
_Static_assert(HDR_OFF(payload_offset) == 0x248, "payload_offset");
_Static_assert(HDR_OFF(pref_address) == 0x258, "pref_address");
_Static_assert(HDR_OFF(init_size) == 0x260, "init_size");
_Static_assert(HDR_START + sizeof(struct setup_header) == 0x26c, "setup_header ends at 0x26c");

/* struct boot_params, the zero page: only the fields a loader fills. */
#define E820_MAX_ZEROPAGE 128u
struct boot_params {
	uint8_t _pad0[0xc0];
	uint32_t ext_ramdisk_image;
	uint32_t ext_ramdisk_size;
	uint32_t ext_cmd_line_ptr;
	uint8_t _pad1[0x1e8 - 0xcc];
	uint8_t e820_entries;
	uint8_t _pad2[0x1f1 - 0x1e9];
	struct setup_header hdr;
	uint8_t _pad7[0x290 - 0x26c]; /* room for a longer header */
	uint8_t _pad8[0x2d0 - 0x290];
	struct e820_entry e820_table[E820_MAX_ZEROPAGE];
	uint8_t _pad9[0x1000 - 0xcd0];
} __attribute__((packed));

_Static_assert(offsetof(struct boot_params, ext_ramdisk_image) == 0xc0, "ext_ramdisk_image");
_Static_assert(offsetof(struct boot_params, ext_ramdisk_size) == 0xc4, "ext_ramdisk_size");
_Static_assert(offsetof(struct boot_params, ext_cmd_line_ptr) == 0xc8, "ext_cmd_line_ptr");
_Static_assert(offsetof(struct boot_params, e820_entries) == 0x1e8, "e820_entries");
_Static_assert(offsetof(struct boot_params, hdr) == HDR_START, "hdr");
_Static_assert(offsetof(struct boot_params, e820_table) == 0x2d0, "e820_table");
_Static_assert(sizeof(struct e820_entry) == 20, "boot_e820_entry");
_Static_assert(sizeof(struct boot_params) == 4096, "boot_params is one page");
/* The copied header may run into _pad7, never past it. */
_Static_assert(HDR_START + sizeof(((struct load_result *)0)->setup_hdr) <= 0x290, "setup_hdr");
_Static_assert(LAYOUT_ZERO_PAGE + sizeof(struct boot_params) <= LAYOUT_PML4, "zero page");

#define BOOT_FLAG_MAGIC 0xAA55u
#define HDRS_MAGIC 0x53726448u /* "HdrS" little-endian */
#define PROTO_MIN 0x020cu      /* 2.12: xloadflags, the 64-bit entry */
#define HDR_END_MIN 0x268u     /* a 2.12 header reaches past init_size */
#define LOADED_HIGH 0x01u
#define CAN_USE_HEAP 0x80u
#define XLF_KERNEL_64 0x0001u
#define XLF_CAN_BE_LOADED_ABOVE_4G 0x0002u
#define LOADER_TYPE_UNDEFINED 0xffu /* boot.rst: boot loader id 0xFF, "undefined" */
#define HEAP_END 0xfe00u	    /* boot.rst's value for a 0x10000-byte setup */
#define KERNEL_ALIGN 0x1000000u	    /* LOAD_PHYSICAL_ADDR; Firecracker's vmlinux header */
#define ENTRY64_OFFSET 0x200u	    /* boot.rst, "64-bit Boot Protocol" */
#define SECTOR 512u
#define CMDLINE_CAP (LAYOUT_CMDLINE_MAX - 1)

static int truncated(char *err, size_t errlen, const char *what, size_t need, size_t len)
{
	snprintf(err, errlen, "bzImage truncated: %s needs %zu bytes, the file has %zu", what, need,
		 len);
	return -ENOEXEC;
}

int loader_bzimage(const struct gmem *m, const uint8_t *img, size_t len, struct load_result *out,
		   char *err, size_t errlen)
{
	struct setup_header h;

	memset(out, 0, sizeof(*out));
	memset(&h, 0, sizeof(h));
	/* Copy what the file has of the header; each check below first makes
	 * sure the bytes it looks at came from the file. */
	if (len > HDR_START)
		memcpy(&h, img + HDR_START,
		       len - HDR_START < sizeof(h) ? len - HDR_START : sizeof(h));
	if (len < HDR_OFF(version))
		return truncated(err, errlen, "the boot_flag and \"HdrS\" header", HDR_OFF(version),
				 len);
	if (h.boot_flag != BOOT_FLAG_MAGIC || h.header != HDRS_MAGIC) {
		snprintf(err, errlen,
			 "not a bzImage: boot_flag 0x%04x (want 0xaa55), header 0x%08x (want "
			 "0x53726448, \"HdrS\")",
			 h.boot_flag, h.header);
		return -ENOEXEC;
	}
	if (len < HDR_OFF(version) + 2)
		return truncated(err, errlen, "the version field", HDR_OFF(version) + 2, len);
	if (h.version < PROTO_MIN) {
		snprintf(err, errlen,
			 "bzImage boot protocol version 0x%04x (%u.%02u) is too old: the 64-bit "
			 "entry needs 2.12 or later",
			 h.version, h.version >> 8, h.version & 0xff);
		return -ENOEXEC;
	}
	/* boot.rst: the header ends at 0x202 + the byte at 0x201. */
	size_t hdr_end = HDR_OFF(header) + (h.jump >> 8);
	if (hdr_end < HDR_END_MIN) {
		snprintf(err, errlen,
			 "bzImage setup header ends at 0x%zx (jump 0x%04x), before init_size that "
			 "protocol 0x%04x has",
			 hdr_end, h.jump, h.version);
		return -ENOEXEC;
	}
	if (hdr_end > len)
		return truncated(err, errlen, "the setup header", hdr_end, len);
	if (!(h.xloadflags & XLF_KERNEL_64)) {
		snprintf(err, errlen,
			 "bzImage xloadflags 0x%04x lacks XLF_KERNEL_64: a 32-bit-only kernel "
			 "(ember boots x86_64 kernels)",
			 h.xloadflags);
		return -ENOEXEC;
	}

	/* boot.rst: "If this field is 0, the real value is 4." */
	unsigned sects = h.setup_sects ? h.setup_sects : 4;
	size_t kofs = ((size_t)sects + 1) * SECTOR;
	if (kofs >= len) {
		snprintf(err, errlen,
			 "bzImage setup_sects %u puts the protected-mode kernel at 0x%zx, past the "
			 "end of the %zu-byte file",
			 h.setup_sects, kofs, len);
		return -ENOEXEC;
	}
	size_t payload = len - kofs;
	if ((uint64_t)h.syssize * 16 > payload) {
		snprintf(err, errlen,
			 "bzImage truncated: syssize 0x%x means %llu bytes of kernel after 0x%zx, "
			 "the file has %zu",
			 h.syssize, (unsigned long long)h.syssize * 16, kofs, payload);
		return -ENOEXEC;
	}

	/* The kernel decompresses itself in place, within init_size bytes of
	 * its load address (boot.rst, init_size).  Loading at pref_address
	 * spares the relocatable kernel a copy of itself. */
	uint64_t load = h.pref_address >= LAYOUT_HIMEM ? h.pref_address : LAYOUT_HIMEM;
	uint64_t need = h.init_size > payload ? h.init_size : payload;
	uint64_t low_end = gmem_low_end(m);
	if (load >= low_end || need > low_end - load) {
		snprintf(err, errlen,
			 "kernel needs 0x%" PRIx64 " bytes at 0x%" PRIx64
			 " but the guest has only %" PRIu64 " MiB",
			 need, load, m->ram_size >> 20);
		return -ENOMEM;
	}
	if (gmem_write(m, load, img + kofs, payload) < 0) {
		snprintf(err, errlen, "cannot copy the kernel to 0x%" PRIx64, load);
		return -EFAULT;
	}

	out->proto = BOOT_LINUX64;
	out->entry = load + ENTRY64_OFFSET;
	out->kernel_start = load;
	out->kernel_end = load + need;
	out->is_linux = true;
	out->cmdline_max = h.cmdline_size < CMDLINE_CAP ? h.cmdline_size : (uint32_t)CMDLINE_CAP;
	/* Both initrd_addr_max and initrd_max name the last byte the initrd
	 * may occupy.  A kernel that takes its initrd above 4 GiB may have it
	 * anywhere; loader_initrd keeps it in low RAM all the same. */
	out->initrd_max = h.initrd_addr_max;
	if ((h.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G) && out->initrd_max < GMEM_HOLE_START - 1)
		out->initrd_max = GMEM_HOLE_START - 1;
	size_t hlen = hdr_end - HDR_START;
	if (hlen > sizeof(out->setup_hdr))
		hlen = sizeof(out->setup_hdr);
	memcpy(out->setup_hdr, img + HDR_START, hlen);
	out->setup_hdr_len = (uint32_t)hlen;
	return 0;
}

/* A vmlinux carries no setup header: give the kernel the one a protocol
 * 2.12 bzImage would have, as Firecracker does. */
static void vmlinux_header(struct setup_header *h)
{
	h->boot_flag = BOOT_FLAG_MAGIC;
	h->header = HDRS_MAGIC;
	h->version = PROTO_MIN;
	h->kernel_alignment = KERNEL_ALIGN;
	h->loadflags = LOADED_HIGH;
}

int boot_zero_page(const struct gmem *m, const struct load_result *res, uint64_t initrd_gpa,
		   uint64_t initrd_size)
{
	struct boot_params bp;
	struct e820_entry map[E820_MAX_ZEROPAGE];

	if (res->setup_hdr_len > sizeof(res->setup_hdr))
		return -EINVAL;
	memset(&bp, 0, sizeof(bp));
	if (res->setup_hdr_len)
		memcpy((uint8_t *)&bp + HDR_START, res->setup_hdr, res->setup_hdr_len);
	else
		vmlinux_header(&bp.hdr);

	bp.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
	bp.hdr.loadflags |= CAN_USE_HEAP;
	bp.hdr.heap_end_ptr = HEAP_END;
	bp.hdr.cmd_line_ptr = (uint32_t)LAYOUT_CMDLINE;
	bp.ext_cmd_line_ptr = (uint32_t)(LAYOUT_CMDLINE >> 32);
	bp.hdr.cmdline_size = res->cmdline_max;
	if (initrd_size) {
		bp.hdr.ramdisk_image = (uint32_t)initrd_gpa;
		bp.hdr.ramdisk_size = (uint32_t)initrd_size;
		bp.ext_ramdisk_image = (uint32_t)(initrd_gpa >> 32);
		bp.ext_ramdisk_size = (uint32_t)(initrd_size >> 32);
	}

	int n = boot_e820(m, map, E820_MAX_ZEROPAGE);
	if (n < 0)
		return n;
	memcpy(bp.e820_table, map, (size_t)n * sizeof(map[0]));
	bp.e820_entries = (uint8_t)n;
	return gmem_write(m, LAYOUT_ZERO_PAGE, &bp, sizeof(bp));
}
