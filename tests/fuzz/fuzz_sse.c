/* Event streams (text/event-stream) as the command line reads them from the site
 * server: read whole and read in pieces, the same events come out, each within its
 * bounds, and each written again by sw_sse_format() reads back the same. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX 4096

struct digest {
	uint64_t n, h;
};

static uint64_t mix(uint64_t h, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)s[i]) * 1099511628211u;
	return h * 31 + n;
}

static int again(const struct sw_sse_event *ev, void *arg)
{
	struct digest *d = arg;

	d->n++;
	d->h = mix(mix(d->h, ev->type, strlen(ev->type)), ev->data, ev->len);
	return 0;
}

static int on_event(const struct sw_sse_event *ev, void *arg)
{
	struct digest *d = arg;

	if (ev->len > MAX || strlen(ev->type) > SW_SSE_NAME_MAX || ev->data[ev->len] != '\0' ||
	    memchr(ev->data, '\r', ev->len) || strpbrk(ev->type, "\r\n"))
		abort();
	d->n++;
	d->h = mix(mix(d->h, ev->type, strlen(ev->type)), ev->data, ev->len);
	/* written again, it reads back as it was */
	if (sw_sse_name_ok(ev->type)) {
		size_t n = sw_sse_format(NULL, 0, ev->type, ev->data, ev->len);
		char *text = malloc(n);
		struct sw_sse_parser p;
		struct digest one = {0}, want = {1, 0};

		if (!text)
			return 0;
		if (sw_sse_format(text, n, ev->type, ev->data, ev->len) != n)
			abort();
		want.h = mix(mix(0, ev->type, strlen(ev->type)), ev->data, ev->len);
		sw_sse_parser_init(&p, n + 1, again, &one);
		if (sw_sse_feed(&p, text, n, NULL, 0) || one.n != want.n || one.h != want.h)
			abort();
		sw_sse_parser_cleanup(&p);
		free(text);
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sw_sse_parser whole, pieces;
	struct digest a = {0}, b = {0};
	size_t step;
	int ra, rb = 0;

	if (size < 1)
		return 0;
	step = data[0] % 17 + 1;
	data++;
	size--;
	sw_sse_parser_init(&whole, MAX, on_event, &a);
	ra = sw_sse_feed(&whole, (const char *)data, size, NULL, 0);
	sw_sse_parser_init(&pieces, MAX, on_event, &b);
	for (size_t at = 0; at < size && rb == 0; at += step)
		rb = sw_sse_feed(&pieces, (const char *)data + at,
				 size - at < step ? size - at : step, NULL, 0);
	if (ra != rb || a.n != b.n || a.h != b.h || whole.comments != pieces.comments)
		abort();
	/* a broken stream stays broken */
	if (ra && sw_sse_feed(&whole, "\n\n", 2, NULL, 0) == 0)
		abort();
	sw_sse_parser_cleanup(&whole);
	sw_sse_parser_cleanup(&pieces);
	return 0;
}
