/* Server-Sent Events: what sw_sse_format() writes reads back the same through the
 * parser, whatever pieces the bytes arrive in; the standard's line endings, comments,
 * fields and blank lines; and every bound. */
#include "error.h"
#include "sse.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#define MAX_SEEN 16

struct seen {
	int n;
	char type[MAX_SEEN][SW_SSE_NAME_MAX + 1];
	char data[MAX_SEEN][256];
	size_t len[MAX_SEEN];
	char id[MAX_SEEN][160];
	int stop_at; /* return 7 from this event on (1-based); 0: never */
};

static int on_event(const struct sw_sse_event *ev, void *arg)
{
	struct seen *s = arg;

	assert_true(s->n < MAX_SEEN);
	snprintf(s->type[s->n], sizeof(s->type[0]), "%s", ev->type);
	assert_true(ev->len < sizeof(s->data[0]));
	memcpy(s->data[s->n], ev->data, ev->len + 1);
	s->len[s->n] = ev->len;
	snprintf(s->id[s->n], sizeof(s->id[0]), "%s", ev->id);
	s->n++;
	return s->stop_at && s->n >= s->stop_at ? 7 : 0;
}

/* Feeds `text` to a new parser in pieces of `step` bytes (0: all at once). */
static int feed(struct seen *s, const char *text, size_t len, size_t step, size_t max,
		struct sw_sse_parser *keep)
{
	struct sw_sse_parser p;
	char err[128];
	int rc = 0;

	memset(s->type, 0, sizeof(s->type));
	s->n = 0;
	sw_sse_parser_init(&p, max, on_event, s);
	for (size_t at = 0; at < len && rc == 0;) {
		size_t n = step && len - at > step ? step : len - at;

		rc = sw_sse_feed(&p, text + at, n, err, sizeof(err));
		at += n;
	}
	if (keep)
		*keep = p;
	else
		sw_sse_parser_cleanup(&p);
	return rc;
}

static char *format(const char *event, const char *data, size_t len, size_t *out_len)
{
	size_t n = sw_sse_format(NULL, 0, event, data, len);
	char *out = malloc(n + 1);

	assert_non_null(out);
	assert_int_equal(sw_sse_format(out, n, event, data, len), n);
	out[n] = '\0';
	*out_len = n;
	return out;
}

static void test_format(void **state)
{
	size_t n;
	char *text, small[8];

	(void)state;
	text = format("run", "{\"a\":1}", 7, &n);
	assert_string_equal(text, "event: run\ndata: {\"a\":1}\n\n");
	free(text);
	text = format(NULL, "a\nb\r\nc\rd", 8, &n);
	assert_string_equal(text, "data: a\ndata: b\ndata: c\ndata: d\n\n");
	free(text);
	text = format("end", "", 0, &n);
	assert_string_equal(text, "event: end\ndata: \n\n");
	free(text);
	/* sized like snprintf: nothing written past the room given */
	memset(small, 'x', sizeof(small));
	assert_int_equal(sw_sse_format(small, 4, "run", "{}", 2),
			 strlen("event: run\ndata: {}\n\n"));
	assert_int_equal(small[4], 'x');

	assert_true(sw_sse_name_ok("run"));
	assert_false(sw_sse_name_ok(""));
	assert_false(sw_sse_name_ok("a\nb"));
	assert_false(sw_sse_name_ok("a:b"));
	assert_false(sw_sse_name_ok("0123456789012345678901234567890123456789012345678901234567890"
				    "12345"));
}

/* What is written reads back the same, in any pieces. */
static void test_round_trip(void **state)
{
	static const struct {
		const char *event, *data;
	} cases[] = {
	    {"run", "{\"systems\":[]}"}, {"end", ""},	  {NULL, "plain"},
	    {"x", "two\nlines"},	 {"y", "ends\n"}, {"z", "crlf\r\nand cr\rend"},
	};
	struct seen s = {0};

	(void)state;
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		size_t n;
		char *text = format(cases[c].event, cases[c].data, strlen(cases[c].data), &n);
		char want[64];

		/* CR and CRLF in the data come back as LF */
		snprintf(want, sizeof(want), "%s", cases[c].data);
		for (char *w = want, *r = want;; r++) {
			if (*r == '\r') {
				*w++ = '\n';
				if (r[1] == '\n')
					r++;
			} else if (!(*w++ = *r)) {
				break;
			}
		}
		for (size_t step = 0; step <= 3; step++) {
			assert_int_equal(feed(&s, text, n, step, 0, NULL), 0);
			assert_int_equal(s.n, 1);
			assert_string_equal(s.type[0], cases[c].event ? cases[c].event : "message");
			assert_string_equal(s.data[0], want);
			assert_int_equal(s.len[0], strlen(want));
		}
		free(text);
	}
}

