#include "http_server.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "sse.h"
#include "util.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* While a TLS handshake waits for its client, libmicrohttpd 0.9.75 in epoll mode reports
 * a zero timeout over and over. Running it again at once would spin a core for nothing,
 * so zero timeouts without socket activity are backed off up to this bound. */
#define SPIN_BACKOFF_MAX_MS 50

/* libmicrohttpd's memory for each connection (headers, and the read buffer a body
 * passes through on its way to the handler), which it zeroes and so keeps resident:
 * 32 KiB by default, most of an idle agent's cost to the server. Headers here are
 * small, and bodies are copied out piece by piece whatever the buffer's size. */
#define CONN_MEMORY (4 * 1024)

/* TLS 1.3 as GnuTLS's defaults have it; TLS 1.2 only with an ephemeral key exchange and
 * an AEAD cipher (AES-GCM, ChaCha20-Poly1305, AES-CCM): no CBC with its MAC-then-encrypt
 * and padding oracles, no static RSA key exchange without forward secrecy. Every
 * program of the site speaks TLS 1.3 or these. */
#define TLS_PRIORITY                                                                               \
	"NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:-MAC-ALL:+AEAD:-KX-ALL:+ECDHE-ECDSA:"          \
	"+ECDHE-RSA"

/* Descriptors libmicrohttpd opens when it starts, after the limit is worked out: the
 * listening socket, its epoll set and the pipe that wakes it. */
#define MHD_OWN_FDS 3

/* A connection at the limit is logged at most this often: a server that stays at its
 * limit, or goes in and out of it, says so once, not once per connection. */
#define LIMIT_WARN_INTERVAL_MS 60000

/* How long accepting pauses after accept() met EMFILE with no connection open. */
#define EMFILE_PAUSE_MS 100

/* An event stream's socket sends at most this much ahead of its reader, beside the
 * stream's own queue: the kernel would otherwise grow it to megabytes per slow reader. */
#define STREAM_SNDBUF (64 * 1024)
#define KEEPALIVE     ": keep-alive\n\n"

struct sw_http_server {
	uv_loop_t *loop;
	struct MHD_Daemon *mhd;
	struct sw_pki_verifier *verifier;
	uv_poll_t poll;
	uv_timer_t timer;
	int closing, handles_open;
	unsigned zero_streak;
	unsigned resume_runs; /* immediate runs owed to connections just resumed */
	unsigned streaming;   /* file replies being sent: zero timeouts are their work */
	uint64_t body_reads;  /* request body pieces taken in, ever */
	int in_run;	      /* inside MHD_run(): handlers are running */
	int kicked;	      /* a handler of the run resumed a suspended request */
	unsigned idle_timeout_s, handshake_timeout_s;
	struct conn_state *new_head, *new_tail; /* connections yet to make a request */
	unsigned new_count, max_handshakes;
	uint64_t refused; /* connections closed at accept since the last report */
	/* The connection limit, below the open-file limit so that accept() never meets
	 * EMFILE (libmicrohttpd would stop accepting until a connection closes, or spin
	 * when none is open): at the limit libmicrohttpd stops polling the listening
	 * socket, and a new connection waits in the backlog until one closes. */
	unsigned max_conns, configured_conns, nconn, spare_fds;
	int fds_at_start;
	uint64_t nofile;
	int at_limit;	  /* reached the limit since the last sweep */
	int limit_warned; /* inside an episode the log has told of */
	uint64_t emfile;  /* accepts that met the open-file limit itself */
	int emfile_idle;  /* ... with no connection open: see server_run */
	/* libmicrohttpd stopped polling the listening socket (at the limit, or EMFILE with
	 * connections open); it takes it back only at the start of a run, so the run after
	 * a connection closes must come at once, not when some other socket stirs. */
	int accept_paused, reaccept;
	uv_timer_t pause;
	int64_t limit_since_ms, limit_warned_ms;
	uv_timer_t sweep;
	unsigned port;
	const struct sw_http_route *routes;
	size_t nroutes;
	void *arg;
	int (*is_revoked)(void *arg, const char *serial);
	const char *(*admin_level)(void *arg, const struct sw_identity *id);
	int (*audit)(void *arg, struct sw_http_req *req, unsigned status, const char *body,
		     int may_hold);
	char *upload_dir;
	const char *const *headers; /* every answer's (opts.headers) */
	unsigned (*admit)(void *arg, struct sw_http_req *req, char *msg, size_t len);
	struct route_mx *mx; /* one a route, then one for requests no route matched */
	/* event streams (sw_http_stream_open) */
	struct sw_http_stream *streams; /* open ones, newest first */
	unsigned nstreams, max_streams, stream_keepalive_ms;
	size_t stream_buffer;
	uv_timer_t stream_timer;	 /* keep-alives, closes that linger, the log of drops */
	struct sw_http_event *keepalive; /* the comment every idle stream is sent */
	/* A stream's reader took bytes in this run: more follow at the next, which comes at
	 * once (a stream whose socket is full takes none, and backs off as before). */
	int stream_out;
	uint64_t streams_dropped;	       /* for slowness, since the last report */
	char dropped_peer[INET6_ADDRSTRLEN];   /* the last of them */
	int64_t streams_refused_ms;	       /* when refusals at the limit were last told */
	struct sw_gauge *mx_streams;	       /* open now */
	struct sw_counter *mx_streams_dropped; /* for slowness, ever */
};

/* An event as it goes out, made once and shared by every stream it is queued on. */
struct sw_http_event {
	unsigned refs;
	size_t len;
	char text[];
};

/* An event queued on a stream. */
struct piece {
	struct piece *next;
	struct sw_http_event *ev;
};

/* One event stream: the events its connection has yet to take, and how it ends. */
struct sw_http_stream {
	struct sw_http_server *srv;
	struct sw_http_req *req;
	struct sw_http_stream *prev, *next;
	struct piece *head, **tail; /* unsent, oldest first */
	size_t off;		    /* bytes of the head's event already taken */
	size_t len;		    /* unsent bytes in all */
	/* What is left of an event that found the queue empty: it may be of any size, and
	 * only the bytes queued behind it count against the bound. */
	size_t exempt;
	int fd;
	int64_t queued_ms; /* when bytes were last queued: a keep-alive is due after */
	int64_t closed_ms; /* when the program closed it */
	int suspended;	   /* parked by its content reader, nothing to send */
	int closing;	   /* the program closed it: ends once drained */
	int dropped;	   /* ends now, for `why` */
	enum sw_http_stream_end why;
	sw_http_stream_ended ended; /* NULL once the program has let go */
	void *arg;
};

/* A route's requests, counted by status class and timed from their headers to the
 * end of their answer (a held poll's time included). */
#define STATUS_CLASSES 4 /* 2xx to 5xx */
struct route_mx {
	struct sw_counter *done[STATUS_CLASSES];
	struct sw_histogram *seconds;
};

/* What one connection has shown about its peer, worked out on its first request. */
struct conn_state {
	int checked;
	int has_identity;
	struct sw_identity id;
	char reason[160];
	/* Until its first request a connection is on the server's list of new ones, oldest
	 * first, so the handshake bound can be enforced without giving every connection a
	 * timeout of its own (see sweep_new). */
	struct MHD_Connection *conn;
	struct conn_state *prev, *next;
	int64_t started_ms;
	int on_list, cut;
	/* The request being read has a path or query part that decodes to a control
	 * character: that part as it came (on_unescape). */
	char bad_url[64];
};

struct sw_http_req {
	struct sw_http_server *srv;
	struct MHD_Connection *conn;
	char method[16];
	char *path;
	const char *tail;
	const struct sw_http_route *route;
	const struct sw_identity *identity;
	char peer[INET6_ADDRSTRLEN];
	uint64_t started_ns; /* uv_hrtime() as its headers came */
	char *body;
	size_t len, cap, max;
	int dispatched, suspended, too_big, streaming;
	int audited; /* an administrator's change: its answer goes by the audit hook */
	int held;    /* its answer waits for sw_http_reply_release() */
	struct sw_http_stream *stream; /* the request is answered with an event stream */
	/* a SW_HTTP_BODY_FILE route's body: the file it goes to, and the first write error */
	int body_fd;
	char *body_file;
	int body_errno;
	unsigned status;
	struct MHD_Response *response;
	/* a local request (sw_http_local): no connection, the reply goes to `local_done` */
	sw_http_local_done local_done;
	void *local_arg;
	char *local_reply; /* stored while the handler still runs */
	int local_running; /* inside the handler: the reply is passed on after it */
	char *query;	   /* its arguments, decoded: "k\0v\0k\0v\0" */
	size_t query_len;
	struct sw_identity local_id;
};

static void server_run(struct sw_http_server *srv, int activity);

