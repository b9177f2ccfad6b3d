#include "pkg.h"

#include "error.h"
#include "json.h"
#include "pki.h"
#include "util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/crypto.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <jansson.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHUNK	       65536
#define SIG_MAX	       256		 /* bytes of manifest.sig: base64 of 64 bytes is 88 */
#define MIGRATIONS_MAX 4096		 /* migrations named in one manifest */
#define MIGRATION_NAME 128		 /* bytes in a migration's name */
#define CREATED_AT_MAX 253402300799999LL /* 9999-12-31T23:59:59.999Z */
#define TREE_DEPTH_MAX 64		 /* folders deep in an install tree */
/* Bytes read from a package, compressed or not, before it is refused: the payload
 * limit plus room for headers (a pax header and padding per file at most). */
#define STREAM_MAX	 (SW_PKG_TOTAL_MAX + SW_PKG_MANIFEST_MAX + ((uint64_t)SW_PKG_FILES_MAX << 12))
#define PAYLOAD_PREFIX	 "files/"
#define PAYLOAD_PREFIXLN 6

/* ---- versions ---- */

int sw_version_valid(const char *v)
{
	size_t n;

	if (v == NULL || v[0] < '0' || v[0] > '9')
		return 0;
	n = strlen(v);
	if (n > SW_PKG_VERSION_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = v[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      c == '.' || c == '+' || c == '-'))
			return 0;
	}
	return 1;
}

static int sign_of(int c)
{
	return c < 0 ? -1 : c > 0;
}

static size_t digits(const char *s, size_t n)
{
	size_t i = 0;

	while (i < n && s[i] >= '0' && s[i] <= '9')
		i++;
	return i;
}

static int component_cmp(const char *a, size_t la, const char *b, size_t lb)
{
	size_t da = digits(a, la), db = digits(b, lb), n;
	int c;

	if (da > 0 && db > 0) {
		const char *pa = a, *pb = b;
		size_t na = da, nb = db;

		/* As numbers of any length: without leading zeros, longer is larger. */
		while (na > 1 && *pa == '0') {
			pa++;
			na--;
		}
		while (nb > 1 && *pb == '0') {
			pb++;
			nb--;
		}
		if (na != nb)
			return na < nb ? -1 : 1;
		c = memcmp(pa, pb, na);
		if (c)
			return sign_of(c);
		a += da;
		la -= da;
		b += db;
		lb -= db;
	}
	n = la < lb ? la : lb;
	c = memcmp(a, b, n);
	if (c)
		return sign_of(c);
	return la < lb ? -1 : la > lb;
}

int sw_version_cmp(const char *a, const char *b)
{
	for (;;) {
		const char *ca = "0", *cb = "0";
		size_t la = 1, lb = 1;
		int c;

		if (*a == '\0' && *b == '\0')
			return 0;
		if (*a) {
			ca = a;
			la = strcspn(a, ".");
			a += la;
			if (*a == '.')
				a++;
		}
		if (*b) {
			cb = b;
			lb = strcspn(b, ".");
			b += lb;
			if (*b == '.')
				b++;
		}
		c = component_cmp(ca, la, cb, lb);
		if (c)
			return c;
	}
}

/* ---- paths ---- */

int sw_pkg_path_valid(const char *path, const char **why)
{
	const char *r = NULL, *p = path;
	size_t n;

	if (path == NULL || path[0] == '\0') {
		r = "empty path";
		goto out;
	}
	if (path[0] == '/') {
		r = "absolute path";
		goto out;
	}
	/* Components first, so a traversal is reported as such whatever else is wrong. */
	for (;;) {
		size_t len = strcspn(p, "/");

		if (len == 2 && p[0] == '.' && p[1] == '.') {
			r = "path leaves the package";
			goto out;
		}
		if (p[len] == '\0')
			break;
		p += len + 1;
	}
	for (p = path;; p++) {
		size_t len = strcspn(p, "/");

		if (len == 0) {
			r = "empty path component";
			goto out;
		}
		if (len == 1 && p[0] == '.') {
			r = "'.' path component";
			goto out;
		}
		if (len > SW_PKG_NAME_MAX) {
			r = "path component too long";
			goto out;
		}
		p += len;
		if (*p == '\0')
			break;
	}
	n = strlen(path);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)path[i];
		if (c == '\\') {
			r = "backslash in path";
			goto out;
		}
		if (c < 0x20 || c == 0x7f) {
			r = "control character in path";
			goto out;
		}
		/* libarchive converts names through the locale's charset; ASCII reads the
		 * same everywhere. */
		if (c > 0x7e) {
			r = "path is not printable ASCII";
			goto out;
		}
	}
	if (n > SW_PKG_PATH_MAX)
		r = "path too long";
out:
	if (why)
		*why = r;
	return r == NULL;
}

/* ---- the manifest ---- */

void sw_pkg_manifest_free(struct sw_pkg_manifest *m)
{
	if (m == NULL)
		return;
	for (size_t i = 0; i < m->nfiles; i++)
		free(m->files[i].path);
	free(m->files);
	for (size_t i = 0; i < m->nmigrations; i++)
		free(m->migrations[i]);
	free(m->migrations);
	free(m);
}

static int file_cmp(const void *a, const void *b)
{
	return strcmp(((const struct sw_pkg_file *)a)->path, ((const struct sw_pkg_file *)b)->path);
}

