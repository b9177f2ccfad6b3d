#include "elfid.h"

#include "error.h"

#include <fcntl.h>
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Looks through one block of notes for the GNU build ID. */
static int scan_notes(Elf_Data *d, char *hex, size_t hexlen)
{
	GElf_Nhdr nh;
	size_t off = 0, name_off, desc_off;

	while ((off = gelf_getnote(d, off, &nh, &name_off, &desc_off)) > 0) {
		if (nh.n_type != NT_GNU_BUILD_ID || nh.n_namesz != 4 ||
		    memcmp((char *)d->d_buf + name_off, "GNU", 4) != 0)
			continue;
		if (nh.n_descsz == 0 || nh.n_descsz > SW_BUILD_ID_MAX ||
		    hexlen < 2 * nh.n_descsz + 1)
			return SW_EINVAL;
		for (size_t k = 0; k < nh.n_descsz; k++)
			snprintf(hex + 2 * k, 3, "%02x", ((unsigned char *)d->d_buf)[desc_off + k]);
		return 0;
	}
	return SW_ENOTFOUND;
}

static int from_elf(Elf *e, char *hex, size_t hexlen)
{
	Elf_Scn *scn = NULL;
	size_t phnum;
	int rc;

	if (elf_kind(e) != ELF_K_ELF)
		return SW_EINVAL;
	/* Notes are found through the program headers, which even a stripped file keeps;
	 * section headers are the fallback. */
	if (elf_getphdrnum(e, &phnum) == 0) {
		for (size_t i = 0; i < phnum; i++) {
			GElf_Phdr ph;
			Elf_Data *d;
			if (!gelf_getphdr(e, (int)i, &ph) || ph.p_type != PT_NOTE)
				continue;
			d = elf_getdata_rawchunk(e, (int64_t)ph.p_offset, ph.p_filesz, ELF_T_NHDR);
			if (d && (rc = scan_notes(d, hex, hexlen)) != SW_ENOTFOUND)
				return rc;
		}
	}
	while ((scn = elf_nextscn(e, scn))) {
		GElf_Shdr sh;
		Elf_Data *d;
		if (!gelf_getshdr(scn, &sh) || sh.sh_type != SHT_NOTE)
			continue;
		d = elf_getdata(scn, NULL);
		if (d && (rc = scan_notes(d, hex, hexlen)) != SW_ENOTFOUND)
			return rc;
	}
	return SW_ENOTFOUND;
}

int sw_elf_build_id_mem(const void *data, size_t len, char *hex, size_t hexlen)
{
	Elf *e;
	int rc;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return SW_EINVAL;
	/* libelf takes a non-const image but only reads it with ELF_C_READ_MMAP-like use */
	e = elf_memory((char *)data, len);
	if (!e)
		return SW_EINVAL;
	rc = from_elf(e, hex, hexlen);
	elf_end(e);
	return rc;
}

int sw_elf_build_id(const char *path, char *hex, size_t hexlen)
{
	Elf *e;
	int fd, rc;

	if (elf_version(EV_CURRENT) == EV_NONE)
		return SW_EINVAL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return SW_ENOTFOUND;
	e = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	rc = e ? from_elf(e, hex, hexlen) : SW_EINVAL;
	elf_end(e);
	close(fd);
	return rc;
}
