/*
 * Service packs: signed archives of an install tree, the unit of a site upgrade.
 *
 * A package is a gzip-compressed tar archive (pax format restricted to ustar where
 * possible, written by libarchive; the reader also accepts an uncompressed tar) whose
 * entries are, in this order:
 *   manifest.json   what the package holds (format 1, see sw_pkg_manifest_parse)
 *   manifest.sig    base64 Ed25519 signature over the exact bytes of manifest.json,
 *                   made with the site's signing key (DIR/signing.key)
 *   files/PATH ...  the payload: regular files only, each listed in the manifest
 *
 * manifest.json:
 *   {"format":1, "version":"0.2.0", "min_version":"0.1.0", "created_at":MS,
 *    "files":[{"path":"bin/siteward-agent","size":N,"sha256":"HEX","mode":493}, ...],
 *    "migrations":["006_upgrade.sql", ...]}
 * `min_version` is the lowest version the package upgrades from. `migrations` names the
 * schema migrations the package carries: the files share/siteward/sql/NAME.sql of its
 * payload (directly in that folder), in name order, which is the order they apply in.
 *
 * Verification reads the archive once and writes nothing: the manifest's signature is
 * checked against the site's public key before the manifest is parsed and before any
 * payload byte is trusted; then every payload entry must be a listed regular file with
 * a safe path, its size and SHA-256 as listed, and every listed file must be present.
 * Bytes that carry no content are not checked: the gzip header's time stamp, and what
 * follows the tar's end-of-archive blocks (padding and the gzip trailer), since the
 * reader stops there. Every byte that is extracted is.
 *
 * Every function returns 0 or a negative SW_E* code with a sentence in `err` (if not
 * NULL). A refused package is SW_EDENIED (SW_EINVAL when it is not a readable package,
 * SW_ETOOBIG past a limit), with the reason, e.g. "unsigned package",
 * "signature does not match the site's key",
 * "files/bin/x: checksum mismatch", "files/../x: path leaves the package".
 */
#ifndef SW_PKG_H
#define SW_PKG_H

#include <stddef.h>
#include <stdint.h>

#define SW_PKG_FORMAT	    1
#define SW_PKG_VERSION_MAX  32			  /* bytes in a version string */
#define SW_PKG_PATH_MAX	    1024		  /* bytes in a payload path (below files/) */
#define SW_PKG_NAME_MAX	    255			  /* bytes in one path component */
#define SW_PKG_FILES_MAX    65536		  /* files in one package */
#define SW_PKG_FILE_MAX	    ((uint64_t)512 << 20) /* bytes in one payload file */
#define SW_PKG_TOTAL_MAX    ((uint64_t)2 << 30)	  /* payload bytes in one package */
#define SW_PKG_MANIFEST_MAX ((size_t)16 << 20)	  /* bytes of manifest.json */
#define SW_PKG_SQL_DIR	    "share/siteward/sql/" /* where a package's migrations live */

struct sw_pkg_file {
	char *path;	 /* relative to the install tree: "bin/siteward-agent" */
	uint64_t size;	 /* bytes, at most SW_PKG_FILE_MAX */
	char sha256[65]; /* lowercase hex */
	unsigned mode;	 /* permission bits, within 0755 */
};

struct sw_pkg_manifest {
	int format;
	char version[SW_PKG_VERSION_MAX + 1];
	char min_version[SW_PKG_VERSION_MAX + 1];
	int64_t created_at; /* ms since the epoch */
	size_t nfiles;
	struct sw_pkg_file *files; /* sorted by path, no repeats */
	size_t nmigrations;
	char **migrations;   /* in the order they apply */
	uint64_t total_size; /* sum of the files' sizes */
	/* Filled by sw_pkg_verify only: the package file's size and SHA-256 (hex). */
	uint64_t package_size;
	char package_sha256[65];
};

/* What sw_pkg_build wrote. */
struct sw_pkg_built {
	size_t nfiles;
	size_t nmigrations;
	uint64_t payload_bytes;	 /* sum of the files' sizes */
	uint64_t package_bytes;	 /* size of the package file */
	char package_sha256[65]; /* SHA-256 of the package file, lowercase hex */
};

