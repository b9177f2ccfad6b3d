#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"
#include "pkg.h"
#include "pki.h"
#include "util.h"

/* The install tree every test packages, and the keys: generating them is the slow part. */
struct fixture {
	char dir[64];	   /* a temporary folder for everything */
	char tree[128];	   /* dir/tree: an install tree */
	char pkg[128];	   /* dir/sp.tar.gz: built from the tree */
	char *key, *pub;   /* the site's signing key */
	char *okey, *opub; /* another site's */
	char big[200000];  /* binary contents of lib/deep/a/b/c.dat */
};

struct tfile {
	const char *path;
	const char *data;
	size_t len;
	unsigned mode;
};

static const char tool[] = "#!/bin/sh\necho hi\n";
static const char manpage[] = ".TH TOOL 1\n";
static const char sql[] = "CREATE TABLE upgraded (id INTEGER);\n";

static void write_file(const char *dir, const char *rel, const void *data, size_t len,
		       unsigned mode)
{
	char path[512], *slash;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	for (slash = strchr(path + strlen(dir) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
		*slash = '\0';
		mkdir(path, 0755);
		*slash = '/';
	}
	assert_int_equal(sw_file_write_atomic(path, data, len, 0600, NULL, 0), 0);
	assert_int_equal(chmod(path, mode), 0);
}

static int group_setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[512] = "";
	struct sw_pkg_built info;

	if (f == NULL)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_pkg.XXXXXX");
	if (mkdtemp(f->dir) == NULL)
		return -1;
	snprintf(f->tree, sizeof(f->tree), "%s/tree", f->dir);
	snprintf(f->pkg, sizeof(f->pkg), "%s/sp.tar.gz", f->dir);
	mkdir(f->tree, 0755);
	for (size_t i = 0; i < sizeof(f->big); i++)
		f->big[i] = (char)(i * 7919 % 251);
	write_file(f->tree, "bin/tool", tool, strlen(tool), 0755);
	write_file(f->tree, "share/man/man1/tool.1", manpage, strlen(manpage), 0644);
	write_file(f->tree, "share/siteward/sql/006_upgrade.sql", sql, strlen(sql), 0644);
	write_file(f->tree, "lib/deep/a/b/c.dat", f->big, sizeof(f->big), 0600);
	write_file(f->tree, "etc/empty", "", 0, 0644);
	if (sw_pki_sign_key_generate(&f->key, &f->pub, err, sizeof(err)) != 0 ||
	    sw_pki_sign_key_generate(&f->okey, &f->opub, err, sizeof(err)) != 0 ||
	    sw_pkg_build(f->tree, "0.2.0", "0.1.0", f->key, f->pkg, &info, err, sizeof(err)) != 0) {
		print_error("fixture: %s\n", err);
		return -1;
	}
	*state = f;
	return 0;
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
		chmod(path, 0700);
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

static int group_teardown(void **state)
{
	struct fixture *f = *state;

	if (f == NULL)
		return 0;
	remove_all(f->dir);
	free(f->key);
	free(f->pub);
	free(f->okey);
	free(f->opub);
	free(f);
	return 0;
}

/* 1 if `dir` holds an entry whose name starts with `prefix`. */
static int has_entry(const char *dir, const char *prefix)
{
	struct dirent *de;
	DIR *d = opendir(dir);
	int found = 0;

	while (d && (de = readdir(d)) != NULL)
		if (strncmp(de->d_name, prefix, strlen(prefix)) == 0)
			found = 1;
	if (d)
		closedir(d);
	return found;
}

/* ---- versions and paths ---- */

static void test_version_cmp(void **state)
{
	(void)state;
	assert_true(sw_version_cmp("0.1.0", "0.2.0") < 0);
	assert_true(sw_version_cmp("0.2.0", "0.1.0") > 0);
	assert_int_equal(sw_version_cmp("1.2.3", "1.2.3"), 0);
	assert_true(sw_version_cmp("1.9.0", "1.10.0") < 0);
	assert_true(sw_version_cmp("1.10.3", "1.10") > 0);
	assert_int_equal(sw_version_cmp("1.2", "1.2.0"), 0);
	assert_int_equal(sw_version_cmp("01.002", "1.2"), 0);
	assert_true(sw_version_cmp("0", "0.1.0") < 0);
	assert_true(sw_version_cmp("99999999999999999999999.1", "99999999999999999999998.9") > 0);
	assert_true(sw_version_cmp("1.2.0", "1.2.0-rc1") < 0);
	assert_true(sw_version_cmp("1.2.0-rc1", "1.2.0-rc2") < 0);
	assert_true(sw_version_cmp("1.2a", "1.2b") < 0);
	assert_true(sw_version_cmp("1.10a", "1.9z") > 0);
	assert_true(sw_version_cmp("1.x", "1.1") > 0);

	assert_true(sw_version_valid("0"));
	assert_true(sw_version_valid("0.2.0"));
	assert_true(sw_version_valid("1.10.3-rc1+build.5"));
	assert_true(sw_version_valid("12345678901234567890123456789012"));
	assert_false(sw_version_valid("123456789012345678901234567890123"));
	assert_false(sw_version_valid(""));
	assert_false(sw_version_valid(NULL));
	assert_false(sw_version_valid("v1.0"));
	assert_false(sw_version_valid(".1"));
	assert_false(sw_version_valid("1.0 beta"));
	assert_false(sw_version_valid("1/0"));
	assert_false(sw_version_valid("1_0"));
}

static void test_path_valid(void **state)
{
	const char *why;

	(void)state;
	assert_true(sw_pkg_path_valid("bin/siteward-agent", &why));
	assert_null(why);
	assert_true(sw_pkg_path_valid("a", NULL));
	assert_true(sw_pkg_path_valid("share/man/man1/x.1", NULL));
	assert_true(sw_pkg_path_valid("a/..b/c..", NULL));
	assert_false(sw_pkg_path_valid("../x", &why));
	assert_string_equal(why, "path leaves the package");
	assert_false(sw_pkg_path_valid("a/../../x", &why));
	assert_string_equal(why, "path leaves the package");
	assert_false(sw_pkg_path_valid("a/..", &why));
	assert_string_equal(why, "path leaves the package");
	assert_false(sw_pkg_path_valid("/etc/passwd", &why));
	assert_string_equal(why, "absolute path");
	assert_false(sw_pkg_path_valid("", &why));
	assert_false(sw_pkg_path_valid("a//b", &why));
	assert_string_equal(why, "empty path component");
	assert_false(sw_pkg_path_valid("a/", &why));
	assert_false(sw_pkg_path_valid("./a", &why));
	assert_false(sw_pkg_path_valid("a\\b", &why));
	assert_string_equal(why, "backslash in path");
	assert_false(sw_pkg_path_valid("a\nb", &why));
	assert_string_equal(why, "control character in path");
	assert_false(sw_pkg_path_valid("a\x7f", &why));
	assert_false(sw_pkg_path_valid("caf\xc3\xa9", &why));
	assert_string_equal(why, "path is not printable ASCII");
}

/* ---- the manifest parser ---- */

static const char sha_a[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

static int parse(const char *json, char *err, size_t errlen)
{
	struct sw_pkg_manifest *m = NULL;
	int rc = sw_pkg_manifest_parse(json, strlen(json), &m, err, errlen);

	if (rc)
		assert_null(m);
	sw_pkg_manifest_free(m);
	return rc;
}

static void test_manifest_parse(void **state)
{
	struct sw_pkg_manifest *m = NULL;
	char err[512], json[2048];
	const char *ok =
	    "{\"format\":1,\"version\":\"0.2.0\",\"min_version\":\"0.1.0\",\"created_at\":5,"
	    "\"files\":[{\"path\":\"share/siteward/sql/006_a.sql\",\"size\":3,\"sha256\":\"%s\","
	    "\"mode\":420},{\"path\":\"bin/x\",\"size\":0,\"sha256\":\"%s\",\"mode\":493}],"
	    "\"migrations\":[\"006_a.sql\"],\"future\":true}";

	(void)state;
	snprintf(json, sizeof(json), ok, sha_a, sha_a);
	assert_int_equal(sw_pkg_manifest_parse(json, strlen(json), &m, err, sizeof(err)), 0);
	assert_int_equal(m->format, 1);
	assert_string_equal(m->version, "0.2.0");
	assert_string_equal(m->min_version, "0.1.0");
	assert_int_equal(m->created_at, 5);
	assert_int_equal(m->nfiles, 2);
	/* Sorted by path. */
	assert_string_equal(m->files[0].path, "bin/x");
	assert_int_equal(m->files[0].mode, 0755);
	assert_int_equal(m->files[1].size, 3);
	assert_int_equal(m->total_size, 3);
	assert_int_equal(m->nmigrations, 1);
	assert_string_equal(m->migrations[0], "006_a.sql");
	assert_non_null(sw_pkg_manifest_find(m, "bin/x"));
	assert_null(sw_pkg_manifest_find(m, "bin"));
	assert_null(sw_pkg_manifest_find(m, "bin/x/y"));
	sw_pkg_manifest_free(m);
	sw_pkg_manifest_free(NULL);

#define FILES(body)                                                                                \
	"{\"format\":1,\"version\":\"0.2.0\",\"min_version\":\"0\",\"created_at\":1,\"files\":"    \
	"[" body "],\"migrations\":[]}"
#define F(path, mode) "{\"path\":\"" path "\",\"size\":1,\"sha256\":\"" SHA "\",\"mode\":" #mode "}"
#define SHA	      "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	assert_int_equal(parse(FILES(F("a", 420)), err, sizeof(err)), 0);
	assert_int_equal(parse(FILES(""), err, sizeof(err)), 0);
	assert_int_equal(parse(FILES(F("../a", 420)), err, sizeof(err)), SW_EDENIED);
	assert_string_equal(err, "manifest: ../a: path leaves the package");
	assert_int_equal(parse(FILES(F("/a", 420)), err, sizeof(err)), SW_EDENIED);
	assert_string_equal(err, "manifest: /a: absolute path");
	assert_int_equal(parse(FILES(F("a", 420) "," F("a", 420)), err, sizeof(err)), SW_EDENIED);
	assert_string_equal(err, "manifest: a: listed twice");
	assert_int_equal(parse(FILES(F("a", 420) "," F("a/b", 420)), err, sizeof(err)), SW_EDENIED);
	assert_string_equal(err, "manifest: a: listed as a file and as the folder of a/b");
	assert_int_equal(parse(FILES(F("a", 511)), err, sizeof(err)), SW_EDENIED);
	assert_int_equal(parse(FILES(F("a", 2541)), err, sizeof(err)), SW_EINVAL);
	assert_int_equal(parse(FILES(F("a", -1)), err, sizeof(err)), SW_EINVAL);
	assert_int_equal(parse(FILES("{\"path\":\"a\",\"size\":1,\"sha256\":\"ABC\",\"mode\":420}"),
			       err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(
	    parse(FILES("{\"path\":\"a\",\"size\":536870913,\"sha256\":\"" SHA "\",\"mode\":420}"),
		  err, sizeof(err)),
	    SW_EINVAL);
	assert_int_equal(
	    parse(FILES("{\"path\":\"a\",\"sha256\":\"" SHA "\",\"mode\":420}"), err, sizeof(err)),
	    SW_EINVAL);
	assert_int_equal(parse(FILES("1"), err, sizeof(err)), SW_EINVAL);
	/* Five files of 512 MiB add up to more than 2 GiB. */
	{
		char many[4096] = "";
		const char *big =
		    "{\"path\":\"f%d\",\"size\":536870912,\"sha256\":\"" SHA "\",\"mode\":420}%s";
		char body[3000] = "";
		for (int i = 0; i < 5; i++) {
			char one[200];
			snprintf(one, sizeof(one), big, i, i < 4 ? "," : "");
			strcat(body, one);
		}
		snprintf(many, sizeof(many),
			 "{\"format\":1,\"version\":\"1\",\"min_version\":\"0\",\"created_at\":1,"
			 "\"files\":[%s],\"migrations\":[]}",
			 body);
		assert_int_equal(parse(many, err, sizeof(err)), SW_ETOOBIG);
	}
	assert_int_equal(parse("{\"format\":2,\"version\":\"0.2.0\",\"min_version\":\"0\","
			       "\"created_at\":1,\"files\":[],\"migrations\":[]}",
			       err, sizeof(err)),
			 SW_EINVAL);
	assert_string_equal(err, "manifest: package format 2 is not one this siteward reads (1)");
	assert_int_equal(parse("{\"format\":1,\"version\":\"0.2.0\",\"min_version\":\"0.3\","
			       "\"created_at\":1,\"files\":[],\"migrations\":[]}",
			       err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(parse("{\"format\":1,\"version\":\"v2\",\"min_version\":\"0\","
			       "\"created_at\":1,\"files\":[],\"migrations\":[]}",
			       err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(parse("{\"format\":1,\"version\":\"2\",\"min_version\":\"0\","
			       "\"created_at\":-1,\"files\":[],\"migrations\":[]}",
			       err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(parse("{\"format\":1,\"version\":\"2\",\"min_version\":\"0\","
			       "\"created_at\":1,\"files\":[]}",
			       err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(parse("{\"format\":1,\"version\":\"2\",\"min_version\":\"0\","
			       "\"created_at\":1,\"files\":[],\"migrations\":[\"006_a.sql\"]}",
			       err, sizeof(err)),
			 SW_EINVAL);
	assert_non_null(strstr(err, "not among the files"));
	assert_int_equal(parse("{\"format\":1,\"version\":\"2\",\"min_version\":\"0\","
			       "\"created_at\":1,\"files\":[],\"migrations\":[\"../x.sql\"]}",
			       err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(parse("{\"format\":1,\"format\":1}", err, sizeof(err)), SW_EINVAL);
	assert_int_equal(parse("[]", err, sizeof(err)), SW_EINVAL);
	assert_int_equal(parse("", err, sizeof(err)), SW_EINVAL);
#undef FILES
#undef F
#undef SHA
}

/* ---- building, verifying and extracting ---- */

static void check_file(const char *dir, const struct tfile *t)
{
	char path[512], *data = NULL;
	size_t len = 0;
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", dir, t->path);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, t->mode);
	assert_int_equal(sw_file_read(path, 1 << 20, &data, &len, NULL, 0), 0);
	assert_int_equal(len, t->len);
	assert_memory_equal(data, t->data, len);
	free(data);
}

static void check_dir(const char *dir, const char *rel)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s%s%s", dir, *rel ? "/" : "", rel);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISDIR(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0755);
}

static void test_build_verify_extract(void **state)
{
	struct fixture *f = *state;
	struct sw_pkg_manifest *m = NULL, *m2 = NULL;
	char err[512] = "", dest[256], out[256], sha[65], *data = NULL;
	struct sw_pkg_built info;
	size_t len;
	const struct tfile files[] = {
	    {"bin/tool", tool, strlen(tool), 0755},
	    {"share/man/man1/tool.1", manpage, strlen(manpage), 0644},
	    {"share/siteward/sql/006_upgrade.sql", sql, strlen(sql), 0644},
	    {"lib/deep/a/b/c.dat", f->big, sizeof(f->big), 0600},
	    {"etc/empty", "", 0, 0644},
	};

	snprintf(out, sizeof(out), "%s/again.tar.gz", f->dir);
	assert_int_equal(
	    sw_pkg_build(f->tree, "1.10.3", NULL, f->key, out, &info, err, sizeof(err)), 0);
	assert_int_equal(info.nfiles, 5);
	assert_int_equal(info.nmigrations, 1);
	assert_int_equal(info.payload_bytes,
			 strlen(tool) + strlen(manpage) + strlen(sql) + sizeof(f->big));
	assert_int_equal(sw_file_read(out, 1 << 26, &data, &len, NULL, 0), 0);
	assert_int_equal(len, info.package_bytes);
	sw_sha256_hex(data, len, sha);
	assert_string_equal(sha, info.package_sha256);
	assert_false(has_entry(f->dir, "again.tar.gz.tmp"));
	/* The memory reader sees the same package. */
	assert_int_equal(sw_pkg_verify_mem(data, len, f->pub, &m2, err, sizeof(err)), 0);
	assert_string_equal(m2->version, "1.10.3");
	assert_string_equal(m2->min_version, "0");
	assert_string_equal(m2->package_sha256, sha);
	sw_pkg_manifest_free(m2);
	free(data);
	unlink(out);

	assert_int_equal(sw_pkg_verify(f->pkg, f->pub, &m, err, sizeof(err)), 0);
	assert_string_equal(m->version, "0.2.0");
	assert_string_equal(m->min_version, "0.1.0");
	assert_true(m->created_at > 1700000000000LL);
	assert_int_equal(m->nfiles, 5);
	assert_int_equal(m->nmigrations, 1);
	assert_string_equal(m->migrations[0], "006_upgrade.sql");
	for (size_t i = 0; i < SW_ARRAY_LEN(files); i++) {
		const struct sw_pkg_file *pf = sw_pkg_manifest_find(m, files[i].path);
		char want[65];
		assert_non_null(pf);
		assert_int_equal(pf->size, files[i].len);
		assert_int_equal(pf->mode, files[i].mode);
		sw_sha256_hex(files[i].data, files[i].len, want);
		assert_string_equal(pf->sha256, want);
	}
	sw_pkg_manifest_free(m);
	assert_int_equal(sw_pkg_verify(f->pkg, f->pub, NULL, err, sizeof(err)), 0);

	snprintf(dest, sizeof(dest), "%s/versions", f->dir);
	mkdir(dest, 0755);
	snprintf(dest, sizeof(dest), "%s/versions/0.2.0/", f->dir);
	assert_int_equal(sw_pkg_extract(f->pkg, f->pub, dest, err, sizeof(err)), 0);
	for (size_t i = 0; i < SW_ARRAY_LEN(files); i++)
		check_file(dest, &files[i]);
	check_dir(dest, "");
	check_dir(dest, "bin");
	check_dir(dest, "lib/deep/a/b");
	check_dir(dest, "share/siteward/sql");
	snprintf(dest, sizeof(dest), "%s/versions", f->dir);
	assert_false(has_entry(dest, ".0.2.0"));

	/* Into a folder that exists already: refused, and what is there is kept. */
	snprintf(dest, sizeof(dest), "%s/versions/0.2.0", f->dir);
	assert_int_equal(sw_pkg_extract(f->pkg, f->pub, dest, err, sizeof(err)), SW_EEXIST);
	assert_non_null(strstr(err, "already exists"));
	check_file(dest, &files[0]);
	/* A symbolic link there counts as existing, even a dangling one. */
	snprintf(dest, sizeof(dest), "%s/versions/link", f->dir);
	assert_int_equal(symlink("/nonexistent", dest), 0);
	assert_int_equal(sw_pkg_extract(f->pkg, f->pub, dest, err, sizeof(err)), SW_EEXIST);
	unlink(dest);
	/* A parent that does not exist is not created. */
	snprintf(dest, sizeof(dest), "%s/nope/0.2.0", f->dir);
	assert_int_equal(sw_pkg_extract(f->pkg, f->pub, dest, err, sizeof(err)), SW_ENOTFOUND);
	snprintf(dest, sizeof(dest), "%s/nope", f->dir);
	assert_int_equal(access(dest, F_OK), -1);
	/* A write that fails halfway (here a file size limit) leaves nothing behind. */
	{
		struct rlimit saved, small;
		assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
		small = saved;
		small.rlim_cur = sizeof(f->big) / 2;
		signal(SIGXFSZ, SIG_IGN);
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
		snprintf(dest, sizeof(dest), "%s/versions/half", f->dir);
		assert_int_equal(sw_pkg_extract(f->pkg, f->pub, dest, err, sizeof(err)), SW_EIO);
		assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
		signal(SIGXFSZ, SIG_DFL);
		assert_non_null(strstr(err, "cannot write lib/deep/a/b/c.dat"));
		assert_int_equal(access(dest, F_OK), -1);
		snprintf(dest, sizeof(dest), "%s/versions", f->dir);
		assert_false(has_entry(dest, ".half"));
	}
	/* Another site's key. */
	assert_int_equal(sw_pkg_verify(f->pkg, f->opub, NULL, err, sizeof(err)), SW_EDENIED);
	assert_string_equal(err, "signature does not match the site's key");
	assert_int_equal(sw_pkg_verify("/nonexistent.tar.gz", f->pub, NULL, err, sizeof(err)),
			 SW_ENOTFOUND);
}

static void test_build_refusals(void **state)
{
	struct fixture *f = *state;
	char tree[256], path[512], out[256], err[512];

	snprintf(out, sizeof(out), "%s/refused.tar.gz", f->dir);
	snprintf(tree, sizeof(tree), "%s/badtree", f->dir);
	mkdir(tree, 0755);
	write_file(tree, "bin/ok", "x", 1, 0755);

	snprintf(path, sizeof(path), "%s/bin/link", tree);
	assert_int_equal(symlink("/etc/passwd", path), 0);
	assert_int_equal(sw_pkg_build(tree, "0.2.0", NULL, f->key, out, NULL, err, sizeof(err)),
			 SW_EDENIED);
	assert_non_null(strstr(err, "bin/link: is a symbolic link"));
	assert_non_null(strstr(err, "outside the install tree"));
	unlink(path);

	snprintf(path, sizeof(path), "%s/fifo", tree);
	assert_int_equal(mkfifo(path, 0644), 0);
	assert_int_equal(sw_pkg_build(tree, "0.2.0", NULL, f->key, out, NULL, err, sizeof(err)),
			 SW_EDENIED);
	assert_non_null(strstr(err, "fifo: is a named pipe"));
	unlink(path);

	write_file(tree, "bin/suid", "x", 1, 04755);
	assert_int_equal(sw_pkg_build(tree, "0.2.0", NULL, f->key, out, NULL, err, sizeof(err)),
			 SW_EDENIED);
	assert_non_null(strstr(err, "bin/suid: has the setuid"));
	snprintf(path, sizeof(path), "%s/bin/suid", tree);
	unlink(path);

	write_file(tree, "bad\\name", "x", 1, 0644);
	assert_int_equal(sw_pkg_build(tree, "0.2.0", NULL, f->key, out, NULL, err, sizeof(err)),
			 SW_EINVAL);
	assert_non_null(strstr(err, "backslash in path"));
	snprintf(path, sizeof(path), "%s/bad\\name", tree);
	unlink(path);

	/* A file over 512 MiB, sparse so it costs nothing. */
	snprintf(path, sizeof(path), "%s/huge", tree);
	{
		int fd = open(path, O_WRONLY | O_CREAT, 0644);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, (off_t)SW_PKG_FILE_MAX + 1), 0);
		close(fd);
	}
	assert_int_equal(sw_pkg_build(tree, "0.2.0", NULL, f->key, out, NULL, err, sizeof(err)),
			 SW_ETOOBIG);
	unlink(path);

	/* Files of 512 MiB each are allowed, but not more than 2 GiB in all. */
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/big%d", tree, i);
		int fd = open(path, O_WRONLY | O_CREAT, 0644);
		assert_true(fd >= 0);
		assert_int_equal(ftruncate(fd, (off_t)SW_PKG_FILE_MAX), 0);
		close(fd);
	}
	assert_int_equal(sw_pkg_build(tree, "0.2.0", NULL, f->key, out, NULL, err, sizeof(err)),
			 SW_ETOOBIG);
	assert_non_null(strstr(err, "more than the 2 GiB"));
	for (int i = 0; i < 4; i++) {
		snprintf(path, sizeof(path), "%s/big%d", tree, i);
		unlink(path);
	}

	assert_int_equal(sw_pkg_build(tree, "v1", NULL, f->key, out, NULL, err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(sw_pkg_build(tree, "0.1", "0.2", f->key, out, NULL, err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(sw_pkg_build(tree, "0.2", NULL, f->pub, out, NULL, err, sizeof(err)),
			 SW_EINVAL);
	assert_int_equal(access(out, F_OK), -1);
	assert_false(has_entry(f->dir, "refused.tar.gz"));

	/* And the tree is good again. */
	assert_int_equal(sw_pkg_build(tree, "0.2.0", NULL, f->key, out, NULL, err, sizeof(err)), 0);
	unlink(out);
}

/* ---- crafted packages ---- */

struct ent {
	const char *name;
	const char *data;
	size_t len;
	int type;	  /* AE_IFREG when 0 */
	const char *link; /* symlink target */
	const char *hard; /* hard link target */
};

static void write_archive(const char *path, const struct ent *e, size_t n, int gzip)
{
	struct archive *a = archive_write_new();

	assert_non_null(a);
	assert_int_equal(archive_write_set_format_pax_restricted(a), ARCHIVE_OK);
	if (gzip)
		assert_int_equal(archive_write_add_filter_gzip(a), ARCHIVE_OK);
	assert_int_equal(archive_write_open_filename(a, path), ARCHIVE_OK);
	for (size_t i = 0; i < n; i++) {
		struct archive_entry *ae = archive_entry_new();
		unsigned type = e[i].type ? (unsigned)e[i].type : AE_IFREG;

		archive_entry_set_pathname(ae, e[i].name);
		archive_entry_set_filetype(ae, type);
		archive_entry_set_perm(ae, 0644);
		if (e[i].link)
			archive_entry_set_symlink(ae, e[i].link);
		if (e[i].hard)
			archive_entry_set_hardlink(ae, e[i].hard);
		archive_entry_set_size(ae,
				       type == AE_IFREG && !e[i].hard ? (la_int64_t)e[i].len : 0);
		assert_int_equal(archive_write_header(a, ae), ARCHIVE_OK);
		if (type == AE_IFREG && !e[i].hard && e[i].len)
			assert_int_equal(archive_write_data(a, e[i].data, e[i].len),
					 (la_ssize_t)e[i].len);
		archive_entry_free(ae);
	}
	assert_int_equal(archive_write_close(a), ARCHIVE_OK);
	archive_write_free(a);
}

/* A manifest listing `files`, as the builder would write it. */
static char *manifest_for(const struct tfile *files, size_t n)
{
	json_t *root = json_object(), *arr = json_array();
	char sha[65], *text;

	for (size_t i = 0; i < n; i++) {
		sw_sha256_hex(files[i].data, files[i].len, sha);
		json_array_append_new(arr, json_pack("{s:s, s:I, s:s, s:i}", "path", files[i].path,
						     "size", (json_int_t)files[i].len, "sha256",
						     sha, "mode", (int)files[i].mode));
	}
	json_object_set_new(root, "format", json_integer(1));
	json_object_set_new(root, "version", json_string("0.3.0"));
	json_object_set_new(root, "min_version", json_string("0.2.0"));
	json_object_set_new(root, "created_at", json_integer(1795574011048LL));
	json_object_set_new(root, "files", arr);
	json_object_set_new(root, "migrations", json_array());
	text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	json_decref(root);
	assert_non_null(text);
	return text;
}

static const struct tfile crafted_files[] = {
    {"bin/tool", tool, sizeof(tool) - 1, 0755},
    {"data/x.txt", "hello", 5, 0644},
};

/* A package of crafted_files signed with `key`, whose payload is `payload` (NULL: the
 * right one) and whose manifest is changed after signing when `tamper`. */
static void craft(const struct fixture *f, const char *path, const char *key, int sign, int tamper,
		  const struct ent *payload, size_t npayload, int gzip)
{
	char *manifest = manifest_for(crafted_files, SW_ARRAY_LEN(crafted_files)), *sig = NULL;
	struct ent e[16];
	size_t n = 0;

	assert_int_equal(sw_pki_sign(key, manifest, strlen(manifest), &sig, NULL, 0), 0);
	if (tamper)
		manifest[strstr(manifest, "493") - manifest + 2] = '5'; /* mode 0757 */
	e[n++] = (struct ent){"manifest.json", manifest, strlen(manifest), 0, NULL, NULL};
	if (sign)
		e[n++] = (struct ent){"manifest.sig", sig, strlen(sig), 0, NULL, NULL};
	if (payload == NULL) {
		for (size_t i = 0; i < SW_ARRAY_LEN(crafted_files); i++) {
			static char names[2][64];
			snprintf(names[i], sizeof(names[i]), "files/%s", crafted_files[i].path);
			e[n++] = (struct ent){
			    names[i], crafted_files[i].data, crafted_files[i].len, 0, NULL, NULL};
		}
	} else {
		for (size_t i = 0; i < npayload && n < SW_ARRAY_LEN(e); i++)
			e[n++] = payload[i];
	}
	write_archive(path, e, n, gzip);
	free(manifest);
	free(sig);
	(void)f;
}

/* The package is refused with `reason`, and extracting it leaves nothing behind. */
static void refused(const struct fixture *f, const char *path, int code, const char *reason)
{
	char err[512] = "", dest[256];
	struct sw_pkg_manifest *m = (void *)1;

	assert_int_equal(sw_pkg_verify(path, f->pub, &m, err, sizeof(err)), code);
	assert_null(m);
	if (strcmp(err, reason) != 0)
		print_error("refused with '%s', expected '%s'\n", err, reason);
	assert_string_equal(err, reason);
	snprintf(dest, sizeof(dest), "%s/crafted-dest", f->dir);
	assert_int_equal(sw_pkg_extract(path, f->pub, dest, err, sizeof(err)), code);
	assert_string_equal(err, reason);
	assert_int_equal(access(dest, F_OK), -1);
	assert_false(has_entry(f->dir, ".crafted-dest"));
}

#define TOOL_ENT                                                                                   \
	{                                                                                          \
		"files/bin/tool", tool, sizeof(tool) - 1, 0, NULL, NULL                            \
	}
#define X_ENT                                                                                      \
	{                                                                                          \
		"files/data/x.txt", "hello", 5, 0, NULL, NULL                                      \
	}

static void test_crafted_good(void **state)
{
	struct fixture *f = *state;
	char path[256], dest[256], err[512];

	/* Both compressed and plain tar read, and extract. */
	for (int gzip = 0; gzip < 2; gzip++) {
		snprintf(path, sizeof(path), "%s/crafted.tar", f->dir);
		craft(f, path, f->key, 1, 0, NULL, 0, gzip);
		assert_int_equal(sw_pkg_verify(path, f->pub, NULL, err, sizeof(err)), 0);
		snprintf(dest, sizeof(dest), "%s/crafted-ok", f->dir);
		assert_int_equal(sw_pkg_extract(path, f->pub, dest, err, sizeof(err)), 0);
		check_file(dest, &crafted_files[0]);
		check_file(dest, &crafted_files[1]);
		remove_all(dest);
	}
	/* Payload order does not matter. */
	{
		const struct ent p[] = {X_ENT, TOOL_ENT};
		craft(f, path, f->key, 1, 0, p, 2, 0);
		assert_int_equal(sw_pkg_verify(path, f->pub, NULL, err, sizeof(err)), 0);
	}
	unlink(path);
}

static void test_crafted_signatures(void **state)
{
	struct fixture *f = *state;
	char path[256];

	snprintf(path, sizeof(path), "%s/crafted.tar", f->dir);
	craft(f, path, f->key, 0, 0, NULL, 0, 1);
	refused(f, path, SW_EDENIED, "unsigned package");
	craft(f, path, f->key, 1, 1, NULL, 0, 1);
	refused(f, path, SW_EDENIED, "signature does not match the site's key");
	craft(f, path, f->okey, 1, 0, NULL, 0, 1);
	refused(f, path, SW_EDENIED, "signature does not match the site's key");
	{
		const struct ent e[] = {{"manifest.sig", "AAAA", 4, 0, NULL, NULL},
					{"manifest.json", "{}", 2, 0, NULL, NULL}};
		write_archive(path, e, 2, 0);
		refused(f, path, SW_EINVAL,
			"not a siteward package: manifest.json is not its first entry");
	}
	{
		const struct ent e[] = {{"manifest.json", "{}", 2, 0, NULL, NULL},
					{"manifest.sig", "", 0, 0, NULL, NULL}};
		write_archive(path, e, 2, 0);
		refused(f, path, SW_EDENIED, "unsigned package");
	}
	{
		const struct ent e[] = {{"manifest.json", "{}", 2, 0, NULL, NULL},
					{"manifest.sig", "garbage!", 8, 0, NULL, NULL}};
		write_archive(path, e, 2, 0);
		refused(f, path, SW_EDENIED, "signature does not match the site's key");
	}
	{
		int fd = open(path, O_WRONLY | O_TRUNC);
		assert_int_equal(write(fd, "not a tar file at all", 21), 21);
		close(fd);
		assert_int_not_equal(sw_pkg_verify(path, f->pub, NULL, NULL, 0), 0);
	}
	unlink(path);
}

static void test_crafted_payload(void **state)
{
	struct fixture *f = *state;
	char path[256], bad_tool[sizeof(tool)];

	snprintf(path, sizeof(path), "%s/crafted.tar", f->dir);
	memcpy(bad_tool, tool, sizeof(tool));
	bad_tool[3] ^= 1;
	{
		const struct ent e[] = {
		    {"files/bin/tool", bad_tool, sizeof(tool) - 1, 0, NULL, NULL}, X_ENT};
		craft(f, path, f->key, 1, 0, e, 2, 1);
		refused(f, path, SW_EDENIED, "files/bin/tool: checksum mismatch");
		/* After a file that was written: extraction removes it again. */
		const struct ent e2[] = {
		    X_ENT, {"files/bin/tool", bad_tool, sizeof(tool) - 1, 0, NULL, NULL}};
		craft(f, path, f->key, 1, 0, e2, 2, 0);
		refused(f, path, SW_EDENIED, "files/bin/tool: checksum mismatch");
	}
	{
		const struct ent e[] = {TOOL_ENT, {"files/data/x.txt", "hell", 4, 0, NULL, NULL}};
		craft(f, path, f->key, 1, 0, e, 2, 0);
		refused(f, path, SW_EDENIED, "files/data/x.txt: size 4, the manifest says 5");
	}
	{
		const struct ent e[] = {TOOL_ENT, {"files/../evil", "x", 1, 0, NULL, NULL}, X_ENT};
		craft(f, path, f->key, 1, 0, e, 3, 1);
		refused(f, path, SW_EDENIED, "files/../evil: path leaves the package");
	}
	{
		const struct ent e[] = {{"../evil", "x", 1, 0, NULL, NULL}, TOOL_ENT, X_ENT};
		craft(f, path, f->key, 1, 0, e, 3, 0);
		refused(f, path, SW_EDENIED, "../evil: path leaves the package");
	}
	{
		const struct ent e[] = {TOOL_ENT, {"/abs", "x", 1, 0, NULL, NULL}, X_ENT};
		craft(f, path, f->key, 1, 0, e, 3, 0);
		refused(f, path, SW_EDENIED, "/abs: absolute path");
	}
	{
		const struct ent e[] = {TOOL_ENT, X_ENT, {"evil", "x", 1, 0, NULL, NULL}};
		craft(f, path, f->key, 1, 0, e, 3, 0);
		refused(f, path, SW_EDENIED, "evil: not under files/");
	}
	{
		const struct ent e[] = {TOOL_ENT, {"files/a\\b", "x", 1, 0, NULL, NULL}, X_ENT};
		craft(f, path, f->key, 1, 0, e, 3, 0);
		refused(f, path, SW_EDENIED, "files/a\\b: backslash in path");
	}
	{
		const struct ent e[] = {TOOL_ENT, {"files/a\033b", "x", 1, 0, NULL, NULL}, X_ENT};
		craft(f, path, f->key, 1, 0, e, 3, 0);
		refused(f, path, SW_EDENIED, "files/a\033b: control character in path");
	}
	{
		const struct ent e[] = {
		    TOOL_ENT, {"files/data/x.txt", NULL, 0, AE_IFLNK, "/etc/passwd", NULL}};
		craft(f, path, f->key, 1, 0, e, 2, 1);
		refused(f, path, SW_EDENIED,
			"files/data/x.txt: symbolic link; a package carries only regular files");
	}
	{
		const struct ent e[] = {TOOL_ENT,
					{"files/data/x.txt", NULL, 0, 0, NULL, "files/bin/tool"}};
		craft(f, path, f->key, 1, 0, e, 2, 0);
		refused(f, path, SW_EDENIED,
			"files/data/x.txt: hard link; a package carries only regular files");
	}
	{
		const struct ent e[] = {
		    TOOL_ENT, {"files/data", NULL, 0, AE_IFDIR, NULL, NULL}, X_ENT};
		craft(f, path, f->key, 1, 0, e, 3, 0);
		refused(f, path, SW_EDENIED,
			"files/data/: folder entry; a package carries only regular files");
	}
	{
		const struct ent e[] = {TOOL_ENT,
					{"files/data/x.txt", NULL, 0, AE_IFIFO, NULL, NULL}};
		craft(f, path, f->key, 1, 0, e, 2, 0);
		refused(f, path, SW_EDENIED,
			"files/data/x.txt: named pipe; a package carries only regular files");
	}
	{
		const struct ent e[] = {TOOL_ENT,
					{"files/data/x.txt", NULL, 0, AE_IFCHR, NULL, NULL}};
		craft(f, path, f->key, 1, 0, e, 2, 0);
		refused(f, path, SW_EDENIED,
			"files/data/x.txt: character device; a package carries only regular files");
	}
	{
		const struct ent e[] = {TOOL_ENT, X_ENT, TOOL_ENT};
		craft(f, path, f->key, 1, 0, e, 3, 1);
		refused(f, path, SW_EDENIED, "files/bin/tool: appears twice in the package");
	}
	{
		const struct ent e[] = {TOOL_ENT, X_ENT, {"files/extra", "x", 1, 0, NULL, NULL}};
		craft(f, path, f->key, 1, 0, e, 3, 0);
		refused(f, path, SW_EDENIED, "files/extra: not listed in the manifest");
	}
	{
		const struct ent e[] = {TOOL_ENT};
		craft(f, path, f->key, 1, 0, e, 1, 1);
		refused(f, path, SW_EDENIED,
			"files/data/x.txt: listed in the manifest but missing from the package");
	}
	{
		const struct ent e[] = {TOOL_ENT, X_ENT, {"manifest.json", "{}", 2, 0, NULL, NULL}};
		craft(f, path, f->key, 1, 0, e, 3, 0);
		refused(f, path, SW_EDENIED, "manifest.json: not under files/");
	}
	unlink(path);
}

static void test_tampered_bytes(void **state)
{
	struct fixture *f = *state;
	char path[256], err[512], *data = NULL;
	size_t len;

	/* A flipped byte of a built package is refused, or, where it only touches what no
	 * check covers and nothing installs (a tar header's time stamp, padding after a
	 * file), the package still installs exactly what was signed. The gzip header's time
	 * stamp and the trailer after the tar's end are left out: the reader never uses
	 * them. Which bytes land where depends on the run's key, so both outcomes are
	 * checked. */
	const struct tfile signed_files[] = {
	    {"bin/tool", tool, strlen(tool), 0755},
	    {"share/man/man1/tool.1", manpage, strlen(manpage), 0644},
	    {"share/siteward/sql/006_upgrade.sql", sql, strlen(sql), 0644},
	    {"lib/deep/a/b/c.dat", f->big, sizeof(f->big), 0600},
	    {"etc/empty", "", 0, 0644},
	};
	snprintf(path, sizeof(path), "%s/flipped.tar.gz", f->dir);
	assert_int_equal(sw_file_read(f->pkg, 1 << 26, &data, &len, NULL, 0), 0);
	for (size_t at = 10; at < len - 64; at += len / 23) {
		char out[300];
		int file_rc, mem_rc;

		data[at] ^= 0x20;
		assert_int_equal(sw_file_write_atomic(path, data, len, 0644, NULL, 0), 0);
		file_rc = sw_pkg_verify(path, f->pub, NULL, err, sizeof(err));
		mem_rc = sw_pkg_verify_mem(data, len, f->pub, NULL, err, sizeof(err));
		assert_int_equal(file_rc == 0, mem_rc == 0);
		if (file_rc == 0) {
			snprintf(out, sizeof(out), "%s/flipped-at-%zu", f->dir, at);
			assert_int_equal(sw_pkg_extract(path, f->pub, out, err, sizeof(err)), 0);
			for (size_t i = 0; i < sizeof(signed_files) / sizeof(signed_files[0]); i++)
				check_file(out, &signed_files[i]);
			remove_all(out);
		}
		data[at] ^= 0x20;
	}
	/* Truncated. */
	assert_int_not_equal(sw_pkg_verify_mem(data, len / 2, f->pub, NULL, err, sizeof(err)), 0);
	assert_int_not_equal(sw_pkg_verify_mem(data, 0, f->pub, NULL, err, sizeof(err)), 0);
	assert_int_not_equal(sw_pkg_verify_mem(NULL, 0, f->pub, NULL, err, sizeof(err)), 0);
	free(data);
	unlink(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_version_cmp),	       cmocka_unit_test(test_path_valid),
	    cmocka_unit_test(test_manifest_parse),     cmocka_unit_test(test_build_verify_extract),
	    cmocka_unit_test(test_build_refusals),     cmocka_unit_test(test_crafted_good),
	    cmocka_unit_test(test_crafted_signatures), cmocka_unit_test(test_crafted_payload),
	    cmocka_unit_test(test_tampered_bytes),
	};

	umask(022);
	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
