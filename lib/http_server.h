/*
 * The HTTPS API server: libmicrohttpd in external epoll mode on a libuv loop, mutual
 * TLS under the site CA, JSON in and out.
 *
 * A peer's certificate chain is verified once per connection and its identity cached;
 * the revocation check runs on every request, so a removed system is refused at once
 * even on a connection it already holds. A TLS handshake must finish within the
 * handshake timeout; an idle keep-alive connection is closed after the idle timeout.
 *
 * A handler answers with sw_http_reply*() — at once, or later from another callback
 * on the same loop (the connection is suspended meanwhile). Exactly one reply per
 * request.
 */
#ifndef SW_HTTP_SERVER_H
#define SW_HTTP_SERVER_H

#include "metrics.h"
#include "pki.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Who may call a route: a mask of certificate roles; 0 means anyone (no certificate). */
#define SW_HTTP_OPEN   0u
#define SW_HTTP_ADMIN  1u
#define SW_HTTP_AGENT  2u
#define SW_HTTP_SERVER 4u
#define SW_HTTP_CLIENT 8u  /* a machine's metering client */
#define SW_HTTP_SCRAPE 16u /* a monitoring system's scraper: /metrics only */
/* Administrators come in three levels, by the rights the server gives each admin
 * certificate (sw_http_server_opts.admin_level): a route of SW_HTTP_VIEWER admits every
 * administrator, SW_HTTP_OPERATOR operators and admins, SW_HTTP_ADMIN admins alone. A
 * server without admin_level takes every admin certificate as an admin. */
#define SW_HTTP_OPERATOR 32u
#define SW_HTTP_VIEWER	 64u
/* Not a role but a flag of the route's mask: its body goes to a file in the server's
 * upload_dir as it arrives, not to memory (see sw_http_req_body_file); for uploads
 * larger than memory should hold. */
#define SW_HTTP_BODY_FILE 0x100u

/* Largest request body accepted by default. */
#define SW_HTTP_MAX_BODY (64 * 1024)

struct sw_http_req;
typedef void (*sw_http_handler)(struct sw_http_req *req, void *arg);

struct sw_http_route {
	const char *method;
	const char *path; /* exact, or a prefix ending in '*' (see sw_http_req_tail) */
	unsigned roles;	  /* SW_HTTP_* mask */
	sw_http_handler fn;
	size_t max_body; /* 0: SW_HTTP_MAX_BODY */
};

struct sw_http_server_opts {
	const char *listen;			 /* HOST:PORT; port 0 picks a free one */
	const char *cert_pem, *key_pem, *ca_pem; /* the server's and the site CA's */
	unsigned handshake_timeout_s;		 /* default 10 */
	unsigned idle_timeout_s;		 /* default 120 */
	/* Default 20000; fewer if the open-file limit at start leaves no room for them
	 * (sw_http_server_capacity says how many). */
	unsigned max_connections;
	/* At most this many connections between accept and their first request (TLS
	 * handshakes, mostly): one more is closed as it is accepted, before any TLS work,
	 * so a fleet reconnecting at once costs the server only what it can take. Default
	 * 256; the refusals are logged once a second. */
	unsigned max_handshakes;
	const struct sw_http_route *routes;
	size_t nroutes;
	void *arg; /* passed to handlers and is_revoked */
	/* Non-zero if the certificate with this serial must be refused; may be NULL. */
	int (*is_revoked)(void *arg, const char *serial);
	/* Where the bodies of SW_HTTP_BODY_FILE routes are written; NULL: such routes
	 * answer 500. */
	const char *upload_dir;
	/* The level of an administrator ("admin", "operator" or "viewer"), or NULL for an
	 * admin certificate that is no administrator of this site (refused everywhere). NULL:
	 * every admin certificate is an admin. */
	const char *(*admin_level)(void *arg, const struct sw_identity *id);
	/* An administrator's change (any method but GET and HEAD) as it is answered, before
	 * the answer goes: non-zero holds the answer until sw_http_reply_release(req) (the
	 * record of it stored first). Also called for an administrator's request its route
	 * refuses, with `may_hold` 0: that answer is not held. NULL: nothing recorded. */
	int (*audit)(void *arg, struct sw_http_req *req, unsigned status, const char *body,
		     int may_hold);
	/* Where each route's requests are counted (by status class) and timed, labelled
	 * with the route's pattern, never the path asked for; NULL: not counted. The
	 * registry must outlive the server. */
	struct sw_metrics *metrics;
	/* Headers every answer of this server carries (a browser's security headers):
	 * name, value, name, value, ..., NULL. The strings must outlive the server. */
	const char *const *headers;
	/* A last say on a request its route lets in, as its headers arrive and before any
	 * of its body is read (a console's rule against forged requests): 0 admits it,
	 * anything else is the status it is refused with, the reason in `msg`. NULL: all
	 * are admitted. */
	unsigned (*admit)(void *arg, struct sw_http_req *req, char *msg, size_t len);
	/* Event streams (sw_http_stream_open): at most this many open at once (default
	 * 1000); a reader may fall this many bytes behind before its stream is dropped
	 * (default 256 KiB); an idle stream sends a comment this often (default 5000 ms). */
	unsigned max_streams;
	size_t stream_buffer;
	unsigned stream_keepalive_ms;
};