/* 1 if `v` is a version string: 1..32 characters of [0-9A-Za-z.+-], starting with a
 * digit; 0 otherwise. */
int sw_version_valid(const char *v);

/* Orders two versions: <0, 0 or >0 as `a` is older than, the same as, or newer than `b`.
 * Versions are compared component by component ('.'-separated); within a component the
 * leading digits compare as a number (no overflow, leading zeros ignored), then the rest
 * as a string. A missing component counts as "0", so 1.2 == 1.2.0 < 1.10 < 1.10.3. A
 * suffix sorts after its absence (1.2.0 < 1.2.0-rc1): this is not semver's pre-release
 * rule. */
int sw_version_cmp(const char *a, const char *b);

/* 1 if `path` is a payload path a package may carry: 1..SW_PKG_PATH_MAX bytes of
 * printable ASCII, not absolute, no backslash, no empty, "." or ".." component, no
 * component longer than SW_PKG_NAME_MAX; 0 otherwise with the reason in `why` (a static
 * string, e.g. "path leaves the package") when `why` is not NULL. */
int sw_pkg_path_valid(const char *path, const char **why);

/* Parses `len` bytes of manifest.json into a new manifest the caller frees with
 * sw_pkg_manifest_free; on failure *out is NULL. Checks every field's type and bound,
 * paths (sw_pkg_path_valid), duplicates, a file that is also a folder of another,
 * min_version <= version, and that each migration is a listed file under SW_PKG_SQL_DIR.
 * Unknown members are ignored. This parses untrusted bytes: it is fuzzed. */
int sw_pkg_manifest_parse(const char *json, size_t len, struct sw_pkg_manifest **out, char *err,
			  size_t errlen);
void sw_pkg_manifest_free(struct sw_pkg_manifest *m);

/* Looks up a file by path in a parsed manifest; NULL if it is not listed. The pointer
 * belongs to `m`. */
const struct sw_pkg_file *sw_pkg_manifest_find(const struct sw_pkg_manifest *m, const char *path);

/* Packages the install tree `from_dir` (every regular file below it, by relative path)
 * as version `version` upgrading from `min_version` (NULL: "0"), signed with the Ed25519
 * key `sign_key_pem`, into `out_path`. The package is written to a temporary file beside
 * `out_path` and renamed over it only when complete and synced, so a failure leaves no
 * partial package. Refuses symbolic links and special files in the tree (a link could
 * point outside it), setuid/setgid/sticky bits, a file over SW_PKG_FILE_MAX bytes, a
 * payload over SW_PKG_TOTAL_MAX, and a file that changes while it is packaged. Modes are
 * recorded as the files' permission bits without group and other write. `info` (may be
 * NULL) receives what was written. */
int sw_pkg_build(const char *from_dir, const char *version, const char *min_version,
		 const char *sign_key_pem, const char *out_path, struct sw_pkg_built *info,
		 char *err, size_t errlen);

/* Verifies the package at `path` against the site's public key `sign_pub_pem` (PEM)
 * without writing anything. On success `out` (may be NULL) receives the manifest, which
 * the caller frees with sw_pkg_manifest_free; on failure *out is NULL. */
int sw_pkg_verify(const char *path, const char *sign_pub_pem, struct sw_pkg_manifest **out,
		  char *err, size_t errlen);

/* The same for a package held in memory (`data` is only read). */
int sw_pkg_verify_mem(const void *data, size_t len, const char *sign_pub_pem,
		      struct sw_pkg_manifest **out, char *err, size_t errlen);

/* Verifies the package fully (sw_pkg_verify), then writes its payload into `dest_dir`,
 * which must not exist yet and whose parent must. The files are written into a
 * temporary folder beside it, with their hashes checked again as they are written, the
 * manifest's modes, folders 0755, and no symbolic link followed; the folder is renamed
 * to `dest_dir` only when every file is written and synced. On failure nothing is left
 * at `dest_dir` nor beside it. */
int sw_pkg_extract(const char *path, const char *sign_pub_pem, const char *dest_dir, char *err,
		   size_t errlen);

#endif
