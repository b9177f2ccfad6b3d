#include "http_client.h"

#include "error.h"
#include "log.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sw_http_client {
	uv_loop_t *loop;
	CURLM *multi;
	uv_timer_t timer;
	struct curl_slist *headers;
	char *ca_file, *cert_file, *key_file;
	unsigned connect_timeout_ms;
	int insecure;
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
	unsigned timeout_ms;
	char errbuf[CURL_ERROR_SIZE];
};

struct sock {
	uv_poll_t poll;
	struct sw_http_client *c;
	curl_socket_t fd;
};

static void check_done(struct sw_http_client *c);

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

static void transfer_free(struct transfer *t)
{
	if (t->pprev) {
		*t->pprev = t->next;
		if (t->next)
			t->next->pprev = t->pprev;
	}
	curl_multi_remove_handle(t->c->multi, t->easy);
	curl_easy_cleanup(t->easy);
	free(t->body);
	free(t);
}

/* Turns a failed transfer into a reason a person can act on. */
static void describe_failure(struct transfer *t, CURLcode cc, struct sw_http_result *res)
{
	long os_errno = 0;
	double connect_time = 0;
	char *url = NULL;

	curl_easy_getinfo(t->easy, CURLINFO_OS_ERRNO, &os_errno);
	curl_easy_getinfo(t->easy, CURLINFO_CONNECT_TIME, &connect_time);
	curl_easy_getinfo(t->easy, CURLINFO_EFFECTIVE_URL, &url);
	switch (cc) {
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
		res->code = SW_EUNREACH;
		snprintf(res->error, sizeof(res->error), "unreachable: %.200s",
			 os_errno ? strerror((int)os_errno) : t->errbuf);
		break;
	case CURLE_OPERATION_TIMEDOUT: {
		/* The connect deadline (which covers the TLS handshake) or the total one,
		 * whichever ran out. */
		unsigned limit = t->timeout_ms;
		if (connect_time <= 0 && t->c->connect_timeout_ms < limit)
			limit = t->c->connect_timeout_ms;
		res->code = SW_ETIMEDOUT;
		snprintf(res->error, sizeof(res->error), "not responding after %g s",
			 limit / 1000.0);
		break;
	}
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
		res->code = SW_ETLS;
		snprintf(res->error, sizeof(res->error), "rejected: TLS: %.200s",
			 t->errbuf[0] ? t->errbuf : curl_easy_strerror(cc));
		break;
	case CURLE_WRITE_ERROR:
		res->code = t->too_big ? SW_ETOOBIG : SW_EIO;
		snprintf(res->error, sizeof(res->error), "%s",
			 t->too_big ? "response too large" : "cannot store the response");
		break;
	case CURLE_GOT_NOTHING:
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
		res->code = SW_EPROTO;
		snprintf(res->error, sizeof(res->error), "connection dropped: %.200s",
			 t->errbuf[0] ? t->errbuf : curl_easy_strerror(cc));
		break;
	default:
		res->code = SW_EPROTO;
		snprintf(res->error, sizeof(res->error), "%s",
			 t->errbuf[0] ? t->errbuf : curl_easy_strerror(cc));
	}
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
		memset(&res, 0, sizeof(res));
		res.body = t->body ? t->body : "";
		res.len = t->len;
		if (msg->data.result == CURLE_OK)
			curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &res.status);
		else
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
		t->cb(&res, t->arg);
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

int sw_http_client_request(struct sw_http_client *c, const char *method, const char *url,
			   const char *body, size_t len, unsigned timeout_ms, sw_http_done cb,
			   void *arg)
{
	struct transfer *t;
	CURL *e;

	t = calloc(1, sizeof(*t));
	if (!t)
		return SW_ENOMEM;
	e = curl_easy_init();
	if (!e) {
		free(t);
		return SW_ENOMEM;
	}
	t->c = c;
	t->easy = e;
	t->cb = cb;
	t->arg = arg;
	t->timeout_ms = timeout_ms;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)c->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, c->headers);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
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
	if (body) {
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)len);
		curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
	}
	if (strcmp(method, "GET") != 0 && strcmp(method, "POST") != 0)
		curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
	else if (strcmp(method, "POST") == 0 && !body)
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
	t->next = c->transfers;
	if (t->next)
		t->next->pprev = &t->next;
	c->transfers = t;
	t->pprev = &c->transfers;
	if (curl_multi_add_handle(c->multi, e) != CURLM_OK) {
		transfer_free(t);
		return SW_ENOMEM;
	}
	return 0;
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
		rc = sw_http_client_request(c, method, url, body, body ? strlen(body) : 0,
					    timeout_ms, on_fetched, &f);
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
			snprintf(err, errlen, "%s", f.error);
		free(f.resp);
		return f.code ? f.code : SW_EPROTO;
	}
	*status = f.status;
	*resp = f.resp;
	return f.resp ? 0 : SW_ENOMEM;
}