static void on_timer(uv_timer_t *t)
{
	server_run(t->data, 0);
}

static void on_poll(uv_poll_t *p, int status, int events)
{
	server_run(p->data, 1);
}

static void on_pause_end(uv_timer_t *t)
{
	struct sw_http_server *srv = t->data;

	uv_poll_start(&srv->poll, UV_READABLE, on_poll);
	server_run(srv, 1);
}

static void server_run(struct sw_http_server *srv, int activity)
{
	MHD_UNSIGNED_LONG_LONG timeout;
	uint64_t delay, body_reads = srv->body_reads;
	int kicked;

	if (srv->closing)
		return;
	srv->in_run = 1;
	MHD_run(srv->mhd);
	srv->in_run = 0;
	if (srv->emfile_idle) {
		/* accept() met EMFILE with no connection open: libmicrohttpd keeps the
		 * listening socket ready and would be run again at once, forever. Nothing
		 * else is polled, so the poll pauses and tries again in a moment. */
		srv->emfile_idle = 0;
		uv_poll_stop(&srv->poll);
		uv_timer_start(&srv->pause, on_pause_end, EMFILE_PAUSE_MS, 0);
		return;
	}
	/* A handler of this run answered another, suspended, request (a command for the
	 * agent whose poll waits): it goes out at the next run, which must come at once
	 * even when libmicrohttpd, counting no resumed connection, asks for none. */
	kicked = srv->kicked || srv->reaccept;
	srv->kicked = srv->reaccept = 0;
	/* libmicrohttpd takes in one TLS record (16 KiB) of a body per run and, the socket
	 * being edge-triggered, hears nothing more of the bytes already waiting: it asks for
	 * a zero timeout instead. A run that took in body bytes is work like socket
	 * activity, so the next goes at once; backing it off made a 150 KB upload take
	 * 70-170 ms. A body that stalls takes in nothing, and backs off as before. */
	if (srv->body_reads != body_reads)
		activity = 1;
	/* Likewise a run in which a stream's reader took bytes: the chunk goes out at the
	 * next, and the reader asks for more after it. */
	if (srv->stream_out) {
		srv->stream_out = 0;
		activity = 1;
	}
	if (MHD_get_timeout(srv->mhd, &timeout) != MHD_YES && !kicked) {
		uv_timer_stop(&srv->timer);
		srv->zero_streak = 0;
		return;
	}
	if (kicked) {
		delay = 0;
	} else if (timeout == 0 && !activity && srv->streaming > 0) {
		/* A file reply goes out a buffer per run; the socket stays writable and
		 * epoll (edge-triggered) says nothing more. */
		delay = 0;
	} else if (timeout == 0 && !activity && srv->resume_runs > 0) {
		/* A resumed connection needs a few runs to send its reply: that is work,
		 * not the handshake spin. */
		srv->resume_runs--;
		delay = 0;
	} else if (timeout == 0 && !activity) {
		if (srv->zero_streak < 16)
			srv->zero_streak++;
		delay = 1u << (srv->zero_streak > 6 ? 6 : srv->zero_streak);
		if (delay > SPIN_BACKOFF_MAX_MS)
			delay = SPIN_BACKOFF_MAX_MS;
	} else {
		if (activity)
			srv->zero_streak = 0;
		delay = timeout;
	}
	uv_timer_start(&srv->timer, on_timer, delay, 0);
}

static void list_remove(struct sw_http_server *srv, struct conn_state *cs)
{
	if (!cs->on_list)
		return;
	if (cs->prev)
		cs->prev->next = cs->next;
	else
		srv->new_head = cs->next;
	if (cs->next)
		cs->next->prev = cs->prev;
	else
		srv->new_tail = cs->prev;
	cs->on_list = 0;
	srv->new_count--;
}

/* Called by libmicrohttpd as it accepts, before any TLS work. */
static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t addrlen)
{
	struct sw_http_server *srv = cls;

	(void)addr, (void)addrlen;
	if (srv->new_count < srv->max_handshakes)
		return MHD_YES;
	srv->refused++;
	return MHD_NO;
}

static void on_notify(void *cls, struct MHD_Connection *conn, void **socket_context,
		      enum MHD_ConnectionNotificationCode code)
{
	struct sw_http_server *srv = cls;
	struct conn_state *cs;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		if (++srv->nconn >= srv->max_conns)
			srv->at_limit = srv->accept_paused = 1;
		cs = calloc(1, sizeof(*cs));
		if (cs) {
			cs->conn = conn;
			cs->started_ms = sw_mono_ms();
			cs->prev = srv->new_tail;
			if (srv->new_tail)
				srv->new_tail->next = cs;
			else
				srv->new_head = cs;
			srv->new_tail = cs;
			cs->on_list = 1;
			srv->new_count++;
		}
		*socket_context = cs;
	} else {
		if (srv->nconn > 0)
			srv->nconn--;
		if (srv->accept_paused) {
			srv->accept_paused = 0;
			srv->reaccept = 1;
		}
		cs = *socket_context;
		if (cs)
			list_remove(srv, cs);
		free(cs);
		*socket_context = NULL;
	}
}

/* Once a second: an episode at the connection limit (or at the open-file limit, if
 * descriptors went elsewhere) is told once when it starts, and once when it ends; a
 * server going in and out of it is told at most once a minute. */
static void limit_report(struct sw_http_server *srv, int64_t now)
{
	int full = srv->at_limit || srv->emfile > 0 || srv->nconn >= srv->max_conns;

	srv->at_limit = 0;
	if (full && !srv->limit_since_ms)
		srv->limit_since_ms = now;
	if (full && !srv->limit_warned &&
	    (!srv->limit_warned_ms || now - srv->limit_warned_ms >= LIMIT_WARN_INTERVAL_MS)) {
		struct rlimit rl;

		if (srv->emfile)
			/* the limit now, which may have been lowered since the start */
			sw_warn("http: the open-file limit (%" PRIu64 ") is reached with %u "
				"connections: new connections wait until descriptors free; those "
				"open are served",
				getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
				    ? (uint64_t)rl.rlim_cur
				    : srv->nofile,
				srv->nconn);
		else
			sw_warn("http: at the limit of %u connections (open-file limit %" PRIu64
				"): new connections wait until one closes; those open are served",
				srv->max_conns, srv->nofile);
		srv->limit_warned = 1;
		srv->limit_warned_ms = now;
	}
	if (!full && srv->limit_since_ms) {
		if (srv->limit_warned)
			sw_info("http: accepting connections again after %.1f s at the limit",
				(double)(now - srv->limit_since_ms) / 1000);
		srv->limit_since_ms = 0;
		srv->limit_warned = 0;
	}
	srv->emfile = 0;
}

/* Connections that have not made a request within the handshake bound (a TLS
 * handshake that stalls, or silence after it) are cut: given a one-second timeout,
 * which libmicrohttpd enforces at its next run. Every other connection keeps the
 * daemon's idle timeout, so libmicrohttpd keeps them in its sorted list; a timeout of
 * its own would put each on a list it walks in full on every run. */
static void sweep_new(uv_timer_t *t)
{
	struct sw_http_server *srv = t->data;
	int64_t now = sw_mono_ms(), bound = (int64_t)srv->handshake_timeout_s * 1000;
	int cut = 0;

	if (srv->refused) {
		sw_warn("http: shedding load: %" PRIu64 " connections closed as they came, with "
			"%u handshakes under way (the most at once)",
			srv->refused, srv->max_handshakes);
		srv->refused = 0;
	}
	limit_report(srv, now);
	for (struct conn_state *cs = srv->new_head; cs && now - cs->started_ms >= bound;) {
		struct conn_state *next = cs->next;
		list_remove(srv, cs);
		if (!cs->cut) {
			cs->cut = 1;
			MHD_set_connection_option(cs->conn, MHD_CONNECTION_OPTION_TIMEOUT, 1u);
			cut++;
		}
		cs = next;
	}
	if (cut) {
		sw_debug("http: %d connections without a request after %u s cut", cut,
			 srv->handshake_timeout_s);
		uv_timer_start(&srv->timer, on_timer, 0, 0);
	}
}

static int has_control(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			return 1;
	return 0;
}

/* Decodes a URL's path, or a name or value of its query, as libmicrohttpd does, and
 * notes one that decodes to a control character: "%00" would cut a name short and a
 * handler act on what is left. The request is refused on its first call. */
static size_t on_unescape(void *cls, struct MHD_Connection *conn, char *s)
{
	const union MHD_ConnectionInfo *info =
	    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	struct conn_state *cs = info ? info->socket_context : NULL;
	char raw[sizeof(cs->bad_url)];
	size_t n;

	(void)cls;
	snprintf(raw, sizeof(raw), "%s", s);
	n = MHD_http_unescape(s);
	if (has_control(s, n) && cs && !cs->bad_url[0])
		memcpy(cs->bad_url, raw, sizeof(raw));
	return n;
}

