/* The HTTPS server and client on one libuv loop: routing, mutual TLS roles,
 * revocation, deferred replies, body limits, and the client's deadlines. */
#include "error.h"
#include "http_client.h"
#include "http_server.h"
#include "pki.h"
#include "sse.h"
#include "util.h"

#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <netinet/in.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

struct fixture {
	char dir[64];
	char *ca_cert, *ca_key, *server_cert, *server_key;
	char ca_file[128], admin_crt[128], admin_key[128], agent_crt[128], agent_key[128];
	char agent_serial[41];
	uv_loop_t loop;
	struct sw_http_server *srv;
	uv_timer_t later;
	struct sw_http_req *pending;
	int revoke_agent;
	struct sw_http_server *other; /* a second server a test started */
	/* event streams the route /events opened, and how each ended (-1: not yet) */
	struct sw_http_stream *st[4];
	int ended[4], nst, refused;
};

static struct fixture fx;

static void issue(struct sw_pki_ca *ca, const char *cn, const char *role, int server,
		  char **key_out, char **cert_out, char serial[41])
{
	const char *sans[] = {"127.0.0.1", NULL};
	struct sw_pki_issue what = {.cn = cn,
				    .role = role,
				    .sans = sans,
				    .days = 1,
				    .purposes = server ? SW_PKI_TLS_SERVER | SW_PKI_TLS_CLIENT : 0};
	char *csr = NULL;

	assert_int_equal(sw_pki_key_generate(key_out, NULL, 0), 0);
	assert_int_equal(sw_pki_csr_create(*key_out, cn, &csr, NULL, 0), 0);
	assert_int_equal(sw_pki_ca_issue(ca, csr, strlen(csr), &what, cert_out, serial, NULL, 0),
			 0);
	free(csr);
}

static void put(const char *path, const char *text)
{
	assert_int_equal(sw_file_write_atomic(path, text, strlen(text), 0600, NULL, 0), 0);
}

static void on_hello(struct sw_http_req *req, void *arg)
{
	const struct sw_identity *id = sw_http_req_identity(req);

	sw_http_reply_json(
	    req, 200,
	    json_pack("{ss ss ss}", "who", id ? id->cn : "-", "tail", sw_http_req_tail(req), "q",
		      sw_http_req_query(req, "q") ? sw_http_req_query(req, "q") : ""));
}

static void on_later_timer(uv_timer_t *t)
{
	sw_http_reply_json(fx.pending, 202, json_pack("{sb}", "late", 1));
	fx.pending = NULL;
}

/* Never answers: the test replies once the client has given up. */
static void on_stall(struct sw_http_req *req, void *arg)
{
	fx.pending = req;
}

/* Promises 4000 bytes, has 1000: the server drops the connection when they run out. */
static void on_cut(struct sw_http_req *req, void *arg)
{
	char path[128];
	int fd;

	snprintf(path, sizeof(path), "%s/short", fx.dir);
	fd = open(path, O_RDONLY);
	assert_true(fd >= 0);
	sw_http_reply_file(req, fd, 4000, 0);
}

/* Answers 100 ms after the request, from a timer: the connection waits suspended. */
static void on_later(struct sw_http_req *req, void *arg)
{
	fx.pending = req;
	uv_timer_start(&fx.later, on_later_timer, 100, 0);
}

static void on_echo(struct sw_http_req *req, void *arg)
{
	json_t *j = sw_http_req_json(req);

	if (j)
		sw_http_reply_json(req, 200, j);
}

static void on_sink(struct sw_http_req *req, void *arg)
{
	size_t len;

	sw_http_req_body(req, &len);
	sw_http_reply_json(req, 200, json_pack("{sI}", "len", (json_int_t)len));
}

static int is_revoked(void *arg, const char *serial)
{
	return fx.revoke_agent && strcmp(serial, fx.agent_serial) == 0;
}

static void on_busy(struct sw_http_req *req, void *arg)
{
	sw_http_reply_busy(req, 7, "busy; come back later");
}

static void on_stream_ended(struct sw_http_stream *st, enum sw_http_stream_end why, void *arg)
{
	int i = (int)(intptr_t)arg;

	assert_ptr_equal(fx.st[i], st);
	fx.ended[i] = (int)why;
	fx.st[i] = NULL;
}

/* An event stream, its first event sent at once; past the server's limit, 503. */
static void on_events(struct sw_http_req *req, void *arg)
{
	int i = fx.nst, rc;

	assert_true(i < 4);
	rc = sw_http_stream_open(req, on_stream_ended, (void *)(intptr_t)i, &fx.st[i]);
	if (rc == SW_EBUSY) {
		fx.refused++;
		sw_http_reply_busy(req, 1, "too many event streams");
		return;
	}
	assert_int_equal(rc, 0);
	fx.ended[i] = -1;
	fx.nst++;
	assert_int_equal(sw_http_stream_send(fx.st[i], "hello", "{\"n\":0}", 7), 0);
}

static const struct sw_http_route routes[] = {
    {"GET", "/events", SW_HTTP_OPEN, on_events, 0},
    {"GET", "/busy", SW_HTTP_OPEN, on_busy, 0},
    {"GET", "/open", SW_HTTP_OPEN, on_hello, 0},
    {"GET", "/admin", SW_HTTP_ADMIN, on_hello, 0},
    {"GET", "/agent/*", SW_HTTP_AGENT, on_hello, 0},
    {"GET", "/later", SW_HTTP_OPEN, on_later, 0},
    {"GET", "/stall", SW_HTTP_OPEN, on_stall, 0},
    {"GET", "/cut", SW_HTTP_OPEN, on_cut, 0},
    {"POST", "/echo", SW_HTTP_OPEN, on_echo, 100},
    {"POST", "/sink", SW_HTTP_OPEN, on_sink, 2 * 1000 * 1000},
};

