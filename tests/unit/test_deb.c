/* .deb files read by siteward's reader: real ones built by dpkg-deb, in each compression
 * it writes, and damaged or crafted ones (assembled with libarchive's writers) that it
 * must refuse with a reason. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "deb.h"
#include "dpkgdb.h"
#include "error.h"

extern char **environ;

static char tmp[64];

static const char control[] = "Package: hello-sw\n"
			      "Version: 1:2.3-4+deb12u1\n"
			      "Architecture: amd64\n"
			      "Maintainer: Test <test@example.org>\n"
			      "Description: a package for siteward's tests\n"
			      " Its long description: with a colon.\n";

/* ---- making packages ---- */

static void write_file(const char *path, const void *data, size_t len, mode_t mode)
{
	FILE *f = fopen(path, "wb");

	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	/* dpkg-deb checks the modes; the umask must not decide them */
	assert_int_equal(chmod(path, mode), 0);
}

static void make_dir(const char *path)
{
	assert_int_equal(mkdir(path, 0755), 0);
	assert_int_equal(chmod(path, 0755), 0);
}

/* Runs a program with its output thrown away; its exit status, or -1. Not with meson's
 * MALLOC_PERTURB_: dpkg-deb's compressors would fill hundreds of megabytes with it. */
static int run(char *const argv[])
{
	posix_spawn_file_actions_t fa;
	char *env[256];
	size_t n = 0;
	int status = 0, rc;
	pid_t pid;

	for (char **e = environ; *e && n < sizeof(env) / sizeof(*env) - 1; e++)
		if (strncmp(*e, "MALLOC_PERTURB_=", 16) != 0)
			env[n++] = *e;
	env[n] = NULL;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	rc = posix_spawnp(&pid, argv[0], &fa, NULL, argv, env);
	posix_spawn_file_actions_destroy(&fa);
	if (rc != 0 || waitpid(pid, &status, 0) != pid)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Builds tmp/NAME.deb with dpkg-deb from a tree holding `ctl` as its control file, a
 * README, and maintainer scripts named in `scripts` (NULL-terminated, may be NULL).
 * `z`: a -Z option or NULL; `nocheck`: let dpkg-deb build a control file it would refuse.
 * dpkg-deb's exit status. */
static int build(const char *name, const char *ctl, const char *const *scripts, const char *z,
		 int nocheck, char *out, size_t outlen)
{
	char root[128], path[256];
	char *argv[8];
	int argc = 0;

	snprintf(root, sizeof(root), "%s/%s", tmp, name);
	make_dir(root);
	snprintf(path, sizeof(path), "%s/DEBIAN", root);
	make_dir(path);
	snprintf(path, sizeof(path), "%s/DEBIAN/control", root);
	write_file(path, ctl, strlen(ctl), 0644);
	for (size_t i = 0; scripts && scripts[i]; i++) {
		snprintf(path, sizeof(path), "%s/DEBIAN/%s", root, scripts[i]);
		write_file(path, "#!/bin/sh\nexit 0\n", 17, 0755);
	}
	snprintf(path, sizeof(path), "%s/usr", root);
	make_dir(path);
	snprintf(path, sizeof(path), "%s/usr/README", root);
	write_file(path, "hello\n", 6, 0644);
	snprintf(out, outlen, "%s/%s.deb", tmp, name);
	argv[argc++] = "dpkg-deb";
	argv[argc++] = "--root-owner-group";
	if (nocheck)
		argv[argc++] = "--nocheck";
	if (z)
		argv[argc++] = (char *)z;
	argv[argc++] = "--build";
	argv[argc++] = root;
	argv[argc++] = out;
	argv[argc] = NULL;
	return run(argv);
}

static unsigned char *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	unsigned char *buf;
	struct stat st;

	assert_non_null(f);
	assert_int_equal(fstat(fileno(f), &st), 0);
	assert_true(st.st_size > 0);
	buf = malloc((size_t)st.st_size);
	assert_non_null(buf);
	*len = fread(buf, 1, (size_t)st.st_size, f);
	assert_int_equal(*len, (size_t)st.st_size);
	fclose(f);
	return buf;
}

struct member {
	const char *name;
	const void *data;
	size_t len;
	const char *symlink; /* a symbolic link to this instead of a file */
};

/* An ar (`ar`) or tar archive of the members, compressed with gzip or not, in a new
 * buffer of *len bytes. */
