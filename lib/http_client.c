#include "http_client.h"

#include "error.h"
#include "log.h"
#include "pki.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

struct sw_http_client {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	struct curl_slist *headers;
	char *ca_file, *cert_file, *key_file;
	unsigned connect_timeout_ms;
	int insecure;
	char peer_role[32];	    /* "": any; else roles separated by '|' */
	struct transfer *transfers; /* in flight, for cancellation */
};

struct transfer {
	struct sw_http_client *c;
	CURL *easy;
	struct transfer *next, **pprev;
	sw_http_done cb;
	void *arg;
	char *body;
	size_t len, cap;
	int too_big;
	uint64_t added;	    /* uv_hrtime() when it was handed to curl */
	int connected;	    /* a connection, new or reused, is ready for the request */
	curl_socket_t sock; /* the socket curl opened last for it */
	int tcp_up;	    /* that socket got as far as a TCP connection */
	char errbuf[CURL_ERROR_SIZE];
	char wrong_peer[200]; /* the peer's certificate is not for the role asked: who it is */
	char peer_name[128];  /* "": any; else the common name the peer's certificate must carry */
	char weak_tls[120];   /* the connection's TLS is weaker than the site's: which */
	/* A download (dl_cb set): a 2xx body goes to fd, any other to `body`. */
	sw_http_download_done dl_cb;
	int fd;
	uint64_t offset;     /* bytes the file held when asked for; kept unless reset */
	uint64_t written;    /* bytes of this response written after them */
	uint64_t max;	     /* the file may not grow past this */
	int64_t range_start; /* the first byte a 206 says it holds; -1: none said */
	long status;	     /* of the response whose body is arriving */
	int started;	     /* the first body byte has arrived: status is known */
	int bad_range;	     /* a 206 for other bytes than asked */
	int io_errno;	     /* writing the file failed */
	char range[32];	     /* "N-" */
	char path[PATH_MAX]; /* for messages */
	/* A stream (on_data set): its type, whether the answer is one (0: not known yet,
	 * 1: it is, 2: it is not), whether on_data ended it, its idle bound, and its own
	 * headers (the client's and Accept). */
	sw_http_data_fn on_data;
	char stream_type[64];
	int stream_state, stopped;
	unsigned idle_ms;
	uv_timer_t *idle; /* restarted by every byte of the stream */
	struct curl_slist *headers;
};

struct sock {
	uv_poll_t poll;
	struct sw_http_client *c;
	curl_socket_t fd;
};

static void check_done(struct sw_http_client *c);
static void transfer_free(struct transfer *t);