/* Finds the file whose path is the first `n` bytes of `path`. */
static const struct sw_pkg_file *find_n(const struct sw_pkg_manifest *m, const char *path, size_t n)
{
	size_t lo = 0, hi = m->nfiles;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const char *fp = m->files[mid].path;
		int c = strncmp(path, fp, n);

		if (c == 0 && fp[n] != '\0')
			c = -1;
		if (c == 0)
			return &m->files[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

const struct sw_pkg_file *sw_pkg_manifest_find(const struct sw_pkg_manifest *m, const char *path)
{
	return find_n(m, path, strlen(path));
}

static int hex64_valid(const char *s)
{
	if (strlen(s) != 64)
		return 0;
	for (int i = 0; i < 64; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return 0;
	return 1;
}

static int migration_name_valid(const char *s)
{
	size_t n = strlen(s);

	if (n < 5 || n > MIGRATION_NAME || s[0] == '.' || s[0] == '-' ||
	    strcmp(s + n - 4, ".sql") != 0)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		      c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

static int parse_file(const json_t *o, size_t i, struct sw_pkg_file *f, char *err, size_t errlen)
{
	char e[256];
	const char *path, *sha, *why;
	int64_t size = 0, mode = 0;
	int rc;

	if (!json_is_object(o)) {
		sw_seterr(err, errlen, "manifest: files[%zu] is not an object", i);
		return SW_EINVAL;
	}
	rc = sw_json_str(o, "path", SW_PKG_PATH_MAX, 1, &path, e, sizeof(e));
	if (rc) {
		sw_seterr(err, errlen, "manifest: files[%zu]: %s", i, e);
		return rc;
	}
	if (!sw_pkg_path_valid(path, &why)) {
		sw_seterr(err, errlen, "manifest: %s: %s", path, why);
		return SW_EDENIED;
	}
	if ((rc = sw_json_int(o, "size", 0, (int64_t)SW_PKG_FILE_MAX, 1, &size, e, sizeof(e))) ||
	    (rc = sw_json_int(o, "mode", 0, 0777, 1, &mode, e, sizeof(e))) ||
	    (rc = sw_json_str(o, "sha256", 64, 1, &sha, e, sizeof(e)))) {
		sw_seterr(err, errlen, "manifest: %s: %s", path, e);
		return rc;
	}
	if (!hex64_valid(sha)) {
		sw_seterr(err, errlen, "manifest: %s: sha256 is not 64 lowercase hex digits", path);
		return SW_EINVAL;
	}
	if (mode & ~0755) {
		sw_seterr(err, errlen, "manifest: %s: mode 0%03o is writable by group or others",
			  path, (unsigned)mode);
		return SW_EDENIED;
	}
	f->path = strdup(path);
	if (f->path == NULL) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	f->size = (uint64_t)size;
	f->mode = (unsigned)mode;
	memcpy(f->sha256, sha, 65);
	return 0;
}

/* A file that is also a folder of another cannot be extracted. */
static int check_folders(const struct sw_pkg_manifest *m, char *err, size_t errlen)
{
	for (size_t i = 0; i < m->nfiles; i++) {
		const char *p = m->files[i].path;

		for (const char *s = strchr(p, '/'); s; s = strchr(s + 1, '/')) {
			if (find_n(m, p, (size_t)(s - p))) {
				sw_seterr(
				    err, errlen,
				    "manifest: %.*s: listed as a file and as the folder of %s",
				    (int)(s - p), p, p);
				return SW_EDENIED;
			}
		}
	}
	return 0;
}

static int parse_migrations(const json_t *migs, struct sw_pkg_manifest *m, char *err, size_t errlen)
{
	char path[sizeof(SW_PKG_SQL_DIR) + MIGRATION_NAME];
	size_t n;

	if (!json_is_array(migs)) {
		sw_seterr(err, errlen, "manifest: 'migrations' must be an array");
		return SW_EINVAL;
	}
	n = json_array_size(migs);
	if (n > MIGRATIONS_MAX) {
		sw_seterr(err, errlen, "manifest: more than %d migrations", MIGRATIONS_MAX);
		return SW_ETOOBIG;
	}
	m->migrations = calloc(n ? n : 1, sizeof(*m->migrations));
	if (m->migrations == NULL) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		const json_t *v = json_array_get(migs, i);
		const char *s = json_string_value(v);

		if (s == NULL || strlen(s) != json_string_length(v) || !migration_name_valid(s)) {
			sw_seterr(
			    err, errlen,
			    "manifest: migrations[%zu] is not a migration's file name (NAME.sql)",
			    i);
			return SW_EINVAL;
		}
		if (i > 0 && strcmp(m->migrations[i - 1], s) >= 0) {
			sw_seterr(err, errlen,
				  "manifest: migrations must be listed in order, each once (%s)",
				  s);
			return SW_EINVAL;
		}
		snprintf(path, sizeof(path), "%s%s", SW_PKG_SQL_DIR, s);
		if (sw_pkg_manifest_find(m, path) == NULL) {
			sw_seterr(err, errlen, "manifest: migration %s is not among the files (%s)",
				  s, path);
			return SW_EINVAL;
		}
		m->migrations[i] = strdup(s);
		if (m->migrations[i] == NULL) {
			sw_seterr(err, errlen, "out of memory");
			return SW_ENOMEM;
		}
		m->nmigrations++;
	}
	return 0;
}

int sw_pkg_manifest_parse(const char *json, size_t len, struct sw_pkg_manifest **out, char *err,
			  size_t errlen)
{
	struct sw_pkg_manifest *m = NULL;
	json_t *j = NULL, *files;
	const char *version, *min_version;
	int64_t format = 0;
	char e[256];
	size_t n;
	int rc;

	*out = NULL;
	if (len > SW_PKG_MANIFEST_MAX) {
		sw_seterr(err, errlen, "manifest is larger than %zu bytes", SW_PKG_MANIFEST_MAX);
		return SW_ETOOBIG;
	}
	rc = sw_json_parse_object(json, len, &j, e, sizeof(e));
	if (rc) {
		sw_seterr(err, errlen, "manifest: %s", e);
		return rc;
	}
	m = calloc(1, sizeof(*m));
	if (m == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory");
		goto out;
	}
	if ((rc = sw_json_int(j, "format", 0, INT32_MAX, 1, &format, e, sizeof(e))))
		goto bad;
	if (format != SW_PKG_FORMAT) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen,
			  "manifest: package format %" PRId64
			  " is not one this siteward reads (%d)",
			  format, SW_PKG_FORMAT);
		goto out;
	}
	m->format = (int)format;
	if ((rc = sw_json_str(j, "version", SW_PKG_VERSION_MAX, 1, &version, e, sizeof(e))) ||
	    (rc = sw_json_str(j, "min_version", SW_PKG_VERSION_MAX, 1, &min_version, e,
			      sizeof(e))) ||
	    (rc = sw_json_int(j, "created_at", 0, CREATED_AT_MAX, 1, &m->created_at, e, sizeof(e))))
		goto bad;
	if (!sw_version_valid(version) || !sw_version_valid(min_version)) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "manifest: '%s' is not a version",
			  sw_version_valid(version) ? min_version : version);
		goto out;
	}
	if (sw_version_cmp(min_version, version) > 0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "manifest: min_version %s is newer than version %s",
			  min_version, version);
		goto out;
	}
	snprintf(m->version, sizeof(m->version), "%s", version);
	snprintf(m->min_version, sizeof(m->min_version), "%s", min_version);

	files = json_object_get(j, "files");
	if (!json_is_array(files)) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "manifest: 'files' must be an array");
		goto out;
	}
	n = json_array_size(files);
	if (n > SW_PKG_FILES_MAX) {
		rc = SW_ETOOBIG;
		sw_seterr(err, errlen, "manifest: more than %d files", SW_PKG_FILES_MAX);
		goto out;
	}
	m->files = calloc(n ? n : 1, sizeof(*m->files));
	if (m->files == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		rc = parse_file(json_array_get(files, i), i, &m->files[i], err, errlen);
		if (rc)
			goto out;
		m->nfiles++;
		m->total_size += m->files[i].size;
		if (m->total_size > SW_PKG_TOTAL_MAX) {
			rc = SW_ETOOBIG;
			sw_seterr(err, errlen,
				  "manifest: the files add up to more than %" PRIu64 " bytes",
				  SW_PKG_TOTAL_MAX);
			goto out;
		}
	}
	qsort(m->files, m->nfiles, sizeof(*m->files), file_cmp);
	for (size_t i = 1; i < m->nfiles; i++) {
		if (strcmp(m->files[i - 1].path, m->files[i].path) == 0) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "manifest: %s: listed twice", m->files[i].path);
			goto out;
		}
	}
	if ((rc = check_folders(m, err, errlen)))
		goto out;
	if (json_object_get(j, "migrations") == NULL) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "manifest: missing field 'migrations'");
		goto out;
	}
	if ((rc = parse_migrations(json_object_get(j, "migrations"), m, err, errlen)))
		goto out;
	*out = m;
	m = NULL;
	goto out;