static unsigned char *archive(int ar, int gzip, const struct member *m, size_t n, size_t *len)
{
	struct archive *a = archive_write_new();
	size_t cap = 4096 * (n + 4);
	unsigned char *buf;

	for (size_t i = 0; i < n; i++)
		cap += m[i].len;
	assert_non_null(buf = malloc(cap));
	assert_non_null(a);
	assert_non_null(buf);
	assert_int_equal(ar ? archive_write_set_format_ar_svr4(a)
			    : archive_write_set_format_gnutar(a),
			 ARCHIVE_OK);
	if (gzip)
		assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
	/* no padding to a block: an ar must end where its last member does */
	assert_int_equal(archive_write_set_bytes_in_last_block(a, 1), ARCHIVE_OK);
	assert_int_equal(archive_write_open_memory(a, buf, cap, len), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *e = archive_entry_new();

		archive_entry_set_pathname(e, m[i].name);
		archive_entry_set_mtime(e, 1700000000, 0);
		if (m[i].symlink) {
			archive_entry_set_filetype(e, AE_IFLNK);
			archive_entry_set_perm(e, 0777);
			archive_entry_set_symlink(e, m[i].symlink);
			archive_entry_set_size(e, 0);
		} else {
			archive_entry_set_filetype(e, AE_IFREG);
			archive_entry_set_perm(e, 0644);
			archive_entry_set_size(e, (la_int64_t)m[i].len);
		}
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		if (!m[i].symlink && m[i].len)
			assert_int_equal(archive_write_data(a, m[i].data, m[i].len),
					 (la_ssize_t)m[i].len);
		archive_entry_free(e);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
	return buf;
}

/* A .deb assembled from `m`: debian-binary 2.0, control.tar.gz of the entries, and a
 * data.tar.gz, unless `ar` gives the outer members itself. */
static unsigned char *crafted(const struct member *m, size_t n, size_t *len)
{
	static const struct member readme = {"./usr/README", "hello\n", 6, NULL};
	size_t clen, dlen;
	unsigned char *c = archive(0, 1, m, n, &clen), *d = archive(0, 1, &readme, 1, &dlen), *deb;
	const struct member outer[] = {
	    {"debian-binary", "2.0\n", 4, NULL},
	    {"control.tar.gz", c, clen, NULL},
	    {"data.tar.gz", d, dlen, NULL},
	};

	deb = archive(1, 0, outer, 3, len);
	free(c);
	free(d);
	return deb;
}

/* Reads the bytes, and checks the outcome; `why` is a piece of the reason. */
static void refused(const void *data, size_t len, int rc, const char *why)
{
	struct sw_deb_info info;
	char err[512] = "";
	int got = sw_deb_read_mem(data, len, &info, err, sizeof(err));

	if (got != rc || !strstr(err, why))
		fail_msg("expected %d \"...%s...\", got %d \"%s\"", rc, why, got, err);
	assert_string_equal(info.pkg.name, "");
	assert_int_equal(info.has_scripts, 0);
}

/* ---- the tests ---- */

/* Every compression dpkg-deb writes control.tar with, read from a file and from memory. */
static void test_compressions(void **state)
{
	static const struct {
		const char *z, *member;
	} v[] = {
	    {NULL, NULL}, /* dpkg-deb's default, whatever it is */
	    {"-Zxz", "control.tar.xz"},
	    {"-Zgzip", "control.tar.gz"},
	    {"-Zzstd", "control.tar.zst"},
	    {"-Znone", "control.tar"},
	};
	char path[256], name[32], err[512];

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(*v); i++) {
		struct sw_deb_info info, mem;
		struct archive *a = archive_read_new();
		struct archive_entry *e;
		unsigned char *bytes;
		size_t len;

		snprintf(name, sizeof(name), "z%zu", i);
		if (build(name, control, NULL, v[i].z, 0, path, sizeof(path)) != 0) {
			/* zstd came with dpkg 1.21.18 */
			if (v[i].z && strcmp(v[i].z, "-Zzstd") == 0) {
				print_message("dpkg-deb cannot write zstd; not tested\n");
				continue;
			}
			fail_msg("dpkg-deb %s --build failed", v[i].z ? v[i].z : "");
		}
		err[0] = '\0';
		if (sw_deb_read(path, &info, err, sizeof(err)) != 0)
			fail_msg("%s: %s", v[i].z ? v[i].z : "default", err);
		assert_string_equal(info.pkg.name, "hello-sw");
		assert_string_equal(info.pkg.version, "1:2.3-4+deb12u1");
		assert_string_equal(info.pkg.arch, "amd64");
		assert_int_equal(info.has_scripts, 0);

		bytes = slurp(path, &len);
		assert_int_equal(sw_deb_read_mem(bytes, len, &mem, err, sizeof(err)), 0);
		assert_memory_equal(&mem, &info, sizeof(info));
		/* the member is the one named, so each decompressor was used */
		assert_non_null(a);
		assert_int_equal(archive_read_support_format_ar(a), ARCHIVE_OK);
		assert_int_equal(archive_read_open_memory(a, bytes, len), ARCHIVE_OK);
		assert_int_equal(archive_read_next_header(a, &e), ARCHIVE_OK);
		assert_int_equal(archive_read_next_header(a, &e), ARCHIVE_OK);
		if (v[i].member)
			assert_string_equal(archive_entry_pathname(e), v[i].member);
		archive_read_free(a);
		free(bytes);
	}
}