static void on_poll(uv_poll_t *p, int status, int events)
{
	struct sock *s = p->data;
	int flags = 0, running;

	if (status < 0)
		flags = CURL_CSELECT_ERR;
	if (events & UV_READABLE)
		flags |= CURL_CSELECT_IN;
	if (events & UV_WRITABLE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(s->c->multi, s->fd, flags, &running);
	check_done(s->c);
}

static void on_sock_closed(uv_handle_t *h)
{
	free(h->data);
}

static int on_socket(CURL *easy, curl_socket_t fd, int action, void *userp, void *socketp)
{
	struct sw_http_client *c = userp;
	struct sock *s = socketp;
	int events = 0;

	if (action == CURL_POLL_REMOVE) {
		if (s) {
			uv_poll_stop(&s->poll);
			uv_close((uv_handle_t *)&s->poll, on_sock_closed);
			curl_multi_assign(c->multi, fd, NULL);
		}
		return 0;
	}
	if (!s) {
		s = calloc(1, sizeof(*s));
		if (!s)
			return -1;
		s->c = c;
		s->fd = fd;
		if (uv_poll_init_socket(c->loop, &s->poll, fd) < 0) {
			free(s);
			return -1;
		}
		s->poll.data = s;
		curl_multi_assign(c->multi, fd, s);
	}
	if (action & CURL_POLL_IN)
		events |= UV_READABLE;
	if (action & CURL_POLL_OUT)
		events |= UV_WRITABLE;
	uv_poll_start(&s->poll, events, on_poll);
	return 0;
}

static void on_timer(uv_timer_t *t)
{
	struct sw_http_client *c = t->data;
	int running;

	curl_multi_socket_action(c->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(c);
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
	struct sw_http_client *c = userp;

	if (timeout_ms < 0)
		uv_timer_stop(&c->timer);
	else
		uv_timer_start(&c->timer, on_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct transfer *t = userdata;
	size_t n = size * nmemb;

	if (t->len + n > SW_HTTP_CLIENT_MAX_BODY) {
		t->too_big = 1;
		return 0;
	}
	if (t->len + n + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 4096;
		char *b;
		while (cap < t->len + n + 1)
			cap *= 2;
		b = realloc(t->body, cap);
		if (!b)
			return 0;
		t->body = b;
		t->cap = cap;
	}
	memcpy(t->body + t->len, ptr, n);
	t->len += n;
	t->body[t->len] = '\0';
	return n;
}

/* A download's body: the file's next bytes when the answer is 200 or 206. */
static size_t on_write_file(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct transfer *t = userdata;
	size_t n = size * nmemb, done = 0;

	if (!t->started) {
		t->started = 1;
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
		if (t->status == 206 && t->range_start != (int64_t)t->offset) {
			t->bad_range = 1;
			return 0;
		}
		if (t->status == 200 && t->offset > 0) {
			/* The server ignored the range: what it sends is the whole file. */
			if (ftruncate(t->fd, 0) < 0) {
				t->io_errno = errno;
				return 0;
			}
			t->offset = 0;
		}
	}
	if (t->status != 200 && t->status != 206)
		return on_write(ptr, size, nmemb, userdata);
	if (t->offset + t->written + n > t->max) {
		t->too_big = 1;
		return 0;
	}
	while (done < n) {
		ssize_t w = write(t->fd, ptr + done, n - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			t->io_errno = errno;
			return 0;
		}
		done += (size_t)w;
	}
	t->written += n;
	return n;
}

/* Whether the answer whose body arrives is the stream asked for. */
static int stream_state(struct transfer *t)
{
	long status = 0;
	char *type = NULL;

	if (!t->stream_state) {
		curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(t->easy, CURLINFO_CONTENT_TYPE, &type);
		t->stream_state =
		    status >= 200 && status < 300 && type &&
			    strncasecmp(type, t->stream_type, strlen(t->stream_type)) == 0
			? 1
			: 2;
	}
	return t->stream_state;
}

/* A stream's body goes to on_data as it comes; another answer's is kept (on_write). */
static size_t on_write_stream(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct transfer *t = userdata;
	size_t n = size * nmemb;

	if (t->idle)
		uv_timer_again(t->idle);
	if (stream_state(t) != 1)
		return on_write(ptr, size, nmemb, userdata);
	if (t->on_data(ptr, n, t->arg)) {
		t->stopped = 1;
		return 0; /* curl ends the transfer with a write error */
	}
	return n;
}

/* A stream that carried nothing for its idle bound: given up, its caller told. */
static void on_stream_idle(uv_timer_t *h)
{
	struct transfer *t = h->data;
	struct sw_http_result res = {.code = SW_ETIMEDOUT, .body = ""};

	res.streamed = stream_state(t) == 1;
	snprintf(res.error, sizeof(res.error), "no byte of the %s for %u s (after %.1f s)",
		 res.streamed ? "stream" : "answer", (t->idle_ms + 999) / 1000,
		 (double)(uv_hrtime() - t->added) / 1e9);
	t->cb(&res, t->arg);
	transfer_free(t);
}

/* Notes where a 206's bytes start ("Content-Range: bytes 100-199/200"); a new response
 * (after a 100 Continue, say) forgets what an earlier one said. */
static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct transfer *t = userdata;
	size_t n = size * nitems;
	char line[256];
	uint64_t start;

	if (n >= 5 && strncmp(buf, "HTTP/", 5) == 0)
		t->range_start = -1;
	if (n < 14 || n >= sizeof(line) || strncasecmp(buf, "content-range:", 14) != 0)
		return n;
	memcpy(line, buf, n);
	line[n] = '\0';
	if (sscanf(line + 14, " bytes %" SCNu64 "-", &start) == 1 && start <= INT64_MAX)
		t->range_start = (int64_t)start;
	return n;
}

static void on_handle_freed(uv_handle_t *h)
{
	free(h);
}

static void transfer_free(struct transfer *t)
{
	if (t->pprev) {
		*t->pprev = t->next;
		if (t->next)
			t->next->pprev = t->pprev;
	}
	curl_multi_remove_handle(t->c->multi, t->easy);
	curl_easy_cleanup(t->easy);
	curl_slist_free_all(t->headers);
	if (t->idle) {
		uv_timer_stop(t->idle);
		uv_close((uv_handle_t *)t->idle, on_handle_freed);
	}
	if (t->fd >= 0)
		close(t->fd);
	free(t->body);
	free(t);
}

/* Called when a connection, new or kept alive, is ready for the request: a deadline
 * that passes from here on was waiting for the answer, not for a connection. */
/* On a new connection, whether the peer's certificate is for another role than the
 * one asked for. curl gives the chain of a connection's handshake to the transfer that
 * opened it; a kept-alive connection was checked by that transfer. */
/* Whether `role` is one of `list` ("meter|agent"). */
static int role_listed(const char *list, const char *role)
{
	size_t n = strlen(role);

	for (const char *p = list; *p;) {
		size_t len = strcspn(p, "|");

		if (len == n && n > 0 && strncmp(p, role, n) == 0)
			return 1;
		p += len + (p[len] == '|');
	}
	return 0;
}

static int wrong_peer(struct transfer *t)
{
	struct curl_certinfo *ci = NULL;
	struct sw_identity id;
	char err[200];

	if (curl_easy_getinfo(t->easy, CURLINFO_CERTINFO, &ci) != CURLE_OK || !ci ||
	    ci->num_of_certs == 0)
		return 0;
	for (struct curl_slist *l = ci->certinfo[0]; l; l = l->next) {
		if (strncmp(l->data, "Cert:", 5) != 0)
			continue;
		if (sw_pki_cert_identity(l->data + 5, &id, err, sizeof(err)) != 0) {
			snprintf(t->wrong_peer, sizeof(t->wrong_peer), "unreadable (%s)", err);
			return 1;
		}
		if (role_listed(t->c->peer_role, id.role) &&
		    (!t->peer_name[0] || strcmp(id.cn, t->peer_name) == 0))
			return 0;
		snprintf(t->wrong_peer, sizeof(t->wrong_peer), "%s %.100s",
			 id.role[0] ? id.role : "(no role)", id.cn);
		return 1;
	}
	snprintf(t->wrong_peer, sizeof(t->wrong_peer), "without a certificate");
	return 1;
}

/* Whether the connection's TLS is other than the site's servers offer (TLS 1.3, or
 * TLS 1.2 with ECDHE and an AEAD cipher). libcurl 7.88 takes no GnuTLS priority string
 * of ours (CURLOPT_SSL_CIPHER_LIST is ignored with GnuTLS), so a weaker suite a peer
 * chose is refused here, after the handshake and before the request is sent. */
static int weak_tls(struct transfer *t)
{
	const struct curl_tlssessioninfo *ti = NULL;
	gnutls_session_t session;
	gnutls_kx_algorithm_t kx;

	if (curl_easy_getinfo(t->easy, CURLINFO_TLS_SSL_PTR, &ti) != CURLE_OK || !ti ||
	    ti->backend != CURLSSLBACKEND_GNUTLS || !ti->internals)
		return 0;
	session = ti->internals;
	if (gnutls_protocol_get_version(session) == GNUTLS_TLS1_3)
		return 0;
	kx = gnutls_kx_get(session);
	if (gnutls_protocol_get_version(session) == GNUTLS_TLS1_2 &&
	    gnutls_mac_get(session) == GNUTLS_MAC_AEAD &&
	    (kx == GNUTLS_KX_ECDHE_ECDSA || kx == GNUTLS_KX_ECDHE_RSA))
		return 0;
	snprintf(
	    t->weak_tls, sizeof(t->weak_tls), "%s with %s",
	    gnutls_protocol_get_name(gnutls_protocol_get_version(session)),
	    gnutls_cipher_suite_get_name(kx, gnutls_cipher_get(session), gnutls_mac_get(session)));
	return 1;
}

static int on_prereq(void *userdata, char *primary_ip, char *local_ip, int primary_port,
		     int local_port)
{
	struct transfer *t = userdata;

	(void)primary_ip, (void)local_ip, (void)primary_port, (void)local_port;
	if (t->c->peer_role[0] && wrong_peer(t))
		return CURL_PREREQFUNC_ABORT; /* curl closes the connection */
	if (weak_tls(t))
		return CURL_PREREQFUNC_ABORT;
	t->connected = 1;
	return CURL_PREREQFUNC_OK;
}

/* Called for each new socket: curl connects anew (a kept-alive connection may have
 * turned out closed), so the request has no connection until on_prereq says so. */
static int on_sockopt(void *userdata, curl_socket_t fd, curlsocktype purpose)
{
	struct transfer *t = userdata;

	t->connected = 0;
	t->sock = fd;
	t->tcp_up = 0;
	return CURL_SOCKOPT_OK;
}

/* Closes a socket for curl. The socket of a transfer still waiting for its connection
 * tells, while it is open, whether TCP got through: then the TLS handshake was what
 * did not (curl's connect time stays 0 until both are done). */
static int on_close_socket(void *userdata, curl_socket_t fd)
{
	struct sw_http_client *c = userdata;
	struct sockaddr_storage peer;
	socklen_t len = sizeof(peer);
	struct transfer *t;

	for (t = c->transfers; t; t = t->next)
		if (!t->connected && t->sock == fd &&
		    getpeername(fd, (struct sockaddr *)&peer, &len) == 0)
			t->tcp_up = 1;
	return close(fd);
}

/* What a deadline that passed was waiting for. Not told by curl's connect time, which
 * is 0 on a kept-alive connection as if the connection were never set up. */
static void describe_timeout(struct transfer *t, double secs, char *buf, size_t len)
{
	curl_off_t got = 0, expected = -1;
	long head = 0;

	if (!t->connected) {
		/* The connect deadline (which covers the TLS handshake) or the total one. */
		snprintf(buf, len, "no connection after %.1f s%s", secs,
			 t->tcp_up ? ": TLS handshake unanswered" : "");
		return;
	}
	curl_easy_getinfo(t->easy, CURLINFO_HEADER_SIZE, &head);
	curl_easy_getinfo(t->easy, CURLINFO_SIZE_DOWNLOAD_T, &got);
	curl_easy_getinfo(t->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &expected);
	if (head == 0 && got == 0)
		snprintf(buf, len, "no answer after %.1f s", secs);
	else if (expected >= 0)
		snprintf(buf, len,
			 "answer incomplete after %.1f s: %" CURL_FORMAT_CURL_OFF_T
			 " of %" CURL_FORMAT_CURL_OFF_T " bytes",
			 secs, got, expected);
	else
		snprintf(buf, len,
			 "answer incomplete after %.1f s: %" CURL_FORMAT_CURL_OFF_T " bytes", secs,
			 got);
}

/* Turns a failed transfer into a reason a person can act on: what was waited for and
 * how long the wait took, as measured, not as configured. */
static void describe_failure(struct transfer *t, CURLcode cc, struct sw_http_result *res)
{
	double secs = (double)(uv_hrtime() - t->added) / 1e9;
	const char *detail = t->errbuf[0] ? t->errbuf : curl_easy_strerror(cc);
	long os_errno = 0;

	if (t->wrong_peer[0]) {
		res->code = SW_ETLS;
		char roles[64];
		size_t j = 0;

		/* "meter|agent" reads "meter or agent" */
		for (const char *p = t->c->peer_role; *p && j + 5 < sizeof(roles); p++) {
			if (*p == '|') {
				memcpy(roles + j, " or ", 4);
				j += 4;
			} else {
				roles[j++] = *p;
			}
		}
		roles[j] = '\0';
		snprintf(res->error, sizeof(res->error), "rejected: the peer is %s, not %s%s%s%s",
			 t->wrong_peer, t->peer_name[0] ? "" : "a ", roles,
			 t->peer_name[0] ? " " : "", t->peer_name);
		return;
	}
	if (t->weak_tls[0]) {
		res->code = SW_ETLS;
		snprintf(res->error, sizeof(res->error),
			 "rejected: the peer speaks %s, not TLS 1.3 or TLS 1.2 with ECDHE and "
			 "an AEAD cipher",
			 t->weak_tls);
		return;
	}
	curl_easy_getinfo(t->easy, CURLINFO_OS_ERRNO, &os_errno);
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		res->code = SW_EUNREACH;
		if (os_errno)
			detail = strerror((int)os_errno);
		/* A refusal comes at once; a lookup or a route that fails slowly says so. */
		if (secs < 1)
			snprintf(res->error, sizeof(res->error), "unreachable: %.200s", detail);
		else
			snprintf(res->error, sizeof(res->error), "unreachable after %.1f s: %.200s",
				 secs, detail);
		break;
	case CURLE_OPERATION_TIMEDOUT:
		res->code = SW_ETIMEDOUT;
		describe_timeout(t, secs, res->error, sizeof(res->error));
		break;
	case CURLE_SSL_CONNECT_ERROR:
		/* closed by the server during the handshake: what a busy server does to shed
		 * load, not a refusal of who we are */
		if (strstr(detail, "non-properly terminated") || strstr(detail, "reset by peer")) {
			res->code = SW_EBUSY; /* nothing was sent: asking again is safe */
			snprintf(res->error, sizeof(res->error),
				 "connection closed during the TLS handshake after %.1f s (a busy "
				 "server sheds load so)",
				 secs);
			break;
		}
		/* fall through */
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
		res->code = SW_ETLS;
		snprintf(res->error, sizeof(res->error), "rejected: TLS: %.200s", detail);
		break;
	case CURLE_WRITE_ERROR:
		res->code = t->too_big ? SW_ETOOBIG : SW_EIO;
		snprintf(res->error, sizeof(res->error), "%s",
			 t->too_big ? "response too large" : "cannot store the response");
		break;
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_PARTIAL_FILE:
		res->code = SW_EPROTO;
		snprintf(res->error, sizeof(res->error), "connection dropped after %.1f s: %.200s",
			 secs, detail);
		break;
	default: res->code = SW_EPROTO; snprintf(res->error, sizeof(res->error), "%s", detail);
	}
}

static void download_done(struct transfer *t, CURLcode cc)
{
	struct sw_http_download_result res;
	struct stat st;

	memset(&res, 0, sizeof(res));
	if (cc == CURLE_OK) {
		if (!t->started) {
			/* an empty body: nothing was written, so the status is decided here */
			curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &t->status);
			if (t->status == 200 && t->offset > 0) {
				if (ftruncate(t->fd, 0) < 0)
					t->io_errno = errno;
				t->offset = 0;
			}
		}
		res.status = t->status;
		if (t->io_errno) {
			res.status = 0;
			res.code = SW_EIO;
			snprintf(res.error, sizeof(res.error), "cannot write %.150s: %s", t->path,
				 strerror(t->io_errno));
		} else if (t->status != 200 && t->status != 206) {
			res.code = SW_EPROTO;
			snprintf(res.error, sizeof(res.error),
				 "refused with HTTP status %ld: %.150s", t->status,
				 t->body ? t->body : "");
		}
	} else if (cc == CURLE_WRITE_ERROR && (t->io_errno || t->bad_range || t->too_big)) {
		res.code = t->too_big ? SW_ETOOBIG : t->io_errno ? SW_EIO : SW_EPROTO;
		if (t->io_errno)
			snprintf(res.error, sizeof(res.error), "cannot write %.150s: %s", t->path,
				 strerror(t->io_errno));
		else if (t->bad_range)
			snprintf(res.error, sizeof(res.error),
				 "the server sent other bytes than asked for (from %" PRId64
				 ", not %" PRIu64 ")",
				 t->range_start, t->offset);
		else
			snprintf(res.error, sizeof(res.error),
				 "more than the %" PRIu64 " bytes expected", t->max);
	} else {
		struct sw_http_result r;

		memset(&r, 0, sizeof(r));
		describe_failure(t, cc, &r);
		res.code = r.code;
		snprintf(res.error, sizeof(res.error), "%s", r.error);
	}
	if (res.status != 200 && res.status != 206) {
		res.body = t->body && t->status != 200 && t->status != 206 ? t->body : "";
		res.len = strlen(res.body);
	} else {
		res.body = "";
	}
	res.resumed_from = t->offset;
	res.size = fstat(t->fd, &st) == 0 ? (uint64_t)st.st_size : t->offset + t->written;
	t->dl_cb(&res, t->arg);
}