static int setup(void **state)
{
	struct sw_pki_ca *ca;
	char *k, *c, serial[41], err[256];

	memset(&fx, 0, sizeof(fx));
	snprintf(fx.dir, sizeof(fx.dir), "/tmp/sw-http-XXXXXX");
	assert_non_null(mkdtemp(fx.dir));
	assert_int_equal(sw_pki_ca_create("TST", 1, &fx.ca_cert, &fx.ca_key, NULL, 0), 0);
	assert_int_equal(sw_pki_ca_load(fx.ca_cert, fx.ca_key, &ca, NULL, 0), 0);
	issue(ca, "site-server", SW_PKI_ROLE_SERVER, 1, &fx.server_key, &fx.server_cert, serial);
	snprintf(fx.ca_file, sizeof(fx.ca_file), "%s/ca.crt", fx.dir);
	put(fx.ca_file, fx.ca_cert);
	issue(ca, "admin", SW_PKI_ROLE_ADMIN, 0, &k, &c, serial);
	snprintf(fx.admin_key, sizeof(fx.admin_key), "%s/admin.key", fx.dir);
	snprintf(fx.admin_crt, sizeof(fx.admin_crt), "%s/admin.crt", fx.dir);
	put(fx.admin_key, k);
	put(fx.admin_crt, c);
	free(k);
	free(c);
	issue(ca, "web1", SW_PKI_ROLE_AGENT, 0, &k, &c, fx.agent_serial);
	snprintf(fx.agent_key, sizeof(fx.agent_key), "%s/agent.key", fx.dir);
	snprintf(fx.agent_crt, sizeof(fx.agent_crt), "%s/agent.crt", fx.dir);
	put(fx.agent_key, k);
	put(fx.agent_crt, c);
	free(k);
	free(c);
	sw_pki_ca_free(ca);

	assert_int_equal(uv_loop_init(&fx.loop), 0);
	uv_timer_init(&fx.loop, &fx.later);
	struct sw_http_server_opts o = {.listen = "127.0.0.1:0",
					.cert_pem = fx.server_cert,
					.key_pem = fx.server_key,
					.ca_pem = fx.ca_cert,
					.routes = routes,
					.nroutes = SW_ARRAY_LEN(routes),
					.is_revoked = is_revoked};
	assert_int_equal(sw_http_server_start(&fx.loop, &o, &fx.srv, err, sizeof(err)), 0);
	assert_true(sw_http_server_port(fx.srv) > 0);
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	/* a test that failed early leaves its request unanswered; the server cannot stop
	 * with a connection suspended */
	if (fx.pending)
		sw_http_reply_json(fx.pending, 200, json_object());
	sw_http_server_stop(fx.srv);
	sw_http_server_stop(fx.other);
	uv_close((uv_handle_t *)&fx.later, NULL);
	uv_run(&fx.loop, UV_RUN_DEFAULT);
	assert_int_equal(uv_loop_close(&fx.loop), 0);
	free(fx.ca_cert);
	free(fx.ca_key);
	free(fx.server_cert);
	free(fx.server_key);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", fx.dir);
	return system(cmd) == 0 ? 0 : -1;
}

struct call {
	int done;
	long status;
	unsigned retry_after;
	int code;
	char body[512];
	char error[256];
};

static void on_done(const struct sw_http_result *res, void *arg)
{
	struct call *c = arg;

	c->done = 1;
	c->status = res->status;
	c->retry_after = res->retry_after_s;
	c->code = res->code;
	snprintf(c->body, sizeof(c->body), "%s", res->body);
	snprintf(c->error, sizeof(c->error), "%s", res->error);
}

/* One request through the client on the server's own loop. */
static struct call request(const char *cert, const char *key, const char *method, const char *path,
			   const char *body, unsigned timeout_ms)
{
	struct sw_http_client *c;
	struct sw_http_client_opts o = {.ca_file = fx.ca_file, .cert_file = cert, .key_file = key};
	struct call res = {0};
	char url[128];

	snprintf(url, sizeof(url), "https://127.0.0.1:%u%s", sw_http_server_port(fx.srv), path);
	assert_int_equal(sw_http_client_new(&fx.loop, &o, &c), 0);
	assert_int_equal(sw_http_client_request(c, method, url, body, body ? strlen(body) : 0,
						timeout_ms, on_done, &res),
			 0);
	while (!res.done)
		uv_run(&fx.loop, UV_RUN_ONCE);
	sw_http_client_free(c);
	return res;
}

static void test_routes(void **state)
{
	struct call r;

	r = request(NULL, NULL, "GET", "/open?q=x%20y", NULL, 5000);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"q\":\"x y\""));
	r = request(NULL, NULL, "GET", "/nothing", NULL, 5000);
	assert_int_equal(r.status, 404);
	r = request(NULL, NULL, "POST", "/open", "{}", 5000);
	assert_int_equal(r.status, 405);
	r = request(fx.agent_crt, fx.agent_key, "GET", "/agent/abc", NULL, 5000);
	assert_int_equal(r.status, 200);
	assert_non_null(strstr(r.body, "\"tail\":\"abc\""));
	assert_non_null(strstr(r.body, "\"who\":\"web1\""));
}

static void test_roles(void **state)
{
	struct call r;

	r = request(fx.admin_crt, fx.admin_key, "GET", "/admin", NULL, 5000);
	assert_int_equal(r.status, 200);
	r = request(NULL, NULL, "GET", "/admin", NULL, 5000);
	assert_int_equal(r.status, 401);
	assert_non_null(strstr(r.body, "certificate required"));
	r = request(fx.agent_crt, fx.agent_key, "GET", "/admin", NULL, 5000);
	assert_int_equal(r.status, 403);
	assert_non_null(strstr(r.body, "admin certificate"));
	fx.revoke_agent = 1;
	r = request(fx.agent_crt, fx.agent_key, "GET", "/agent/x", NULL, 5000);
	assert_int_equal(r.status, 403);
	assert_non_null(strstr(r.body, "revoked"));
	/* a revoked certificate is refused even on an open route */
	r = request(fx.agent_crt, fx.agent_key, "GET", "/open", NULL, 5000);
	assert_int_equal(r.status, 403);
}