/* Names the first query parameter whose name or value holds a control character. */
static enum MHD_Result find_bad_arg(void *cls, enum MHD_ValueKind kind, const char *key,
				    size_t key_size, const char *value, size_t value_size)
{
	char *name = cls;

	(void)kind;
	if (!has_control(key, key_size) && !(value && has_control(value, value_size)))
		return MHD_YES;
	if (!sw_printable(name, 64, key)) /* a name that starts with %00 */
		snprintf(name, 64, "\\x00");
	return MHD_NO;
}

/* Verifies the peer's chain once per connection and caches the answer. */
static struct conn_state *conn_check(struct sw_http_server *srv, struct MHD_Connection *conn)
{
	const union MHD_ConnectionInfo *info;
	struct conn_state *cs;
	gnutls_session_t session;
	const gnutls_datum_t *chain;
	unsigned n = 0;

	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	cs = info ? info->socket_context : NULL;
	if (!cs || cs->checked)
		return cs;
	cs->checked = 1;
	info = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
	if (!info) {
		snprintf(cs->reason, sizeof(cs->reason), "client certificate required");
		return cs;
	}
	session = info->tls_session;
	chain = gnutls_certificate_get_peers(session, &n);
	if (!chain || n == 0) {
		snprintf(cs->reason, sizeof(cs->reason), "client certificate required");
		return cs;
	}
	if (sw_pki_verify_chain(srv->verifier, chain, n, &cs->id, cs->reason, sizeof(cs->reason)) ==
	    0)
		cs->has_identity = 1;
	return cs;
}

static unsigned role_bit(const char *role);

/* What a peer's certificate lets it call: its role's bit, and for an administrator the
 * bits of its level and those below. */
static unsigned rights(const struct sw_http_server *srv, const struct sw_identity *id)
{
	const char *level;

	if (strcmp(id->role, SW_PKI_ROLE_ADMIN) != 0)
		return role_bit(id->role);
	level = srv && srv->admin_level ? srv->admin_level(srv->arg, id) : "admin";
	if (!level)
		return 0;
	if (strcmp(level, "admin") == 0)
		return SW_HTTP_ADMIN | SW_HTTP_OPERATOR | SW_HTTP_VIEWER;
	if (strcmp(level, "operator") == 0)
		return SW_HTTP_OPERATOR | SW_HTTP_VIEWER;
	return strcmp(level, "viewer") == 0 ? SW_HTTP_VIEWER : 0;
}

static unsigned role_bit(const char *role)
{
	if (strcmp(role, SW_PKI_ROLE_ADMIN) == 0)
		return SW_HTTP_ADMIN | SW_HTTP_OPERATOR | SW_HTTP_VIEWER;
	if (strcmp(role, SW_PKI_ROLE_AGENT) == 0)
		return SW_HTTP_AGENT;
	if (strcmp(role, SW_PKI_ROLE_SERVER) == 0)
		return SW_HTTP_SERVER;
	if (strcmp(role, SW_PKI_ROLE_CLIENT) == 0)
		return SW_HTTP_CLIENT;
	if (strcmp(role, SW_PKI_ROLE_SCRAPE) == 0)
		return SW_HTTP_SCRAPE;
	return 0;
}

/* The certificates a route admits, for a refusal: administrators of any level count as
 * "an admin certificate" to a peer that is not one. */
static const char *roles_needed(unsigned roles)
{
	if (roles & (SW_HTTP_OPERATOR | SW_HTTP_VIEWER))
		roles = (roles & ~(SW_HTTP_OPERATOR | SW_HTTP_VIEWER)) | SW_HTTP_ADMIN;
	if (roles == SW_HTTP_ADMIN)
		return "an admin certificate";
	if (roles == SW_HTTP_AGENT)
		return "an agent certificate";
	if (roles == SW_HTTP_SERVER)
		return "the site server's certificate";
	if (roles == (SW_HTTP_ADMIN | SW_HTTP_SCRAPE))
		return "an admin or scrape certificate";
	return "another kind of certificate";
}

/* The level a route needs of an administrator. */
static const char *level_needed(unsigned roles)
{
	if (roles & SW_HTTP_VIEWER)
		return "an administrator of any role";
	if (roles & SW_HTTP_OPERATOR)
		return "the operator or admin role";
	return "the admin role";
}

static const struct sw_http_route *route_find(const struct sw_http_route *routes, size_t nroutes,
					      const char *method, const char *path,
					      const char **tail, int *path_known)
{
	*path_known = 0;
	for (size_t i = 0; i < nroutes; i++) {
		const struct sw_http_route *r = &routes[i];
		size_t n = strlen(r->path);
		int match;

		if (n > 0 && r->path[n - 1] == '*') {
			match = strncmp(path, r->path, n - 1) == 0 && path[n - 1] != '\0';
			*tail = path + n - 1;
		} else {
			match = strcmp(path, r->path) == 0;
			*tail = "";
		}
		if (!match)
			continue;
		*path_known = 1;
		if (strcmp(method, r->method) == 0)
			return r;
	}
	return NULL;
}

/* Adds name, value pairs up to a NULL name. */
static void add_headers(struct MHD_Response *resp, const char *const *h)
{
	for (; h && h[0] && h[1]; h += 2)
		MHD_add_response_header(resp, h[0], h[1]);
}

static enum MHD_Result queue_stored(struct sw_http_req *req)
{
	enum MHD_Result ret = MHD_queue_response(req->conn, req->status, req->response);

	MHD_destroy_response(req->response);
	req->response = NULL;
	return ret;
}

/* Why a peer is refused a route: the role or level it needs, and what it is. */
static void refusal(const struct sw_http_server *srv, const struct sw_identity *id, unsigned roles,
		    char *msg, size_t len)
{
	const char *level;

	if (strcmp(id->role, SW_PKI_ROLE_ADMIN) == 0 && srv && srv->admin_level &&
	    (roles & (SW_HTTP_ADMIN | SW_HTTP_OPERATOR | SW_HTTP_VIEWER))) {
		level = srv->admin_level(srv->arg, id);
		if (!level)
			snprintf(msg, len, "rejected: %s is not an administrator of this site",
				 id->cn);
		else
			snprintf(msg, len, "rejected: this needs %s; %s is %s %s",
				 level_needed(roles), id->cn,
				 level[0] == 'a' || level[0] == 'o' ? "an" : "a", level);
		return;
	}
	snprintf(msg, len, "rejected: this needs %s, not %s %s certificate", roles_needed(roles),
		 id->role[0] == 'a' ? "an" : "a", id->role);
}

/* Whether the peer may call the request's route: who it is (its chain, verified once
 * per connection), whether its certificate is revoked, whether its role is one the
 * route lets in. Decided as the request's headers arrive, before any of its body is
 * read, so that a peer the route refuses cannot make the server take in a body first.
 * 0 when allowed; else the status to answer, with the reason in `msg`. */
static unsigned authorize(struct sw_http_req *req, char *msg, size_t len)
{
	struct sw_http_server *srv = req->srv;
	const struct sw_http_route *r = req->route;
	unsigned roles = r->roles & ~SW_HTTP_BODY_FILE;
	struct conn_state *cs = conn_check(srv, req->conn);

	if (cs && cs->has_identity) {
		if (srv->is_revoked && srv->is_revoked(srv->arg, cs->id.serial)) {
			snprintf(msg, len, "rejected: certificate revoked");
			return 403;
		}
		req->identity = &cs->id;
	}
	if (roles == SW_HTTP_OPEN)
		return 0;
	if (!cs || !cs->has_identity) {
		snprintf(msg, len, "rejected: %s", cs ? cs->reason : "client certificate required");
		return cs && strstr(cs->reason, "required") ? 401 : 403;
	}
	if (!(rights(srv, &cs->id) & roles)) {
		refusal(srv, &cs->id, roles, msg, len);
		if (srv->audit && strcmp(cs->id.role, SW_PKI_ROLE_ADMIN) == 0)
			srv->audit(srv->arg, req, 403, msg, 0);
		return 403;
	}
	/* an administrator's change is recorded before its answer goes */
	req->audited = srv->audit && strcmp(cs->id.role, SW_PKI_ROLE_ADMIN) == 0 &&
		       strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0;
	return 0;
}

/* Calls the handler of a request its route lets in (authorize, on its first call). */
static void dispatch(struct sw_http_req *req)
{
	if (req->too_big) {
		sw_http_reply_error(req, 413, "request body larger than %zu bytes", req->max);
		return;
	}
	if (req->body_errno) {
		sw_http_reply_error(req, 507, "cannot store the upload: %s",
				    strerror(req->body_errno));
		return;
	}
	req->route->fn(req, req->srv->arg);
}

