/* siteward package build|verify: service packs, signed with the site's key. They need
 * the site folder's signing key, not the server. */
#include "cli.h"

#include "error.h"
#include "pkg.h"
#include "util.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void package_usage(void)
{
	cli_error("usage: siteward package build --version V [--min-version V] --from PREFIX -o "
		  "FILE\n"
		  "       siteward package verify FILE");
}

/* Reads DIR/name from the site folder. */
static int site_key(const char *site, const char *name, char **pem)
{
	char dir[PATH_MAX], err[512];

	*pem = NULL;
	if (site == NULL) {
		cli_error("no site: pass --site DIR or set SITEWARD_SITE");
		return 2;
	}
	if (!realpath(site, dir)) {
		cli_error("%s: no such site folder", site);
		return 1;
	}
	if (sw_pem_read(dir, name, pem, err, sizeof(err))) {
		cli_error("the site's package signing key: %s", err);
		return 1;
	}
	return 0;
}

static int package_build(struct cli *c, const char *site, int argc, char **argv)
{
	const char *version = NULL, *min_version = "0", *from = NULL, *out = NULL;
	struct sw_pkg_built info;
	char err[1024], *key = NULL;
	int rc;

	for (int i = 0; i < argc; i++) {
		const char *o = argv[i];

		if (i + 1 >= argc) {
			package_usage();
			return 2;
		}
		if (strcmp(o, "--version") == 0)
			version = argv[++i];
		else if (strcmp(o, "--min-version") == 0)
			min_version = argv[++i];
		else if (strcmp(o, "--from") == 0)
			from = argv[++i];
		else if (strcmp(o, "-o") == 0 || strcmp(o, "--output") == 0)
			out = argv[++i];
		else {
			package_usage();
			return 2;
		}
	}
	if (!version || !from || !out) {
		package_usage();
		return 2;
	}
	if (!sw_version_valid(version) || !sw_version_valid(min_version)) {
		cli_error("'%s' is not a version: 1..%d of 0-9 A-Z a-z . + -, starting with a "
			  "digit",
			  sw_version_valid(version) ? min_version : version, SW_PKG_VERSION_MAX);
		return 2;
	}
	rc = site_key(site, "signing.key", &key);
	if (rc)
		return rc;
	if (sw_pkg_build(from, version, min_version, key, out, &info, err, sizeof(err))) {
		cli_error("package build: %s", err);
		free(key);
		return 1;
	}
	free(key);
	if (c->json) {
		json_t *j = json_pack(
		    "{s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:s}", "file", out, "version", version,
		    "min_version", min_version, "files", (json_int_t)info.nfiles, "migrations",
		    (json_int_t)info.nmigrations, "bytes", (json_int_t)info.package_bytes,
		    "payload_bytes", (json_int_t)info.payload_bytes, "sha256", info.package_sha256);
		if (j == NULL) {
			cli_error("out of memory");
			return 1;
		}
		print_json(j);
		json_decref(j);
	} else {
		printf("%s: siteward %s (upgrades from %s), %zu files, %" PRIu64
		       " bytes\nsha256 %s\n",
		       out, version, min_version, info.nfiles, info.package_bytes,
		       info.package_sha256);
	}
	return 0;
}

static int package_verify(struct cli *c, const char *site, int argc, char **argv)
{
	struct sw_pkg_manifest *m = NULL;
	char err[1024], created[32], *pub = NULL;
	json_t *j = NULL, *migs;
	struct tm tm;
	time_t t;
	int rc;

	if (argc != 1 || argv[0][0] == '-') {
		package_usage();
		return 2;
	}
	rc = site_key(site, "signing.pub", &pub);
	if (rc)
		return rc;
	rc = sw_pkg_verify(argv[0], pub, &m, err, sizeof(err));
	free(pub);
	if (rc) {
		if (c->json) {
			j = json_pack("{s:s, s:b, s:s}", "file", argv[0], "valid", 0, "error", err);
			if (j)
				print_json(j);
			json_decref(j);
		}
		cli_error("%s: refused: %s", argv[0], err);
		return 1;
	}
	t = (time_t)(m->created_at / 1000);
	if (gmtime_r(&t, &tm) == NULL ||
	    strftime(created, sizeof(created), "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
		snprintf(created, sizeof(created), "?");
	if (c->json) {
		migs = json_array();
		for (size_t i = 0; migs && i < m->nmigrations; i++)
			json_array_append_new(migs, json_string(m->migrations[i]));
		j = json_pack("{s:s, s:b, s:s, s:s, s:I, s:I, s:I, s:o*, s:I, s:s}", "file",
			      argv[0], "valid", 1, "version", m->version, "min_version",
			      m->min_version, "created_at", (json_int_t)m->created_at, "files",
			      (json_int_t)m->nfiles, "payload_bytes", (json_int_t)m->total_size,
			      "migrations", migs, "bytes", (json_int_t)m->package_size, "sha256",
			      m->package_sha256);
		if (j == NULL) {
			cli_error("out of memory");
			sw_pkg_manifest_free(m);
			return 1;
		}
		print_json(j);
		json_decref(j);
	} else {
		printf("%s: siteward %s (upgrades from %s), built %s, signed by this site\n"
		       "%zu files, %" PRIu64 " bytes unpacked, %" PRIu64 " bytes packed\n"
		       "sha256 %s\n",
		       argv[0], m->version, m->min_version, created, m->nfiles, m->total_size,
		       m->package_size, m->package_sha256);
		if (m->nmigrations > 0) {
			printf("migrations:");
			for (size_t i = 0; i < m->nmigrations; i++)
				printf(" %s", m->migrations[i]);
			printf("\n");
		}
	}
	sw_pkg_manifest_free(m);
	return 0;
}

int cmd_package(struct cli *c, int argc, char **argv)
{
	const char *site = c->site_arg;

	if (argc >= 1 && strcmp(argv[0], "build") == 0)
		return package_build(c, site, argc - 1, argv + 1);
	if (argc >= 1 && strcmp(argv[0], "verify") == 0)
		return package_verify(c, site, argc - 1, argv + 1);
	package_usage();
	return 2;
}
