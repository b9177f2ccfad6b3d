/*
 * Debian binary packages (.deb), read for what they say they are before siteward
 * stores or distributes them. A .deb (deb(5)) is an ar archive of, in this order:
 *   debian-binary      the format version, "2.x" on its first line
 *   control.tar[.gz|.xz|.zst]  the control area: `control` (a deb822 stanza naming the
 *                      package) and the maintainer scripts
 *   data.tar[.gz|.xz|.zst|.bz2|.lzma]  the files, which are not opened here
 * with members named "_..." allowed between them and anything allowed after data.tar,
 * as deb(5) says readers must ignore them.
 *
 * The file is read as untrusted, with libarchive only: control.tar is unpacked in
 * memory within SW_DEB_CONTROL_MAX bytes, by the one decompressor its name says (never
 * an external program), and the control file is bounded by SW_DPKG_CONTROL_MAX. The
 * control file is the entry dpkg would unpack as `control` ("./control", "control", ...);
 * a package with two is refused, as is one whose control file is not a regular file.
 * Only control.tar is read: data.tar must be present and its declared size fit in the
 * file, but its bytes are not checked.
 *
 * Both functions return 0, or SW_EINVAL with a one-line reason when the bytes are not
 * a .deb siteward reads ("not a Debian package: the control file has no Package
 * field", "not a Debian package: control.tar is larger than ... bytes unpacked");
 * SW_ENOTFOUND / SW_EIO when the file cannot be read, SW_ENOMEM, and SW_EIO when
 * libarchive lacks a decompressor. On failure `out` is zeroed.
 */
#ifndef SW_DEB_H
#define SW_DEB_H

#include <stddef.h>

#include "dpkgdb.h"

#define SW_DEB_CONTROL_MAX (16 * 1024 * 1024) /* bytes of control.tar, unpacked */

struct sw_deb_info {
	struct sw_dpkg_pkg pkg; /* Package, Version, Architecture; seq is 0 */
	int has_scripts;	/* preinst, postinst, prerm or postrm present */
};

/* Reads the .deb at `path` (a regular file), without reading its data.tar. */
int sw_deb_read(const char *path, struct sw_deb_info *out, char *err, size_t errlen);
/* The same from `len` bytes in memory, which are only read. */
int sw_deb_read_mem(const void *data, size_t len, struct sw_deb_info *out, char *err,
		    size_t errlen);

#endif
