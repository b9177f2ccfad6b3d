/* What a URL's query brings: its names and values as a command an agent took off its
 * channel decodes them, numbers as the server reads them, and text as the CLI shows it. */
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "http_server.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void on_query(struct sw_http_req *req, void *arg)
{
	const char *v = sw_http_req_query(req, "timeout");

	(void)arg;
	/* a decoded name or value holds no control character */
	for (const char *p = v; p && *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			abort();
	sw_http_reply_json(req, 200, json_object());
}

static void on_done(void *arg, unsigned status, char *body)
{
	(void)arg, (void)status;
	free(body);
}

static const struct sw_http_route routes[] = {
    {"GET", "/q", SW_HTTP_OPEN, on_query, 0},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sw_http_local_req in = {.method = "GET", .peer = "fuzz"};
	char *s = malloc(size + 1), *path = malloc(size + 4), *shown;
	double d;
	int64_t i;
	size_t n;

	if (!s || !path || !(shown = malloc(4 * size + 1))) {
		free(s);
		free(path);
		return 0;
	}
	memcpy(s, data, size);
	s[size] = '\0';

	if (sw_number_parse(s, 0.01, 3600, &d) == 0 && (!isfinite(d) || d < 0.01 || d > 3600))
		abort();
	if (sw_int_parse(s, -5, 10000, &i) == 0 && (i < -5 || i > 10000))
		abort();

	/* the bound the header promises, and nothing a terminal acts on */
	n = sw_printable(shown, 4 * size + 1, s);
	if (n != strlen(shown) || n > 4 * strlen(s))
		abort();
	for (size_t k = 0; k < n; k++)
		if ((unsigned char)shown[k] < 0x20 || shown[k] == 0x7f)
			abort();

	memcpy(path, "/q?", 3);
	memcpy(path + 3, s, strlen(s) + 1);
	in.path = path;
	sw_http_local(routes, 1, NULL, &in, on_done, NULL);

	free(shown);
	free(path);
	free(s);
	return 0;
}