static void test_scripts(void **state)
{
	static const char *const postinst[] = {"postinst", NULL};
	static const char *const all[] = {"preinst", "postinst", "prerm", "postrm", NULL};
	struct sw_deb_info info;
	char path[256], err[512] = "";

	(void)state;
	assert_int_equal(build("post", control, postinst, NULL, 0, path, sizeof(path)), 0);
	assert_int_equal(sw_deb_read(path, &info, err, sizeof(err)), 0);
	assert_int_equal(info.has_scripts, 1);
	assert_string_equal(info.pkg.name, "hello-sw");
	assert_int_equal(build("all4", control, all, "-Zgzip", 0, path, sizeof(path)), 0);
	assert_int_equal(sw_deb_read(path, &info, err, sizeof(err)), 0);
	assert_int_equal(info.has_scripts, 1);
}

/* A package cut short anywhere is refused, in memory and in a file. */
static void test_truncated(void **state)
{
	struct sw_deb_info info;
	char path[256], cut[256], err[512];
	unsigned char *bytes;
	size_t len;

	(void)state;
	assert_int_equal(build("whole", control, NULL, "-Zgzip", 0, path, sizeof(path)), 0);
	bytes = slurp(path, &len);
	assert_int_equal(sw_deb_read_mem(bytes, len, &info, err, sizeof(err)), 0);
	for (size_t n = 0; n < len; n++) {
		err[0] = '\0';
		if (sw_deb_read_mem(bytes, n, &info, err, sizeof(err)) != SW_EINVAL ||
		    strncmp(err, "not a Debian package: ", 22) != 0)
			fail_msg("%zu of %zu bytes: read, or refused as \"%s\"", n, len, err);
	}
	/* a file is skipped over, not read, past control.tar: its size must tell */
	snprintf(cut, sizeof(cut), "%s/cut.deb", tmp);
	write_file(cut, bytes, len - 1, 0644);
	assert_int_equal(sw_deb_read(cut, &info, err, sizeof(err)), SW_EINVAL);
	assert_non_null(strstr(err, "data.tar.gz is cut short"));
	write_file(cut, bytes, len / 2, 0644);
	assert_int_equal(sw_deb_read(cut, &info, err, sizeof(err)), SW_EINVAL);
	write_file(cut, bytes, 0, 0644);
	assert_int_equal(sw_deb_read(cut, &info, err, sizeof(err)), SW_EINVAL);
	free(bytes);
}

static void test_not_ar(void **state)
{
	const struct member m[] = {
	    {"debian-binary", "2.0\n", 4, NULL},
	    {"control", control, sizeof(control) - 1, NULL},
	};
	struct sw_deb_info info;
	unsigned char *tar;
	char err[512];
	size_t len;

	(void)state;
	tar = archive(0, 0, m, 2, &len);
	refused(tar, len, SW_EINVAL, "not a Debian package: it is not an ar archive");
	free(tar);
	refused("", 0, SW_EINVAL, "not an ar archive");
	refused("!<arch>\n", 8, SW_EINVAL, "it has no debian-binary member");
	refused("Package: x\n", 11, SW_EINVAL, "not an ar archive");
	assert_int_equal(sw_deb_read("/nonexistent/x.deb", &info, err, sizeof(err)), SW_ENOTFOUND);
	assert_int_equal(sw_deb_read(tmp, &info, err, sizeof(err)), SW_EIO);
}

