/*
 * The HTTPS client: libcurl's multi interface on a libuv loop. Every transfer has a
 * connect deadline (which includes the TLS handshake) and a total deadline; when one
 * passes, the transfer ends with a reason a person can act on.
 */
#ifndef SW_HTTP_CLIENT_H
#define SW_HTTP_CLIENT_H

#include <stddef.h>
#include <uv.h>

/* Largest response body accepted. */
#define SW_HTTP_CLIENT_MAX_BODY (16 * 1024 * 1024)

struct sw_http_client_opts {
	const char *ca_file;		  /* trusted CA (PEM file); NULL with `insecure` only */
	const char *cert_file, *key_file; /* our client certificate, or NULL */
	unsigned connect_timeout_ms;	  /* default 5000 */
	int insecure; /* skip verification: only to fetch a CA that is then pinned */
};

struct sw_http_result {
	long status; /* HTTP status, 0 when the transfer failed */
	char *body;  /* NUL-terminated; owned by the client, valid during the callback */
	size_t len;
	int code;	 /* 0, or an SW_E* code when status is 0 */
	char error[256]; /* why the transfer failed: "unreachable: connection refused" … */
};

typedef void (*sw_http_done)(const struct sw_http_result *res, void *arg);

struct sw_http_client;

int sw_http_client_new(uv_loop_t *loop, const struct sw_http_client_opts *opts,
		       struct sw_http_client **out);
/* Cancels transfers in flight, calling each callback with "cancelled: shutting down".
 * NULL is a no-op. */
void sw_http_client_free(struct sw_http_client *c);

/* Starts a request; `body` (may be NULL) is copied. `cb` is called exactly once, from
 * the loop, never from inside this call. */
int sw_http_client_request(struct sw_http_client *c, const char *method, const char *url,
			   const char *body, size_t len, unsigned timeout_ms, sw_http_done cb,
			   void *arg);

/* Runs one request to completion on a private loop, for command-line programs. On a
 * transport failure returns its SW_E* code with the reason in `err`; otherwise 0 with
 * the HTTP status in *status and the body in *resp (caller frees). */
int sw_http_fetch(const struct sw_http_client_opts *opts, const char *method, const char *url,
		  const char *body, unsigned timeout_ms, long *status, char **resp, char *err,
		  size_t errlen);

#endif
