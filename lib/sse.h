/*
 * Server-Sent Events: the text/event-stream format of the HTML standard, in which a
 * long operation's progress travels as events over one HTTP response. An event is
 * lines of "field: value" ended by a blank line; a line starting with ':' is a comment,
 * which a server sends to keep an idle stream alive.
 *
 * sw_sse_format() writes one event; the parser reads events back from bytes as they
 * arrive, in pieces of any size, with every line and event bounded.
 */
#ifndef SW_SSE_H
#define SW_SSE_H

#include <stddef.h>
#include <stdint.h>

/* The longest event name written or read. */
#define SW_SSE_NAME_MAX 64

/* Writes the event named `event` (NULL: an unnamed one, which readers take as
 * "message") with `data` of `len` bytes into `out` when it fits in `cap` bytes: an
 * "event:" line, a "data:" line for each line of `data` (split at CR, LF or CRLF), and
 * the blank line that ends it. Returns the bytes the event takes, whether or not it
 * fitted (as snprintf does, without a NUL), so a first call with `cap` 0 sizes it. The
 * caller checks the name with sw_sse_name_ok(). */
size_t sw_sse_format(char *out, size_t cap, const char *event, const char *data, size_t len);
/* Whether `event` may name an event: 1 to SW_SSE_NAME_MAX bytes, none of them a
 * control character or ':'. */
int sw_sse_name_ok(const char *event);

/* An event as read. */
struct sw_sse_event {
	const char *type; /* its name, "message" when it gave none */
	const char *data; /* its data lines joined by '\n', NUL-terminated */
	size_t len;	  /* bytes of data */
	const char *id;	  /* the last event id the stream gave, "" if none */
};
/* Called for each event read: 0 to go on; anything else stops sw_sse_feed(), which
 * returns it. */
typedef int (*sw_sse_event_fn)(const struct sw_sse_event *ev, void *arg);

struct sw_sse_parser {
	sw_sse_event_fn cb;
	void *arg;
	size_t max; /* the longest line, and the most data an event may carry */
	char *line; /* the line being read */
	size_t line_len, line_cap;
	char *data; /* the event's data so far, each line followed by '\n' */
	size_t data_len, data_cap;
	char type[SW_SSE_NAME_MAX + 1];
	char id[SW_SSE_NAME_MAX * 2 + 1];
	int cr;		   /* the last byte was a CR: a LF right after it ends nothing more */
	int started;	   /* past the stream's first bytes (a byte-order mark is dropped) */
	int failed;	   /* a bound was broken: every later feed fails */
	uint64_t comments; /* comment lines read: the keep-alives */
	uint64_t events;   /* events delivered */
	long retry_ms;	   /* the reconnection time the stream asked for, -1 if none */
};

/* A parser that delivers events to `cb`; a line, or an event's data, longer than `max`
 * bytes breaks the stream (0: 1 MiB). */
void sw_sse_parser_init(struct sw_sse_parser *p, size_t max, sw_sse_event_fn cb, void *arg);
void sw_sse_parser_cleanup(struct sw_sse_parser *p);
/* Reads `len` more bytes of the stream; calls `cb` for each event they end. 0; or
 * SW_ETOOBIG when a line or an event passed the bound (said in `err`), after which the
 * stream is broken and every feed fails; SW_ENOMEM; or the non-zero value `cb`
 * returned. */
int sw_sse_feed(struct sw_sse_parser *p, const char *buf, size_t len, char *err, size_t errlen);

#endif