/* The ar's members: their order, names, and debian-binary. */
static void test_members(void **state)
{
	const struct member ctl[] = {{"./control", control, sizeof(control) - 1, NULL}};
	struct member outer[5];
	struct sw_deb_info info;
	unsigned char *c, *deb;
	size_t clen, len;
	char err[512] = "";

	(void)state;
	c = archive(0, 1, ctl, 1, &clen);
#define DEB(...)                                                                                   \
	do {                                                                                       \
		const struct member o[] = {__VA_ARGS__};                                           \
		memcpy(outer, o, sizeof(o));                                                       \
		deb = archive(1, 0, outer, sizeof(o) / sizeof(*o), &len);                          \
	} while (0)
#define BIN(v)                                                                                     \
	{                                                                                          \
		"debian-binary", v, sizeof(v) - 1, NULL                                            \
	}
#define CTL                                                                                        \
	{                                                                                          \
		"control.tar.gz", c, clen, NULL                                                    \
	}
#define DATA                                                                                       \
	{                                                                                          \
		"data.tar.xz", "x", 1, NULL                                                        \
	}
	/* as built, and with the members deb(5) tells readers to pass over */
	DEB(BIN("2.0\n"), CTL, DATA);
	assert_int_equal(sw_deb_read_mem(deb, len, &info, err, sizeof(err)), 0);
	assert_string_equal(info.pkg.name, "hello-sw");
	free(deb);
	DEB(BIN("2.9\nmore to come\n"), {"_sig", "s", 1, NULL}, CTL, {"_x", "", 0, NULL}, DATA);
	assert_int_equal(sw_deb_read_mem(deb, len, &info, err, sizeof(err)), 0);
	free(deb);
	DEB(BIN("2.0\n"), CTL, DATA, {"trailer", "t", 1, NULL});
	assert_int_equal(sw_deb_read_mem(deb, len, &info, err, sizeof(err)), 0);
	free(deb);

	DEB(CTL, DATA);
	refused(deb, len, SW_EINVAL, "its first member is not debian-binary");
	free(deb);
	DEB(CTL, BIN("2.0\n"), DATA);
	refused(deb, len, SW_EINVAL, "its first member is not debian-binary");
	free(deb);
	DEB(BIN("3.0\n"), CTL, DATA);
	refused(deb, len, SW_EINVAL, "its format (debian-binary) is not 2.x");
	free(deb);
	DEB(BIN("2.\n"), CTL, DATA);
	refused(deb, len, SW_EINVAL, "is not 2.x");
	free(deb);
	DEB(BIN("20.0\n"), CTL, DATA);
	refused(deb, len, SW_EINVAL, "is not 2.x");
	free(deb);
	DEB(BIN("2.0\n"), DATA, CTL);
	refused(deb, len, SW_EINVAL, "data.tar.xz comes before control.tar");
	free(deb);
	DEB(BIN("2.0\n"), {"extra", "x", 1, NULL}, CTL, DATA);
	refused(deb, len, SW_EINVAL, "an unexpected member before control.tar");
	free(deb);
	DEB(BIN("2.0\n"), CTL, CTL, DATA);
	refused(deb, len, SW_EINVAL, "two control.tar members");
	free(deb);
	DEB(BIN("2.0\n"), CTL);
	refused(deb, len, SW_EINVAL, "it has no data.tar member");
	free(deb);
	DEB(BIN("2.0\n"), {"data.tar.rar", "x", 1, NULL});
	refused(deb, len, SW_EINVAL, "an unexpected member before control.tar");
	free(deb);
	DEB(BIN("2.0\n"), {"control.tar.bz2", c, clen, NULL}, DATA);
	refused(deb, len, SW_EINVAL, "an unexpected member before control.tar");
	free(deb);
	/* the name says the compression: a gzip stream is not read as xz, nor as none */
	DEB(BIN("2.0\n"), {"control.tar.xz", c, clen, NULL}, DATA);
	refused(deb, len, SW_EINVAL, "control.tar.xz");
	free(deb);
	DEB(BIN("2.0\n"), {"control.tar", c, clen, NULL}, DATA);
	refused(deb, len, SW_EINVAL, "control.tar");
	free(deb);
#undef DEB
#undef BIN
#undef CTL
#undef DATA
	free(c);
}