static void test_deferred_reply(void **state)
{
	int64_t t0 = sw_mono_ms();
	struct call r = request(NULL, NULL, "GET", "/later", NULL, 5000);

	assert_int_equal(r.status, 202);
	assert_true(sw_mono_ms() - t0 >= 100);
	/* the server still serves after resuming */
	r = request(NULL, NULL, "GET", "/open", NULL, 5000);
	assert_int_equal(r.status, 200);
}

static void test_body_limits(void **state)
{
	char big[300];
	struct call r;

	r = request(NULL, NULL, "POST", "/echo", "{\"a\":[1,2]}", 5000);
	assert_int_equal(r.status, 200);
	assert_string_equal(r.body, "{\"a\":[1,2]}");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	r = request(NULL, NULL, "POST", "/echo", big, 5000);
	assert_int_equal(r.status, 413);
	r = request(NULL, NULL, "POST", "/echo", "{\"a\":", 5000);
	assert_int_equal(r.status, 400);
	assert_non_null(strstr(r.body, "malformed JSON"));
}

/* A large body arrives a TLS record per server run; the runs after one that took in
 * body bytes must not be backed off like the idle spin of a stalled handshake (that made
 * this take some 3 s). */
static void test_large_body_is_not_paced(void **state)
{
	size_t n = 1000 * 1000; /* under curl's threshold for Expect: 100-continue */
	char *big = malloc(n + 1), want[32];
	int64_t t0;
	struct call r;

	assert_non_null(big);
	memset(big, 'x', n);
	big[n] = '\0';
	t0 = sw_mono_ms();
	r = request(NULL, NULL, "POST", "/sink", big, 10000);
	assert_int_equal(r.status, 200);
	snprintf(want, sizeof(want), "{\"len\":%zu}", n);
	assert_string_equal(r.body, want);
	assert_true(sw_mono_ms() - t0 < 1000);
	free(big);
}

/* The seconds a reason says were waited after `prefix`, or -1 if it does not start so. */
static double waited(const char *reason, const char *prefix)
{
	char *end;
	double secs;

	if (strncmp(reason, prefix, strlen(prefix)) != 0)
		return -1;
	secs = strtod(reason + strlen(prefix), &end);
	return strncmp(end, " s", 2) == 0 ? secs : -1;
}

static void run_until_done(struct call *res)
{
	while (!res->done)
		uv_run(&fx.loop, UV_RUN_ONCE);
}

/* A listening socket on loopback, not accepting; its address in `url` + `path`. */
static int listener(int backlog, const char *path, char *url, size_t len)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t salen = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, backlog), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &salen), 0);
	snprintf(url, len, "https://127.0.0.1:%u%s", ntohs(sa.sin_port), path);
	return fd;
}

/* A peer that accepts connections and never answers costs the client its connect
 * deadline, and the reason names the TLS handshake it waited for. */
static void test_client_deadlines(void **state)
{
	struct sw_http_client *c;
	struct sw_http_client_opts o = {.ca_file = fx.ca_file, .connect_timeout_ms = 300};
	struct call res = {0};
	char url[64];
	int64_t t0;
	double secs;
	int fd = listener(8, "/x", url, sizeof(url));

	assert_int_equal(sw_http_client_new(&fx.loop, &o, &c), 0);
	t0 = sw_mono_ms();
	assert_int_equal(sw_http_client_request(c, "GET", url, NULL, 0, 2000, on_done, &res), 0);
	run_until_done(&res);
	assert_int_equal(res.status, 0);
	assert_int_equal(res.code, SW_ETIMEDOUT);
	secs = waited(res.error, "no connection after ");
	assert_true(secs >= 0.3 && secs < 1.5);
	assert_non_null(strstr(res.error, ": TLS handshake unanswered"));
	assert_true(sw_mono_ms() - t0 < 1500);
	close(fd);

	/* a closed port is refused at once */
	memset(&res, 0, sizeof(res));
	assert_int_equal(sw_http_client_request(c, "GET", url, NULL, 0, 2000, on_done, &res), 0);
	run_until_done(&res);
	assert_int_equal(res.code, SW_EUNREACH);
	assert_non_null(strstr(res.error, "unreachable: "));
	sw_http_client_free(c);
}

/* A port whose queue of connections is full drops the SYN: the TCP connect itself is
 * what the deadline waited for, and the reason does not blame a TLS handshake. */