/* Answers a request before its body is read. libmicrohttpd then reads none of it
 * and closes the connection after the answer: the unread bytes could not be told
 * apart from a next request. */
static enum MHD_Result reply_early(struct sw_http_req *req, unsigned status, const char *msg)
{
	struct MHD_Response *resp;
	enum MHD_Result ret;
	char *text;
	json_t *j = json_pack("{ss}", "error", msg);

	sw_debug("%s %s from %s: %u %s", req->method, req->path, req->peer, status, msg);
	text = j ? sw_json_dump(j) : NULL;
	json_decref(j);
	if (!text)
		return MHD_NO;
	resp = MHD_create_response_from_buffer(strlen(text), text, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(text);
		return MHD_NO;
	}
	MHD_add_response_header(resp, "Content-Type", "application/json");
	MHD_add_response_header(resp, "Connection", "close");
	add_headers(resp, req->srv->headers);
	ret = MHD_queue_response(req->conn, status, resp);
	MHD_destroy_response(resp);
	req->dispatched = 1;
	req->status = status;
	return ret;
}

/* The file a SW_HTTP_BODY_FILE route's body goes to: made afresh, readable by the server
 * alone. */
static int body_file_open(struct sw_http_req *req, char *msg, size_t len)
{
	const char *dir = req->srv->upload_dir;
	size_t n;

	if (!dir) {
		snprintf(msg, len, "this server takes no uploads");
		return SW_EINVAL;
	}
	n = strlen(dir) + sizeof("/upload-XXXXXX");
	if (!(req->body_file = malloc(n)))
		return SW_ENOMEM;
	snprintf(req->body_file, n, "%s/upload-XXXXXX", dir);
	req->body_fd = mkostemp(req->body_file, O_CLOEXEC);
	if (req->body_fd < 0) {
		snprintf(msg, len, "cannot store the upload: %s: %s", dir, strerror(errno));
		free(req->body_file);
		req->body_file = NULL;
		return SW_EIO;
	}
	return 0;
}

/* A piece of the body, written as it comes: to the page cache, so the loop waits for
 * no disk. After a failed write the rest is read and dropped, and the handler is not
 * called (dispatch). */
static void body_file_write(struct sw_http_req *req, const char *data, size_t n)
{
	req->len += n;
	while (n > 0 && !req->body_errno) {
		ssize_t w = write(req->body_fd, data, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0) {
			req->body_errno = errno;
			break;
		}
		data += w;
		n -= (size_t)w;
	}
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
				  const char *method, const char *version, const char *upload_data,
				  size_t *upload_data_size, void **con_cls)
{
	struct sw_http_server *srv = cls;
	struct sw_http_req *req = *con_cls;

	if (!req) {
		const union MHD_ConnectionInfo *ci;
		const char *clen, *tail = "";
		int path_known;
		unsigned status;
		char msg[300];

		const union MHD_ConnectionInfo *sc =
		    MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
		struct conn_state *cs = sc ? sc->socket_context : NULL;
		char bad_url[4 * sizeof(cs->bad_url)] = "";

		/* a request: the handshake is over, the daemon's idle timeout applies */
		if (cs) {
			list_remove(srv, cs);
			sw_printable(bad_url, sizeof(bad_url), cs->bad_url);
			cs->bad_url[0] = '\0';
		}
		req = calloc(1, sizeof(*req));
		if (!req)
			return MHD_NO;
		*con_cls = req;
		req->srv = srv;
		req->conn = conn;
		req->started_ns = uv_hrtime();
		snprintf(req->method, sizeof(req->method), "%s", method);
		req->path = strdup(url);
		if (!req->path)
			return MHD_NO;
		ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
		if (ci && ci->client_addr) {
			const struct sockaddr *sa = ci->client_addr;
			if (sa->sa_family == AF_INET)
				inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr,
					  req->peer, sizeof(req->peer));
			else if (sa->sa_family == AF_INET6)
				inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr,
					  req->peer, sizeof(req->peer));
		}
		req->route = route_find(srv->routes, srv->nroutes, req->method, req->path, &tail,
					&path_known);
		req->tail = tail;
		req->max =
		    req->route && req->route->max_body ? req->route->max_body : SW_HTTP_MAX_BODY;
		if (!req->route)
			return reply_early(req, path_known ? 405 : 404,
					   path_known ? "method not allowed" : "no such endpoint");
		if ((status = authorize(req, msg, sizeof(msg))) ||
		    (srv->admit && (status = srv->admit(srv->arg, req, msg, sizeof(msg)))))
			return reply_early(req, status, msg);
		if (bad_url[0]) {
			char arg[64] = "";

			MHD_get_connection_values_n(conn, MHD_GET_ARGUMENT_KIND, find_bad_arg, arg);
			if (arg[0])
				snprintf(msg, sizeof(msg),
					 "query parameter '%s' holds a control character, which no "
					 "name or value may hold",
					 arg);
			else
				snprintf(msg, sizeof(msg),
					 "the path '%s' decodes to a control character, which no "
					 "name may hold",
					 bad_url);
			return reply_early(req, 400, msg);
		}
		/* Refuse a declared oversized body before reading any of it. */
		clen = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
						   MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (clen && strtoull(clen, NULL, 10) > req->max) {
			snprintf(msg, sizeof(msg), "request body larger than %zu bytes", req->max);
			return reply_early(req, 413, msg);
		}
		if ((req->route->roles & SW_HTTP_BODY_FILE) &&
		    body_file_open(req, msg, sizeof(msg)))
			return reply_early(req, 500, msg);
		return MHD_YES;
	}
	if (req->response && !req->held)
		return queue_stored(req);
	if (*upload_data_size) {
		size_t n = *upload_data_size;

		*upload_data_size = 0;
		srv->body_reads++;
		if (req->dispatched)
			return MHD_YES;
		if (req->len + n > req->max) {
			/* A body with no declared length that grows past the limit: drop the
			 * connection rather than read an endless stream. */
			req->too_big = 1;
			return MHD_NO;
		}
		if (req->body_file) {
			body_file_write(req, upload_data, n);
			return MHD_YES;
		}
		if (req->len + n + 1 > req->cap) {
			size_t cap = req->cap ? req->cap : 1024;
			char *b;
			while (cap < req->len + n + 1)
				cap *= 2;
			b = realloc(req->body, cap);
			if (!b)
				return MHD_NO;
			req->body = b;
			req->cap = cap;
		}
		memcpy(req->body + req->len, upload_data, n);
		req->len += n;
		req->body[req->len] = '\0';
		return MHD_YES;
	}
	if (req->dispatched)
		return MHD_YES;
	req->dispatched = 1;
	dispatch(req);
	if (req->response && !req->held)
		return queue_stored(req);
	/* The handler will answer later: park the connection until it does. */
	req->suspended = 1;
	MHD_suspend_connection(conn);
	return MHD_YES;
}

static void count_request(const struct sw_http_req *req)
{
	struct sw_http_server *srv = req->srv;
	struct route_mx *mx;

	if (!srv->mx || req->status < 200 || req->status >= 600)
		return; /* not counted, or dropped before an answer */
	mx = &srv->mx[req->route ? (size_t)(req->route - srv->routes) : srv->nroutes];
	sw_counter_inc(mx->done[req->status / 100 - 2]);
	/* a stream lasts as long as its watcher: that is no request's latency */
	if (!req->stream)
		sw_histogram_observe(mx->seconds, (uv_hrtime() - req->started_ns) / 1000);
}

static void stream_end(struct sw_http_stream *st);

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
			 enum MHD_RequestTerminationCode toe)
{
	struct sw_http_req *req = *con_cls;

	if (!req)
		return;
	count_request(req);
	if (req->stream)
		stream_end(req->stream);
	if (req->streaming)
		req->srv->streaming--;
	if (req->response)
		MHD_destroy_response(req->response);
	if (req->body_file) {
		close(req->body_fd);
		unlink(req->body_file);
		free(req->body_file);
	}
	free(req->path);
	free(req->body);
	free(req);
	*con_cls = NULL;
}

/* Resumes a suspended request; the next run comes at once. */
static void resume(struct sw_http_req *req)
{
	struct sw_http_server *srv = req->srv;

	MHD_resume_connection(req->conn);
	if (srv->in_run)
		srv->kicked = 1; /* the timer started below is the run's to set */
}

static void local_free(struct sw_http_req *req)
{
	free(req->local_reply);
	free(req->query);
	free(req->path);
	free(req->body);
	free(req);
}

static void release(struct sw_http_req *req);