static void check_done(struct sw_http_client *c)
{
	CURLMsg *msg;
	int left;

	while ((msg = curl_multi_info_read(c->multi, &left))) {
		struct transfer *t;
		struct sw_http_result res;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
		if (t->dl_cb) {
			download_done(t, msg->data.result);
			transfer_free(t);
			continue;
		}
		memset(&res, 0, sizeof(res));
		res.body = t->body ? t->body : "";
		res.len = t->len;
		if (t->on_data)
			res.streamed = stream_state(t) == 1;
		if (msg->data.result == CURLE_OK ||
		    (msg->data.result == CURLE_WRITE_ERROR && t->stopped)) {
			curl_off_t after = 0;

			curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &res.status);
			if (curl_easy_getinfo(t->easy, CURLINFO_RETRY_AFTER, &after) == CURLE_OK &&
			    after > 0)
				res.retry_after_s = after > 86400 ? 86400 : (unsigned)after;
		} else
			describe_failure(t, msg->data.result, &res);
		t->cb(&res, t->arg);
		transfer_free(t);
	}
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

int sw_http_client_new(uv_loop_t *loop, const struct sw_http_client_opts *opts,
		       struct sw_http_client **out)
{
	struct sw_http_client *c;
	static int initialised;

	if (!initialised) {
		curl_global_init(CURL_GLOBAL_DEFAULT);
		initialised = 1;
	}
	*out = NULL;
	c = calloc(1, sizeof(*c));
	if (!c)
		return SW_ENOMEM;
	c->loop = loop;
	c->ca_file = dup_or_null(opts->ca_file);
	c->cert_file = dup_or_null(opts->cert_file);
	c->key_file = dup_or_null(opts->key_file);
	c->insecure = opts->insecure;
	snprintf(c->peer_role, sizeof(c->peer_role), "%s", opts->peer_role ? opts->peer_role : "");
	c->connect_timeout_ms = opts->connect_timeout_ms ? opts->connect_timeout_ms : 5000;
	c->multi = curl_multi_init();
	c->headers = curl_slist_append(NULL, "Content-Type: application/json");
	if (!c->multi || !c->headers) {
		sw_http_client_free(c);
		return SW_ENOMEM;
	}
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETFUNCTION, on_socket);
	curl_multi_setopt(c->multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
	curl_multi_setopt(c->multi, CURLMOPT_TIMERDATA, c);
	if (opts->max_host_connections)
		curl_multi_setopt(c->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
				  (long)opts->max_host_connections);
	uv_timer_init(loop, &c->timer);
	c->timer.data = c;
	*out = c;
	return 0;
}

