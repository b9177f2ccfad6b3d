/*
 * The HTTPS client: libcurl's multi interface on a libuv loop. Every transfer has a
 * connect deadline (which includes the TLS handshake) and a total deadline; when one
 * passes, the transfer ends with a reason a person can act on. A reason says what was
 * waited for and the seconds the transfer really took, from when it was started:
 *
 *   unreachable: Connection refused                    SW_EUNREACH ("unreachable after
 *                                                      N s: …" when it took a while)
 *   no connection after N s                            SW_ETIMEDOUT, in lookup or TCP
 *   no connection after N s: TLS handshake unanswered  SW_ETIMEDOUT
 *   no answer after N s                                SW_ETIMEDOUT, the request sent on
 *                                                      a new or a kept-alive connection
 *   answer incomplete after N s: X of Y bytes          SW_ETIMEDOUT
 *   connection dropped after N s: …                    SW_EPROTO
 *   rejected: TLS: …                                   SW_ETLS
 *   rejected: the peer is X, not a Y                   SW_ETLS (opts.peer_role)
 *   rejected: the peer is X, not Y NAME                SW_ETLS (request_to's name)
 *   connection closed during the TLS handshake ...     SW_EBUSY: a busy server sheds
 *                                                      load so; nothing was sent
 */
#ifndef SW_HTTP_CLIENT_H
#define SW_HTTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

/* Largest response body accepted. */
#define SW_HTTP_CLIENT_MAX_BODY (16 * 1024 * 1024)

struct sw_http_client_opts {
	const char *ca_file;		  /* trusted CA (PEM file); NULL with `insecure` only */
	const char *cert_file, *key_file; /* our client certificate, or NULL */
	unsigned connect_timeout_ms;	  /* default 5000 */
	int insecure; /* skip verification: only to fetch a CA that is then pinned */
	/* If set, the role (SW_PKI_ROLE_*, or several as "meter|agent") the peer's
	 * certificate must carry: checked on
	 * each new connection before a request goes out on it, so a machine holding only
	 * a certificate from the same CA for another role is sent nothing. */
	const char *peer_role;
	/* If not 0, at most this many connections to one server: requests beyond wait, in
	 * the order made, for one to be free (their deadlines run meanwhile). */
	unsigned max_host_connections;
};

struct sw_http_result {
	long status; /* HTTP status, 0 when the transfer failed */
	char *body;  /* NUL-terminated; owned by the client, valid during the callback */
	size_t len;
	int code;		/* 0, or an SW_E* code when status is 0 */
	unsigned retry_after_s; /* the answer's Retry-After in seconds (at most a day), or 0 */
	char error[256];	/* why the transfer failed: "no answer after 121.0 s" … */
	int streamed;		/* sw_http_client_stream(): the answer was the stream asked for */
};

typedef void (*sw_http_done)(const struct sw_http_result *res, void *arg);

/* What a download did. The file holds `size` bytes afterwards, whatever happened, so a
 * failed download can be resumed from there. */
struct sw_http_download_result {
	long status;	       /* 200 or 206 when the body went to the file; 0: failed */
	int code;	       /* 0, or an SW_E* code when status is 0 or not 2xx */
	char error[256];       /* why it failed */
	const char *body;      /* a refusal's body (status not 2xx), NUL-terminated */
	size_t len;	       /* bytes of `body` */
	uint64_t resumed_from; /* bytes kept from an earlier attempt */
	uint64_t size;	       /* bytes in the file now */
};

typedef void (*sw_http_download_done)(const struct sw_http_download_result *res, void *arg);

struct sw_http_client;

int sw_http_client_new(uv_loop_t *loop, const struct sw_http_client_opts *opts,
		       struct sw_http_client **out);
/* Cancels transfers in flight, calling each callback with "cancelled: shutting down".
 * NULL is a no-op. */
void sw_http_client_free(struct sw_http_client *c);

/* Adds "Name: value" to the headers of every request made from now on. */
int sw_http_client_header(struct sw_http_client *c, const char *header);

/* Starts a request; `body` (may be NULL) is copied. `cb` is called exactly once, from
 * the loop, never from inside this call. */
int sw_http_client_request(struct sw_http_client *c, const char *method, const char *url,
			   const char *body, size_t len, unsigned timeout_ms, sw_http_done cb,
			   void *arg);
/* The same, to one peer: its certificate must carry the client's `peer_role` and the
 * common name `peer_name` (a system's name), or nothing is sent ("rejected: the peer
 * is agent web2, not agent web1"). SW_EINVAL without a `peer_role`. */
int sw_http_client_request_to(struct sw_http_client *c, const char *peer_name, const char *method,
			      const char *url, const char *body, size_t len, unsigned timeout_ms,
			      sw_http_done cb, void *arg);

/* A streamed answer (an event stream): GET `url` with "Accept: `type`"; an answer of
 * status 2xx and of Content-Type `type` is given to `on_data` piece by piece as it
 * arrives, which returns 0 to go on and anything else to end the transfer there. An
 * answer of another status or type is kept whole, bounded, and given to `cb` as a
 * request's is. `cb` is called once, from the loop, at the end; for a stream with
 * `streamed` set and an empty body, and status 0 with the reason when it ended by
 * anything but the server's end or `on_data`'s: the total deadline `timeout_ms`, or
 * `idle_ms` without a byte of it ("no byte of the stream for 15 s"). */
typedef int (*sw_http_data_fn)(const char *data, size_t len, void *arg);
int sw_http_client_stream(struct sw_http_client *c, const char *url, const char *type,
			  unsigned timeout_ms, unsigned idle_ms, sw_http_data_fn on_data,
			  sw_http_done cb, void *arg);

/* Downloads `url` (GET) into the file `path`, resuming: bytes already in the file are
 * kept and only the rest is asked for (Range: bytes=N-). A server that answers 206 has
 * its body appended; one that ignores the range and answers 200 with the whole body
 * has the file started over. A body that would take the file past `max_bytes` ends the
 * download (SW_ETOOBIG). A refusal (not 2xx) leaves the file as it was, its body in
 * the result. `cb` is called exactly once, from the loop. */
int sw_http_client_download(struct sw_http_client *c, const char *url, const char *path,
			    uint64_t max_bytes, unsigned timeout_ms, sw_http_download_done cb,
			    void *arg);
/* The same from one peer, checked as sw_http_client_request_to() checks it. */
int sw_http_client_download_to(struct sw_http_client *c, const char *peer_name, const char *url,
			       const char *path, uint64_t max_bytes, unsigned timeout_ms,
			       sw_http_download_done cb, void *arg);

/* Runs one request to completion on a private loop, for command-line programs. On a
 * transport failure returns its SW_E* code with the reason in `err`; otherwise 0 with
 * the HTTP status in *status and the body in *resp (caller frees). */
int sw_http_fetch(const struct sw_http_client_opts *opts, const char *method, const char *url,
		  const char *body, unsigned timeout_ms, long *status, char **resp, char *err,
		  size_t errlen);
/* The same with a body of `len` bytes, which may hold any byte (a package). */
int sw_http_fetch_len(const struct sw_http_client_opts *opts, const char *method, const char *url,
		      const char *body, size_t len, unsigned timeout_ms, long *status, char **resp,
		      char *err, size_t errlen);

#endif
