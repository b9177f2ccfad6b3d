/*
 * Installed versions of a program's own files, as a site upgrade leaves them.
 *
 * A daemon's folder (the site folder, an agent's folder) holds, once it has been
 * upgraded:
 *   versions/V/        the install tree of version V, extracted from its package
 *                      (bin/siteward-agent, bin/siteward-meter, share/siteward/sql/…)
 *   current            a symbolic link to versions/V, the version that runs
 *   install.json       {"version":V, "previous":P, "previous_exe":PATH}: what ran before
 *                      the last switch, so it can be switched back to even when it was
 *                      not installed from a package (the first upgrade)
 * A switch replaces `current` with one rename, so the link always names a whole tree.
 *
 * The running version is the package version of the tree the program runs from: a
 * program started from DIR/versions/V/bin/ is version V; any other is the version it
 * was built as (SW_VERSION). Every function returns 0 or a negative SW_E* code with a
 * sentence in `err`.
 */
#ifndef SW_INSTALL_H
#define SW_INSTALL_H

#include <stddef.h>

#define SW_INSTALL_VERSIONS "versions"
#define SW_INSTALL_CURRENT  "current"
#define SW_INSTALL_RECORD   "install.json"

/* The running program's version as seen from the folder `dir` (see above), into `out`
 * (at least 33 bytes). */
void sw_install_version(const char *dir, char *out, size_t len);

/* The running program's own executable (resolved), into `out`. */
int sw_install_self(char *out, size_t len);

/* 1 if DIR/versions/V holds an extracted tree, 0 otherwise. */
int sw_install_has(const char *dir, const char *version);

/* Points DIR/current at versions/V (which must exist) with one rename, after recording
 * in install.json the version running now and its executable. */
int sw_install_switch(const char *dir, const char *version, char *err, size_t errlen);

/* Returns to what ran before the last switch: points `current` at versions/P if that
 * exists, or removes `current` when P was not installed from a package; `exe` receives
 * the program `prog` of version P. SW_ENOTFOUND when no switch was recorded, or the
 * recorded version is not `version`. */
int sw_install_switch_back(const char *dir, const char *version, const char *prog, char *exe,
			   size_t len, char *err, size_t errlen);

/* The executable `prog` of the version `current` names: DIR/current/bin/PROG. */
int sw_install_exe(const char *dir, const char *prog, char *out, size_t len);

/* Which program runs when both a packaged one (/usr/bin, as `dpkg` installs it) and a
 * service pack's (DIR/current) are there: the newer. 1 when `current` names a version
 * newer than `built` (the running program's own) and `self` (its resolved executable)
 * is not already DIR/current/bin/PROG: `out` receives the program to execute instead.
 * 0 to run on as it is: no `current`, a version as old or older (a package upgrade
 * newer than the service pack wins), or already the one. */
int sw_install_prefer(const char *dir, const char *prog, const char *self, const char *built,
		      char *out, size_t len);

/* At a daemon's start: executes DIR/current/bin/PROG in this process, with `argv`, when
 * sw_install_prefer() says so. Returns when it does not, or when that program cannot
 * be executed (said in the log): the running program goes on. */
void sw_install_exec_newer(const char *dir, const char *prog, char **argv);

#endif