static void on_client_closed(uv_handle_t *h)
{
	free(h->data);
}

void sw_http_client_free(struct sw_http_client *c)
{
	if (!c)
		return;
	while (c->transfers) {
		struct transfer *t = c->transfers;
		struct sw_http_result res = {.code = SW_EUNREACH, .body = ""};

		snprintf(res.error, sizeof(res.error), "cancelled: shutting down");
		if (t->dl_cb) {
			struct sw_http_download_result dr = {.code = SW_EUNREACH, .body = ""};
			struct stat st;

			snprintf(dr.error, sizeof(dr.error), "%s", res.error);
			dr.resumed_from = t->offset;
			dr.size = fstat(t->fd, &st) == 0 ? (uint64_t)st.st_size : 0;
			t->dl_cb(&dr, t->arg);
		} else {
			t->cb(&res, t->arg);
		}
		transfer_free(t);
	}
	if (c->multi)
		curl_multi_cleanup(c->multi);
	curl_slist_free_all(c->headers);
	free(c->ca_file);
	free(c->cert_file);
	free(c->key_file);
	if (c->loop) {
		uv_timer_stop(&c->timer);
		uv_close((uv_handle_t *)&c->timer, on_client_closed);
	} else {
		free(c);
	}
}

/* A transfer with what every request and download shares; not started yet. */
static struct transfer *transfer_new(struct sw_http_client *c, const char *url, unsigned timeout_ms,
				     void *arg)
{
	struct transfer *t;
	CURL *e;

	t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	e = curl_easy_init();
	if (!e) {
		free(t);
		return NULL;
	}
	t->c = c;
	t->easy = e;
	t->fd = -1;
	t->sock = CURL_SOCKET_BAD;
	t->arg = arg;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_PREREQFUNCTION, on_prereq);
	curl_easy_setopt(e, CURLOPT_PREREQDATA, t);
	curl_easy_setopt(e, CURLOPT_SOCKOPTFUNCTION, on_sockopt);
	curl_easy_setopt(e, CURLOPT_SOCKOPTDATA, t);
	/* a connection outlives the transfer that opened it: the client closes its sockets */
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETDATA, c);
	if (c->insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	} else if (c->ca_file) {
		curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
		curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	}
	if (c->cert_file && c->key_file) {
		curl_easy_setopt(e, CURLOPT_SSLCERT, c->cert_file);
		curl_easy_setopt(e, CURLOPT_SSLKEY, c->key_file);
	}
	if (c->peer_role[0])
		curl_easy_setopt(e, CURLOPT_CERTINFO, 1L);
	return t;
}