struct sw_http_server;

int sw_http_server_start(uv_loop_t *loop, const struct sw_http_server_opts *opts,
			 struct sw_http_server **out, char *err, size_t errlen);
/* Stops listening, drops every connection and frees the server once the loop has
 * closed its handles. NULL is a no-op. */
void sw_http_server_stop(struct sw_http_server *srv);
/* The port actually bound. */
unsigned sw_http_server_port(const struct sw_http_server *srv);
/* A sentence for the log: how many connections the server takes and why, from the
 * open-file limit it started under. At that many, a new connection waits in the listen
 * backlog until one closes, and a warning naming the limit is logged (once an episode,
 * once a minute at most). */
void sw_http_server_capacity(const struct sw_http_server *srv, char *out, size_t outlen);
/* The CAs whose certificates clients may present from now on (a PEM bundle): a
 * connection already admitted stays. */
int sw_http_server_trust(struct sw_http_server *srv, const char *ca_pem, char *err, size_t errlen);

/* The file holding the body of a SW_HTTP_BODY_FILE route's request, whole; NULL for
 * any other. The server removes it once the request is answered. */
const char *sw_http_req_body_file(const struct sw_http_req *req);

const char *sw_http_req_method(const struct sw_http_req *req);
const char *sw_http_req_path(const struct sw_http_req *req);
/* What follows the prefix of a '*' route, "" for an exact route. */
const char *sw_http_req_tail(const struct sw_http_req *req);
/* The request body; NUL-terminated for convenience, `len` excludes the NUL. */
const char *sw_http_req_body(const struct sw_http_req *req, size_t *len);
/* A query-string argument, or NULL. */
const char *sw_http_req_query(const struct sw_http_req *req, const char *name);
/* The verified peer, or NULL on an open route without a certificate. */
const struct sw_identity *sw_http_req_identity(const struct sw_http_req *req);
/* The peer's IP address as text. */
const char *sw_http_req_peer(const struct sw_http_req *req);

/* Replies with a JSON body; takes the reference to `body`. */
/* A request header, NULL if absent. */
const char *sw_http_req_header(const struct sw_http_req *req, const char *name);
/* Answers with the bytes of the open file `fd` (of `size` bytes) from `offset` on: 200
 * for the whole file, 206 with Content-Range past a start. The reply owns `fd`. */
void sw_http_reply_file(struct sw_http_req *req, int fd, uint64_t size, uint64_t offset);
/* Answers with the regular file at `path`, from the request's "Range: bytes=N-" if it
 * has one (206); 404 when there is none, 416 past its end, 503 when out of file
 * descriptors. `sent` (may be NULL) gets the bytes the answer carries. */
int sw_http_reply_path(struct sw_http_req *req, const char *path, uint64_t *sent);
void sw_http_reply_json(struct sw_http_req *req, unsigned status, json_t *body);
/* Replies with `len` bytes at `data` as `content_type`, neither copied nor freed: they
 * must outlive the server (files read once at start). `headers` are added to this
 * answer (name, value, ..., NULL; may be NULL), and are copied. */
void sw_http_reply_static(struct sw_http_req *req, unsigned status, const char *content_type,
			  const void *data, size_t len, const char *const *headers);
/* Replies with `text`, NUL-terminated, as `content_type`; takes `text` (free()d once
 * sent). */
void sw_http_reply_text(struct sw_http_req *req, unsigned status, const char *content_type,
			char *text);
/* Replies {"error": "<message>"} and logs it at debug level. */
/* 503 with Retry-After: the server sheds load; the client is to come back after
 * `retry_after_s` seconds. */
