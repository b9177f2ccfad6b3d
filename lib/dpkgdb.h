/*
 * The Debian packages installed on a machine, read from dpkg's own database (the
 * `status` file of /var/lib/dpkg), not from any program's output: deb822 stanzas of
 * fields, continuation lines starting with a space. A package counts when its Status
 * ends in "installed" (install, hold: the want flag does not matter; config-files,
 * half-installed and the rest do not count).
 *
 * The file is read as untrusted: every field and the whole are bounded, a stanza that
 * does not read is skipped and counted, and any bytes give a list of valid entries
 * (fuzz_dpkgdb).
 */
#ifndef SW_DPKGDB_H
#define SW_DPKGDB_H

#include <stddef.h>

#define SW_DPKG_NAME_MAX     100
#define SW_DPKG_VERSION_MAX  100
#define SW_DPKG_ARCH_MAX     32
#define SW_DPKG_STATUS_MAX   (256 * 1024 * 1024) /* bytes of the status file */
#define SW_DPKG_PACKAGES_MAX 200000
#define SW_DPKG_CONTROL_MAX  (1024 * 1024) /* bytes of a package's control file */

struct sw_dpkg_pkg {
	char name[SW_DPKG_NAME_MAX + 1];
	char version[SW_DPKG_VERSION_MAX + 1];
	char arch[SW_DPKG_ARCH_MAX + 1];
	size_t seq; /* its place in the file: of two stanzas of one package, the first wins */
};

/* Installed packages, sorted by name then architecture, each once. */
struct sw_dpkg_list {
	struct sw_dpkg_pkg *v;
	size_t n, cap;
	size_t skipped; /* stanzas that named a package but did not read */
};

/* Reads the text of a status file into `out` (emptied first). 0, or SW_ENOMEM /
 * SW_ETOOBIG. */
int sw_dpkg_parse(const char *text, size_t len, struct sw_dpkg_list *out, char *err, size_t errlen);
/* Reads a package's control file (DEBIAN/control, or `control` in a .deb's control.tar:
 * one stanza, no Status) into `out`, with the checks sw_dpkg_parse makes of an installed
 * package's name, version and architecture; `seq` is 0. 0, or SW_EINVAL with the reason
 * ("the control file has no Package field", "... holds more than one stanza"), or
 * SW_ETOOBIG past SW_DPKG_CONTROL_MAX bytes; `out` is zeroed on failure. */
int sw_dpkg_control_parse(const char *text, size_t len, struct sw_dpkg_pkg *out, char *err,
			  size_t errlen);
/* Reads the status file at `path`. */
int sw_dpkg_read(const char *path, struct sw_dpkg_list *out, char *err, size_t errlen);
void sw_dpkg_list_free(struct sw_dpkg_list *l);
/* The entry of `name` and `arch` in a sorted list, or NULL. */
const struct sw_dpkg_pkg *sw_dpkg_find(const struct sw_dpkg_list *l, const char *name,
				       const char *arch);
/* Debian's order of versions (deb-version(7)): epoch, then upstream version, then
 * revision, each compared as dpkg does (digits as numbers, '~' before everything, even
 * the end). <0, 0 or >0. */
int sw_dpkg_version_cmp(const char *a, const char *b);
/* 1 if `s` is a package name as dpkg has it: lowercase letters, digits, + - . ; at least
 * two, starting with a letter or digit. */
int sw_dpkg_name_valid(const char *s);

#endif
