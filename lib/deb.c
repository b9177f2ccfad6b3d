/* Debian binary packages: see deb.h. */
#include "deb.h"

#include "error.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define NOT_DEB	   "not a Debian package: "
#define BINARY_MAX 1024	 /* bytes of debian-binary: "2.0\n", and room for lines to come */
#define EXTRA_MAX  64	 /* members named "_..." passed over: deb(5) defines none yet */
#define BLOCK	   65536 /* bytes libarchive reads from a file at a time */

/* The names control.tar may have, each with the one filter that reads it: dpkg goes by
 * the name too, and a filter chosen by sniffing the bytes could be one that libarchive
 * runs as an external program. */
static const struct {
	const char *name;
	int filter;
} controls[] = {
    {"control.tar", ARCHIVE_FILTER_NONE},
    {"control.tar.gz", ARCHIVE_FILTER_GZIP},
    {"control.tar.xz", ARCHIVE_FILTER_XZ},
    {"control.tar.zst", ARCHIVE_FILTER_ZSTD},
};

static const char *const data_names[] = {
    "data.tar", "data.tar.gz", "data.tar.xz", "data.tar.zst", "data.tar.bz2", "data.tar.lzma",
};

static const char *const scripts[] = {"preinst", "postinst", "prerm", "postrm"};

static const char *why_archive(struct archive *a)
{
	const char *s = archive_error_string(a);

	return s ? s : "unreadable archive";
}

/* Reads the data of the current entry of `a` whole into a new NUL-terminated buffer.
 * SW_ETOOBIG, with nothing in `err`, past `max` bytes: the caller says what is too big. */
static int read_all(struct archive *a, const char *what, size_t max, char **out, size_t *len,
		    char *err, size_t errlen)
{
	size_t cap = 0, used = 0;
	char *buf = NULL, *p;
	la_ssize_t n;

	*out = NULL;
	*len = 0;
	for (;;) {
		if (used > max) {
			free(buf);
			return SW_ETOOBIG;
		}
		if (used == cap) {
			cap = cap ? cap * 2 : 4096;
			if (cap > max + 1)
				cap = max + 1;
			if (!(p = realloc(buf, cap + 1))) {
				free(buf);
				sw_seterr(err, errlen, "out of memory");
				return SW_ENOMEM;
			}
			buf = p;
		}
		if ((n = archive_read_data(a, buf + used, cap - used)) == 0)
			break;
		if (n < 0) {
			free(buf);
			sw_seterr(err, errlen, NOT_DEB "%s: %s", what, why_archive(a));
			return SW_EINVAL;
		}
		used += (size_t)n;
	}
	buf[used] = '\0';
	*out = buf;
	*len = used;
	return 0;
}

/* deb(5): a reader goes on while the major version is 2; the minor version and any
 * further lines are for formats to come. */
static int binary_valid(const char *s, size_t n)
{
	size_t i = 2;

	if (n < 3 || s[0] != '2' || s[1] != '.')
		return 0;
	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	return i > 2 && (i == n || s[i] == '\n');
}

/* The name a control.tar entry has once dpkg has unpacked it, if it lands at the top of
 * the control area: "./control", "control", "/control" and ".//./control" are all the
 * control file there, so all are taken for it. A ".." anywhere is never unpacked. */
static int top_name(const char *path, char *out, size_t size)
{
	int parts = 0;

	if (!path)
		return 0;
	while (*path) {
		size_t k = strcspn(path, "/");

		if (k == 2 && path[0] == '.' && path[1] == '.')
			return 0;
		if (k > 0 && !(k == 1 && path[0] == '.')) {
			if (parts++ || k >= size)
				return 0;
			memcpy(out, path, k);
			out[k] = '\0';
		}
		path += k + (path[k] == '/');
	}
	return parts == 1;
}

static int set_filter(struct archive *a, int filter)
{
	switch (filter) {
	case ARCHIVE_FILTER_GZIP: return archive_read_support_filter_gzip(a);
	case ARCHIVE_FILTER_XZ: return archive_read_support_filter_xz(a);
	case ARCHIVE_FILTER_ZSTD: return archive_read_support_filter_zstd(a);
	default: return ARCHIVE_FATAL;
	}
}

/* Decompresses control.tar (`member`, compressed with `filter`) into a new buffer of at
 * most SW_DEB_CONTROL_MAX bytes, before tar reads any of it, so that nothing in the
 * tar (an entry's size, a header to skip) can make more of it be unpacked. */