static void test_tcp_connect_unanswered(void **state)
{
	struct sw_http_client *c;
	struct sw_http_client_opts o = {.ca_file = fx.ca_file, .connect_timeout_ms = 300};
	struct sockaddr_in sa;
	socklen_t salen = sizeof(sa);
	struct call res = {0};
	char url[64];
	double secs;
	int fd = listener(0, "/x", url, sizeof(url));
	int filler = socket(AF_INET, SOCK_STREAM, 0);

	/* a backlog of 0 holds one connection; the next SYN is dropped */
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &salen), 0);
	assert_int_equal(connect(filler, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(sw_http_client_new(&fx.loop, &o, &c), 0);
	assert_int_equal(sw_http_client_request(c, "GET", url, NULL, 0, 2000, on_done, &res), 0);
	run_until_done(&res);
	assert_int_equal(res.code, SW_ETIMEDOUT);
	secs = waited(res.error, "no connection after ");
	assert_true(secs >= 0.3 && secs < 1.5);
	assert_null(strstr(res.error, "TLS"));
	sw_http_client_free(c);
	close(filler);
	close(fd);
}

/* A request on a kept-alive connection that gets no answer waits its whole deadline,
 * and says so: curl reports a connect time of 0 for a reused connection, which must not
 * read as a connect deadline that passed. */
static void test_reused_connection_no_answer(void **state)
{
	struct sw_http_client *c;
	struct sw_http_client_opts o = {.ca_file = fx.ca_file, .connect_timeout_ms = 300};
	struct call res = {0};
	char url[128];
	int64_t t0;
	double secs;

	assert_int_equal(sw_http_client_new(&fx.loop, &o, &c), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/open", sw_http_server_port(fx.srv));
	assert_int_equal(sw_http_client_request(c, "GET", url, NULL, 0, 5000, on_done, &res), 0);
	run_until_done(&res);
	assert_int_equal(res.status, 200);

	memset(&res, 0, sizeof(res));
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/stall", sw_http_server_port(fx.srv));
	t0 = sw_mono_ms();
	assert_int_equal(sw_http_client_request(c, "GET", url, NULL, 0, 1500, on_done, &res), 0);
	run_until_done(&res);
	assert_true(sw_mono_ms() - t0 >= 1500);
	assert_int_equal(res.status, 0);
	assert_int_equal(res.code, SW_ETIMEDOUT);
	secs = waited(res.error, "no answer after ");
	assert_true(secs >= 1.5 && secs < 3);
	assert_null(strstr(res.error, "connection"));
	assert_non_null(fx.pending);
	sw_http_client_free(c);
}

struct fetched {
	int done;
	struct sw_http_download_result res;
	char error[256];
};

static void on_downloaded(const struct sw_http_download_result *res, void *arg)
{
	struct fetched *f = arg;

	f->done = 1;
	f->res = *res;
	snprintf(f->error, sizeof(f->error), "%s", res->error);
}

static struct fetched download(const char *url, unsigned timeout_ms)
{
	struct sw_http_client *c;
	struct sw_http_client_opts o = {.ca_file = fx.ca_file, .connect_timeout_ms = 1000};
	struct fetched f = {0};
	char path[128];

	snprintf(path, sizeof(path), "%s/download", fx.dir);
	unlink(path);
	assert_int_equal(sw_http_client_new(&fx.loop, &o, &c), 0);
	assert_int_equal(
	    sw_http_client_download(c, url, path, 1 << 20, timeout_ms, on_downloaded, &f), 0);
	while (!f.done)
		uv_run(&fx.loop, UV_RUN_ONCE);
	sw_http_client_free(c);
	return f;
}

/* A download the server drops part way keeps what came, and says when it was cut. */
static void test_download_cut_off(void **state)
{
	char path[128], url[128], block[1000];
	struct fetched f;
	double secs;

	memset(block, 'p', sizeof(block));
	snprintf(path, sizeof(path), "%s/short", fx.dir);
	assert_int_equal(sw_file_write_atomic(path, block, sizeof(block), 0600, NULL, 0), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/cut", sw_http_server_port(fx.srv));
	f = download(url, 5000);
	assert_int_equal(f.res.status, 0);
	assert_int_equal(f.res.code, SW_EPROTO);
	secs = waited(f.error, "connection dropped after ");
	assert_true(secs >= 0 && secs < 5);
	assert_non_null(strstr(f.error, " s: "));
	assert_int_equal(f.res.size, 1000);
}

/* A TLS server on its own thread that sends `reply` to the first request and then says
 * nothing until the client goes away. */
struct stub {
	int fd;
	const char *reply;
	uv_thread_t thread;
};

static void stub_main(void *arg)
{
	struct stub *st = arg;
	gnutls_certificate_credentials_t cred;
	gnutls_session_t s;
	gnutls_datum_t cert = {(unsigned char *)fx.server_cert, (unsigned)strlen(fx.server_cert)};
	gnutls_datum_t key = {(unsigned char *)fx.server_key, (unsigned)strlen(fx.server_key)};
	char buf[4096];
	size_t got = 0;
	ssize_t n;
	int fd = accept(st->fd, NULL, NULL), rc;

	if (fd < 0)
		return;
	gnutls_certificate_allocate_credentials(&cred);
	gnutls_certificate_set_x509_key_mem(cred, &cert, &key, GNUTLS_X509_FMT_PEM);
	gnutls_init(&s, GNUTLS_SERVER);
	gnutls_set_default_priority(s);
	gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
	gnutls_transport_set_int(s, fd);
	do
		rc = gnutls_handshake(s);
	while (rc < 0 && !gnutls_error_is_fatal(rc));
	while (rc == 0 && got < sizeof(buf) - 1 &&
	       (n = gnutls_record_recv(s, buf + got, sizeof(buf) - 1 - got)) > 0) {
		got += (size_t)n;
		buf[got] = '\0';
		if (strstr(buf, "\r\n\r\n")) {
			gnutls_record_send(s, st->reply, strlen(st->reply));
			break;
		}
	}
	/* until the client closes the connection */
	while (rc == 0 && gnutls_record_recv(s, buf, sizeof(buf)) > 0)
		;
	gnutls_deinit(s);
	gnutls_certificate_free_credentials(cred);
	close(fd);
}

/* A download whose server stops sending part way waits its deadline and says how much
 * of the answer came. */
static void test_download_stalls_midway(void **state)
{
	char url[64], reply[1024];
	struct stub st = {0};
	struct fetched f;
	double secs;
	int n;

	n = snprintf(reply, sizeof(reply),
		     "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nContent-Type: "
		     "application/octet-stream\r\n\r\n");
	memset(reply + n, 'q', 400);
	reply[n + 400] = '\0';
	st.reply = reply;
	st.fd = listener(8, "/pkg", url, sizeof(url));
	assert_int_equal(uv_thread_create(&st.thread, stub_main, &st), 0);
	f = download(url, 1500);
	uv_thread_join(&st.thread);
	close(st.fd);
	assert_int_equal(f.res.status, 0);
	assert_int_equal(f.res.code, SW_ETIMEDOUT);
	secs = waited(f.error, "answer incomplete after ");
	assert_true(secs >= 1.5 && secs < 3);
	assert_non_null(strstr(f.error, " s: 400 of 1000 bytes"));
	assert_int_equal(f.res.size, 400);
}

struct local_answer {
	int calls;
	unsigned status;
	json_t *body;
};

static void on_local(void *arg, unsigned status, char *text)
{
	struct local_answer *a = arg;

	a->calls++;
	a->status = status;
	json_decref(a->body);
	a->body = json_loads(text, 0, NULL);
	free(text);
}

static struct local_answer *local(struct local_answer *a, const char *method, const char *path,
				  const char *body, const char *role)
{
	struct sw_http_local_req in = {.method = method,
				       .path = path,
				       .body = body,
				       .len = body ? strlen(body) : 0,
				       .peer = "channel"};

	json_decref(a->body);
	memset(a, 0, sizeof(*a));
	snprintf(in.identity.cn, sizeof(in.identity.cn), "site");
	snprintf(in.identity.role, sizeof(in.identity.role), "%s", role);
	assert_int_equal(
	    sw_http_local(routes, sizeof(routes) / sizeof(routes[0]), NULL, &in, on_local, a), 0);
	return a;
}

/* A request that came another way than a connection runs through the same routes:
 * roles checked, the tail and the query decoded, bodies limited, and a reply given
 * later arrives later. */
static void test_local_requests(void **state)
{
	struct local_answer a = {0};
	char path[128];

	local(&a, "GET", "/agent/x%2Fy?q=a+b%21&z", NULL, "agent");
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, 200);
	assert_string_equal(json_string_value(json_object_get(a.body, "who")), "site");
	assert_string_equal(json_string_value(json_object_get(a.body, "tail")), "x%2Fy");
	assert_string_equal(json_string_value(json_object_get(a.body, "q")), "a b!");

	assert_int_equal(local(&a, "GET", "/agent/x", NULL, "admin")->status, 403);
	assert_int_equal(local(&a, "POST", "/agent/x", NULL, "agent")->status, 405);
	assert_int_equal(local(&a, "GET", "/nowhere", NULL, "agent")->status, 404);
	local(&a, "POST", "/echo", "{\"k\":1}", "agent");
	assert_int_equal(a.status, 200);
	assert_int_equal(json_integer_value(json_object_get(a.body, "k")), 1);
	local(&a, "POST", "/echo",
	      "{\"k\":\"a string longer than one hundred bytes, which is the limit of this "
	      "route's body, so it is refused\"}",
	      "agent");
	assert_int_equal(a.status, 413);
	/* files are not sent this way */
	snprintf(path, sizeof(path), "%s/short", fx.dir);
	put(path, "a file");
	assert_int_equal(local(&a, "GET", "/cut", NULL, "agent")->status, 501);

	/* answered from a timer: not inside the call, once, when it comes */
	local(&a, "GET", "/later", NULL, "agent");
	assert_int_equal(a.calls, 0);
	while (a.calls == 0)
		uv_run(&fx.loop, UV_RUN_ONCE);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.status, 202);
	json_decref(a.body);
}

static int hello_calls;

static void on_counted(struct sw_http_req *req, void *arg)
{
	hello_calls++;
	on_hello(req, arg);
}

static void two_calls(struct sw_http_client *c, unsigned port, struct call out[2])
{
	char url[128];

	snprintf(url, sizeof(url), "https://127.0.0.1:%u/open", port);
	for (int i = 0; i < 2; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		assert_int_equal(
		    sw_http_client_request(c, "GET", url, NULL, 0, 5000, on_done, &out[i]), 0);
		while (!out[i].done)
			uv_run(&fx.loop, UV_RUN_ONCE);
	}
}

/* A client that asks for the site server's role sends nothing to a peer holding only
 * another role's certificate from the same CA, on its first connection or any after;
 * the real server it reaches, on a new connection and on the kept-alive one. */
static void test_peer_role(void **state)
{
	static const struct sw_http_route counted[] = {
	    {"GET", "/open", SW_HTTP_OPEN, on_counted, 0},
	};
	struct sw_http_client_opts o = {.ca_file = fx.ca_file, .peer_role = SW_PKI_ROLE_SERVER};
	struct sw_http_client *c;
	char *crt, *key, err[256];
	struct call r[2];

	assert_int_equal(sw_file_read(fx.agent_crt, 65536, &crt, NULL, NULL, 0), 0);
	assert_int_equal(sw_file_read(fx.agent_key, 65536, &key, NULL, NULL, 0), 0);
	struct sw_http_server_opts so = {.listen = "127.0.0.1:0",
					 .cert_pem = crt,
					 .key_pem = key,
					 .ca_pem = fx.ca_cert,
					 .routes = counted,
					 .nroutes = SW_ARRAY_LEN(counted)};
	assert_int_equal(sw_http_server_start(&fx.loop, &so, &fx.other, err, sizeof(err)), 0);
	assert_int_equal(sw_http_client_new(&fx.loop, &o, &c), 0);

	hello_calls = 0;
	two_calls(c, sw_http_server_port(fx.other), r);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(r[i].status, 0);
		assert_int_equal(r[i].code, SW_ETLS);
		assert_string_equal(r[i].error, "rejected: the peer is agent web1, not a server");
	}
	assert_int_equal(hello_calls, 0);

	two_calls(c, sw_http_server_port(fx.srv), r);
	assert_int_equal(r[0].status, 200);
	assert_int_equal(r[1].status, 200);

	sw_http_client_free(c);
	free(crt);
	free(key);
}