bad:
	sw_seterr(err, errlen, "manifest: %s", e);
out:
	sw_pkg_manifest_free(m);
	json_decref(j);
	return rc;
}

/* ---- files below a folder, never through a symbolic link ---- */

/* Opens `rel` below the folder `rootfd`, refusing a symbolic link at every step.
 * `flags` are for the last component. */
static int open_beneath(int rootfd, const char *rel, int flags)
{
	char buf[SW_PKG_PATH_MAX + 1];
	char *p = buf, *slash;
	int fd = rootfd, next;

	if (snprintf(buf, sizeof(buf), "%s", rel) >= (int)sizeof(buf)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	while ((slash = strchr(p, '/')) != NULL) {
		*slash = '\0';
		next = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd != rootfd)
			close(fd);
		if (next < 0)
			return -1;
		fd = next;
		p = slash + 1;
	}
	next = openat(fd, p, flags | O_NOFOLLOW | O_CLOEXEC);
	if (fd != rootfd) {
		int saved = errno;
		close(fd);
		errno = saved;
	}
	return next;
}

static int hex_digest(gnutls_hash_hd_t h, char out[65])
{
	static const char hexd[] = "0123456789abcdef";
	unsigned char d[32];

	gnutls_hash_deinit(h, d);
	for (int i = 0; i < 32; i++) {
		out[2 * i] = hexd[d[i] >> 4];
		out[2 * i + 1] = hexd[d[i] & 15];
	}
	out[64] = '\0';
	return 0;
}

static ssize_t read_full(int fd, void *buf, size_t n)
{
	ssize_t r;

	do
		r = read(fd, buf, n);
	while (r < 0 && errno == EINTR);
	return r;
}

static int write_full(int fd, const void *buf, size_t n)
{
	const char *p = buf;

	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* ---- building ---- */

struct tree {
	struct sw_pkg_file *files;
	size_t n, cap;
	uint64_t total;
};

static const char *file_kind(mode_t mode)
{
	if (S_ISLNK(mode))
		return "a symbolic link";
	if (S_ISFIFO(mode))
		return "a named pipe";
	if (S_ISSOCK(mode))
		return "a socket";
	if (S_ISCHR(mode))
		return "a character device";
	if (S_ISBLK(mode))
		return "a block device";
	return "not a regular file";
}

static int tree_add(struct tree *t, const char *rel, const struct stat *st, char *err,
		    size_t errlen)
{
	const char *why;

	if (!sw_pkg_path_valid(rel, &why)) {
		sw_seterr(err, errlen, "%s: %s", rel, why);
		return SW_EINVAL;
	}
	if (st->st_mode & (S_ISUID | S_ISGID | S_ISVTX)) {
		sw_seterr(
		    err, errlen,
		    "%s: has the setuid, setgid or sticky bit, which a package does not carry",
		    rel);
		return SW_EDENIED;
	}
	if ((uint64_t)st->st_size > SW_PKG_FILE_MAX) {
		sw_seterr(err, errlen, "%s: larger than the %" PRIu64 " MiB a packaged file may be",
			  rel, SW_PKG_FILE_MAX >> 20);
		return SW_ETOOBIG;
	}
	if (t->n >= SW_PKG_FILES_MAX) {
		sw_seterr(err, errlen, "more than %d files to package", SW_PKG_FILES_MAX);
		return SW_ETOOBIG;
	}
	t->total += (uint64_t)st->st_size;
	if (t->total > SW_PKG_TOTAL_MAX) {
		sw_seterr(err, errlen,
			  "the files add up to more than the %" PRIu64 " GiB a package may hold",
			  SW_PKG_TOTAL_MAX >> 30);
		return SW_ETOOBIG;
	}
	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct sw_pkg_file *f = realloc(t->files, cap * sizeof(*f));
		if (f == NULL) {
			sw_seterr(err, errlen, "out of memory");
			return SW_ENOMEM;
		}
		t->files = f;
		t->cap = cap;
	}
	memset(&t->files[t->n], 0, sizeof(t->files[0]));
	t->files[t->n].path = strdup(rel);
	if (t->files[t->n].path == NULL) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	t->files[t->n].size = (uint64_t)st->st_size;
	t->files[t->n].mode = st->st_mode & 0755;
	t->n++;
	return 0;
}

static int tree_walk(struct tree *t, int dirfd, const char *rel, int depth, char *err,
		     size_t errlen)
{
	char child[SW_PKG_PATH_MAX + 2];
	struct dirent *de;
	struct stat st;
	DIR *d = NULL;
	int fd, rc = 0;

	if (depth > TREE_DEPTH_MAX) {
		sw_seterr(err, errlen, "%s: more than %d folders deep", rel, TREE_DEPTH_MAX);
		return SW_ETOOBIG;
	}
	fd = dup(dirfd);
	if (fd < 0 || (d = fdopendir(fd)) == NULL) {
		sw_seterr(err, errlen, "cannot read the folder %s: %s", *rel ? rel : ".",
			  strerror(errno));
		if (fd >= 0)
			close(fd);
		return SW_EIO;
	}
	while ((errno = 0, de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (snprintf(child, sizeof(child), "%s%s%s", rel, *rel ? "/" : "", de->d_name) >
		    SW_PKG_PATH_MAX) {
			rc = SW_ETOOBIG;
			sw_seterr(err, errlen, "%s/%s: path longer than %d bytes", rel, de->d_name,
				  SW_PKG_PATH_MAX);
			goto out;
		}
		if (fstatat(dirfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
			rc = SW_EIO;
			sw_seterr(err, errlen, "cannot read %s: %s", child, strerror(errno));
			goto out;
		}
		if (S_ISDIR(st.st_mode)) {
			int sub = openat(dirfd, de->d_name,
					 O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
			if (sub < 0) {
				rc = SW_EIO;
				sw_seterr(err, errlen, "cannot open the folder %s: %s", child,
					  strerror(errno));
				goto out;
			}
			rc = tree_walk(t, sub, child, depth + 1, err, errlen);
			close(sub);
		} else if (S_ISREG(st.st_mode)) {
			rc = tree_add(t, child, &st, err, errlen);
		} else {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "%s: is %s; a package carries only regular files%s",
				  child, file_kind(st.st_mode),
				  S_ISLNK(st.st_mode)
				      ? " (a link could point outside the install tree)"
				      : "");
		}
		if (rc)
			goto out;
	}
	if (errno) {
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot read the folder %s: %s", *rel ? rel : ".",
			  strerror(errno));
	}
out:
	closedir(d);
	return rc;
}

/* Streams one file of the tree through SHA-256 and, when `a` is not NULL, into the
 * archive; the file must still be the size it was listed with. */
static int tree_file_read(int rootfd, const struct sw_pkg_file *f, struct archive *a, char sha[65],
			  char *err, size_t errlen)
{
	gnutls_hash_hd_t h = NULL;
	unsigned char *buf = NULL;
	uint64_t total = 0;
	struct stat st;
	ssize_t n;
	int fd, rc = SW_EIO;

	/* O_NONBLOCK: a file swapped for a named pipe must not block the open. */
	fd = open_beneath(rootfd, f->path, O_RDONLY | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		sw_seterr(err, errlen, "cannot open %s: %s", f->path, strerror(errno));
		return SW_EIO;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t)st.st_size != f->size) {
		sw_seterr(err, errlen, "%s: changed while it was packaged", f->path);
		goto out;
	}
	buf = malloc(CHUNK);
	if (buf == NULL || gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory");
		goto out;
	}
	while ((n = read_full(fd, buf, CHUNK)) > 0) {
		total += (uint64_t)n;
		if (total > f->size)
			break;
		gnutls_hash(h, buf, (size_t)n);
		if (a && archive_write_data(a, buf, (size_t)n) != n) {
			sw_seterr(err, errlen, "cannot write the package: %s",
				  archive_error_string(a));
			goto out;
		}
	}
	if (n < 0) {
		sw_seterr(err, errlen, "cannot read %s: %s", f->path, strerror(errno));
		goto out;
	}
	if (total != f->size) {
		sw_seterr(err, errlen, "%s: changed while it was packaged", f->path);
		goto out;
	}
	hex_digest(h, sha);
	h = NULL;
	rc = 0;
out:
	if (h)
		gnutls_hash_deinit(h, NULL);
	free(buf);
	close(fd);
	return rc;
}

