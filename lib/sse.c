#include "sse.h"

#include "error.h"

#include <stdlib.h>
#include <string.h>

#define DEFAULT_MAX (1024 * 1024)

static size_t put(char *out, size_t cap, size_t at, const char *s, size_t n)
{
	if (at + n <= cap)
		memcpy(out + at, s, n);
	return at + n;
}

size_t sw_sse_format(char *out, size_t cap, const char *event, const char *data, size_t len)
{
	size_t n = 0, i = 0;

	if (event) {
		n = put(out, cap, n, "event: ", 7);
		n = put(out, cap, n, event, strlen(event));
		n = put(out, cap, n, "\n", 1);
	}
	/* A line break of the data would end its line early: each line gets its own. */
	for (;;) {
		size_t j = i;

		while (j < len && data[j] != '\n' && data[j] != '\r')
			j++;
		n = put(out, cap, n, "data: ", 6);
		n = put(out, cap, n, data + i, j - i);
		n = put(out, cap, n, "\n", 1);
		if (j >= len)
			break;
		if (data[j] == '\r' && j + 1 < len && data[j + 1] == '\n')
			j++;
		i = j + 1;
	}
	return put(out, cap, n, "\n", 1);
}

int sw_sse_name_ok(const char *event)
{
	size_t n = strlen(event);

	if (n == 0 || n > SW_SSE_NAME_MAX)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)event[i] < 0x20 || event[i] == 0x7f || event[i] == ':')
			return 0;
	return 1;
}

void sw_sse_parser_init(struct sw_sse_parser *p, size_t max, sw_sse_event_fn cb, void *arg)
{
	memset(p, 0, sizeof(*p));
	p->cb = cb;
	p->arg = arg;
	p->max = max ? max : DEFAULT_MAX;
	p->retry_ms = -1;
}

void sw_sse_parser_cleanup(struct sw_sse_parser *p)
{
	free(p->line);
	free(p->data);
	p->line = p->data = NULL;
	p->line_len = p->line_cap = p->data_len = p->data_cap = 0;
}

/* Room for `n` more bytes and a NUL in a buffer that grows to at most max + 1. */
static int reserve(char **buf, size_t *cap, size_t len, size_t n, size_t max)
{
	size_t want = len + n + 1, c;
	char *b;

	if (want <= *cap)
		return 0;
	c = *cap ? *cap : 256;
	while (c < want)
		c *= 2;
	if (c > max + 1)
		c = max + 1;
	if (!(b = realloc(*buf, c)))
		return SW_ENOMEM;
	*buf = b;
	*cap = c;
	return 0;
}

static int broken(struct sw_sse_parser *p, char *err, size_t errlen, const char *what)
{
	p->failed = 1;
	sw_seterr(err, errlen, "event stream: %s", what);
	return SW_ETOOBIG;
}

/* The blank line: the event read so far goes to the callback. */
static int dispatch(struct sw_sse_parser *p)
{
	struct sw_sse_event ev;
	int rc;

	if (p->data_len == 0) { /* no data line: no event */
		p->type[0] = '\0';
		return 0;
	}
	p->data[--p->data_len] = '\0'; /* the '\n' after its last line */
	ev.type = p->type[0] ? p->type : "message";
	ev.data = p->data;
	ev.len = p->data_len;
	ev.id = p->id;
	p->events++;
	rc = p->cb(&ev, p->arg);
	p->data_len = 0;
	p->type[0] = '\0';
	return rc;
}

static int is_field(const char *s, size_t n, const char *name)
{
	return n == strlen(name) && memcmp(s, name, n) == 0;
}

static int line_done(struct sw_sse_parser *p, char *err, size_t errlen)
{
	const char *s = p->line ? p->line : "", *colon, *v;
	size_t n = p->line_len, flen, vlen;

	p->line_len = 0;
	if (!p->started) {
		p->started = 1;
		if (n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
			s += 3;
			n -= 3;
		}
	}
	if (n == 0)
		return dispatch(p);
	if (s[0] == ':') {
		p->comments++;
		return 0;
	}
	colon = memchr(s, ':', n);
	flen = colon ? (size_t)(colon - s) : n;
	v = colon ? colon + 1 : s + n;
	vlen = colon ? n - flen - 1 : 0;
	if (vlen > 0 && v[0] == ' ') {
		v++;
		vlen--;
	}
	if (is_field(s, flen, "event")) {
		if (vlen > SW_SSE_NAME_MAX)
			return broken(p, err, errlen, "an event name longer than 64 bytes");
		memcpy(p->type, v, vlen);
		p->type[vlen] = '\0';
	} else if (is_field(s, flen, "data")) {
		if (p->data_len + vlen + 1 > p->max)
			return broken(p, err, errlen, "an event larger than its bound");
		if (reserve(&p->data, &p->data_cap, p->data_len, vlen + 1, p->max))
			return SW_ENOMEM;
		memcpy(p->data + p->data_len, v, vlen);
		p->data_len += vlen;
		p->data[p->data_len++] = '\n';
		p->data[p->data_len] = '\0';
	} else if (is_field(s, flen, "id")) {
		/* an id holding a NUL is ignored, as the standard has it */
		if (vlen >= sizeof(p->id))
			return broken(p, err, errlen, "an event id longer than 128 bytes");
		if (!memchr(v, '\0', vlen)) {
			memcpy(p->id, v, vlen);
			p->id[vlen] = '\0';
		}
	} else if (is_field(s, flen, "retry")) {
		long ms = 0;
		size_t i;

		for (i = 0; i < vlen && i < 9 && v[i] >= '0' && v[i] <= '9'; i++)
			ms = ms * 10 + (v[i] - '0');
		if (vlen > 0 && i == vlen)
			p->retry_ms = ms;
	}
	return 0;
}

int sw_sse_feed(struct sw_sse_parser *p, const char *buf, size_t len, char *err, size_t errlen)
{
	size_t i = 0;
	int rc;

	if (p->failed) {
		sw_seterr(err, errlen, "event stream: broken by an earlier line");
		return SW_ETOOBIG;
	}
	while (i < len) {
		size_t j = i;

		if (p->cr && buf[i] == '\n') { /* the LF of a CRLF */
			p->cr = 0;
			i++;
			continue;
		}
		p->cr = 0;
		while (j < len && buf[j] != '\n' && buf[j] != '\r')
			j++;
		if (p->line_len + (j - i) > p->max)
			return broken(p, err, errlen, "a line longer than its bound");
		if (j > i) {
			if (reserve(&p->line, &p->line_cap, p->line_len, j - i, p->max))
				return SW_ENOMEM;
			memcpy(p->line + p->line_len, buf + i, j - i);
			p->line_len += j - i;
		}
		if (j >= len)
			break;
		p->cr = buf[j] == '\r';
		i = j + 1;
		if ((rc = line_done(p, err, errlen)))
			return rc;
	}
	return 0;
}