static int unpack(const char *member, int filter, const char *bytes, size_t len, char **out,
		  size_t *outlen, char *err, size_t errlen)
{
	struct archive *a = archive_read_new();
	struct archive_entry *e;
	int rc;

	*out = NULL;
	if (!a) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	/* ARCHIVE_WARN: libarchive was built without the library and would run a program */
	if (archive_read_support_format_raw(a) != ARCHIVE_OK ||
	    set_filter(a, filter) != ARCHIVE_OK) {
		sw_seterr(err, errlen, "libarchive cannot decompress %s by itself", member);
		rc = SW_EIO;
		goto out;
	}
	if (archive_read_open_memory(a, bytes, len) != ARCHIVE_OK ||
	    archive_read_next_header(a, &e) != ARCHIVE_OK) {
		sw_seterr(err, errlen, NOT_DEB "%s: %s", member, why_archive(a));
		rc = SW_EINVAL;
		goto out;
	}
	if (archive_filter_code(a, 0) != filter) {
		sw_seterr(err, errlen, NOT_DEB "%s is not compressed as its name says", member);
		rc = SW_EINVAL;
		goto out;
	}
	rc = read_all(a, member, SW_DEB_CONTROL_MAX, out, outlen, err, errlen);
	if (rc == SW_ETOOBIG) {
		sw_seterr(err, errlen, NOT_DEB "%s is larger than %d bytes unpacked", member,
			  SW_DEB_CONTROL_MAX);
		rc = SW_EINVAL;
	}
out:
	archive_read_free(a);
	return rc;
}

/* Reads control.tar (the member `member`, compressed with `filter`): the control file
 * into info->pkg, and whether there are maintainer scripts. */
static int read_control(const char *member, int filter, const char *bytes, size_t len,
			struct sw_deb_info *info, char *err, size_t errlen)
{
	struct archive *a = NULL;
	struct archive_entry *e;
	char *tar = NULL, *control = NULL, name[16], why[256];
	size_t tarlen = len, controllen = 0;
	int r, rc;

	if (filter != ARCHIVE_FILTER_NONE) {
		if ((rc = unpack(member, filter, bytes, len, &tar, &tarlen, err, errlen)))
			return rc;
		bytes = tar;
	}
	if (!(a = archive_read_new())) {
		sw_seterr(err, errlen, "out of memory");
		rc = SW_ENOMEM;
		goto out;
	}
	if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
	    archive_read_open_memory(a, bytes, tarlen) != ARCHIVE_OK) {
		sw_seterr(err, errlen, NOT_DEB "%s: %s", member, why_archive(a));
		rc = SW_EINVAL;
		goto out;
	}
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		if (!top_name(archive_entry_pathname(e), name, sizeof(name)))
			continue;
		if (strcmp(name, "control") != 0) {
			/* any kind of entry: a script that would not run is still declared */
			for (size_t i = 0; i < sizeof(scripts) / sizeof(*scripts); i++)
				if (strcmp(name, scripts[i]) == 0)
					info->has_scripts = 1;
			continue;
		}
		/* dpkg unpacks the control area into a folder: of two, the last would win */
		if (control) {
			sw_seterr(err, errlen, NOT_DEB "%s holds two control files", member);
			rc = SW_EINVAL;
			goto out;
		}
		if (archive_entry_filetype(e) != AE_IFREG || archive_entry_hardlink(e) ||
		    archive_entry_symlink(e)) {
			sw_seterr(err, errlen, NOT_DEB "the control file is not a regular file");
			rc = SW_EINVAL;
			goto out;
		}
		if (archive_entry_size(e) > SW_DPKG_CONTROL_MAX ||
		    (rc = read_all(a, "the control file", SW_DPKG_CONTROL_MAX, &control,
				   &controllen, err, errlen)) == SW_ETOOBIG) {
			sw_seterr(err, errlen, NOT_DEB "the control file is larger than %d bytes",
				  SW_DPKG_CONTROL_MAX);
			rc = SW_EINVAL;
			goto out;
		}
		if (rc)
			goto out;
	}
	if (r != ARCHIVE_EOF) {
		sw_seterr(err, errlen, NOT_DEB "%s: %s", member, why_archive(a));
		rc = SW_EINVAL;
		goto out;
	}
	if (!control) {
		sw_seterr(err, errlen, NOT_DEB "%s holds no control file", member);
		rc = SW_EINVAL;
		goto out;
	}
	if ((rc = sw_dpkg_control_parse(control, controllen, &info->pkg, why, sizeof(why)))) {
		sw_seterr(err, errlen, NOT_DEB "%s", why);
		rc = SW_EINVAL;
	}
out:
	archive_read_free(a);
	free(tar);
	free(control);
	return rc;
}

static int named(const char *name, const char *const *names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(name, names[i]) == 0)
			return 1;
	return 0;
}

/* The members deb(5) requires, in their order. */
enum member { BINARY, CONTROL, DATA, DONE };
static const char *const member_names[] = {"debian-binary", "control.tar", "data.tar"};

/* Reads the members of the opened ar archive `a` of `size` bytes, in deb(5)'s order,
 * up to data.tar. */