static void store_reply(struct sw_http_req *req, unsigned status, const char *type, char *text)
{
	struct MHD_Response *resp;

	if (req->local_done) {
		if (req->local_reply) { /* a second reply: the first stands */
			free(text);
			return;
		}
		req->status = status;
		req->local_reply = text;
		if (!req->local_running) {
			req->local_done(req->local_arg, status, text);
			req->local_reply = NULL;
			local_free(req);
		}
		return;
	}

	size_t len = strlen(text);

	resp = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (!resp) {
		free(text);
		return;
	}
	MHD_add_response_header(resp, "Content-Type", type);
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	add_headers(resp, req->srv->headers);
	req->status = status;
	req->response = resp;
	/* A reply of more than a TLS record goes out a record per run, as a file does: its
	 * zero timeouts are work, not the handshake spin (a 380 KB usage report took 0.75 s
	 * to send when they were backed off). */
	if (len > 16 * 1024 && !req->streaming) {
		req->streaming = 1;
		req->srv->streaming++;
	}
	if (req->audited) {
		/* held before the hook runs: a record stored at once releases it inside */
		req->audited = 0; /* one answer, recorded once */
		req->held = 1;
		if (req->srv->audit(req->srv->arg, req, status, text, 1) && req->held)
			return; /* sw_http_reply_release() sends it */
		req->held = 0;
	}
	release(req);
}

int sw_http_req_may(struct sw_http_req *req, unsigned roles)
{
	const struct sw_identity *id = req->identity ? req->identity : &req->local_id;
	char msg[300];

	if (rights(req->srv, id) & roles)
		return 1;
	refusal(req->srv, id, roles, msg, sizeof(msg));
	sw_http_reply_error(req, 403, "%s", msg);
	return 0;
}

void sw_http_reply_release(struct sw_http_req *req)
{
	if (!req->held)
		return;
	req->held = 0;
	release(req);
}

/* The stored answer goes out: by the handler's caller if the request is still in it,
 * else its connection resumes. */
static void release(struct sw_http_req *req)
{
	if (req->suspended) {
		req->suspended = 0;
		resume(req);
		if (req->srv->resume_runs < 64)
			req->srv->resume_runs += 4;
		uv_timer_start(&req->srv->timer, on_timer, 0, 0);
	}
}

void sw_http_reply_json(struct sw_http_req *req, unsigned status, json_t *body)
{
	char *text = sw_json_dump(body);

	json_decref(body);
	if (!text)
		text = strdup("{\"error\":\"out of memory\"}");
	if (text)
		store_reply(req, status, "application/json", text);
}

void sw_http_reply_static(struct sw_http_req *req, unsigned status, const char *content_type,
			  const void *data, size_t len, const char *const *headers)
{
	struct MHD_Response *resp;

	if (req->local_done) {
		sw_http_reply_error(req, 501, "files are not sent in answer to a command");
		return;
	}
	/* the bytes outlive the server: libmicrohttpd sends them from where they are */
	resp = MHD_create_response_from_buffer(len, (void *)data, MHD_RESPMEM_PERSISTENT);
	if (!resp) {
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	MHD_add_response_header(resp, "Content-Type", content_type);
	add_headers(resp, headers);
	add_headers(resp, req->srv->headers);
	if (req->response)
		MHD_destroy_response(req->response);
	req->status = status;
	req->response = resp;
	if (len > 16 * 1024 && !req->streaming) {
		req->streaming = 1;
		req->srv->streaming++;
	}
	release(req);
}

void sw_http_reply_text(struct sw_http_req *req, unsigned status, const char *content_type,
			char *text)
{
	store_reply(req, status, content_type, text);
}

void sw_http_reply_busy(struct sw_http_req *req, unsigned retry_after_s, const char *fmt, ...)
{
	char msg[512], after[16];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sw_http_reply_json(req, 503, json_pack("{ss}", "error", msg));
	snprintf(after, sizeof(after), "%u", retry_after_s);
	if (req->response) /* not for a local request: it has no headers */
		MHD_add_response_header(req->response, "Retry-After", after);
}

void sw_http_reply_error(struct sw_http_req *req, unsigned status, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	sw_debug("%s %s from %s: %u %s", req->method, req->path, req->peer, status, msg);
	sw_http_reply_json(req, status, json_pack("{ss}", "error", msg));
}

unsigned sw_http_status(int rc)
{
	switch (rc) {
	case SW_OK: return 200;
	case SW_EINVAL:
	case SW_ETOOBIG: return 400;
	case SW_EDENIED: return 403;
	case SW_ENOTFOUND: return 404;
	case SW_EEXIST: return 409;
	case SW_EBUSY:
	case SW_ETIMEDOUT: return 503;
	default: return 500;
	}
}

unsigned sw_http_gateway_status(int rc)
{
	return rc == SW_ETIMEDOUT ? 504 : 502;
}

json_t *sw_http_req_json(struct sw_http_req *req)
{
	char err[256];
	json_t *j;

	if (sw_json_parse_object(req->body ? req->body : "", req->len, &j, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		return NULL;
	}
	return j;
}

const char *sw_http_req_method(const struct sw_http_req *req)
{
	return req->method;
}

const char *sw_http_req_path(const struct sw_http_req *req)
{
	return req->path;
}

const char *sw_http_req_tail(const struct sw_http_req *req)
{
	return req->tail;
}

const char *sw_http_req_body_file(const struct sw_http_req *req)
{
	return req->body_file;
}

const char *sw_http_req_body(const struct sw_http_req *req, size_t *len)
{
	if (len)
		*len = req->len;
	return req->body ? req->body : "";
}

const char *sw_http_req_header(const struct sw_http_req *req, const char *name)
{
	if (!req->conn)
		return NULL;
	return MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, name);
}

int sw_http_reply_path(struct sw_http_req *req, const char *path, uint64_t *sent)
{
	const char *range = sw_http_req_header(req, "Range");
	unsigned long long from = 0;
	struct stat st;
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);

	if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
		/* out of descriptors is a passing state, not a missing file */
		sw_warn("cannot send %s: %s", path, strerror(errno));
		sw_http_reply_busy(req, 1, "out of file descriptors; try again");
		return SW_EBUSY;
	}
	if (fd < 0 || fstat(fd, &st) || !S_ISREG(st.st_mode)) {
		if (fd >= 0)
			close(fd);
		sw_http_reply_error(req, 404, "no such package here");
		return SW_ENOTFOUND;
	}
	if (range && sscanf(range, "bytes=%llu-", &from) != 1)
		from = 0;
	if (from > (unsigned long long)st.st_size) {
		close(fd);
		sw_http_reply_error(req, 416, "the range starts past the end");
		return SW_EINVAL;
	}
	if (sent)
		*sent = (uint64_t)st.st_size - from;
	sw_http_reply_file(req, fd, (uint64_t)st.st_size, from);
	return 0;
}

void sw_http_reply_file(struct sw_http_req *req, int fd, uint64_t size, uint64_t offset)
{
	struct MHD_Response *resp;
	char range[96];

	if (req->local_done) {
		close(fd);
		sw_http_reply_error(req, 501, "files are not sent in answer to a command");
		return;
	}

	if (offset > size)
		offset = size;
	resp = MHD_create_response_from_fd_at_offset64(size - offset, fd, offset);
	if (!resp) {
		close(fd);
		sw_http_reply_error(req, 500, "out of memory");
		return;
	}
	MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
	MHD_add_response_header(resp, "Accept-Ranges", "bytes");
	add_headers(resp, req->srv->headers);
	if (offset > 0) {
		snprintf(range, sizeof(range), "bytes %" PRIu64 "-%" PRIu64 "/%" PRIu64, offset,
			 size ? size - 1 : 0, size);
		MHD_add_response_header(resp, "Content-Range", range);
	}
	if (req->response)
		MHD_destroy_response(req->response);
	req->status = offset > 0 ? 206 : 200;
	req->response = resp;
	if (!req->streaming) {
		req->streaming = 1;
		req->srv->streaming++;
	}
	if (req->suspended) {
		req->suspended = 0;
		resume(req);
		uv_timer_start(&req->srv->timer, on_timer, 0, 0);
	}
}

/* --- event streams --- */

static void on_stream_timer(uv_timer_t *t);

/* How often the streams are looked at: a fifth of the keep-alive interval. */
static uint64_t stream_tick(const struct sw_http_server *srv)
{
	unsigned ms = srv->stream_keepalive_ms / 5;

	return ms < 10 ? 10 : ms > 1000 ? 1000 : ms;
}

/* The next run comes at once: a parked stream has bytes again, or is to end. */
static void stream_wake(struct sw_http_stream *st)
{
	struct sw_http_server *srv = st->srv;

	if (!st->suspended)
		return;
	st->suspended = 0;
	resume(st->req);
	if (!srv->in_run)
		uv_timer_start(&srv->timer, on_timer, 0, 0);
}

