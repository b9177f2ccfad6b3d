/*
 * memfloor: a program that links the libraries siteward-agent linked when this was
 * written (libuv, libmicrohttpd, libcurl-gnutls, GnuTLS, jansson, inih; bench/memory
 * lists any the agent has gained since) and does nothing else, so
 * bench/memory can tell the memory those libraries cost any process from the memory
 * that is the agent's own. With --curl-init it also runs curl_global_init(), as the
 * agent does. It exits by itself after SECONDS (default 120).
 */
#include <curl/curl.h>
#include <gnutls/gnutls.h>
#include <ini.h>
#include <jansson.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

static int on_ini(void *user, const char *section, const char *name, const char *value)
{
	(void)user;
	(void)section;
	(void)name;
	(void)value;
	return 1;
}

int main(int argc, char **argv)
{
	unsigned seconds = 120;
	int i;

	for (i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--curl-init") == 0) {
			if (curl_global_init(CURL_GLOBAL_DEFAULT))
				return 1;
		} else if (strcmp(argv[i], "--versions") == 0) {
			/* Also what keeps every library linked under --as-needed. */
			printf("libuv %s, libmicrohttpd %s, %s, GnuTLS %s, jansson %s, inih %d\n",
			       uv_version_string(), MHD_get_version(), curl_version(),
			       gnutls_check_version(NULL), jansson_version_str(),
			       ini_parse_string("", on_ini, NULL));
			return 0;
		} else if (atoi(argv[i]) > 0) {
			seconds = (unsigned)atoi(argv[i]);
		} else {
			fprintf(stderr, "usage: memfloor [--curl-init] [SECONDS] | --versions\n");
			return 2;
		}
	}
	/* sleep() returns early on a signal; the bench ends it with SIGTERM anyway. */
	sleep(seconds);
	return 0;
}