struct sink {
	int fd;
	gnutls_hash_hd_t h;
	uint64_t bytes;
};

static la_ssize_t sink_write(struct archive *a, void *arg, const void *buf, size_t n)
{
	struct sink *s = arg;

	if (write_full(s->fd, buf, n) < 0) {
		archive_set_error(a, errno, "%s", strerror(errno));
		return -1;
	}
	gnutls_hash(s->h, buf, n);
	s->bytes += n;
	return (la_ssize_t)n;
}

static int write_header(struct archive *a, const char *name, uint64_t size, unsigned mode,
			time_t mtime, char *err, size_t errlen)
{
	struct archive_entry *e = archive_entry_new();
	int rc = 0;

	if (e == NULL) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	archive_entry_set_pathname(e, name);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, mode);
	archive_entry_set_size(e, (la_int64_t)size);
	archive_entry_set_mtime(e, mtime, 0);
	if (archive_write_header(a, e) != ARCHIVE_OK) {
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot write the package (%s): %s", name,
			  archive_error_string(a));
	}
	archive_entry_free(e);
	return rc;
}

static int write_blob(struct archive *a, const char *name, const char *data, size_t len,
		      time_t mtime, char *err, size_t errlen)
{
	int rc = write_header(a, name, len, 0644, mtime, err, errlen);

	if (rc == 0 && archive_write_data(a, data, len) != (la_ssize_t)len) {
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot write the package (%s): %s", name,
			  archive_error_string(a));
	}
	return rc;
}

