#include "paths.h"

#include "error.h"

#include "version.h"

#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int sw_daemon_options(int argc, char **argv, const char *program, void (*usage)(FILE *f),
		      const char *env, const char *dflt, const char **dir, int *check)
{
	static const struct option longopts[] = {
	    {"dir", required_argument, NULL, 'd'},
	    {"check", no_argument, NULL, 'n'},
	    {"version", no_argument, NULL, 'V'},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *given = NULL;
	int opt;

	*dir = NULL;
	optind = 1;
	while ((opt = getopt_long(argc, argv, check ? "nd:h" : "d:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'd': given = optarg; break;
		case 'n':
			if (!check)
				goto wrong;
			*check = 1;
			break;
		case 'V': printf("%s %s\n", program, SW_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: goto wrong;
		}
	}
	if (optind != argc)
		goto wrong;
	*dir = sw_path_dir(given, env, dflt);
	return 0;
wrong:
	usage(stderr);
	return SW_EINVAL;
}

const char *sw_path_dir(const char *given, const char *env, const char *dflt)
{
	const char *v;

	if (given && given[0])
		return given;
	v = env ? getenv(env) : NULL;
	return v && v[0] ? v : dflt;
}

/* Whether `a` and `b` name the same folder, by their resolved paths (either may be a
 * link to the other); the same spelling counts when the folder does not exist yet. */
static int same_dir(const char *a, const char *b)
{
	char ra[PATH_MAX], rb[PATH_MAX];

	if (realpath(a, ra) && realpath(b, rb))
		return strcmp(ra, rb) == 0;
	return strcmp(a, b) == 0;
}

int sw_path_is_default(const char *dir, const char *dflt)
{
	return same_dir(dir, dflt);
}

static int in_or(const char *dir, const char *dflt, const char *sys, const char *name, char *out,
		 size_t len)
{
	int n = same_dir(dir, dflt) ? snprintf(out, len, "%s/%s", sys, name)
				    : snprintf(out, len, "%s/%s", dir, name);

	return n < 0 || (size_t)n >= len ? SW_ETOOBIG : 0;
}

int sw_path_conf(const char *dir, const char *dflt, const char *name, char *out, size_t len)
{
	return in_or(dir, dflt, SW_PATH_ETC, name, out, len);
}

int sw_path_runtime(const char *dir, const char *dflt, const char *name, char *out, size_t len)
{
	return in_or(dir, dflt, SW_PATH_RUN, name, out, len);
}