static int read_deb(struct archive *a, uint64_t size, struct sw_deb_info *info, char *err,
		    size_t errlen)
{
	struct archive_entry *e;
	enum member want = BINARY;
	const char *name;
	char *bytes = NULL;
	size_t len, extra = 0, c;
	int r, rc = 0, data;

	while (!rc && want != DONE) {
		if ((r = archive_read_next_header(a, &e)) == ARCHIVE_EOF) {
			sw_seterr(err, errlen, NOT_DEB "it has no %s member", member_names[want]);
			return SW_EINVAL;
		}
		if (r != ARCHIVE_OK) {
			sw_seterr(err, errlen, NOT_DEB "%s", why_archive(a));
			return SW_EINVAL;
		}
		if (!(name = archive_entry_pathname(e)))
			name = "";
		for (c = 0; c < sizeof(controls) / sizeof(*controls); c++)
			if (strcmp(name, controls[c].name) == 0)
				break;
		data = named(name, data_names, sizeof(data_names) / sizeof(*data_names));
		if (want == BINARY) {
			if (strcmp(name, "debian-binary") != 0) {
				sw_seterr(err, errlen,
					  NOT_DEB "its first member is not debian-binary");
				return SW_EINVAL;
			}
			rc = read_all(a, name, BINARY_MAX, &bytes, &len, err, errlen);
			if (rc == SW_ETOOBIG || (!rc && !binary_valid(bytes, len))) {
				sw_seterr(err, errlen,
					  NOT_DEB "its format (debian-binary) is not 2.x");
				rc = SW_EINVAL;
			}
			free(bytes);
			want = CONTROL;
		} else if (name[0] == '_') {
			if (++extra > EXTRA_MAX) {
				sw_seterr(err, errlen,
					  NOT_DEB "it has more than %d members named _...",
					  EXTRA_MAX);
				return SW_EINVAL;
			}
		} else if (want == CONTROL && c < sizeof(controls) / sizeof(*controls)) {
			if (archive_entry_size(e) > SW_DEB_CONTROL_MAX) {
				sw_seterr(err, errlen, NOT_DEB "%s is larger than %d bytes", name,
					  SW_DEB_CONTROL_MAX);
				return SW_EINVAL;
			}
			rc = read_all(a, name, SW_DEB_CONTROL_MAX, &bytes, &len, err, errlen);
			if (!rc)
				rc = read_control(name, controls[c].filter, bytes, len, info, err,
						  errlen);
			free(bytes);
			want = DATA;
		} else if (want == DATA && data) {
			/* what follows its header: its bytes, and the padding to an even offset */
			int64_t start = archive_filter_bytes(a, -1), n = archive_entry_size(e);

			if (start < 0 || n < 0 || (uint64_t)start + (uint64_t)n + (n & 1) > size) {
				sw_seterr(err, errlen, NOT_DEB "%s is cut short", name);
				return SW_EINVAL;
			}
			want = DONE;
		} else if (want == CONTROL && data) {
			sw_seterr(err, errlen, NOT_DEB "%s comes before control.tar", name);
			return SW_EINVAL;
		} else if (c < sizeof(controls) / sizeof(*controls)) {
			sw_seterr(err, errlen, NOT_DEB "it has two control.tar members");
			return SW_EINVAL;
		} else {
			sw_seterr(err, errlen, NOT_DEB "it has an unexpected member before %s",
				  member_names[want]);
			return SW_EINVAL;
		}
	}
	return rc;
}

/* Reads the outer archive, which the caller has opened on the file or the bytes, into
 * `out`, which is filled only on success. */
static int read_opened(struct archive *a, int opened, uint64_t size, struct sw_deb_info *out,
		       char *err, size_t errlen)
{
	struct sw_deb_info info;
	int rc;

	memset(&info, 0, sizeof(info));
	if (opened != ARCHIVE_OK) {
		sw_seterr(err, errlen, NOT_DEB "it is not an ar archive");
		return SW_EINVAL;
	}
	if ((rc = read_deb(a, size, &info, err, errlen)))
		return rc;
	*out = info;
	return 0;
}

int sw_deb_read_mem(const void *data, size_t len, struct sw_deb_info *out, char *err, size_t errlen)
{
	struct archive *a = archive_read_new();
	int rc;

	memset(out, 0, sizeof(*out));
	if (!a || archive_read_support_format_ar(a) != ARCHIVE_OK) {
		archive_read_free(a);
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	rc = read_opened(a, archive_read_open_memory(a, data, len), len, out, err, errlen);
	archive_read_free(a);
	return rc;
}

int sw_deb_read(const char *path, struct sw_deb_info *out, char *err, size_t errlen)
{
	struct archive *a = NULL;
	struct stat st;
	int fd, rc;

	memset(out, 0, sizeof(*out));
	/* O_NONBLOCK: a file swapped for a named pipe must not block the open. */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
		int e = errno;

		sw_seterr(err, errlen, "cannot open %s: %s", path, strerror(e));
		return e == ENOENT ? SW_ENOTFOUND : SW_EIO;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		sw_seterr(err, errlen, "%s is not a regular file", path);
		rc = SW_EIO;
		goto out;
	}
	if (!(a = archive_read_new()) || archive_read_support_format_ar(a) != ARCHIVE_OK) {
		sw_seterr(err, errlen, "out of memory");
		rc = SW_ENOMEM;
		goto out;
	}
	rc = read_opened(a, archive_read_open_fd(a, fd, BLOCK), (uint64_t)st.st_size, out, err,
			 errlen);
out:
	archive_read_free(a);
	close(fd);
	return rc;
}