static char *manifest_text(const struct tree *t, const char *version, const char *min_version,
			   int64_t created_at)
{
	json_t *root = json_object(), *files = json_array(), *migs = json_array();
	size_t sqllen = strlen(SW_PKG_SQL_DIR);
	char *text = NULL, *out = NULL;
	int bad = root == NULL || files == NULL || migs == NULL;

	for (size_t i = 0; !bad && i < t->n; i++) {
		const struct sw_pkg_file *f = &t->files[i];
		json_t *o =
		    json_pack("{s:s, s:I, s:s, s:i}", "path", f->path, "size", (json_int_t)f->size,
			      "sha256", f->sha256, "mode", (int)f->mode);
		bad |= o == NULL || json_array_append_new(files, o) < 0;
		if (!bad && strncmp(f->path, SW_PKG_SQL_DIR, sqllen) == 0 &&
		    migration_name_valid(f->path + sqllen))
			bad |= json_array_append_new(migs, json_string(f->path + sqllen)) < 0;
	}
	if (!bad)
		bad = json_object_set_new(root, "format", json_integer(SW_PKG_FORMAT)) < 0 ||
		      json_object_set_new(root, "version", json_string(version)) < 0 ||
		      json_object_set_new(root, "min_version", json_string(min_version)) < 0 ||
		      json_object_set_new(root, "created_at", json_integer(created_at)) < 0 ||
		      json_object_set(root, "files", files) < 0 ||
		      json_object_set(root, "migrations", migs) < 0;
	if (!bad)
		text = json_dumps(root, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
	if (text && asprintf(&out, "%s\n", text) < 0)
		out = NULL;
	free(text);
	json_decref(files);
	json_decref(migs);
	json_decref(root);
	return out;
}

int sw_pkg_build(const char *from_dir, const char *version, const char *min_version,
		 const char *sign_key_pem, const char *out_path, struct sw_pkg_built *info,
		 char *err, size_t errlen)
{
	struct tree t = {0};
	struct sink s = {.fd = -1};
	struct archive *a = NULL;
	struct sw_pkg_manifest *check = NULL;
	char *manifest = NULL, *sig = NULL, *tmp = NULL, *dir = NULL, e[512];
	char name[SW_PKG_PATH_MAX + PAYLOAD_PREFIXLN + 1], sha[65];
	int64_t created_at = sw_now_ms();
	time_t mtime = (time_t)(created_at / 1000);
	int rootfd = -1, rc;

	if (min_version == NULL)
		min_version = "0";
	if (info)
		memset(info, 0, sizeof(*info));
	if (!sw_version_valid(version) || !sw_version_valid(min_version)) {
		sw_seterr(
		    err, errlen,
		    "'%s' is not a version (1..%d of 0-9 A-Z a-z . + -, starting with a digit)",
		    sw_version_valid(version) ? min_version
		    : version		      ? version
					      : "",
		    SW_PKG_VERSION_MAX);
		return SW_EINVAL;
	}
	if (sw_version_cmp(min_version, version) > 0) {
		sw_seterr(err, errlen,
			  "the minimum version %s is newer than the package's version %s",
			  min_version, version);
		return SW_EINVAL;
	}
	rootfd = open(from_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0) {
		sw_seterr(err, errlen, "cannot open the install tree %s: %s", from_dir,
			  strerror(errno));
		return errno == ENOENT ? SW_ENOTFOUND : SW_EIO;
	}
	rc = tree_walk(&t, rootfd, "", 0, e, sizeof(e));
	if (rc) {
		sw_seterr(err, errlen, "%s: %s", from_dir, e);
		goto out;
	}
	if (t.n == 0) {
		rc = SW_EINVAL;
		sw_seterr(err, errlen, "%s: no files to package", from_dir);
		goto out;
	}
	qsort(t.files, t.n, sizeof(*t.files), file_cmp);
	for (size_t i = 0; i < t.n; i++) {
		rc = tree_file_read(rootfd, &t.files[i], NULL, t.files[i].sha256, e, sizeof(e));
		if (rc) {
			sw_seterr(err, errlen, "%s: %s", from_dir, e);
			goto out;
		}
	}
	manifest = manifest_text(&t, version, min_version, created_at);
	if (manifest == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory writing the manifest");
		goto out;
	}
	/* What is signed must be what every agent will accept. */
	rc = sw_pkg_manifest_parse(manifest, strlen(manifest), &check, err, errlen);
	if (rc)
		goto out;
	rc = sw_pki_sign(sign_key_pem, manifest, strlen(manifest), &sig, e, sizeof(e));
	if (rc) {
		sw_seterr(err, errlen, "cannot sign the manifest: %s", e);
		goto out;
	}

	if (asprintf(&tmp, "%s.tmp.XXXXXX", out_path) < 0 || (dir = strdup(out_path)) == NULL) {
		tmp = NULL;
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory");
		goto out;
	}
	s.fd = mkostemp(tmp, O_CLOEXEC);
	if (s.fd < 0) {
		free(tmp);
		tmp = NULL;
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot create %s: %s", out_path, strerror(errno));
		goto out;
	}
	if (gnutls_hash_init(&s.h, GNUTLS_DIG_SHA256) < 0 || (a = archive_write_new()) == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory");
		goto out;
	}
	if (archive_write_set_format_pax_restricted(a) != ARCHIVE_OK ||
	    archive_write_add_filter_gzip(a) != ARCHIVE_OK ||
	    archive_write_set_bytes_in_last_block(a, 1) != ARCHIVE_OK ||
	    archive_write_open(a, &s, NULL, sink_write, NULL) != ARCHIVE_OK) {
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot write %s: %s", out_path, archive_error_string(a));
		goto out;
	}
	if ((rc = write_blob(a, "manifest.json", manifest, strlen(manifest), mtime, err, errlen)) ||
	    (rc = write_blob(a, "manifest.sig", sig, strlen(sig), mtime, err, errlen)))
		goto out;
	for (size_t i = 0; i < t.n; i++) {
		const struct sw_pkg_file *f = &t.files[i];

		snprintf(name, sizeof(name), PAYLOAD_PREFIX "%s", f->path);
		if ((rc = write_header(a, name, f->size, f->mode, mtime, err, errlen)))
			goto out;
		rc = tree_file_read(rootfd, f, a, sha, e, sizeof(e));
		if (rc == 0 && strcmp(sha, f->sha256) != 0) {
			rc = SW_EIO;
			snprintf(e, sizeof(e), "%s: changed while it was packaged", f->path);
		}
		if (rc) {
			sw_seterr(err, errlen, "%s: %s", from_dir, e);
			goto out;
		}
	}
	if (archive_write_close(a) != ARCHIVE_OK) {
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot write %s: %s", out_path, archive_error_string(a));
		goto out;
	}
	if (fchmod(s.fd, 0644) < 0 || fsync(s.fd) < 0 || close(s.fd) < 0) {
		s.fd = -1;
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot write %s: %s", out_path, strerror(errno));
		goto out;
	}
	s.fd = -1;
	if (rename(tmp, out_path) < 0) {
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot rename %s to %s: %s", tmp, out_path,
			  strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	sw_fsync_dir(dirname(dir), NULL, 0);
	if (info) {
		info->nfiles = t.n;
		info->nmigrations = check->nmigrations;
		info->payload_bytes = t.total;
		info->package_bytes = s.bytes;
		hex_digest(s.h, info->package_sha256);
		s.h = NULL;
	}
	rc = 0;
out:
	if (a)
		archive_write_free(a);
	if (s.h)
		gnutls_hash_deinit(s.h, NULL);
	if (s.fd >= 0)
		close(s.fd);
	if (tmp) {
		unlink(tmp);
		free(tmp);
	}
	for (size_t i = 0; i < t.n; i++)
		free(t.files[i].path);
	free(t.files);
	sw_pkg_manifest_free(check);
	free(manifest);
	free(sig);
	free(dir);
	if (rootfd >= 0)
		close(rootfd);
	return rc;
}

/* ---- reading ---- */

/* Where a package's bytes come from: a file or memory, hashed as they are read. */
struct source {
	int fd;
	const unsigned char *mem;
	size_t memlen, pos;
	unsigned char *buf;
	gnutls_hash_hd_t h;
	uint64_t bytes;
	int too_big;
};

static la_ssize_t source_read(struct archive *a, void *arg, const void **out)
{
	struct source *s = arg;
	la_int64_t unpacked = archive_filter_bytes(a, 0);
	ssize_t n;

	/* Bounds the compressed bytes and what they unpack to, so neither a huge file
	 * nor a small bomb of headers can keep a reader busy without end. */
	if (s->bytes > STREAM_MAX || (unpacked > 0 && (uint64_t)unpacked > STREAM_MAX)) {
		s->too_big = 1;
		archive_set_error(a, EFBIG, "package is larger than %" PRIu64 " bytes",
				  (uint64_t)STREAM_MAX);
		return -1;
	}
	if (s->mem) {
		n = (ssize_t)(s->memlen - s->pos < CHUNK ? s->memlen - s->pos : CHUNK);
		*out = s->mem + s->pos;
		s->pos += (size_t)n;
	} else {
		n = read_full(s->fd, s->buf, CHUNK);
		if (n < 0) {
			archive_set_error(a, errno, "cannot read the package: %s", strerror(errno));
			return -1;
		}
		*out = s->buf;
	}
	gnutls_hash(s->h, *out, (size_t)n);
	s->bytes += (uint64_t)n;
	return n;
}

/* Hashes what the archive reader left unread, so the package's hash covers the file. */
static int source_drain(struct source *s, char *err, size_t errlen)
{
	ssize_t n;

	if (s->mem) {
		gnutls_hash(s->h, s->mem + s->pos, s->memlen - s->pos);
		s->bytes += s->memlen - s->pos;
		s->pos = s->memlen;
		return 0;
	}
	while ((n = read_full(s->fd, s->buf, CHUNK)) > 0) {
		gnutls_hash(s->h, s->buf, (size_t)n);
		s->bytes += (uint64_t)n;
		if (s->bytes > STREAM_MAX) {
			sw_seterr(err, errlen, "package is larger than %" PRIu64 " bytes",
				  (uint64_t)STREAM_MAX);
			return SW_ETOOBIG;
		}
	}
	if (n < 0) {
		sw_seterr(err, errlen, "cannot read the package: %s", strerror(errno));
		return SW_EIO;
	}
	return 0;
}

static int source_open(struct source *s, struct archive **out, char *err, size_t errlen)
{
	struct archive *a;

	*out = NULL;
	s->pos = 0;
	s->bytes = 0;
	s->too_big = 0;
	if (s->buf == NULL && (s->buf = malloc(CHUNK)) == NULL) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	if (s->h == NULL && gnutls_hash_init(&s->h, GNUTLS_DIG_SHA256) < 0) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	a = archive_read_new();
	if (a == NULL) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	/* Tar only, plain or gzip through zlib: never an external program. */
	if (archive_read_support_format_tar(a) != ARCHIVE_OK ||
	    archive_read_support_filter_gzip(a) != ARCHIVE_OK) {
		sw_seterr(err, errlen, "libarchive cannot read gzip-compressed tar archives");
		archive_read_free(a);
		return SW_EIO;
	}
	if (archive_read_open(a, s, NULL, source_read, NULL) != ARCHIVE_OK) {
		sw_seterr(err, errlen, "not a siteward package: %s",
			  s->too_big ? "too large" : archive_error_string(a));
		archive_read_free(a);
		return s->too_big ? SW_ETOOBIG : SW_EINVAL;
	}
	*out = a;
	return 0;
}

static void source_cleanup(struct source *s)
{
	if (s->h)
		gnutls_hash_deinit(s->h, NULL);
	s->h = NULL;
	free(s->buf);
	s->buf = NULL;
}

static int archive_fail(struct archive *a, const struct source *s, const char *what, char *err,
			size_t errlen)
{
	const char *msg = archive_error_string(a);

	sw_seterr(err, errlen, "%s: %s", what, msg ? msg : "unreadable archive");
	return s->too_big ? SW_ETOOBIG : SW_EINVAL;
}

/* Why an entry that is not a plain regular file is refused, or NULL if it is one. */
static const char *entry_refusal(struct archive_entry *e)
{
	if (archive_entry_hardlink(e) != NULL)
		return "hard link; a package carries only regular files";
	switch (archive_entry_filetype(e)) {
	case AE_IFREG: break;
	case AE_IFLNK: return "symbolic link; a package carries only regular files";
	case AE_IFDIR: return "folder entry; a package carries only regular files";
	case AE_IFCHR: return "character device; a package carries only regular files";
	case AE_IFBLK: return "block device; a package carries only regular files";
	case AE_IFIFO: return "named pipe; a package carries only regular files";
	case AE_IFSOCK: return "socket; a package carries only regular files";
	default: return "not a regular file";
	}
	if (archive_entry_symlink(e) != NULL)
		return "symbolic link; a package carries only regular files";
	if (archive_entry_sparse_count(e) > 0)
		return "sparse entry; a package carries only plain regular files";
	if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0)
		return "entry without a size";
	return NULL;
}

/* Reads a small metadata entry whole. */
static int read_small(struct archive *a, const struct source *s, struct archive_entry *e,
		      const char *name, size_t max, char **out, size_t *len, char *err,
		      size_t errlen)
{
	const char *why = entry_refusal(e);
	size_t size, used = 0;
	char *buf = NULL;
	la_ssize_t n;

	*out = NULL;
	if (why) {
		sw_seterr(err, errlen, "%s: %s", name, why);
		return SW_EDENIED;
	}
	if ((uint64_t)archive_entry_size(e) > max) {
		sw_seterr(err, errlen, "%s: larger than %zu bytes", name, max);
		return SW_ETOOBIG;
	}
	size = (size_t)archive_entry_size(e);
	buf = malloc(size + 1);
	if (buf == NULL) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	while ((n = archive_read_data(a, buf + used, size + 1 - used)) > 0) {
		used += (size_t)n;
		if (used > size)
			break;
	}
	if (n < 0 || used != size) {
		free(buf);
		if (n < 0)
			return archive_fail(a, s, name, err, errlen);
		sw_seterr(err, errlen, "%s: its data does not match its size", name);
		return SW_EINVAL;
	}
	buf[size] = '\0';
	*out = buf;
	*len = size;
	return 0;
}

/* Reads manifest.json and manifest.sig and checks the signature. With `expect`, the
 * manifest must be those bytes (a second pass over a verified package); otherwise it
 * is parsed into *m once its signature holds. */
static int read_head(struct archive *a, const struct source *s, const char *pub, const char *expect,
		     size_t expect_len, char **json, size_t *json_len, struct sw_pkg_manifest **m,
		     char *err, size_t errlen)
{
	struct archive_entry *e;
	char *sig = NULL, ebuf[512];
	size_t siglen = 0;
	const char *name;
	int r, rc;

	*json = NULL;
	r = archive_read_next_header(a, &e);
	if (r == ARCHIVE_EOF) {
		sw_seterr(err, errlen, "not a siteward package: the archive is empty");
		return SW_EINVAL;
	}
	if (r != ARCHIVE_OK)
		return archive_fail(a, s, "not a siteward package", err, errlen);
	name = archive_entry_pathname(e);
	if (name == NULL || strcmp(name, "manifest.json") != 0) {
		sw_seterr(err, errlen,
			  "not a siteward package: manifest.json is not its first entry");
		return SW_EINVAL;
	}
	rc = read_small(a, s, e, "manifest.json", SW_PKG_MANIFEST_MAX, json, json_len, err, errlen);
	if (rc)
		return rc;

	r = archive_read_next_header(a, &e);
	if (r != ARCHIVE_OK && r != ARCHIVE_EOF) {
		rc = archive_fail(a, s, "malformed package", err, errlen);
		goto out;
	}
	name = r == ARCHIVE_OK ? archive_entry_pathname(e) : NULL;
	if (name == NULL || strcmp(name, "manifest.sig") != 0) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "unsigned package");
		goto out;
	}
	if ((rc = read_small(a, s, e, "manifest.sig", SIG_MAX, &sig, &siglen, err, errlen)))
		goto out;
	while (siglen > 0 && (sig[siglen - 1] == '\n' || sig[siglen - 1] == '\r' ||
			      sig[siglen - 1] == ' ' || sig[siglen - 1] == '\t'))
		sig[--siglen] = '\0';
	if (siglen == 0) {
		rc = SW_EDENIED;
		sw_seterr(err, errlen, "unsigned package");
		goto out;
	}
	if (expect) {
		if (*json_len != expect_len || memcmp(*json, expect, expect_len) != 0) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "the package changed while it was read");
		}
		goto out;
	}
	rc = sw_pki_verify_signature(pub, *json, *json_len, strlen(sig) == siglen ? sig : "", ebuf,
				     sizeof(ebuf));
	if (rc == SW_EDENIED) {
		sw_seterr(err, errlen, "signature does not match the site's key");
		goto out;
	}
	if (rc) {
		sw_seterr(err, errlen, "cannot check the package's signature: %s", ebuf);
		goto out;
	}
	rc = sw_pkg_manifest_parse(*json, *json_len, m, ebuf, sizeof(ebuf));
	if (rc)
		sw_seterr(err, errlen, "signed but invalid: %s", ebuf);
