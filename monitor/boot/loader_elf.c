/* ELF kernels (ELF32 or ELF64 x86): PVH when the Xen PHYS32_ENTRY note is
 * present, else the Linux 64-bit boot protocol at e_entry (a vmlinux).
 * Every field read from the image is bounds-checked before use. */
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "monitor/layout.h"
#include "monitor/boot/loader.h"

#define XEN_ELFNOTE_PHYS32_ENTRY 18
#define MAX_PHDRS 64

/* One program header, whatever the ELF class. */
struct phdr {
	uint32_t type;
	uint64_t offset, paddr, filesz, memsz, align;
	uint32_t flags; /* PF_X, PF_W, PF_R */
};

#define ERR(...) (snprintf(err, errlen, __VA_ARGS__), -ENOEXEC)

enum kernel_format loader_probe(const uint8_t *img, size_t len)
{
	if (len >= SELFMAG && memcmp(img, ELFMAG, SELFMAG) == 0)
		return KFMT_ELF;
	if (len >= 0x206 && img[0x1fe] == 0x55 && img[0x1ff] == 0xaa &&
	    memcmp(img + 0x202, "HdrS", 4) == 0)
		return KFMT_BZIMAGE;
	return KFMT_UNKNOWN;
}

/* [off, off+n) inside the image, without overflow. */
static bool in_file(size_t len, uint64_t off, uint64_t n)
{
	return off <= len && n <= len - off;
}

static int read_phdrs(const uint8_t *img, size_t len, struct phdr *ph, unsigned *nr,
		      uint64_t *entry, char *err, size_t errlen)
{
	bool is64 = img[EI_CLASS] == ELFCLASS64;
	uint64_t phoff;
	unsigned phnum, phentsize, want;
	uint16_t machine, type;

	if (img[EI_CLASS] != ELFCLASS64 && img[EI_CLASS] != ELFCLASS32)
		return ERR("ELF class %u is neither 32- nor 64-bit", img[EI_CLASS]);
	if (img[EI_DATA] != ELFDATA2LSB)
		return ERR("ELF is not little-endian");
	if (!in_file(len, 0, is64 ? sizeof(Elf64_Ehdr) : sizeof(Elf32_Ehdr)))
		return ERR("ELF header truncated (file is %zu bytes)", len);
	if (is64) {
		const Elf64_Ehdr *eh = (const void *)img;
		machine = eh->e_machine, type = eh->e_type;
		phoff = eh->e_phoff, phnum = eh->e_phnum, phentsize = eh->e_phentsize;
		*entry = eh->e_entry;
		want = sizeof(Elf64_Phdr);
	} else {
		const Elf32_Ehdr *eh = (const void *)img;
		machine = eh->e_machine, type = eh->e_type;
		phoff = eh->e_phoff, phnum = eh->e_phnum, phentsize = eh->e_phentsize;
		*entry = eh->e_entry;
		want = sizeof(Elf32_Phdr);
	}
	if (machine != (is64 ? EM_X86_64 : EM_386))
		return ERR("ELF machine %u is not x86 (%s)", machine, is64 ? "x86_64" : "i386");
	if (type != ET_EXEC)
		return ERR("ELF type %u is not an executable (ET_EXEC)", type);
	if (phnum == 0)
		return ERR("ELF has no program headers");
	if (phnum > MAX_PHDRS)
		return ERR("ELF has %u program headers (at most %d)", phnum, MAX_PHDRS);
	if (phentsize != want)
		return ERR("ELF program header size %u, expected %u", phentsize, want);
	if (!in_file(len, phoff, (uint64_t)phnum * phentsize))
		return ERR("ELF program headers at 0x%llx lie past the end of the file",
			   (unsigned long long)phoff);
	for (unsigned i = 0; i < phnum; i++) {
		const uint8_t *p = img + phoff + (uint64_t)i * phentsize;
		if (is64) {
			Elf64_Phdr h;
			memcpy(&h, p, sizeof(h));
			ph[i] = (struct phdr){h.p_type,	 h.p_offset, h.p_paddr, h.p_filesz,
					      h.p_memsz, h.p_align,  h.p_flags};
		} else {
			Elf32_Phdr h;
			memcpy(&h, p, sizeof(h));
			ph[i] = (struct phdr){h.p_type,	 h.p_offset, h.p_paddr, h.p_filesz,
					      h.p_memsz, h.p_align,  h.p_flags};
		}
	}
	*nr = phnum;
	return 0;
}