/* The standard's reading: line endings of all three kinds (a CRLF split between two
 * pieces ends one line), comments, a line without a colon, no space after it, unknown
 * fields, id and retry, a byte-order mark first, and no event without data. */
static void test_reading(void **state)
{
	static const char text[] = "\xEF\xBB\xBF: keep-alive\r\n"
				   "\n"
				   "event: lonely\n"
				   "\n"
				   "id: 42\r"
				   "data:tight\r\n"
				   "data\n"
				   "unknown: field\n"
				   "retry: 1500\n"
				   "retry: soon\n"
				   "\n"
				   "event: second\r\n"
				   "data: x\r\n"
				   "\r\n";
	struct sw_sse_parser p;
	struct seen s = {0};

	(void)state;
	for (size_t step = 0; step <= 2; step++) {
		assert_int_equal(feed(&s, text, sizeof(text) - 1, step, 0, &p), 0);
		assert_int_equal(s.n, 2);
		assert_string_equal(s.type[0], "message");
		assert_string_equal(s.data[0], "tight\n");
		assert_string_equal(s.id[0], "42");
		assert_string_equal(s.type[1], "second");
		assert_string_equal(s.data[1], "x");
		assert_string_equal(s.id[1], "42");
		assert_int_equal(p.comments, 1);
		assert_int_equal(p.events, 2);
		assert_int_equal(p.retry_ms, 1500);
		sw_sse_parser_cleanup(&p);
	}
	/* a stream that stops mid-event delivers nothing of it */
	assert_int_equal(feed(&s, "event: run\ndata: {}\n", 20, 0, 0, NULL), 0);
	assert_int_equal(s.n, 0);
}

/* The callback's non-zero answer stops the feed and is returned. */
static void test_stop(void **state)
{
	static const char text[] = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
	struct seen s = {.stop_at = 2};

	(void)state;
	assert_int_equal(feed(&s, text, sizeof(text) - 1, 0, 0, NULL), 7);
	assert_int_equal(s.n, 2);
}

/* A line, an event's data, a name and an id each have a bound; past one the stream is
 * broken, for good. */
static void test_bounds(void **state)
{
	char line[200], err[128];
	struct sw_sse_parser p;
	struct seen s = {0};

	(void)state;
	memset(line, 'a', sizeof(line));
	memcpy(line, "data: ", 6);
	line[sizeof(line) - 1] = '\n';
	/* 199 bytes of line: within 256, past 100 */
	assert_int_equal(feed(&s, line, sizeof(line), 0, 256, NULL), 0);
	assert_int_equal(feed(&s, line, sizeof(line), 7, 100, &p), SW_ETOOBIG);
	assert_int_equal(sw_sse_feed(&p, "\n", 1, err, sizeof(err)), SW_ETOOBIG);
	assert_non_null(strstr(err, "broken"));
	sw_sse_parser_cleanup(&p);
	/* short lines adding up to too much data */
	{
		char many[400];
		size_t n = 0;

		while (n + 10 < sizeof(many)) {
			memcpy(many + n, "data: xyz\n", 10);
			n += 10;
		}
		assert_int_equal(feed(&s, many, n, 0, 100, NULL), SW_ETOOBIG);
		assert_int_equal(s.n, 0);
	}
	{
		const char *name = "event: 01234567890123456789012345678901234567890123456789012345"
				   "678901234\ndata: x\n\n";

		assert_int_equal(feed(&s, name, strlen(name), 0, 0, NULL), SW_ETOOBIG);
	}
	{
		char id[200];
		int n = snprintf(id, sizeof(id), "id: %0150d\ndata: x\n\n", 0);

		assert_int_equal(feed(&s, id, (size_t)n, 0, 0, NULL), SW_ETOOBIG);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_format),  cmocka_unit_test(test_round_trip),
	    cmocka_unit_test(test_reading), cmocka_unit_test(test_stop),
	    cmocka_unit_test(test_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