out:
	free(sig);
	if (rc) {
		free(*json);
		*json = NULL;
	}
	return rc;
}

/* Creates `rel` (a checked payload path) below `rootfd`: folders 0755 as needed, the
 * file itself exclusively, no symbolic link followed. Returns the file's descriptor
 * and its folder's in *dirfd. */
static int create_beneath(int rootfd, const char *rel, int *dirfd, char *err, size_t errlen)
{
	char buf[SW_PKG_PATH_MAX + 1];
	char *p = buf, *slash;
	int fd = rootfd, next, made;

	*dirfd = -1;
	snprintf(buf, sizeof(buf), "%s", rel);
	while ((slash = strchr(p, '/')) != NULL) {
		*slash = '\0';
		made = mkdirat(fd, p, 0700) == 0;
		if (!made && errno != EEXIST) {
			sw_seterr(err, errlen, "cannot create the folder %s: %s", rel,
				  strerror(errno));
			goto fail;
		}
		next = openat(fd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0) {
			sw_seterr(err, errlen, "cannot open the folder of %s: %s", rel,
				  strerror(errno));
			goto fail;
		}
		if (made && (fchmod(next, 0755) < 0 || fsync(fd) < 0)) {
			sw_seterr(err, errlen, "cannot create the folder of %s: %s", rel,
				  strerror(errno));
			close(next);
			goto fail;
		}
		if (fd != rootfd)
			close(fd);
		fd = next;
		*slash = '/';
		p = slash + 1;
	}
	next = openat(fd, p, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (next < 0) {
		sw_seterr(err, errlen, "cannot create %s: %s", rel, strerror(errno));
		goto fail;
	}
	*dirfd = fd == rootfd ? dup(rootfd) : fd;
	if (*dirfd < 0) {
		sw_seterr(err, errlen, "cannot create %s: %s", rel, strerror(errno));
		close(next);
		return -1;
	}
	return next;
fail:
	if (fd != rootfd)
		close(fd);
	return -1;
}

/* Reads every payload entry and checks it against the manifest; when `destfd` is not
 * -1, writes each file below it as well. */
static int read_payload(struct archive *a, const struct source *s, const struct sw_pkg_manifest *m,
			int destfd, char *err, size_t errlen)
{
	unsigned char *seen = calloc(m->nfiles ? m->nfiles : 1, 1), *buf = malloc(CHUNK);
	gnutls_hash_hd_t h = NULL;
	struct archive_entry *e;
	int fd = -1, dirfd = -1, rc = 0, r;
	char sha[65];

	if (seen == NULL || buf == NULL) {
		rc = SW_ENOMEM;
		sw_seterr(err, errlen, "out of memory");
		goto out;
	}
	while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
		const char *name = archive_entry_pathname(e), *why;
		const struct sw_pkg_file *f;
		uint64_t total = 0;
		la_ssize_t n;

		if (name == NULL) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "an entry's name cannot be read");
			goto out;
		}
		/* A folder's name ends in '/': say what it is rather than that the path
		 * has an empty component. */
		if (archive_entry_filetype(e) == AE_IFDIR && !archive_entry_hardlink(e)) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "%s: %s", name, entry_refusal(e));
			goto out;
		}
		if (!sw_pkg_path_valid(name, &why)) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "%s: %s", name, why);
			goto out;
		}
		if (strncmp(name, PAYLOAD_PREFIX, PAYLOAD_PREFIXLN) != 0) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "%s: not under " PAYLOAD_PREFIX, name);
			goto out;
		}
		if ((why = entry_refusal(e)) != NULL) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "%s: %s", name, why);
			goto out;
		}
		f = sw_pkg_manifest_find(m, name + PAYLOAD_PREFIXLN);
		if (f == NULL) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "%s: not listed in the manifest", name);
			goto out;
		}
		if (seen[f - m->files]) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "%s: appears twice in the package", name);
			goto out;
		}
		seen[f - m->files] = 1;
		if ((uint64_t)archive_entry_size(e) != f->size) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "%s: size %" PRId64 ", the manifest says %" PRIu64,
				  name, (int64_t)archive_entry_size(e), f->size);
			goto out;
		}
		if (destfd >= 0) {
			fd = create_beneath(destfd, f->path, &dirfd, err, errlen);
			if (fd < 0) {
				rc = SW_EIO;
				goto out;
			}
		}
		if (gnutls_hash_init(&h, GNUTLS_DIG_SHA256) < 0) {
			rc = SW_ENOMEM;
			sw_seterr(err, errlen, "out of memory");
			goto out;
		}
		while ((n = archive_read_data(a, buf, CHUNK)) > 0) {
			total += (uint64_t)n;
			if (total > f->size)
				break;
			gnutls_hash(h, buf, (size_t)n);
			if (fd >= 0 && write_full(fd, buf, (size_t)n) < 0) {
				rc = SW_EIO;
				sw_seterr(err, errlen, "cannot write %s: %s", f->path,
					  strerror(errno));
				goto out;
			}
		}
		if (n < 0) {
			rc = archive_fail(a, s, name, err, errlen);
			goto out;
		}
		if (total != f->size) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "%s: its data does not match its size", name);
			goto out;
		}
		hex_digest(h, sha);
		h = NULL;
		if (strcmp(sha, f->sha256) != 0) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen, "%s: checksum mismatch", name);
			goto out;
		}
		if (fd >= 0) {
			if (fchmod(fd, f->mode) < 0 || fsync(fd) < 0 || close(fd) < 0) {
				fd = -1;
				rc = SW_EIO;
				sw_seterr(err, errlen, "cannot write %s: %s", f->path,
					  strerror(errno));
				goto out;
			}
			fd = -1;
			fsync(dirfd);
			close(dirfd);
			dirfd = -1;
		}
	}
	if (r != ARCHIVE_EOF) {
		rc = archive_fail(a, s, "malformed package", err, errlen);
		goto out;
	}
	for (size_t i = 0; i < m->nfiles; i++) {
		if (!seen[i]) {
			rc = SW_EDENIED;
			sw_seterr(err, errlen,
				  PAYLOAD_PREFIX
				  "%s: listed in the manifest but missing from the package",
				  m->files[i].path);
			goto out;
		}
	}