/* What control.tar holds. */
static void test_control_tar(void **state)
{
	struct sw_deb_info info;
	unsigned char *deb, *plain, *big;
	size_t len, plen;
	char err[512] = "";

	(void)state;
	{
		const struct member m[] = {
		    {"./", NULL, 0, NULL},
		    {"./md5sums", "", 0, NULL},
		    {"control", control, sizeof(control) - 1, NULL},
		    {"./prerm", "#!/bin/sh\n", 10, NULL},
		};
		deb = crafted(m, 4, &len);
		assert_int_equal(sw_deb_read_mem(deb, len, &info, err, sizeof(err)), 0);
		assert_string_equal(info.pkg.arch, "amd64");
		assert_int_equal(info.has_scripts, 1);
		free(deb);
	}
	{
		/* a script deeper down is not the package's */
		const struct member m[] = {
		    {"./control", control, sizeof(control) - 1, NULL},
		    {"./sub/postinst", "#!/bin/sh\n", 10, NULL},
		};
		deb = crafted(m, 2, &len);
		assert_int_equal(sw_deb_read_mem(deb, len, &info, err, sizeof(err)), 0);
		assert_int_equal(info.has_scripts, 0);
		free(deb);
	}
	{
		/* both land on the same file when dpkg unpacks them */
		const struct member m[] = {
		    {"./control", control, sizeof(control) - 1, NULL},
		    {".//./control", "Package: evil\nVersion: 1\nArchitecture: all\n", 42, NULL},
		};
		deb = crafted(m, 2, &len);
		refused(deb, len, SW_EINVAL, "control.tar.gz holds two control files");
		free(deb);
	}
	{
		const struct member m[] = {{"./control", NULL, 0, "/etc/passwd"}};
		deb = crafted(m, 1, &len);
		refused(deb, len, SW_EINVAL, "the control file is not a regular file");
		free(deb);
	}
	{
		const struct member m[] = {
		    {"./sub/control", control, sizeof(control) - 1, NULL},
		    {"../control", control, sizeof(control) - 1, NULL},
		};
		deb = crafted(m, 2, &len);
		refused(deb, len, SW_EINVAL, "control.tar.gz holds no control file");
		free(deb);
	}
	{
		const struct member m[] = {{"./control", "", 0, NULL}};
		deb = crafted(m, 1, &len);
		refused(deb, len, SW_EINVAL, "the control file is empty");
		free(deb);
	}
	/* gzip, but not of a tar */
	{
		struct archive *a = archive_write_new();
		struct archive_entry *e = archive_entry_new();
		unsigned char *z = malloc(4096);
		size_t zlen;

		assert_non_null(z);
		assert_int_equal(archive_write_set_format_raw(a), ARCHIVE_OK);
		assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
		assert_int_equal(archive_write_open_memory(a, z, 4096, &zlen), ARCHIVE_OK);
		archive_entry_set_filetype(e, AE_IFREG);
		archive_entry_set_pathname(e, "raw");
		archive_entry_set_size(e, (la_int64_t)(sizeof(control) - 1));
		assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
		assert_int_equal(archive_write_data(a, control, sizeof(control) - 1),
				 (la_ssize_t)(sizeof(control) - 1));
		archive_entry_free(e);
		assert_int_equal(archive_write_close(a), ARCHIVE_OK);
		archive_write_free(a);
		const struct member o[] = {
		    {"debian-binary", "2.0\n", 4, NULL},
		    {"control.tar.gz", z, zlen, NULL},
		    {"data.tar", "", 0, NULL},
		};
		deb = archive(1, 0, o, 3, &len);
		refused(deb, len, SW_EINVAL, "not a Debian package: control.tar.gz: ");
		free(deb);
		free(z);
	}
	/* bounds: control.tar unpacked, and the control file */
	big = calloc(1, SW_DEB_CONTROL_MAX);
	assert_non_null(big);
	{
		const struct member m[] = {
		    {"./control", control, sizeof(control) - 1, NULL},
		    {"./zeros", big, SW_DEB_CONTROL_MAX, NULL},
		};
		deb = crafted(m, 2, &len);
		assert_true(len < 1024 * 1024); /* a small file that unpacks large */
		refused(deb, len, SW_EINVAL,
			"control.tar.gz is larger than 16777216 bytes unpacked");
		free(deb);
	}
	/* a control file of a stanza and a continuation line of x's */
	memset(big, 'x', SW_DPKG_CONTROL_MAX + 1);
	memcpy(big, control, sizeof(control) - 1);
	big[sizeof(control) - 1] = ' ';
	big[SW_DPKG_CONTROL_MAX] = '\n';
	{
		const struct member m[] = {{"./control", big, SW_DPKG_CONTROL_MAX + 1, NULL}};
		deb = crafted(m, 1, &len);
		refused(deb, len, SW_EINVAL, "the control file is larger than 1048576 bytes");
		free(deb);
	}
	big[SW_DPKG_CONTROL_MAX - 1] = '\n';
	{
		const struct member m[] = {{"./control", big, SW_DPKG_CONTROL_MAX, NULL}};
		deb = crafted(m, 1, &len);
		assert_int_equal(sw_deb_read_mem(deb, len, &info, err, sizeof(err)), 0);
		assert_string_equal(info.pkg.name, "hello-sw");
		free(deb);
	}
	free(big);
	/* uncompressed control.tar too */
	{
		const struct member m[] = {{"./control", control, sizeof(control) - 1, NULL}};
		plain = archive(0, 0, m, 1, &plen);
		const struct member o[] = {
		    {"debian-binary", "2.0\n", 4, NULL},
		    {"control.tar", plain, plen, NULL},
		    {"data.tar", "", 0, NULL},
		};
		deb = archive(1, 0, o, 3, &len);
		assert_int_equal(sw_deb_read_mem(deb, len, &info, err, sizeof(err)), 0);
		assert_string_equal(info.pkg.version, "1:2.3-4+deb12u1");
		free(deb);
		free(plain);
	}
}

