/*
 * Program versions. An executable's version is the version of the Debian package that
 * installed it, read from dpkg's database through dpkg-query (ELF files carry no
 * version of their own). A product's version pattern is a shell glob over it.
 */
#ifndef SW_PROGVER_H
#define SW_PROGVER_H

#include <stddef.h>

/* Longest version kept or sent, and longest pattern. */
#define SW_PROG_VERSION_MAX 64

/* Lookups are bounded: each dpkg-query call gets this long before it is killed. */
#define SW_PROG_VERSION_TIMEOUT_MS 3000

/* The version of the package that installed the executable at `path` (absolute).
 * 0 with `out` set; SW_ENOTFOUND when no package owns it or dpkg-query is absent;
 * SW_ETIMEDOUT or SW_EIO when dpkg-query could not answer in time. */
int sw_program_version(const char *path, char *out, size_t outlen, char *err, size_t errlen);

/* From the output of `dpkg-query --search PATH...`, the package owning one of the
 * `npaths` paths (the first listed, with any ":arch"), into `pkg`. 0, or SW_ENOTFOUND. */
int sw_dpkg_owner_parse(const char *text, size_t len, const char *const *paths, size_t npaths,
			char *pkg, size_t pkglen);

/* 1 if `s` can be a Debian package version (what dpkg-query prints), 0 if not. */
int sw_prog_version_valid(const char *s);

/* How well `version` (NULL when unknown) fits `pattern`: -1 not at all; 0 for an empty
 * pattern, which fits every version, unknown included; 1 + the pattern's length for a
 * glob that matches, so the most specific of several matching patterns wins. */
int sw_version_match(const char *pattern, const char *version);

#endif