/* libmicrohttpd's content reader: the next bytes of the stream, if any. With none it
 * parks the connection (here is the one place besides a handler where libmicrohttpd
 * lets that be done), so an idle stream costs no run and no timeout. */
static ssize_t stream_read(void *cls, uint64_t pos, char *out, size_t max)
{
	struct sw_http_stream *st = cls;
	size_t n;

	(void)pos;
	if (st->dropped)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	if (st->len == 0) {
		if (st->closing)
			return MHD_CONTENT_READER_END_OF_STREAM;
		st->suspended = 1;
		MHD_suspend_connection(st->req->conn);
		return 0;
	}
	for (n = 0; n < max && st->head;) {
		struct piece *p = st->head;
		size_t take = p->ev->len - st->off < max - n ? p->ev->len - st->off : max - n;

		memcpy(out + n, p->ev->text + st->off, take);
		n += take;
		st->off += take;
		if (st->off == p->ev->len) {
			st->head = p->next;
			if (!st->head)
				st->tail = &st->head;
			st->off = 0;
			sw_http_event_free(p->ev);
			free(p);
		}
	}
	st->len -= n;
	st->exempt = st->exempt > n ? st->exempt - n : 0;
	st->srv->stream_out = 1;
	return (ssize_t)n;
}

static void stream_empty(struct sw_http_stream *st)
{
	while (st->head) {
		struct piece *p = st->head;

		st->head = p->next;
		sw_http_event_free(p->ev);
		free(p);
	}
	st->tail = &st->head;
	st->off = st->len = st->exempt = 0;
}

/* Ends the stream now. A parked one is woken to end itself; one whose reader has
 * stopped taking bytes waits for its socket, which will not come: the socket is shut
 * and reset, and libmicrohttpd closes the connection when epoll says so. */
