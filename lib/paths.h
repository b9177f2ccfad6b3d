/*
 * Where the programs keep their files when no folder is named: the state of a daemon in
 * /var/lib/siteward/, its configuration (siteward.conf, agent.conf) and what enrolls an
 * agent unattended (enroll.conf, token) in /etc/siteward/, the agent's socket in
 * /run/siteward/, as the Debian packages lay them out. A folder named with --dir (or SITEWARD_SITE,
 * SITEWARD_AGENT) holds everything itself, configuration included, as it always has: tests and the
 * demo run in temporary folders that way.
 */
#ifndef SW_PATHS_H
#define SW_PATHS_H

#include <stddef.h>
#include <stdio.h>

#define SW_PATH_SERVER_DIR "/var/lib/siteward/server"
#define SW_PATH_AGENT_DIR  "/var/lib/siteward/agent"
#define SW_PATH_ETC	   "/etc/siteward"
#define SW_PATH_RUN	   "/run/siteward"

/* The folder to use: `given` (an option), else the environment variable `env`, else
 * `dflt`. Never NULL. */
const char *sw_path_dir(const char *given, const char *env, const char *dflt);

/* The configuration file `name` of the folder `dir`: SW_PATH_ETC/NAME when `dir` is the
 * default folder `dflt`, else DIR/NAME. 0, or SW_ETOOBIG. */
int sw_path_conf(const char *dir, const char *dflt, const char *name, char *out, size_t len);

/* The runtime file `name` (a socket) of the folder `dir`: SW_PATH_RUN/NAME when `dir` is
 * the default folder `dflt`, else DIR/NAME. 0, or SW_ETOOBIG. */
int sw_path_runtime(const char *dir, const char *dflt, const char *name, char *out, size_t len);

/* Whether `dir` is the default folder `dflt` (the same folder by any spelling). */
int sw_path_is_default(const char *dir, const char *dflt);

/* The options every daemon takes: -d/--dir (else the environment variable `env`, else
 * the default folder `dflt`), -n/--check when `check` is not NULL, --version (printed
 * as "PROGRAM VERSION") and -h/--help (`usage` to stdout). 0 with `*dir` set to go on,
 * 0 with `*dir` NULL when there is nothing more to do (--help, --version), SW_EINVAL
 * after `usage` to stderr for a wrong option or a stray argument. */
int sw_daemon_options(int argc, char **argv, const char *program, void (*usage)(FILE *f),
		      const char *env, const char *dflt, const char **dir, int *check);

#endif