out:
	if (h)
		gnutls_hash_deinit(h, NULL);
	if (fd >= 0)
		close(fd);
	if (dirfd >= 0)
		close(dirfd);
	free(seen);
	free(buf);
	return rc;
}

/* One whole pass over a package: head, payload (written below `destfd` unless it is
 * -1), and the hash of every byte. */
static int read_package(struct source *s, const char *pub, const char *expect, size_t expect_len,
			int destfd, struct sw_pkg_manifest **out, char **json_out, size_t *json_len,
			char *err, size_t errlen)
{
	struct sw_pkg_manifest *m = NULL;
	const struct sw_pkg_manifest *use = *out;
	struct archive *a = NULL;
	char *json = NULL;
	size_t len = 0;
	int rc;

	rc = source_open(s, &a, err, errlen);
	if (rc)
		goto out;
	rc = read_head(a, s, pub, expect, expect_len, &json, &len, &m, err, errlen);
	if (rc)
		goto out;
	if (m)
		use = m;
	rc = read_payload(a, s, use, destfd, err, errlen);
	if (rc)
		goto out;
	rc = source_drain(s, err, errlen);
	if (rc)
		goto out;
	if (m) {
		m->package_size = s->bytes;
		hex_digest(s->h, m->package_sha256);
		s->h = NULL;
		*out = m;
		m = NULL;
	}
	if (json_out) {
		*json_out = json;
		*json_len = len;
		json = NULL;
	}
out:
	if (a)
		archive_read_free(a);
	sw_pkg_manifest_free(m);
	free(json);
	return rc;
}