/* Puts a transfer on the client's list and in the multi handle. */
static int transfer_add(struct transfer *t)
{
	struct sw_http_client *c = t->c;

	t->next = c->transfers;
	if (t->next)
		t->next->pprev = &t->next;
	c->transfers = t;
	t->pprev = &c->transfers;
	t->added = uv_hrtime();
	if (curl_multi_add_handle(c->multi, t->easy) != CURLM_OK) {
		transfer_free(t);
		return SW_ENOMEM;
	}
	return 0;
}

int sw_http_client_header(struct sw_http_client *c, const char *header)
{
	struct curl_slist *l = curl_slist_append(c->headers, header);

	if (!l)
		return SW_ENOMEM;
	c->headers = l;
	return 0;
}

int sw_http_client_request(struct sw_http_client *c, const char *method, const char *url,
			   const char *body, size_t len, unsigned timeout_ms, sw_http_done cb,
			   void *arg)
{
	return sw_http_client_request_to(c, NULL, method, url, body, len, timeout_ms, cb, arg);
}

int sw_http_client_request_to(struct sw_http_client *c, const char *peer_name, const char *method,
			      const char *url, const char *body, size_t len, unsigned timeout_ms,
			      sw_http_done cb, void *arg)
{
	struct transfer *t;
	CURL *e;

	if (peer_name && (!c->peer_role[0] || strlen(peer_name) >= sizeof(t->peer_name)))
		return SW_EINVAL;
	if (!(t = transfer_new(c, url, timeout_ms, arg)))
		return SW_ENOMEM;
	if (peer_name)
		snprintf(t->peer_name, sizeof(t->peer_name), "%s", peer_name);
	e = t->easy;
	t->cb = cb;
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	if (body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	else if (strcmp(method, "POST") == 0 && !body)
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
	return transfer_add(t);
}

/* A header of the transfer's own list. */
static int header_add(struct transfer *t, const char *header)
{
	struct curl_slist *l = curl_slist_append(t->headers, header);

	if (!l)
		return SW_ENOMEM;
	t->headers = l;
	return 0;
}

int sw_http_client_stream(struct sw_http_client *c, const char *url, const char *type,
			  unsigned timeout_ms, unsigned idle_ms, sw_http_data_fn on_data,
			  sw_http_done cb, void *arg)
{
	struct transfer *t;
	char accept[80];

	if (strlen(type) >= sizeof(t->stream_type) || !on_data)
		return SW_EINVAL;
	if (!(t = transfer_new(c, url, timeout_ms, arg)))
		return SW_ENOMEM;
	t->cb = cb;
	t->on_data = on_data;
	t->idle_ms = idle_ms;
	snprintf(t->stream_type, sizeof(t->stream_type), "%s", type);
	snprintf(accept, sizeof(accept), "Accept: %s", type);
	for (struct curl_slist *h = c->headers; h; h = h->next)
		if (header_add(t, h->data)) {
			transfer_free(t);
			return SW_ENOMEM;
		}
	if (header_add(t, accept)) {
		transfer_free(t);
		return SW_ENOMEM;
	}
	curl_easy_setopt(t->easy, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_write_stream);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	/* A stream's bound beside its total deadline: a server sends a keep-alive while
	 * idle, so a stream that carries nothing at all for this long is gone. (curl's
	 * low-speed check averages over seconds, and would take up to 5 s longer.) */
	if (idle_ms) {
		if (!(t->idle = malloc(sizeof(*t->idle)))) {
			transfer_free(t);
			return SW_ENOMEM;
		}
		uv_timer_init(c->loop, t->idle);
		t->idle->data = t;
		uv_timer_start(t->idle, on_stream_idle, idle_ms, idle_ms);
	}
	return transfer_add(t);
}

int sw_http_client_download(struct sw_http_client *c, const char *url, const char *path,
			    uint64_t max_bytes, unsigned timeout_ms, sw_http_download_done cb,
			    void *arg)
{
	return sw_http_client_download_to(c, NULL, url, path, max_bytes, timeout_ms, cb, arg);
}

int sw_http_client_download_to(struct sw_http_client *c, const char *peer_name, const char *url,
			       const char *path, uint64_t max_bytes, unsigned timeout_ms,
			       sw_http_download_done cb, void *arg)
{
	struct transfer *t;
	struct stat st;
	int fd;

	if (strlen(path) >= sizeof(t->path) ||
	    (peer_name && (!c->peer_role[0] || strlen(peer_name) >= sizeof(t->peer_name))))
		return SW_EINVAL;
	/* O_APPEND: whatever the file holds stays, and the body goes after it. */
	fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return SW_EIO;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return SW_EIO;
	}
	t = transfer_new(c, url, timeout_ms, arg);
	if (!t) {
		close(fd);
		return SW_ENOMEM;
	}
	if (peer_name)
		snprintf(t->peer_name, sizeof(t->peer_name), "%s", peer_name);
	t->dl_cb = cb;
	t->fd = fd;
	t->offset = (uint64_t)st.st_size;
	t->max = max_bytes;
	t->range_start = -1;
	snprintf(t->path, sizeof(t->path), "%s", path);
	curl_easy_setopt(t->easy, CURLOPT_WRITEFUNCTION, on_write_file);
	curl_easy_setopt(t->easy, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(t->easy, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(t->easy, CURLOPT_HEADERDATA, t);
	if (t->offset > 0) {
		/* CURLOPT_RANGE rather than CURLOPT_RESUME_FROM_LARGE: with the latter, curl
		 * fails a 200 answer outright, and a server that ignores ranges is allowed;
		 * the whole body then replaces the file (on_write_file). */
		snprintf(t->range, sizeof(t->range), "%" PRIu64 "-", t->offset);
		curl_easy_setopt(t->easy, CURLOPT_RANGE, t->range);
	}
	return transfer_add(t);
}

struct fetch {
	int done, code;
	long status;
	char *resp;
	char error[256];
};

static void on_fetched(const struct sw_http_result *res, void *arg)
{
	struct fetch *f = arg;

	f->done = 1;
	f->status = res->status;
	f->code = res->code;
	snprintf(f->error, sizeof(f->error), "%s", res->error);
	f->resp = strdup(res->body);
}

int sw_http_fetch(const struct sw_http_client_opts *opts, const char *method, const char *url,
		  const char *body, unsigned timeout_ms, long *status, char **resp, char *err,
		  size_t errlen)
{
	return sw_http_fetch_len(opts, method, url, body, body ? strlen(body) : 0, timeout_ms,
				 status, resp, err, errlen);
}

int sw_http_fetch_len(const struct sw_http_client_opts *opts, const char *method, const char *url,
		      const char *body, size_t len, unsigned timeout_ms, long *status, char **resp,
		      char *err, size_t errlen)
{
	struct sw_http_client *c = NULL;
	struct fetch f = {0};
	uv_loop_t loop;
	int rc;

	*resp = NULL;
	*status = 0;
	if (uv_loop_init(&loop) < 0)
		return SW_ENOMEM;
	rc = sw_http_client_new(&loop, opts, &c);
	if (!rc)
		rc = sw_http_client_request(c, method, url, body, len, timeout_ms, on_fetched, &f);
	/* curl's own deadlines end the transfer; the loop stops when it does. */
	while (!rc && !f.done)
		uv_run(&loop, UV_RUN_ONCE);
	sw_http_client_free(c);
	uv_run(&loop, UV_RUN_DEFAULT);
	uv_loop_close(&loop);
	if (rc)
		return rc;
	if (f.status == 0) {
		if (err)
			sw_seterr(err, errlen, "%s", f.error);
		free(f.resp);
		return f.code ? f.code : SW_EPROTO;
	}
	*status = f.status;
	*resp = f.resp;
	return f.resp ? 0 : SW_ENOMEM;
}