/* Control files dpkg-deb builds only with --nocheck. */
static void test_bad_control(void **state)
{
	static const struct {
		const char *control, *why;
	} v[] = {
	    {"Version: 1.0\nArchitecture: all\n", "the control file has no Package field"},
	    {"Package: hello-sw\nVersion: 1.0 beta\nArchitecture: all\n",
	     "the control file has a Version field that is not a valid version"},
	    {"Package: Hello_SW\nVersion: 1.0\nArchitecture: all\n",
	     "the control file has a Package field that is not a package name"},
	    {"Package: hello-sw\nArchitecture: all\n", "the control file has no Version field"},
	    {"Package: hello-sw\nVersion: 1.0\n", "the control file has no Architecture field"},
	    {"Package: hello-sw\nVersion: 1.0\nArchitecture: AMD64\n",
	     "has an Architecture field that is not a valid architecture"},
	};
	char path[256], name[32];
	unsigned char *bytes;
	size_t len;

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(*v); i++) {
		snprintf(name, sizeof(name), "bad%zu", i);
		assert_int_equal(build(name, v[i].control, NULL, NULL, 1, path, sizeof(path)), 0);
		bytes = slurp(path, &len);
		refused(bytes, len, SW_EINVAL, v[i].why);
		free(bytes);
	}
}

#define S(text) text, sizeof(text) - 1