static void stream_drop(struct sw_http_stream *st, enum sw_http_stream_end why)
{
	struct sw_http_server *srv = st->srv;

	if (st->dropped)
		return;
	st->dropped = 1;
	st->why = why;
	stream_empty(st);
	if (why == SW_HTTP_STREAM_SLOW) {
		srv->streams_dropped++;
		sw_counter_inc(srv->mx_streams_dropped);
		snprintf(srv->dropped_peer, sizeof(srv->dropped_peer), "%s", st->req->peer);
	}
	if (st->suspended) {
		stream_wake(st);
		return;
	}
	if (st->fd >= 0) {
		struct linger lg = {1, 0};

		setsockopt(st->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		shutdown(st->fd, SHUT_RDWR);
	}
	if (!srv->in_run)
		uv_timer_start(&srv->timer, on_timer, 0, 0);
}

/* Whether `n` more bytes keep the stream within its bound; drops it if not. */
static int stream_fits(struct sw_http_stream *st, size_t n)
{
	if (st->len > 0 && st->len - st->exempt + n > st->srv->stream_buffer) {
		stream_drop(st, SW_HTTP_STREAM_SLOW);
		return 0;
	}
	return 1;
}

/* Queues `ev` (a reference of the stream's own) and wakes the stream. */
static int stream_queue(struct sw_http_stream *st, struct sw_http_event *ev)
{
	struct piece *p = malloc(sizeof(*p));

	if (!p)
		return SW_ENOMEM;
	p->next = NULL;
	p->ev = ev;
	ev->refs++;
	*st->tail = p;
	st->tail = &p->next;
	if (st->len == 0)
		st->exempt = ev->len;
	st->len += ev->len;
	st->queued_ms = sw_mono_ms();
	stream_wake(st);
	return 0;
}

int sw_http_event_new(const char *event, const char *data, size_t len, struct sw_http_event **out)
{
	struct sw_http_event *ev;
	size_t n;

	*out = NULL;
	if (event && !sw_sse_name_ok(event))
		return SW_EINVAL;
	n = sw_sse_format(NULL, 0, event, data, len);
	if (!(ev = malloc(sizeof(*ev) + n)))
		return SW_ENOMEM;
	ev->refs = 1;
	ev->len = sw_sse_format(ev->text, n, event, data, len);
	*out = ev;
	return 0;
}

void sw_http_event_free(struct sw_http_event *ev)
{
	if (ev && --ev->refs == 0)
		free(ev);
}

int sw_http_stream_send_event(struct sw_http_stream *st, struct sw_http_event *ev)
{
	if (st->dropped || st->closing || st->srv->closing)
		return SW_EBUSY;
	if (!stream_fits(st, ev->len))
		return SW_ETOOBIG;
	return stream_queue(st, ev);
}

int sw_http_stream_send(struct sw_http_stream *st, const char *event, const char *data, size_t len)
{
	struct sw_http_event *ev;
	int rc;

	if (event && !sw_sse_name_ok(event))
		return SW_EINVAL;
	if (st->dropped || st->closing || st->srv->closing)
		return SW_EBUSY;
	if ((rc = sw_http_event_new(event, data, len, &ev)))
		return rc;
	rc = sw_http_stream_send_event(st, ev);
	sw_http_event_free(ev);
	return rc;
}

size_t sw_http_stream_pending(const struct sw_http_stream *st)
{
	return st->len;
}

void sw_http_stream_close(struct sw_http_stream *st)
{
	st->ended = NULL;
	if (st->closing || st->dropped)
		return;
	st->closing = 1;
	st->closed_ms = sw_mono_ms();
	stream_wake(st);
}

int sw_http_stream_open(struct sw_http_req *req, sw_http_stream_ended ended, void *arg,
			struct sw_http_stream **out)
{
	struct sw_http_server *srv = req->srv;
	const union MHD_ConnectionInfo *ci;
	struct sw_http_stream *st;
	struct MHD_Response *resp;
	int64_t now = sw_mono_ms();

	*out = NULL;
	if (req->local_done || !req->conn)
		return SW_EINVAL;
	if (srv->closing)
		return SW_EBUSY;
	if (srv->nstreams >= srv->max_streams) {
		if (!srv->streams_refused_ms ||
		    now - srv->streams_refused_ms >= LIMIT_WARN_INTERVAL_MS) {
			sw_warn("http: at the limit of %u event streams: more are refused with 503 "
				"(the latest from %s)",
				srv->max_streams, req->peer);
			srv->streams_refused_ms = now;
		}
		return SW_EBUSY;
	}
	if (!(st = calloc(1, sizeof(*st))))
		return SW_ENOMEM;
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 1024, stream_read, st, NULL);
	if (!resp) {
		free(st);
		return SW_ENOMEM;
	}
	MHD_add_response_header(resp, "Content-Type", "text/event-stream");
	MHD_add_response_header(resp, "Cache-Control", "no-store");
	add_headers(resp, srv->headers);
	st->srv = srv;
	st->req = req;
	st->tail = &st->head;
	st->ended = ended;
	st->arg = arg;
	st->queued_ms = now;
	st->fd = -1;
	ci = MHD_get_connection_info(req->conn, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci) {
		int sndbuf =
		    srv->stream_buffer < STREAM_SNDBUF ? (int)srv->stream_buffer : STREAM_SNDBUF;

		st->fd = ci->connect_fd;
		setsockopt(st->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	}
	if (req->response)
		MHD_destroy_response(req->response);
	req->response = resp;
	req->status = 200;
	req->stream = st;
	st->next = srv->streams;
	if (st->next)
		st->next->prev = st;
	srv->streams = st;
	if (srv->nstreams++ == 0 && !uv_is_active((uv_handle_t *)&srv->stream_timer))
		uv_timer_start(&srv->stream_timer, on_stream_timer, stream_tick(srv),
			       stream_tick(srv));
	sw_gauge_set(srv->mx_streams, srv->nstreams);
	if (req->suspended) { /* opened later than the handler's call */
		req->suspended = 0;
		resume(req);
		uv_timer_start(&srv->timer, on_timer, 0, 0);
	}
	*out = st;
	return 0;
}

/* The request of a stream is over (libmicrohttpd's completion, or the server's stop). */
static void stream_end(struct sw_http_stream *st)
{
	struct sw_http_server *srv = st->srv;
	enum sw_http_stream_end why = st->dropped    ? st->why
				      : srv->closing ? SW_HTTP_STREAM_STOPPED
						     : SW_HTTP_STREAM_GONE;

	if (st->prev)
		st->prev->next = st->next;
	else
		srv->streams = st->next;
	if (st->next)
		st->next->prev = st->prev;
	srv->nstreams--;
	sw_gauge_set(srv->mx_streams, srv->nstreams);
	st->req->stream = NULL;
	if (st->ended)
		st->ended(st, why, st->arg);
	stream_empty(st);
	free(st);
}

/* Keep-alives for idle streams, the end of closes that linger, and one line for the
 * streams dropped since the last. */
static void on_stream_timer(uv_timer_t *t)
{
	struct sw_http_server *srv = t->data;
	int64_t now = sw_mono_ms();

	for (struct sw_http_stream *st = srv->streams; st; st = st->next) {
		if (st->dropped)
			continue;
		if (st->closing) {
			if (now - st->closed_ms >= srv->stream_keepalive_ms)
				stream_drop(st, SW_HTTP_STREAM_GONE);
			continue;
		}
		/* only a parked one: one with bytes waiting is writing, and finds out so
		 * whether its client is there */
		if (st->len == 0 && now - st->queued_ms >= srv->stream_keepalive_ms)
			stream_queue(st, srv->keepalive);
	}
	if (srv->streams_dropped) {
		sw_warn("http: %" PRIu64 " event stream%s dropped: the reader fell more than %zu "
			"bytes behind (the last from %s)",
			srv->streams_dropped, srv->streams_dropped == 1 ? "" : "s",
			srv->stream_buffer, srv->dropped_peer);
		srv->streams_dropped = 0;
	}
	if (srv->nstreams == 0)
		uv_timer_stop(t);
}

const char *sw_http_req_query(const struct sw_http_req *req, const char *name)
{
	if (req->conn)
		return MHD_lookup_connection_value(req->conn, MHD_GET_ARGUMENT_KIND, name);
	for (size_t at = 0; req->query && at < req->query_len;) {
		const char *k = req->query + at, *v = k + strlen(k) + 1;

		if (strcmp(k, name) == 0)
			return v;
		at = (size_t)(v + strlen(v) + 1 - req->query);
	}
	return NULL;
}

const struct sw_identity *sw_http_req_identity(const struct sw_http_req *req)
{
	return req->identity;
}

const char *sw_http_req_peer(const struct sw_http_req *req)
{
	return req->peer;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct sw_http_server *srv = cls;
	char line[512];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	/* What libmicrohttpd says of the two limits is counted, for limit_report(). */
	if (strstr(line, "resource limit")) {
		srv->emfile++;
		srv->emfile_idle = strstr(line, "FIRST") != NULL;
		srv->accept_paused |= !srv->emfile_idle;
	}
	sw_debug("http: %s", line);
}

/* The connections this server takes: the configured most, or fewer if the open-file
 * limit leaves no room for them beside the descriptors open now (the database, logs,
 * the loop's), libmicrohttpd's own and a spare share for what the program opens later
 * (files it sends, calls it makes, a report's database connection): an eighth of the
 * limit, at least 16 and at most 256. Each connection costs one descriptor. */
static void conn_limit(struct sw_http_server *srv, unsigned configured)
{
	struct rlimit rl;
	uint64_t room, fixed;

	srv->configured_conns = configured;
	srv->nofile = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY
			  ? (uint64_t)rl.rlim_cur
			  : UINT64_MAX;
	srv->fds_at_start = sw_fds_open();
	srv->spare_fds = srv->nofile / 8 < 16	 ? 16
			 : srv->nofile / 8 > 256 ? 256
						 : (unsigned)(srv->nofile / 8);
	fixed = (uint64_t)(srv->fds_at_start < 0 ? 64 : srv->fds_at_start) + MHD_OWN_FDS +
		srv->spare_fds;
	room = srv->nofile > fixed ? srv->nofile - fixed : 1;
	srv->max_conns = room < configured ? (unsigned)room : configured;
}

void sw_http_server_capacity(const struct sw_http_server *srv, char *out, size_t outlen)
{
	char why[96];

	if (srv->max_conns < srv->configured_conns)
		snprintf(why, sizeof(why), "below the configured %u: raise the hard limit for more",
			 srv->configured_conns);
	else
		snprintf(why, sizeof(why), "the configured most");
	snprintf(out, outlen,
		 "room for %u connections (%s) at one descriptor each, with %d descriptors open "
		 "at start, %d of libmicrohttpd's and %u kept spare",
		 srv->max_conns, why, srv->fds_at_start, MHD_OWN_FDS, srv->spare_fds);
}

/* The series of every route, registered before the first request so that answering one
 * allocates nothing; requests no route matched share one series ("none"). */
static int routes_count(struct sw_http_server *srv, struct sw_metrics *m)
{
	static const char *const classes[STATUS_CLASSES] = {"2xx", "3xx", "4xx", "5xx"};

	if (!(srv->mx = calloc(srv->nroutes + 1, sizeof(*srv->mx))))
		return SW_ENOMEM;
	for (size_t i = 0; i <= srv->nroutes; i++) {
		const char *path = i < srv->nroutes ? srv->routes[i].path : "none";
		const char *method = i < srv->nroutes ? srv->routes[i].method : "none";
		const char *const labels[] = {"route", path, "method", method, NULL};

		for (size_t c = 0; c < STATUS_CLASSES; c++) {
			const char *const lc[] = {"route", path,       "method", method,
						  "code",  classes[c], NULL};

			srv->mx[i].done[c] = sw_metrics_counter(
			    m, "siteward_http_requests_total",
			    "HTTP requests answered, by route pattern, method and status class.",
			    lc);
		}
		srv->mx[i].seconds = sw_metrics_histogram(
		    m, "siteward_http_request_duration_seconds",
		    "Time from a request's headers to the end of its answer, by route pattern.",
		    labels, sw_metrics_latency_us, sw_metrics_latency_n, 1e6);
	}
	srv->mx_streams =
	    sw_metrics_gauge(m, "siteward_http_event_streams",
			     "Event streams open (answers in text/event-stream).", NULL);
	srv->mx_streams_dropped = sw_metrics_counter(
	    m, "siteward_http_event_streams_dropped_total",
	    "Event streams dropped because their reader fell too far behind.", NULL);
	return 0;
}

int sw_http_server_start(uv_loop_t *loop, const struct sw_http_server_opts *opts,
			 struct sw_http_server **out, char *err, size_t errlen)
{
	struct sw_http_server *srv;
	struct sockaddr_storage ss;
	char host[256], sub[256];
	unsigned port;
	const union MHD_DaemonInfo *info;
	int rc;

	*out = NULL;
	rc = sw_hostport_parse(opts->listen, host, sizeof(host), &port, 1, err, errlen);
	if (rc)
		return rc;
	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, host, &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		ss.ss_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
	} else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		ss.ss_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
	} else {
		sw_seterr(err, errlen, "listen address '%s' must be an IP address and port",
			  opts->listen);
		return SW_EINVAL;
	}
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return SW_ENOMEM;
	srv->loop = loop;
	srv->routes = opts->routes;
	srv->nroutes = opts->nroutes;
	srv->arg = opts->arg;
	srv->is_revoked = opts->is_revoked;
	srv->admin_level = opts->admin_level;
	srv->audit = opts->audit;
	srv->headers = opts->headers;
	srv->admit = opts->admit;
	if ((opts->upload_dir && !(srv->upload_dir = strdup(opts->upload_dir))) ||
	    (opts->metrics && routes_count(srv, opts->metrics))) {
		free(srv->upload_dir);
		free(srv->mx);
		free(srv);
		return SW_ENOMEM;
	}
	srv->idle_timeout_s = opts->idle_timeout_s ? opts->idle_timeout_s : 120;
	srv->handshake_timeout_s = opts->handshake_timeout_s ? opts->handshake_timeout_s : 10;
	srv->max_handshakes = opts->max_handshakes ? opts->max_handshakes : 256;
	srv->max_streams = opts->max_streams ? opts->max_streams : 1000;
	srv->stream_buffer = opts->stream_buffer ? opts->stream_buffer : 256 * 1024;
	srv->stream_keepalive_ms = opts->stream_keepalive_ms ? opts->stream_keepalive_ms : 5000;
	if (!(srv->keepalive = malloc(sizeof(*srv->keepalive) + sizeof(KEEPALIVE)))) {
		free(srv->upload_dir);
		free(srv->mx);
		free(srv);
		return SW_ENOMEM;
	}
	srv->keepalive->refs = 1;
	srv->keepalive->len = sizeof(KEEPALIVE) - 1;
	memcpy(srv->keepalive->text, KEEPALIVE, sizeof(KEEPALIVE));
	conn_limit(srv, opts->max_connections ? opts->max_connections : 20000);
	rc = sw_pki_verifier_new(opts->ca_pem, &srv->verifier, sub, sizeof(sub));
	if (rc) {
		sw_seterr(err, errlen, "site CA: %s", sub);
		free(srv->keepalive);
		free(srv->upload_dir);
		free(srv->mx);
		free(srv);
		return rc;
	}
	/* The connection timeout starts as the handshake bound; a connection's first
	 * request raises it to the idle timeout (conn_check). */
	srv->mhd = MHD_start_daemon(
	    MHD_USE_EPOLL | MHD_USE_TLS | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG, 0,
	    on_accept, srv, on_request, srv, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&ss,
	    MHD_OPTION_HTTPS_MEM_KEY, opts->key_pem, MHD_OPTION_HTTPS_MEM_CERT, opts->cert_pem,
	    MHD_OPTION_HTTPS_MEM_TRUST, opts->ca_pem, MHD_OPTION_HTTPS_PRIORITIES, TLS_PRIORITY,
	    MHD_OPTION_CONNECTION_TIMEOUT, srv->idle_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
	    srv->max_conns, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)CONN_MEMORY, MHD_OPTION_NOTIFY_CONNECTION,
	    on_notify, srv, MHD_OPTION_NOTIFY_COMPLETED, on_completed, srv,
	    MHD_OPTION_UNESCAPE_CALLBACK, on_unescape, srv, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
	    srv, MHD_OPTION_END);
	if (!srv->mhd) {
		sw_seterr(err, errlen,
			  "cannot listen on %s (address in use, or bad certificate or key)",
			  opts->listen);
		sw_pki_verifier_free(srv->verifier);
		free(srv->keepalive);
		free(srv->upload_dir);
		free(srv->mx);
		free(srv);
		return SW_EIO;
	}
	info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_BIND_PORT);
	srv->port = info ? info->port : port;
	info = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	uv_poll_init(loop, &srv->poll, info->epoll_fd);
	srv->poll.data = srv;
	uv_timer_init(loop, &srv->timer);
	srv->timer.data = srv;
	uv_timer_init(loop, &srv->sweep);
	srv->sweep.data = srv;
	uv_timer_start(&srv->sweep, sweep_new, 1000, 1000);
	uv_timer_init(loop, &srv->pause);
	srv->pause.data = srv;
	uv_timer_init(loop, &srv->stream_timer);
	srv->stream_timer.data = srv;
	srv->handles_open = 5;
	uv_poll_start(&srv->poll, UV_READABLE, on_poll);
	uv_timer_start(&srv->timer, on_timer, 0, 0);
	*out = srv;
	return 0;
}