/* Walk the notes of one PT_NOTE segment (ELF gABI, 4-byte aligned). */
static int scan_notes(const uint8_t *img, size_t len, const struct phdr *ph, bool *has_pvh,
		      uint64_t *pvh_entry, bool *is_linux, struct hvt_notes *solo5, char *err,
		      size_t errlen)
{
	if (!in_file(len, ph->offset, ph->filesz))
		return ERR("ELF note segment at 0x%llx lies past the end of the file",
			   (unsigned long long)ph->offset);
	const uint8_t *seg = img + ph->offset, *p = seg, *end = p + ph->filesz;
	while ((size_t)(end - p) >= 12) {
		uint32_t namesz, descsz, type;
		memcpy(&namesz, p, 4);
		memcpy(&descsz, p + 4, 4);
		memcpy(&type, p + 8, 4);
		uint64_t nlen = ((uint64_t)namesz + 3) & ~3ULL;
		uint64_t dlen = ((uint64_t)descsz + 3) & ~3ULL;
		const uint8_t *name = p + 12;
		if (nlen > (uint64_t)(end - name) || dlen > (uint64_t)(end - name) - nlen)
			return ERR("ELF note (type %u) runs past its segment", type);
		const uint8_t *desc = name + nlen;
		if (namesz == 4 && memcmp(name, "Xen", 4) == 0 &&
		    type == XEN_ELFNOTE_PHYS32_ENTRY) {
			if (descsz == 4) {
				uint32_t e32;
				memcpy(&e32, desc, 4);
				*pvh_entry = e32;
			} else if (descsz == 8) {
				memcpy(pvh_entry, desc, 8);
			} else {
				return ERR("PVH entry note has a %u-byte value (4 or 8 expected)",
					   descsz);
			}
			*has_pvh = true;
		}
		if (namesz == 6 && memcmp(name, "Linux", 6) == 0)
			*is_linux = true;
		if (namesz == 6 && memcmp(name, "Solo5", 6) == 0) {
			if (type == HVT_NOTE_ABI1) {
				if (descsz < 8)
					return ERR(
					    "Solo5 ABI note is %u bytes (8 or more expected)",
					    descsz);
				memcpy(&solo5->target, desc, 4);
				memcpy(&solo5->version, desc + 4, 4);
				solo5->has_abi = true;
			} else if (type == HVT_NOTE_MFT1) {
				/* struct mft starts 8-aligned from the note header
				 * (24 bytes in), 4 bytes into the descriptor. */
				if (descsz < 4)
					return ERR("Solo5 manifest note is %u bytes", descsz);
				solo5->mft = desc + 4;
				solo5->mft_len = descsz - 4;
			}
		}
		p = desc + dlen;
		/* In an 8-aligned note segment each note starts 8-aligned
		 * (gABI; Solo5's manifest note is such a note). */
		if (ph->align == 8 && (size_t)(p - seg) % 8)
			p += 8 - (size_t)(p - seg) % 8;
	}
	return 0;
}