int sw_pkg_verify_mem(const void *data, size_t len, const char *sign_pub_pem,
		      struct sw_pkg_manifest **out, char *err, size_t errlen)
{
	struct source s = {.fd = -1, .mem = data, .memlen = len};
	struct sw_pkg_manifest *m = NULL;
	static const unsigned char none[1];
	int rc;

	if (out)
		*out = NULL;
	if (s.mem == NULL)
		s.mem = none;
	rc = read_package(&s, sign_pub_pem, NULL, 0, -1, &m, NULL, NULL, err, errlen);
	source_cleanup(&s);
	if (rc == 0 && out)
		*out = m;
	else
		sw_pkg_manifest_free(m);
	return rc;
}

static int open_package(const char *path, char *err, size_t errlen)
{
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0) {
		sw_seterr(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return errno == ENOENT ? SW_ENOTFOUND : SW_EIO;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		sw_seterr(err, errlen, "%s is not a regular file", path);
		close(fd);
		return SW_EINVAL;
	}
	return fd;
}

int sw_pkg_verify(const char *path, const char *sign_pub_pem, struct sw_pkg_manifest **out,
		  char *err, size_t errlen)
{
	struct source s = {.fd = -1};
	struct sw_pkg_manifest *m = NULL;
	int rc;

	if (out)
		*out = NULL;
	s.fd = open_package(path, err, errlen);
	if (s.fd < 0)
		return s.fd;
	rc = read_package(&s, sign_pub_pem, NULL, 0, -1, &m, NULL, NULL, err, errlen);
	source_cleanup(&s);
	close(s.fd);
	if (rc == 0 && out)
		*out = m;
	else
		sw_pkg_manifest_free(m);
	return rc;
}

/* Removes what extraction wrote: regular files and folders only, none followed. */
static void remove_tree(int dirfd, const char *name, int depth)
{
	struct dirent *de;
	DIR *d;
	int fd;

	if (unlinkat(dirfd, name, 0) == 0 || errno == ENOENT)
		return;
	fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return;
	d = fdopendir(fd);
	if (d == NULL) {
		close(fd);
		return;
	}
	/* Entries removed while a folder is read may make readdir skip others: a second
	 * pass catches them. */
	for (int pass = 0; pass < 2; pass++) {
		rewinddir(d);
		while ((de = readdir(d)) != NULL) {
			if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
				continue;
			if (depth < SW_PKG_PATH_MAX)
				remove_tree(fd, de->d_name, depth + 1);
		}
	}
	closedir(d);
	unlinkat(dirfd, name, AT_REMOVEDIR);
}

int sw_pkg_extract(const char *path, const char *sign_pub_pem, const char *dest_dir, char *err,
		   size_t errlen)
{
	struct source s = {.fd = -1};
	struct sw_pkg_manifest *m = NULL;
	char parent[4096], tmpname[SW_PKG_NAME_MAX + 64], hex[17], *base, *json = NULL;
	size_t json_len = 0, n;
	struct stat st;
	int parentfd = -1, tmpfd = -1, made = 0, rc;

	n = dest_dir ? strlen(dest_dir) : 0;
	while (n > 1 && dest_dir[n - 1] == '/')
		n--;
	if (n == 0 || n >= sizeof(parent)) {
		sw_seterr(err, errlen, "no valid destination folder given");
		return SW_EINVAL;
	}
	memcpy(parent, dest_dir, n);
	parent[n] = '\0';
	base = strrchr(parent, '/');
	if (base) {
		*base++ = '\0';
	} else {
		base = parent;
	}
	if (*base == '\0' || strcmp(base, ".") == 0 || strcmp(base, "..") == 0 ||
	    strlen(base) > SW_PKG_NAME_MAX) {
		sw_seterr(err, errlen, "%s: not a folder that can be created", dest_dir);
		return SW_EINVAL;
	}
	parentfd = open(base == parent ? "."
			: *parent      ? parent
				       : "/",
			O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (parentfd < 0) {
		sw_seterr(err, errlen, "cannot open the folder of %s: %s", dest_dir,
			  strerror(errno));
		return errno == ENOENT ? SW_ENOTFOUND : SW_EIO;
	}
	if (fstatat(parentfd, base, &st, AT_SYMLINK_NOFOLLOW) == 0) {
		rc = SW_EEXIST;
		sw_seterr(err, errlen, "%s already exists", dest_dir);
		goto out;
	}

	s.fd = open_package(path, err, errlen);
	if (s.fd < 0) {
		rc = s.fd;
		s.fd = -1;
		goto out;
	}
	rc = read_package(&s, sign_pub_pem, NULL, 0, -1, &m, &json, &json_len, err, errlen);
	if (rc)
		goto out;

	if (sw_random_hex(hex, 8) < 0) {
		rc = SW_ECRYPTO;
		sw_seterr(err, errlen, "no random bytes for a temporary name");
		goto out;
	}
	snprintf(tmpname, sizeof(tmpname), ".%s.tmp-%s", base, hex);
	if (mkdirat(parentfd, tmpname, 0700) < 0) {
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot create a folder beside %s: %s", dest_dir,
			  strerror(errno));
		goto out;
	}
	made = 1;
	tmpfd = openat(parentfd, tmpname, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (tmpfd < 0) {
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot open %s: %s", tmpname, strerror(errno));
		goto out;
	}
	/* Second pass over the same open file: the bytes must be the ones verified, and
	 * every file's hash is checked again as it is written. */
	if (lseek(s.fd, 0, SEEK_SET) < 0) {
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot read %s: %s", path, strerror(errno));
		goto out;
	}
	rc = read_package(&s, sign_pub_pem, json, json_len, tmpfd, &m, NULL, NULL, err, errlen);
	if (rc)
		goto out;
	if (fchmod(tmpfd, 0755) < 0 || fsync(tmpfd) < 0) {
		rc = SW_EIO;
		sw_seterr(err, errlen, "cannot write %s: %s", dest_dir, strerror(errno));
		goto out;
	}
	if (renameat2(parentfd, tmpname, parentfd, base, RENAME_NOREPLACE) < 0) {
		rc = errno == EEXIST ? SW_EEXIST : SW_EIO;
		sw_seterr(err, errlen, "cannot rename the extracted folder to %s: %s", dest_dir,
			  strerror(errno));
		goto out;
	}
	made = 0;
	fsync(parentfd);
	rc = 0;
out:
	if (tmpfd >= 0)
		close(tmpfd);
	if (made)
		remove_tree(parentfd, tmpname, 0);
	if (s.fd >= 0)
		close(s.fd);
	source_cleanup(&s);
	sw_pkg_manifest_free(m);
	free(json);
	close(parentfd);
	return rc;
}