int sw_http_server_trust(struct sw_http_server *srv, const char *ca_pem, char *err, size_t errlen)
{
	struct sw_pki_verifier *v = NULL;
	int rc = sw_pki_verifier_new(ca_pem, &v, err, errlen);

	if (rc)
		return rc;
	/* checks happen on the loop, one at a time: none holds the old one now */
	sw_pki_verifier_free(srv->verifier);
	srv->verifier = v;
	return 0;
}

unsigned sw_http_server_port(const struct sw_http_server *srv)
{
	return srv->port;
}

static void on_closed(uv_handle_t *h)
{
	struct sw_http_server *srv = h->data;

	if (--srv->handles_open == 0) {
		sw_http_event_free(srv->keepalive);
		free(srv->upload_dir);
		free(srv->mx);
		free(srv);
	}
}

void sw_http_server_stop(struct sw_http_server *srv)
{
	if (!srv)
		return;
	srv->closing = 1;
	uv_poll_stop(&srv->poll);
	uv_timer_stop(&srv->timer);
	uv_timer_stop(&srv->sweep);
	uv_timer_stop(&srv->pause);
	uv_timer_stop(&srv->stream_timer);
	/* libmicrohttpd stops only with no connection parked: every stream is woken to
	 * end, and its program hears of it as the daemon closes its connection */
	for (struct sw_http_stream *st = srv->streams; st; st = st->next) {
		if (st->dropped)
			continue; /* ending already, for its own reason */
		st->dropped = 1;
		st->why = SW_HTTP_STREAM_STOPPED;
		if (st->suspended) {
			st->suspended = 0;
			MHD_resume_connection(st->req->conn);
		}
	}
	MHD_stop_daemon(srv->mhd);
	sw_pki_verifier_free(srv->verifier);
	uv_close((uv_handle_t *)&srv->poll, on_closed);
	uv_close((uv_handle_t *)&srv->timer, on_closed);
	uv_close((uv_handle_t *)&srv->sweep, on_closed);
	uv_close((uv_handle_t *)&srv->pause, on_closed);
	uv_close((uv_handle_t *)&srv->stream_timer, on_closed);
}

static int hexval(char c)
{
	return c >= '0' && c <= '9'   ? c - '0'
	       : c >= 'a' && c <= 'f' ? c - 'a' + 10
	       : c >= 'A' && c <= 'F' ? c - 'A' + 10
				      : -1;
}

/* Appends `n` bytes of `in`, %XX and '+' decoded, and a NUL; sets *bad if a decoded
 * byte is a control character (a NUL would also split the list query_decode makes). */
static size_t url_decode(char *out, const char *in, size_t n, int *bad)
{
	size_t o = 0;

	if (has_control(in, n))
		*bad = 1;
	for (size_t i = 0; i < n; i++) {
		if (in[i] == '%' && i + 2 < n && hexval(in[i + 1]) >= 0 && hexval(in[i + 2]) >= 0) {
			out[o++] = (char)(hexval(in[i + 1]) * 16 + hexval(in[i + 2]));
			if ((unsigned char)out[o - 1] < 0x20 || out[o - 1] == 0x7f)
				*bad = 1;
			i += 2;
		} else {
			out[o++] = in[i] == '+' ? ' ' : in[i];
		}
	}
	out[o++] = '\0';
	return o;
}

/* "a=1&b=x%20y" into "a\01\0b\0x y\0", decoded as libmicrohttpd decodes a query
 * string; an argument without '=' has the value "". SW_EINVAL if a name or value
 * decodes to a control character, as on_unescape refuses. */
static int query_decode(struct sw_http_req *req, const char *q)
{
	size_t n = strlen(q), o = 0;
	char *out = malloc(n + 2 * (n + 1) + 1);
	int bad = 0;

	if (!out)
		return SW_ENOMEM;
	while (*q) {
		size_t len = strcspn(q, "&");
		const char *eq = memchr(q, '=', len);

		if (len > 0) {
			size_t klen = eq ? (size_t)(eq - q) : len;
			o += url_decode(out + o, q, klen, &bad);
			o += eq ? url_decode(out + o, eq + 1, len - klen - 1, &bad)
				: url_decode(out + o, "", 0, &bad);
		}
		q += len + (q[len] == '&');
	}
	req->query = out;
	req->query_len = o;
	return bad ? SW_EINVAL : 0;
}

int sw_http_local(const struct sw_http_route *routes, size_t nroutes, void *arg,
		  const struct sw_http_local_req *in, sw_http_local_done done, void *done_arg)
{
	struct sw_http_req *req = calloc(1, sizeof(*req));
	const char *tail = "", *q;
	int path_known = 0, bad_query = 0;

	if (!req)
		return SW_ENOMEM;
	snprintf(req->method, sizeof(req->method), "%s", in->method);
	q = strchr(in->path, '?');
	req->path = q ? strndup(in->path, (size_t)(q - in->path)) : strdup(in->path);
	req->body = malloc(in->len + 1);
	if (req->path && req->body && q)
		bad_query = query_decode(req, q + 1);
	if (!req->path || !req->body || bad_query == SW_ENOMEM) {
		local_free(req);
		return SW_ENOMEM;
	}
	memcpy(req->body, in->body ? in->body : "", in->len);
	req->body[in->len] = '\0';
	req->len = in->len;
	snprintf(req->peer, sizeof(req->peer), "%s", in->peer ? in->peer : "");
	req->local_id = in->identity;
	req->identity = &req->local_id;
	req->local_done = done;
	req->local_arg = done_arg;
	req->local_running = 1;
	req->route = route_find(routes, nroutes, req->method, req->path, &tail, &path_known);
	req->tail = tail;
	req->max = req->route && req->route->max_body ? req->route->max_body : SW_HTTP_MAX_BODY;
	if (!req->route)
		sw_http_reply_error(req, path_known ? 405 : 404, "%s",
				    path_known ? "method not allowed" : "no such endpoint");
	else if (req->len > req->max)
		sw_http_reply_error(req, 413, "request body larger than %zu bytes", req->max);
	else if (bad_query)
		sw_http_reply_error(req, 400,
				    "the query decodes to a control character, which no name or "
				    "value may hold");
	else if (req->route->roles != SW_HTTP_OPEN &&
		 !(rights(NULL, &req->local_id) & req->route->roles)) {
		char msg[300];

		/* a local request has no server of its own: no levels of administrators */
		refusal(NULL, &req->local_id, req->route->roles, msg, sizeof(msg));
		sw_http_reply_error(req, 403, "%s", msg);
	} else
		req->route->fn(req, arg);
	req->local_running = 0;
	if (req->local_reply) { /* answered at once */
		char *text = req->local_reply;

		req->local_reply = NULL;
		done(done_arg, req->status, text);
		local_free(req);
	}
	return 0;
}