int loader_elf(const struct gmem *m, const uint8_t *img, size_t len, struct load_result *out,
	       char *err, size_t errlen)
{
	struct phdr ph[MAX_PHDRS];
	unsigned nr = 0;
	uint64_t e_entry = 0, pvh_entry = 0;
	bool has_pvh = false, is_linux = false;
	int ret;

	memset(out, 0, sizeof(*out));
	if (loader_probe(img, len) != KFMT_ELF)
		return ERR("not an ELF file");
	if (len < EI_NIDENT)
		return ERR("ELF header truncated (file is %zu bytes)", len);
	ret = read_phdrs(img, len, ph, &nr, &e_entry, err, errlen);
	if (ret)
		return ret;

	/* Validate every segment before copying any, so a refused image
	 * leaves guest memory untouched. */
	uint64_t lo = UINT64_MAX, hi = 0;
	unsigned loads = 0;
	for (unsigned i = 0; i < nr; i++) {
		const struct phdr *p = &ph[i];
		if (p->type == PT_NOTE) {
			ret = scan_notes(img, len, p, &has_pvh, &pvh_entry, &is_linux, &out->solo5,
					 err, errlen);
			if (ret)
				return ret;
		}
		if (p->type != PT_LOAD || p->memsz == 0)
			continue;
		loads++;
		if (p->filesz > p->memsz)
			return ERR("segment %u: file size 0x%llx exceeds memory size 0x%llx", i,
				   (unsigned long long)p->filesz, (unsigned long long)p->memsz);
		if (!in_file(len, p->offset, p->filesz))
			return ERR("segment %u: bytes 0x%llx+0x%llx lie past the end of the file "
				   "(%zu bytes)",
				   i, (unsigned long long)p->offset, (unsigned long long)p->filesz,
				   len);
		if (p->paddr < LAYOUT_HIMEM)
			return ERR("segment %u: load address 0x%llx is below 1 MiB (reserved for "
				   "boot data)",
				   i, (unsigned long long)p->paddr);
		if (!gmem_ptr(m, p->paddr, p->memsz))
			return ERR(
			    "segment %u: [0x%llx, 0x%llx) lies outside guest RAM (%llu MiB): "
			    "give the VM more memory",
			    i, (unsigned long long)p->paddr,
			    (unsigned long long)(p->paddr + p->memsz),
			    (unsigned long long)(m->ram_size >> 20));
		for (unsigned j = 0; j < i; j++) {
			const struct phdr *q = &ph[j];
			if (q->type != PT_LOAD || q->memsz == 0)
				continue;
			if (p->paddr < q->paddr + q->memsz && q->paddr < p->paddr + p->memsz)
				return ERR("segments %u and %u overlap at 0x%llx", j, i,
					   (unsigned long long)(p->paddr > q->paddr ? p->paddr
										    : q->paddr));
		}
		if (p->paddr < lo)
			lo = p->paddr;
		if (p->paddr + p->memsz > hi)
			hi = p->paddr + p->memsz;
	}
	if (loads == 0)
		return ERR("ELF has no loadable segment");

	bool hvt = out->solo5.has_abi;
	if (hvt && img[EI_CLASS] != ELFCLASS64)
		return ERR("a Solo5 unikernel must be a 64-bit ELF");
	if (hvt)
		has_pvh = false; /* the Solo5 note decides */
	uint64_t entry = has_pvh ? pvh_entry : e_entry;
	bool entry_ok = false;
	for (unsigned i = 0; i < nr; i++)
		if (ph[i].type == PT_LOAD && entry >= ph[i].paddr &&
		    entry - ph[i].paddr < ph[i].memsz)
			entry_ok = true;
	if (!entry_ok)
		return ERR("%s entry point 0x%llx is not inside a loaded segment",
			   has_pvh ? "PVH" : "ELF", (unsigned long long)entry);
	if (has_pvh && entry > UINT32_MAX)
		return ERR("PVH entry point 0x%llx is above 4 GiB", (unsigned long long)entry);

	for (unsigned i = 0; i < nr; i++) {
		const struct phdr *p = &ph[i];
		if (p->type != PT_LOAD || p->memsz == 0)
			continue;
		uint8_t *dst = gmem_ptr(m, p->paddr, p->memsz);
		memcpy(dst, img + p->offset, p->filesz);
		memset(dst + p->filesz, 0, p->memsz - p->filesz);
		/* hvt: the segments' flags become page protections (hvt.h) */
		struct hvt_notes *s5 = &out->solo5;
		if (hvt && s5->nr_seg++ < HVT_MAX_SEGS)
			s5->seg[s5->nr_seg - 1] = (struct hvt_seg){p->paddr, p->memsz, p->flags};
	}
	out->proto = hvt ? BOOT_HVT : has_pvh ? BOOT_PVH : BOOT_LINUX64;
	out->entry = entry;
	out->kernel_start = lo;
	out->kernel_end = hi;
	out->is_linux = is_linux;
	out->cmdline_max = LAYOUT_CMDLINE_MAX - 1;
	/* Linux's default initrd_addr_max (boot protocol < 2.03). */
	out->initrd_max = has_pvh ? gmem_low_end(m) - 1 : 0x37ffffff;
	return 0;
}

int loader_initrd(const struct gmem *m, const struct load_result *res, const uint8_t *data,
		  size_t len, uint64_t *gpa, char *err, size_t errlen)
{
	uint64_t top = gmem_low_end(m);
	if (res->initrd_max < UINT64_MAX && res->initrd_max + 1 < top)
		top = res->initrd_max + 1;
	uint64_t floor = (res->kernel_end + 0xfff) & ~0xfffULL;
	if (len == 0)
		return ERR("initrd is empty");
	if (len > top || ((top - len) & ~0xfffULL) < floor)
		return ERR("initrd (%zu bytes) does not fit between the kernel's end 0x%llx and "
			   "0x%llx: give the VM more memory",
			   len, (unsigned long long)floor, (unsigned long long)top);
	*gpa = (top - len) & ~0xfffULL;
	if (gmem_write(m, *gpa, data, len))
		return ERR("initrd at 0x%llx lies outside guest RAM", (unsigned long long)*gpa);
	return 0;
}