/* A busy reply says when to come back, and the client hears it. */
static void test_busy_retry_after(void **state)
{
	struct call r = request(NULL, NULL, "GET", "/busy", NULL, 5000);

	assert_int_equal(r.status, 503);
	assert_int_equal(r.retry_after, 7);
	assert_non_null(strstr(r.body, "come back later"));
	r = request(NULL, NULL, "GET", "/open", NULL, 5000);
	assert_int_equal(r.retry_after, 0);
}

/* Past max_handshakes connections without a request, one more is closed as it is
 * accepted, before any TLS work; once those go, connections are taken again. */
static void test_handshakes_shed(void **state)
{
	struct sw_http_server_opts so = {.listen = "127.0.0.1:0",
					 .cert_pem = fx.server_cert,
					 .key_pem = fx.server_key,
					 .ca_pem = fx.ca_cert,
					 .routes = routes,
					 .nroutes = SW_ARRAY_LEN(routes),
					 .max_handshakes = 1};
	struct sw_http_client_opts o = {.ca_file = fx.ca_file};
	struct sockaddr_in sa = {.sin_family = AF_INET};
	struct sw_http_client *c;
	struct call r = {0};
	char url[128], err[256];
	int fd;

	assert_int_equal(sw_http_server_start(&fx.loop, &so, &fx.other, err, sizeof(err)), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/open", sw_http_server_port(fx.other));
	/* a client that connects and says nothing holds the one place */
	sa.sin_port = htons((uint16_t)sw_http_server_port(fx.other));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	for (int i = 0; i < 20; i++) /* until the server has accepted it */
		uv_run(&fx.loop, UV_RUN_NOWAIT);
	assert_int_equal(sw_http_client_new(&fx.loop, &o, &c), 0);
	assert_int_equal(sw_http_client_request(c, "GET", url, NULL, 0, 5000, on_done, &r), 0);
	while (!r.done)
		uv_run(&fx.loop, UV_RUN_ONCE);
	assert_int_equal(r.status, 0);
	assert_int_equal(r.code, SW_EBUSY);
	assert_non_null(strstr(r.error, "connection closed during the TLS handshake"));
	close(fd);
	/* the place comes free when the server sees the silent one go */
	for (int tries = 0; tries < 100; tries++) {
		memset(&r, 0, sizeof(r));
		assert_int_equal(sw_http_client_request(c, "GET", url, NULL, 0, 5000, on_done, &r),
				 0);
		while (!r.done)
			uv_run(&fx.loop, UV_RUN_ONCE);
		if (r.status == 200)
			break;
	}
	assert_int_equal(r.status, 200);
	sw_http_client_free(c);
}

/* --- event streams --- */

/* A second server with the stream bounds a test asks for; its port. */
static unsigned stream_server(unsigned max_streams, size_t buffer, unsigned keepalive_ms)
{
	struct sw_http_server_opts so = {.listen = "127.0.0.1:0",
					 .cert_pem = fx.server_cert,
					 .key_pem = fx.server_key,
					 .ca_pem = fx.ca_cert,
					 .routes = routes,
					 .nroutes = SW_ARRAY_LEN(routes),
					 .max_streams = max_streams,
					 .stream_buffer = buffer,
					 .stream_keepalive_ms = keepalive_ms};
	char err[256];

	assert_int_equal(sw_http_server_start(&fx.loop, &so, &fx.other, err, sizeof(err)), 0);
	return sw_http_server_port(fx.other);
}

/* A client following a stream, through sw_http_client_stream() and the parser. */
struct watch {
	struct sw_http_client *c;
	struct sw_sse_parser p;
	int done, events, stop_after, code, streamed;
	long status;
	size_t bytes, last_len;
	char type[SW_SSE_NAME_MAX + 1], error[256], body[256];
	int64_t first_comment_ms, comment_ms;
	uint64_t comments;
};

static int on_watch_event(const struct sw_sse_event *ev, void *arg)
{
	struct watch *w = arg;

	w->events++;
	snprintf(w->type, sizeof(w->type), "%s", ev->type);
	w->last_len = ev->len;
	return w->stop_after && w->events >= w->stop_after;
}

static int on_watch_data(const char *data, size_t len, void *arg)
{
	struct watch *w = arg;
	int rc;

	w->bytes += len;
	rc = sw_sse_feed(&w->p, data, len, NULL, 0);
	if (w->p.comments != w->comments) {
		w->comments = w->p.comments;
		w->comment_ms = sw_mono_ms();
		if (!w->first_comment_ms)
			w->first_comment_ms = w->comment_ms;
	}
	return rc;
}

static void on_watch_done(const struct sw_http_result *res, void *arg)
{
	struct watch *w = arg;

	w->done = 1;
	w->status = res->status;
	w->code = res->code;
	w->streamed = res->streamed;
	snprintf(w->error, sizeof(w->error), "%s", res->error);
	snprintf(w->body, sizeof(w->body), "%s", res->body);
}

static void watch(struct watch *w, unsigned port, unsigned idle_ms)
{
	struct sw_http_client_opts o = {.ca_file = fx.ca_file};
	char url[128];

	memset(w, 0, sizeof(*w));
	sw_sse_parser_init(&w->p, 0, on_watch_event, w);
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/events", port);
	assert_int_equal(sw_http_client_new(&fx.loop, &o, &w->c), 0);
	assert_int_equal(sw_http_client_stream(w->c, url, "text/event-stream", 20000, idle_ms,
					       on_watch_data, on_watch_done, w),
			 0);
}

static void watch_free(struct watch *w)
{
	sw_http_client_free(w->c);
	sw_sse_parser_cleanup(&w->p);
}

/* Runs the loop until `*flag` is set, for at most `ms`. */
static void run_until(const int *flag, int64_t ms)
{
	int64_t until = sw_mono_ms() + ms;

	while (!*flag && sw_mono_ms() < until)
		uv_run(&fx.loop, UV_RUN_ONCE);
	assert_true(*flag);
}

static int events_at_least(struct watch *w, int n)
{
	return w->events >= n;
}

static void run_until_events(struct watch *w, int n, int64_t ms)
{
	int64_t until = sw_mono_ms() + ms;

	while (!events_at_least(w, n) && !w->done && sw_mono_ms() < until)
		uv_run(&fx.loop, UV_RUN_ONCE);
	assert_true(events_at_least(w, n));
}

/* Events go out as they are sent, a snapshot larger than the bound among them when it
 * finds nothing waiting; a close ends the stream once they are out, and the client
 * hears a stream that ended as its server meant. */
static void test_stream_events(void **state)
{
	unsigned port = stream_server(0, 4096, 0);
	size_t big_len = 20000;
	char *big = malloc(big_len);
	struct watch w;

	assert_non_null(big);
	memset(big, 'x', big_len);
	watch(&w, port, 0);
	run_until_events(&w, 1, 5000);
	assert_string_equal(w.type, "hello");
	assert_non_null(fx.st[0]);
	assert_int_equal(sw_http_stream_send(fx.st[0], "big", big, big_len), 0);
	run_until_events(&w, 2, 5000);
	assert_string_equal(w.type, "big");
	assert_int_equal(w.last_len, big_len);
	for (int i = 0; i < 5; i++)
		assert_int_equal(sw_http_stream_send(fx.st[0], "tick", "{}", 2), 0);
	assert_int_equal(sw_http_stream_send(fx.st[0], "bad\nname", "{}", 2), SW_EINVAL);
	assert_int_equal(sw_http_stream_send(fx.st[0], "end", "", 0), 0);
	sw_http_stream_close(fx.st[0]);
	fx.st[0] = NULL;
	run_until(&w.done, 5000);
	assert_int_equal(w.events, 8);
	assert_string_equal(w.type, "end");
	assert_int_equal(w.status, 200);
	assert_int_equal(w.code, 0);
	assert_true(w.streamed);
	assert_int_equal(fx.ended[0], -1); /* closed by the program: not told */
	watch_free(&w);
	free(big);
}

/* An event made once goes to several streams, each at its own pace, and outlives the
 * caller's reference until every stream has sent it. */
static void test_stream_shared_event(void **state)
{
	unsigned port = stream_server(0, 0, 0);
	struct sw_http_event *ev;
	struct watch w[2];

	for (int i = 0; i < 2; i++) {
		watch(&w[i], port, 0);
		run_until_events(&w[i], 1, 5000);
	}
	assert_int_equal(sw_http_event_new("shared", "{\"x\":1}", 7, &ev), 0);
	assert_int_equal(sw_http_stream_send_event(fx.st[0], ev), 0);
	assert_int_equal(sw_http_stream_send_event(fx.st[1], ev), 0);
	sw_http_event_free(ev);
	assert_int_equal(sw_http_event_new("bad\nname", "", 0, &ev), SW_EINVAL);
	assert_null(ev);
	for (int i = 0; i < 2; i++) {
		run_until_events(&w[i], 2, 5000);
		assert_string_equal(w[i].type, "shared");
		assert_int_equal(w[i].last_len, 7);
		watch_free(&w[i]);
	}
}

/* An idle stream sends a comment every keep-alive interval, and only when idle. */
static void test_stream_keepalive(void **state)
{
	unsigned port = stream_server(0, 0, 200);
	int64_t opened;
	struct watch w;

	watch(&w, port, 0);
	run_until_events(&w, 1, 5000);
	opened = sw_mono_ms();
	while (w.comments < 3 && sw_mono_ms() - opened < 3000)
		uv_run(&fx.loop, UV_RUN_ONCE);
	assert_true(w.comments >= 3);
	/* the first after the interval and its tick (a fifth of it), not before */
	assert_true(w.first_comment_ms - opened >= 150);
	assert_true(w.first_comment_ms - opened < 600);
	assert_int_equal(w.events, 1);
	watch_free(&w);
}

/* Past max_streams, a request for a stream is answered 503 by its handler. */
static void test_stream_limit(void **state)
{
	unsigned port = stream_server(2, 0, 0);
	struct watch w[3];

	for (int i = 0; i < 3; i++) {
		watch(&w[i], port, 0);
		if (i < 2)
			run_until_events(&w[i], 1, 5000);
	}
	run_until(&w[2].done, 5000);
	assert_int_equal(w[2].status, 503);
	assert_false(w[2].streamed);
	assert_non_null(strstr(w[2].body, "too many event streams"));
	assert_int_equal(fx.refused, 1);
	assert_int_equal(fx.nst, 2);
	for (int i = 0; i < 3; i++)
		watch_free(&w[i]);
}

/* A client that goes away is found out by the next keep-alive, and told once. */
static void test_stream_client_gone(void **state)
{
	unsigned port = stream_server(0, 0, 100);
	struct watch w;

	watch(&w, port, 0);
	w.stop_after = 1; /* the client ends the transfer after the first event */
	run_until(&w.done, 5000);
	assert_int_equal(w.status, 200);
	assert_int_equal(w.code, 0);
	watch_free(&w); /* and closes its connection */
	{
		int64_t t0 = sw_mono_ms();

		while (fx.ended[0] < 0 && sw_mono_ms() - t0 < 3000)
			uv_run(&fx.loop, UV_RUN_ONCE);
	}
	assert_int_equal(fx.ended[0], SW_HTTP_STREAM_GONE);
	assert_null(fx.st[0]);
}

/* A stream ends with its server, its program told so. */
static void test_stream_server_stop(void **state)
{
	unsigned port = stream_server(0, 0, 0);
	struct watch w;

	watch(&w, port, 0);
	run_until_events(&w, 1, 5000);
	sw_http_server_stop(fx.other);
	fx.other = NULL;
	assert_int_equal(fx.ended[0], SW_HTTP_STREAM_STOPPED);
	run_until(&w.done, 5000);
	assert_true(w.streamed);
	assert_int_equal(w.status, 0);
	watch_free(&w);
}

/* A stream that carries nothing at all for the client's idle bound is given up. */
static void test_stream_client_idle_bound(void **state)
{
	unsigned port = stream_server(0, 0, 60000);
	int64_t t0 = sw_mono_ms();
	struct watch w;

	watch(&w, port, 1000);
	run_until(&w.done, 5000);
	assert_int_equal(w.events, 1);
	assert_int_equal(w.status, 0);
	assert_int_equal(w.code, SW_ETIMEDOUT);
	assert_true(w.streamed);
	assert_non_null(strstr(w.error, "no byte of the stream for 1 s"));
	assert_true(sw_mono_ms() - t0 >= 1000);
	assert_true(sw_mono_ms() - t0 < 2500);
	watch_free(&w);
}

/* A reader that never reads: TLS, the request, then nothing, its receive buffer small. */
struct deaf {
	unsigned port;
	int ready, quit[2];
	uv_thread_t thread;
};

static void deaf_main(void *arg)
{
	struct deaf *d = arg;
	struct sockaddr_in sa = {.sin_family = AF_INET};
	gnutls_certificate_credentials_t cred;
	gnutls_session_t s;
	static const char get[] = "GET /events HTTP/1.1\r\nHost: x\r\nAccept: "
				  "text/event-stream\r\n\r\n";
	struct pollfd pfd;
	int fd = socket(AF_INET, SOCK_STREAM, 0), small = 2048, rc;

	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	sa.sin_port = htons((uint16_t)d->port);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0)
		return;
	gnutls_certificate_allocate_credentials(&cred);
	gnutls_init(&s, GNUTLS_CLIENT);
	gnutls_set_default_priority(s);
	gnutls_credentials_set(s, GNUTLS_CRD_CERTIFICATE, cred);
	gnutls_transport_set_int(s, fd);
	do
		rc = gnutls_handshake(s);
	while (rc < 0 && !gnutls_error_is_fatal(rc));
	if (rc == 0 && gnutls_record_send(s, get, sizeof(get) - 1) > 0)
		d->ready = 1;
	/* and never reads, until the test is over */
	pfd.fd = d->quit[0];
	pfd.events = POLLIN;
	poll(&pfd, 1, 30000);
	gnutls_deinit(s);
	gnutls_certificate_free_credentials(cred);
	close(fd);
}