/* The control file on its own, and as the status file's reader sees the same stanza. */
static void test_control_parse(void **state)
{
	static const struct {
		const char *text;
		size_t len;
		const char *why;
	} bad[] = {
	    {S(""), "the control file is empty"},
	    {S("\n\r\n"), "the control file is empty"},
	    {S("Package: aa\nVersion: 1\nArchitecture: all\n\nPackage: bb\nVersion: 1\n"
	       "Architecture: all\n"),
	     "the control file holds more than one stanza"},
	    {S("Package: aa\nVersion: 1\nArchitecture: all\n\n more\n"),
	     "the control file holds more than one stanza"},
	    {S("Package: aa\nPackage: bb\nVersion: 1\nArchitecture: all\n"),
	     "the control file has two Package fields"},
	    {S("Package: aa\nVersion 1\nArchitecture: all\n"),
	     "the control file has a line that is not a field (line 2)"},
	    {S("Package: aa\nVersion: 1\nArchitecture: amd64-and-a-very-long-architecture-name\n"),
	     "the control file has an over-long Architecture field (more than 32 bytes)"},
	    {S("Package: aa\nVersion: 1\nArchitecture: all\0\n"),
	     "the control file has a NUL byte in its Architecture field"},
	    {S("Package: aa\nVersion: \nArchitecture: all\n"),
	     "the control file has no Version field"},
	};
	/* stanzas the two readers must judge alike */
	static const char *const alike[] = {
	    "Package: aa\nVersion: 1\nArchitecture: all\n",
	    "Package: a\nVersion: 1\nArchitecture: all\n",
	    "Package: aa\nVersion: 1:\nArchitecture: all\n",
	    "Package: aa\nVersion: 1 2\nArchitecture: all\n",
	    "Package: aa\nVersion: 1\nArchitecture: i386\n",
	    "Package: aa\nVersion: 1\nArchitecture: x86_64\n",
	    "Package: aa\nVersion: 1\n",
	    "Package: aa\nVersion: 1\nArchitecture: all\nno colon\n",
	    "Package: .aa\nVersion: 1\nArchitecture: all\n",
	    "Package: a+b.c-d\nVersion: 0~~\nArchitecture: all\n",
	};
	static const char good[] = "\n\r\nDescription: first\n"
				   " Package: not-this\n"
				   "package: libfoo2\r\n"
				   "VERSION:\t2.0~rc1-3 \r\n"
				   "Status: a field a control file does not have, and is not read "
				   "here however long it is\n"
				   "Architecture: arm64\n"
				   "\n\n";
	struct sw_dpkg_pkg p;
	struct sw_dpkg_list l = {0};
	char err[256], text[512], *big;
	int n;

	(void)state;
	assert_int_equal(sw_dpkg_control_parse(good, sizeof(good) - 1, &p, err, sizeof(err)), 0);
	assert_string_equal(p.name, "libfoo2");
	assert_string_equal(p.version, "2.0~rc1-3");
	assert_string_equal(p.arch, "arm64");
	assert_int_equal(p.seq, 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		err[0] = '\0';
		if (sw_dpkg_control_parse(bad[i].text, bad[i].len, &p, err, sizeof(err)) !=
			SW_EINVAL ||
		    strcmp(err, bad[i].why) != 0)
			fail_msg("case %zu: got \"%s\"", i, err);
		assert_string_equal(p.name, "");
	}
	for (size_t i = 0; i < sizeof(alike) / sizeof(*alike); i++) {
		int rc = sw_dpkg_control_parse(alike[i], strlen(alike[i]), &p, err, sizeof(err));

		n = snprintf(text, sizeof(text), "%sStatus: install ok installed\n", alike[i]);
		assert_int_equal(sw_dpkg_parse(text, (size_t)n, &l, err, sizeof(err)), 0);
		if ((rc == 0) != (l.n == 1))
			fail_msg("\"%s\": the control reader says %d, the status reader lists %zu",
				 alike[i], rc, l.n);
		if (rc == 0) {
			assert_string_equal(p.name, l.v[0].name);
			assert_string_equal(p.version, l.v[0].version);
			assert_string_equal(p.arch, l.v[0].arch);
		}
		sw_dpkg_list_free(&l);
	}
	big = calloc(1, SW_DPKG_CONTROL_MAX + 1);
	assert_non_null(big);
	assert_int_equal(sw_dpkg_control_parse(big, SW_DPKG_CONTROL_MAX + 1, &p, err, sizeof(err)),
			 SW_ETOOBIG);
	free(big);
}

static void remove_all(const char *path)
{
	struct stat st;
	struct dirent *de;
	char child[1024];
	DIR *d;

	if (lstat(path, &st) < 0)
		return;
	if (S_ISDIR(st.st_mode)) {
		d = opendir(path);
		while (d && (de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			snprintf(child, sizeof(child), "%s/%s", path, de->d_name);
			remove_all(child);
		}
		if (d)
			closedir(d);
		rmdir(path);
	} else {
		unlink(path);
	}
}

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmp, sizeof(tmp), "/tmp/test_deb.XXXXXX");
	return mkdtemp(tmp) ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	remove_all(tmp);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_compressions), cmocka_unit_test(test_scripts),
	    cmocka_unit_test(test_truncated),	 cmocka_unit_test(test_not_ar),
	    cmocka_unit_test(test_members),	 cmocka_unit_test(test_control_tar),
	    cmocka_unit_test(test_bad_control),	 cmocka_unit_test(test_control_parse),
	};
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