void sw_http_reply_busy(struct sw_http_req *req, unsigned retry_after_s, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* 1 when the request's peer has the rights `roles` (SW_HTTP_*): for a route whose
 * requests need more than it admits (a removal beside a role change); otherwise 0, and
 * the request is answered 403 with what it needs. */
int sw_http_req_may(struct sw_http_req *req, unsigned roles);
/* Lets an answer the audit hook held go out (exactly once per held answer). */
void sw_http_reply_release(struct sw_http_req *req);
void sw_http_reply_error(struct sw_http_req *req, unsigned status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The HTTP status that answers a failure of SW_E* code `rc`, the same in every program:
 * 400 malformed or too big, 403 denied, 404 not found, 409 exists already, 503 busy or
 * timed out (ask again), 500 anything else; 200 for 0. */
unsigned sw_http_status(int rc);
/* The status that answers a request this program passed on to another machine, which
 * failed with SW_E* code `rc` before an answer came: 504 when it timed out, else 502. */
unsigned sw_http_gateway_status(int rc);

/* Parses the request body as a JSON object, or replies 400 and returns NULL. */
json_t *sw_http_req_json(struct sw_http_req *req);

/*
 * An event stream: a request answered 200 with text/event-stream and kept open, which
 * carries events (lib/sse.h) as the program sends them until it closes the stream, the
 * client goes away or the server stops. What each costs is bounded:
 *   - at most `max_streams` are open; sw_http_stream_open() says SW_EBUSY past them;
 *   - an event that finds nothing waiting to be sent may be of any size (a snapshot,
 *     what a plain GET answers), but a reader that falls more than `stream_buffer`
 *     bytes behind it is dropped, never buffered for; the socket's own send buffer
 *     holds at most 64 KiB besides; an event sent to many streams is held once;
 *   - an idle stream sends a comment (": keep-alive") every `stream_keepalive_ms`,
 *     which also finds out a client that went away: a parked connection hears nothing
 *     of its socket until it writes;
 *   - a stream closed by the program has as long again to send what it holds;
 *   - sw_http_server_stop() ends every stream.
 * Each stream dropped because its reader fell behind is counted, and said in the log
 * at most once a second for all of them.
 */
struct sw_http_stream;
enum sw_http_stream_end {
	SW_HTTP_STREAM_GONE,	/* the client went away, or its connection failed */
	SW_HTTP_STREAM_SLOW,	/* its reader fell more than stream_buffer bytes behind */
	SW_HTTP_STREAM_STOPPED, /* the server stops */
};
/* Called once when a stream ends by anything but sw_http_stream_close(): on the loop,
 * or inside sw_http_server_stop(); never inside another call of this API. The stream
 * is freed when it returns. */
typedef void (*sw_http_stream_ended)(struct sw_http_stream *st, enum sw_http_stream_end why,
				     void *arg);
/* Answers `req` with an event stream: *out is the stream's until `ended` is called or
 * the program closes it. SW_EBUSY when `max_streams` are open or the server stops;
 * SW_EINVAL for a request that came without a connection (sw_http_local); SW_ENOMEM.
 * On failure the request is still the caller's to answer. */
int sw_http_stream_open(struct sw_http_req *req, sw_http_stream_ended ended, void *arg,
			struct sw_http_stream **out);
/* Queues the event `event` (a name sw_sse_name_ok() takes; NULL: unnamed) with `len`
 * bytes of `data`. 0; SW_EINVAL for a name it refuses; SW_ETOOBIG when the reader is
 * too far behind: the stream is dropped, and `ended` follows with
 * SW_HTTP_STREAM_SLOW; SW_EBUSY for a stream that is ending (dropped, closed, or the
 * server stops); SW_ENOMEM. */
int sw_http_stream_send(struct sw_http_stream *st, const char *event, const char *data, size_t len);
/* An event made once to be sent to many streams: each queues a reference, so a
 * snapshot sent to a thousand watchers is held once. The caller frees its own
 * reference with sw_http_event_free() (NULL is a no-op). */
struct sw_http_event;
int sw_http_event_new(const char *event, const char *data, size_t len, struct sw_http_event **out);
void sw_http_event_free(struct sw_http_event *ev);
/* As sw_http_stream_send(), for an event made by sw_http_event_new(). */
int sw_http_stream_send_event(struct sw_http_stream *st, struct sw_http_event *ev);
/* Bytes queued on the stream and not yet handed to its connection. */
size_t sw_http_stream_pending(const struct sw_http_stream *st);
/* Ends the stream once what it holds is sent, within `stream_keepalive_ms` (it is
 * dropped after). From here the stream is the server's: `ended` is not called, and the
 * caller uses `st` no more. */
void sw_http_stream_close(struct sw_http_stream *st);

/* A request that came by another way than a connection (a command an agent took off its
 * channel to the site server), run through `routes` like one that did: the route's
 * roles are checked against `identity`, and the handler answers with the same calls.
 * `done` gets the status and the reply's JSON text, which it owns and frees; it runs
 * once the handler has returned (still inside sw_http_local() when it answered at once),
 * or when it answers later. Files are not sent this way (501). */
struct sw_http_local_req {
	const char *method;
	const char *path; /* with its query string, if any */
	const char *body;
	size_t len;
	const char *peer; /* what sw_http_req_peer() says */
	struct sw_identity identity;
};
typedef void (*sw_http_local_done)(void *arg, unsigned status, char *body);
int sw_http_local(const struct sw_http_route *routes, size_t nroutes, void *arg,
		  const struct sw_http_local_req *in, sw_http_local_done done, void *done_arg);

#endif
