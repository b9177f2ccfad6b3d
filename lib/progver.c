/*
 * Program versions: which Debian package installed an executable, and that package's
 * version, through dpkg-query; and the version patterns of products.
 */
#include "progver.h"

#include "error.h"
#include "util.h"

#include <errno.h>
#include <fnmatch.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

/* What dpkg-query --search prints for a few paths: a line per owner, some for
 * diversions. */
#define SEARCH_OUT_MAX 8192

int sw_prog_version_valid(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > SW_PROG_VERSION_MAX)
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      strchr(".+~:-_", c)))
			return 0;
	}
	return 1;
}

/* A package name as dpkg writes it, with an optional ":arch". */
static int package_valid(const char *s, size_t n)
{
	if (n == 0 || n > 128 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
		return 0;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || strchr("+.-:", c)))
			return 0;
	}
	return 1;
}

int sw_dpkg_owner_parse(const char *text, size_t len, const char *const *paths, size_t npaths,
			char *pkg, size_t pkglen)
{
	const char *p = text, *end = text + len;

	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		size_t n = eol ? (size_t)(eol - p) : (size_t)(end - p);

		/* "diversion by X from: PATH" and "... to: PATH" name no owner. */
		if (!(n >= 10 && memcmp(p, "diversion ", 10) == 0)) {
			for (size_t k = 0; k < npaths; k++) {
				size_t pl = strlen(paths[k]), names;
				const char *comma;

				/* "PKG[, PKG...]: PATH" */
				if (pl + 2 >= n || memcmp(p + n - pl, paths[k], pl) != 0 ||
				    memcmp(p + n - pl - 2, ": ", 2) != 0)
					continue;
				names = n - pl - 2;
				comma = memchr(p, ',', names);
				if (comma)
					names = (size_t)(comma - p);
				if (!package_valid(p, names) || names >= pkglen)
					continue;
				memcpy(pkg, p, names);
				pkg[names] = '\0';
				return 0;
			}
		}
		p += n + 1;
	}
	return SW_ENOTFOUND;
}

/* dpkg-query's run ended: how it ended, as an error. */
static int query_status(int rc, int status)
{
	if (rc)
		return rc;
	return WIFEXITED(status) && WEXITSTATUS(status) <= 1 ? 0 : SW_EIO;
}

int sw_program_version(const char *path, char *out, size_t outlen, char *err, size_t errlen)
{
	char tool[PATH_MAX], real[PATH_MAX], pkg[160], search[SEARCH_OUT_MAX], version[256];
	const char *paths[3];
	size_t npaths = 0;
	int rc, status;

	out[0] = '\0';
	if ((rc = sw_path_find("dpkg-query", tool, sizeof(tool), err, errlen)))
		return SW_ENOTFOUND; /* not a Debian system: no package versions */
	if (!realpath(path, real)) {
		sw_seterr(err, errlen, "%s: %s", path, strerror(errno));
		return SW_ENOTFOUND;
	}
	/* dpkg-query takes a glob: a path with glob characters cannot be asked exactly. */
	if (strpbrk(real, "*?[\\")) {
		sw_seterr(err, errlen, "%s: no package owns a path like this", real);
		return SW_ENOTFOUND;
	}
	/* Merged /usr: dpkg may list /usr/bin/x as /bin/x, the name the package shipped. */
	paths[npaths++] = real;
	if (strncmp(real, "/usr/", 5) == 0 && strchr(real + 5, '/'))
		paths[npaths++] = real + 4;
	char *search_argv[] = {tool, "--search", (char *)paths[0],
			       npaths > 1 ? (char *)paths[1] : NULL, NULL};
	rc = sw_command_output(search_argv, SW_PROG_VERSION_TIMEOUT_MS, search, sizeof(search),
			       &status, err, errlen);
	if ((rc = query_status(rc, status)))
		return rc;
	if (sw_dpkg_owner_parse(search, strlen(search), paths, npaths, pkg, sizeof(pkg))) {
		sw_seterr(err, errlen, "no package owns %s", real);
		return SW_ENOTFOUND;
	}
	char *show_argv[] = {tool, "--show", "--showformat=${Version}", pkg, NULL};
	rc = sw_command_output(show_argv, SW_PROG_VERSION_TIMEOUT_MS, version, sizeof(version),
			       &status, err, errlen);
	if (rc)
		return rc;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !sw_prog_version_valid(version)) {
		sw_seterr(err, errlen, "dpkg-query gives no usable version of %s", pkg);
		return SW_ENOTFOUND;
	}
	if (strlen(version) >= outlen)
		return SW_ETOOBIG;
	snprintf(out, outlen, "%s", version);
	return 0;
}

int sw_version_match(const char *pattern, const char *version)
{
	if (!pattern || !pattern[0])
		return 0;
	if (!version || !version[0])
		return -1; /* lint: allow return-minus: a score, -1 is "no match" */
	return fnmatch(pattern, version, 0) == 0 ? 1 + (int)strlen(pattern) : -1;
}
