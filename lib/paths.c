#include "paths.h"

#include "error.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