static void on_flood(uv_timer_t *t)
{
	static char chunk[1000];

	memset(chunk, 'z', sizeof(chunk));
	if (fx.st[0])
		sw_http_stream_send(fx.st[0], "flood", chunk, sizeof(chunk));
}

/* A reader that falls more than the bound behind is dropped, however much the program
 * sends, and the server answers others meanwhile. */
static void test_stream_slow_reader_dropped(void **state)
{
	unsigned port = stream_server(0, 8192, 0);
	struct deaf d = {.port = port};
	uv_timer_t flood;
	int64_t t0;

	assert_int_equal(pipe(d.quit), 0);
	assert_int_equal(uv_thread_create(&d.thread, deaf_main, &d), 0);
	t0 = sw_mono_ms();
	while (!fx.st[0] && sw_mono_ms() - t0 < 5000)
		uv_run(&fx.loop, UV_RUN_ONCE);
	assert_non_null(fx.st[0]);
	uv_timer_init(&fx.loop, &flood);
	uv_timer_start(&flood, on_flood, 1, 1);
	t0 = sw_mono_ms();
	while (fx.ended[0] < 0 && sw_mono_ms() - t0 < 10000)
		uv_run(&fx.loop, UV_RUN_ONCE);
	uv_close((uv_handle_t *)&flood, NULL);
	assert_int_equal(fx.ended[0], SW_HTTP_STREAM_SLOW);
	/* the server goes on answering */
	{
		struct call r;
		char url[128];
		struct sw_http_client *c;
		struct sw_http_client_opts o = {.ca_file = fx.ca_file};

		snprintf(url, sizeof(url), "https://127.0.0.1:%u/open", port);
		assert_int_equal(sw_http_client_new(&fx.loop, &o, &c), 0);
		memset(&r, 0, sizeof(r));
		t0 = sw_mono_ms();
		assert_int_equal(sw_http_client_request(c, "GET", url, NULL, 0, 5000, on_done, &r),
				 0);
		run_until(&r.done, 5000);
		assert_int_equal(r.status, 200);
		assert_true(sw_mono_ms() - t0 < 1000);
		sw_http_client_free(c);
	}
	assert_int_equal(write(d.quit[1], "x", 1), 1);
	uv_thread_join(&d.thread);
	close(d.quit[0]);
	close(d.quit[1]);
}

/* Every SW_E* code has its status, the same wherever it is answered. */
static void test_status(void **state)
{
	static const struct {
		int rc;
		unsigned status;
	} cases[] = {
	    {SW_OK, 200},	 {SW_EINVAL, 400}, {SW_ETOOBIG, 400},  {SW_EDENIED, 403},
	    {SW_ENOTFOUND, 404}, {SW_EEXIST, 409}, {SW_EBUSY, 503},    {SW_ETIMEDOUT, 503},
	    {SW_ENOMEM, 500},	 {SW_EIO, 500},	   {SW_EUNREACH, 500}, {SW_ETLS, 500},
	    {SW_EDB, 500},	 {SW_EPROTO, 500}, {SW_ECRYPTO, 500},  {-1000, 500},
	};

	(void)state;
	for (size_t i = 0; i < SW_ARRAY_LEN(cases); i++)
		assert_int_equal(sw_http_status(cases[i].rc), cases[i].status);
	assert_int_equal(sw_http_gateway_status(SW_ETIMEDOUT), 504);
	assert_int_equal(sw_http_gateway_status(SW_EUNREACH), 502);
	assert_int_equal(sw_http_gateway_status(SW_EPROTO), 502);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_status),
	    cmocka_unit_test_setup_teardown(test_routes, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_roles, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_deferred_reply, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_body_limits, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_large_body_is_not_paced, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_client_deadlines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_tcp_connect_unanswered, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_reused_connection_no_answer, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_download_cut_off, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_download_stalls_midway, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_local_requests, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_peer_role, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_busy_retry_after, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_handshakes_shed, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_events, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_shared_event, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_keepalive, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_limit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_client_gone, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_server_stop, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_client_idle_bound, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_stream_slow_reader_dropped, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
