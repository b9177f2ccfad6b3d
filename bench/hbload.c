/*
 * hbload: a heartbeat load generator. N mutual-TLS connections, each with a client
 * identity of its own (or one shared), POST one JSON body to one URL: closed loop (a
 * handle is re-added as soon as it completes) or paced (-r: N requests/s in all, the
 * handles taking turns, latency counted from when a request was due). After a warm-up
 * it measures a window and prints requests/s, p50/p99/max latency, errors and, given a
 * process id, that process's CPU time per request over the same window.
 *
 * With --meter it loads a license server instead (siteward-meter): each connection
 * loops POST /v1/checkout, then POST /v1/checkin of the lease that checkout granted, and
 * the report adds checkout+checkin pairs/s and each kind's latency. After the window the
 * leases still held are checked in (bounded), so a run leaves the server as it found it.
 *
 * A tool, not a daemon: one thread, libcurl multi driven by curl_multi_poll; every
 * transfer has a connect and a total timeout.
 */
#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <netdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY    (1024 * 1024)
#define MAX_ERRTEXT 4
#define MAX_CORES   64
#define MAX_REPLY   2048 /* of a license server's reply, kept to find the lease */
#define LEASE_MAX   64

enum phase { CHECKOUT, CHECKIN };

struct identity {
	char cert[PATH_MAX], key[PATH_MAX], ca[PATH_MAX];
	char ticket[8192];	 /* a user ticket from DIR/ticket, "" when there is none */
	struct curl_slist *hdrs; /* the shared headers and, with a ticket, its header */
};

struct stats;

struct handle {
	CURL *easy;
	struct curl_slist *connect_to, *resolve;
	int64_t started_us;
	char errbuf[CURL_ERROR_SIZE];
	int active;	 /* in the multi */
	int64_t sent_us; /* when it was handed to libcurl (paced: may be after it was due) */
	/* --meter: what this connection does next, and the lease it holds */
	enum phase phase;
	char client[33], lease[LEASE_MAX + 1];
	char body[512];
	char reply[MAX_REPLY + 1];
	size_t reply_len;
	struct stats *st;
};

/* Where the URL points, as a numeric address, so every handle can have a private host
 * name for it (see easy_new). */
struct target {
	char addr[64];
	long port;
};

struct opts {
	const char *url, *body_file, *cacert;
	unsigned conns, connect_timeout_ms, timeout_ms, rate;
	double duration_s, warmup_s;
	int new_conn, json;
	int meter;	 /* --meter: checkout, then checkin, on each connection */
	const char *exe; /* --exe: the program checked out */
	char checkout_url[2048], checkin_url[2048];
	long pid;
	struct identity *ids;
	size_t nids;
};

/* Latencies in microseconds. */
struct lat {
	uint32_t *v;
	size_t n, cap;
};

struct stats {
	uint32_t *lat_us; /* one per successful request in the window */
	size_t n, cap;
	/* --meter: each kind's latencies, the pairs completed in the window, checkouts the
	 * server answered without a lease, and leases still held when hbload gave up */
	struct lat checkout, checkin;
	/* --meter with --rate: how late hbload sent (a busy core 1 shows here, not in the
	 * server) and the latency from sending */
	struct lat late, from_sent;
	uint64_t pairs, not_granted, held_at_end, drain_errors;
	uint64_t errors, http_errors, connects, resp_bytes;
	char errtext[MAX_ERRTEXT][CURL_ERROR_SIZE + 64];
	size_t nerrtext;
	uint64_t errors_outside; /* during warm-up: reported, not counted */
};

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: hbload -u URL -b BODY.json (-i IDENTITY_DIR... | -I LIST) [options]\n"
	    "       hbload --meter -u https://HOST:PORT (-i IDENTITY_DIR... | -I LIST) [options]\n"
	    "  -u, --url URL             where to POST (--meter: the license server)\n"
	    "  -b, --body FILE           the JSON body to send\n"
	    "  -m, --meter               license server load: each connection checks a license\n"
	    "                            out (POST /v1/checkout), then checks that lease in\n"
	    "                            (POST /v1/checkin), and again; no --body\n"
	    "      --exe NAME            the program --meter checks out (default cadtool)\n"
	    "  -i, --identity DIR        a folder with agent.crt, agent.key and ca.crt; repeat to\n"
	    "                            give connections their own identities (round robin)\n"
	    "  -I, --identities FILE     a file of identity folders, one per line\n"
	    "      --cacert FILE         trust this CA instead of each identity's ca.crt\n"
	    "  -c, --connections N       concurrent connections (default 64)\n"
	    "  -d, --duration SECONDS    measured window (default 10)\n"
	    "  -w, --warmup SECONDS      warm-up before the window (default 2)\n"
	    "  -n, --new-connections     no keep-alive: a new TCP+TLS connection per request\n"
	    "  -r, --rate N              paced: start N requests/s in all (default: each\n"
	    "                            connection sends again as soon as it is answered)\n"
	    "      --connect-timeout-ms MS   connect + handshake bound (default 5000)\n"
	    "      --timeout-ms MS       whole-transfer bound (default 10000)\n"
	    "  -p, --pid PID             report this process's CPU time over the window\n"
	    "      --json                one JSON object on stdout\n");
}

static int parse_uint(const char *s, const char *what, unsigned min, unsigned max, unsigned *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || end == s || *end || v < min || v > max) {
		fprintf(stderr, "hbload: %s must be %u to %u, not '%s'\n", what, min, max, s);
		return -1;
	}
	*out = (unsigned)v;
	return 0;
}

static int parse_seconds(const char *s, const char *what, double *out)
{
	char *end;
	double v;

	errno = 0;
	v = strtod(s, &end);
	if (errno || end == s || *end || v < 0 || v > 86400) {
		fprintf(stderr, "hbload: %s must be 0 to 86400 seconds, not '%s'\n", what, s);
		return -1;
	}
	*out = v;
	return 0;
}

static int add_identity(struct opts *o, const char *dir)
{
	struct identity *ids, *id;
	char path[PATH_MAX];
	FILE *f;

	ids = realloc(o->ids, (o->nids + 1) * sizeof(*ids));
	if (!ids) {
		fprintf(stderr, "hbload: out of memory\n");
		return -1;
	}
	o->ids = ids;
	id = &ids[o->nids];
	if ((size_t)snprintf(id->cert, sizeof(id->cert), "%s/agent.crt", dir) >= sizeof(id->cert) ||
	    (size_t)snprintf(id->key, sizeof(id->key), "%s/agent.key", dir) >= sizeof(id->key) ||
	    (size_t)snprintf(id->ca, sizeof(id->ca), "%s/ca.crt", dir) >= sizeof(id->ca)) {
		fprintf(stderr, "hbload: %s: path too long\n", dir);
		return -1;
	}
	if (access(id->cert, R_OK) || access(id->key, R_OK)) {
		fprintf(stderr, "hbload: %s: no readable agent.crt and agent.key\n", dir);
		return -1;
	}
	/* a client certificate's checkouts carry the user ticket its agent issued */
	id->ticket[0] = '\0';
	id->hdrs = NULL;
	if (snprintf(path, sizeof(path), "%s/ticket", dir) < (int)sizeof(path) &&
	    (f = fopen(path, "re"))) {
		if (!fgets(id->ticket, sizeof(id->ticket), f))
			id->ticket[0] = '\0';
		id->ticket[strcspn(id->ticket, "\r\n")] = '\0';
		fclose(f);
	}
	o->nids++;
	return 0;
}

static int add_identity_list(struct opts *o, const char *file)
{
	char line[PATH_MAX];
	FILE *f = fopen(file, "re");
	int rc = 0;

	if (!f) {
		fprintf(stderr, "hbload: %s: %s\n", file, strerror(errno));
		return -1;
	}
	while (!rc && fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\r\n")] = '\0';
		if (line[0] && line[0] != '#')
			rc = add_identity(o, line);
	}
	fclose(f);
	return rc;
}

static char *read_body(const char *path, long *len)
{
	FILE *f = fopen(path, "re");
	char *buf = NULL;
	size_t n;

	if (!f) {
		fprintf(stderr, "hbload: %s: %s\n", path, strerror(errno));
		return NULL;
	}
	buf = malloc(MAX_BODY + 1);
	if (buf) {
		n = fread(buf, 1, MAX_BODY + 1, f);
		if (n > MAX_BODY) {
			fprintf(stderr, "hbload: %s: larger than %d bytes\n", path, MAX_BODY);
			free(buf);
			buf = NULL;
		} else {
			buf[n] = '\0';
			*len = (long)n;
		}
	}
	fclose(f);
	return buf;
}

/* utime + stime of a whole process from /proc/PID/stat, in microseconds (clock-tick
 * resolution); -1 if it is gone. */
static int64_t proc_stat_cpu_us(long pid)
{
	char path[64], buf[2048], *p;
	unsigned long long utime, stime;
	size_t n;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%ld/stat", pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	/* The command name may hold spaces and parentheses: fields start after the last ')'. */
	p = strrchr(buf, ')');
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &utime,
			 &stime) != 2)
		return -1;
	return (int64_t)((utime + stime) * 1000000ULL / (unsigned long long)sysconf(_SC_CLK_TCK));
}

/* CPU time of a whole process in microseconds: the sum over its threads of the
 * nanosecond run time in /proc/PID/task/TID/schedstat, which a window of a few seconds
 * at a few percent needs; /proc/PID/stat where the kernel has no schedstat. */
static int64_t proc_cpu_us(long pid)
{
	char path[64], file[96];
	unsigned long long ns, sum = 0;
	struct dirent *d;
	DIR *dir;
	int ok = 1;

	snprintf(path, sizeof(path), "/proc/%ld/task", pid);
	dir = opendir(path);
	if (!dir)
		return -1;
	while (ok && (d = readdir(dir))) {
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(file, sizeof(file), "%s/%.20s/schedstat", path, d->d_name);
		f = fopen(file, "re");
		ok = f && fscanf(f, "%llu", &ns) == 1;
		if (f)
			fclose(f);
		sum += ok ? ns : 0;
	}
	closedir(dir);
	return ok ? (int64_t)(sum / 1000) : proc_stat_cpu_us(pid);
}

/* Per-core clock ticks from /proc/stat: busy (all but idle and iowait) and softirq, so
 * a reader can tell a quiet machine from a busy one and see the network's share. */
struct cores {
	unsigned n;
	unsigned long long busy[MAX_CORES], softirq[MAX_CORES], total[MAX_CORES];
};

static void cores_read(struct cores *c)
{
	char line[512];
	FILE *f = fopen("/proc/stat", "re");

	c->n = 0;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f) && c->n < MAX_CORES) {
		unsigned long long v[8] = {0};
		unsigned id;

		if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9')
			continue;
		if (sscanf(line + 3, "%u %llu %llu %llu %llu %llu %llu %llu %llu", &id, &v[0],
			   &v[1], &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 9 ||
		    id != c->n)
			break;
		c->total[c->n] = v[0] + v[1] + v[2] + v[3] + v[4] + v[5] + v[6] + v[7];
		c->busy[c->n] = c->total[c->n] - v[3] - v[4];
		c->softirq[c->n] = v[6];
		c->n++;
	}
	fclose(f);
}

static int64_t self_cpu_us(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000 + ru.ru_utime.tv_usec +
	       ru.ru_stime.tv_usec;
}

static size_t on_write(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct stats *st = userdata;

	(void)ptr;
	st->resp_bytes += size * nmemb;
	return size * nmemb;
}

/* --meter: the reply is kept (up to MAX_REPLY bytes) to find the lease in it. */
static size_t on_write_meter(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct handle *h = userdata;
	size_t n = size * nmemb, room = MAX_REPLY - h->reply_len;

	h->st->resp_bytes += n;
	if (n < room)
		room = n;
	memcpy(h->reply + h->reply_len, ptr, room);
	h->reply_len += room;
	h->reply[h->reply_len] = '\0';
	return n;
}

/* A metering client's id: 32 hex digits, a new one for each connection and run. */
static void client_id(char out[33], unsigned i)
{
	unsigned char b[16];
	FILE *f = fopen("/dev/urandom", "re");
	size_t got = f ? fread(b, 1, sizeof(b), f) : 0;

	if (f)
		fclose(f);
	if (got != sizeof(b)) {
		uint64_t x = (uint64_t)mono_us() ^ ((uint64_t)getpid() << 32) ^ i;

		for (size_t k = 0; k < sizeof(b); k++) {
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
			b[k] = (unsigned char)(x >> 56);
		}
	}
	for (size_t k = 0; k < sizeof(b); k++)
		snprintf(out + 2 * k, 3, "%02x", b[k]);
}

/* Where JSON member `key` of a small flat object starts its value, or NULL. Enough for
 * the license server's replies; not a JSON parser. */
static const char *json_member(const char *text, const char *key)
{
	char quoted[64];
	const char *p = text;
	size_t n;

	n = (size_t)snprintf(quoted, sizeof(quoted), "\"%s\"", key);
	while ((p = strstr(p, quoted))) {
		p += n;
		p += strspn(p, " \t\r\n");
		if (*p == ':') {
			p++;
			return p + strspn(p, " \t\r\n");
		}
	}
	return NULL;
}

static int json_true(const char *text, const char *key)
{
	const char *v = json_member(text, key);

	return v && strncmp(v, "true", 4) == 0;
}

/* Sets the handle up for what it does next: check out, or check in its lease. */
static void meter_prepare(const struct opts *o, struct handle *h, unsigned i)
{
	int n;

	if (h->phase == CHECKOUT)
		n = snprintf(h->body, sizeof(h->body),
			     "{\"exe\":\"%s\",\"user\":\"bench\",\"pid\":%u,\"client\":\"%s\","
			     "\"wait_ms\":0}",
			     o->exe, 1000 + i, h->client);
	else
		n = snprintf(h->body, sizeof(h->body), "{\"client\":\"%s\",\"lease\":\"%s\"}",
			     h->client, h->lease);
	curl_easy_setopt(h->easy, CURLOPT_URL,
			 h->phase == CHECKOUT ? o->checkout_url : o->checkin_url);
	curl_easy_setopt(h->easy, CURLOPT_POSTFIELDS, h->body);
	curl_easy_setopt(h->easy, CURLOPT_POSTFIELDSIZE, (long)n);
	h->reply_len = 0;
	h->reply[0] = '\0';
}

/* Reads a 200 reply of the license server and moves the handle to its next phase; 0 if
 * the reply is what a working server sends, else -1 with `why` (the handle then starts
 * over with a checkout). `*pair` is set when a check-in completed a pair. */
static int meter_reply(struct handle *h, char *why, size_t whylen, int *pair)
{
	const char *v;
	size_t n;

	*pair = 0;
	if (h->phase == CHECKIN) {
		h->phase = CHECKOUT;
		if (!json_true(h->reply, "released")) {
			snprintf(why, whylen, "check-in not released: %.120s", h->reply);
			return -1;
		}
		*pair = 1;
		return 0;
	}
	if (!json_true(h->reply, "granted")) {
		snprintf(why, whylen, "checkout not granted: %.120s", h->reply);
		return -1;
	}
	v = json_member(h->reply, "lease");
	n = v && *v == '"' ? strspn(v + 1, "0123456789abcdef") : 0;
	if (n == 0 || n > LEASE_MAX || v[1 + n] != '"') {
		snprintf(why, whylen, "checkout granted without a lease id: %.120s", h->reply);
		return -1;
	}
	memcpy(h->lease, v + 1, n);
	h->lease[n] = '\0';
	h->phase = CHECKIN;
	return 0;
}

/* Error texts name a connection's private host name (easy_new); one text per kind of
 * error reads better, so they get the address back. */
static void note_error(struct stats *st, const char *raw, const char *addr)
{
	char text[sizeof(st->errtext[0])];
	const char *alias = strstr(raw, ".hbload.invalid");
	const char *start = alias;

	if (alias) {
		while (start > raw && start[-1] != ' ')
			start--;
		snprintf(text, sizeof(text), "%.*s%s%s", (int)(start - raw), raw, addr,
			 alias + strlen(".hbload.invalid"));
	} else {
		snprintf(text, sizeof(text), "%s", raw);
	}
	for (size_t i = 0; i < st->nerrtext; i++)
		if (strcmp(st->errtext[i], text) == 0)
			return;
	if (st->nerrtext < MAX_ERRTEXT)
		snprintf(st->errtext[st->nerrtext++], sizeof(st->errtext[0]), "%s", text);
}

static int lat_add(struct lat *l, uint32_t us)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 65536;
		uint32_t *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -1;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = us;
	return 0;
}

static int record(struct stats *st, uint32_t us)
{
	if (st->n == st->cap) {
		size_t cap = st->cap ? st->cap * 2 : 65536;
		uint32_t *l = realloc(st->lat_us, cap * sizeof(*l));
		if (!l)
			return -1;
		st->lat_us = l;
		st->cap = cap;
	}
	st->lat_us[st->n++] = us;
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of a sorted array, in milliseconds. */
static double pct_of(const uint32_t *v, size_t n, double p)
{
	size_t i;

	if (n == 0)
		return 0;
	i = (size_t)(p / 100.0 * (double)n + 0.999999);
	if (i > 0)
		i--;
	if (i >= n)
		i = n - 1;
	return v[i] / 1000.0;
}

static double pct_ms(const struct stats *st, double p)
{
	return pct_of(st->lat_us, st->n, p);
}

static int target_find(const char *url, struct target *t)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *ai = NULL;
	char *host = NULL, *port = NULL;
	CURLU *u = curl_url();
	int rc = -1;

	if (!u || curl_url_set(u, CURLUPART_URL, url, 0) ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT)) {
		fprintf(stderr, "hbload: %s: not a URL\n", url);
		goto out;
	}
	if (host[0] == '[') { /* an IPv6 literal */
		host[strcspn(host, "]")] = '\0';
		memmove(host, host + 1, strlen(host));
	}
	if (getaddrinfo(host, NULL, &hints, &ai) != 0 ||
	    getnameinfo(ai->ai_addr, ai->ai_addrlen, t->addr, sizeof(t->addr), NULL, 0,
			NI_NUMERICHOST) != 0) {
		fprintf(stderr, "hbload: %s: cannot resolve\n", host);
		goto out;
	}
	t->port = strtol(port, NULL, 10);
	rc = 0;
out:
	if (ai)
		freeaddrinfo(ai);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return rc;
}

static CURL *easy_new(const struct opts *o, const struct target *t, unsigned i,
		      const struct identity *id, struct curl_slist *hdrs, const char *body,
		      long len, struct stats *st, struct handle *h)
{
	CURL *e = curl_easy_init();
	char name[64], line[160];
	int v6 = strchr(t->addr, ':') != NULL;

	if (!e)
		return NULL;
	/* libcurl hands an idle connection to any handle of the multi whose settings match,
	 * so at a low rate a few connections would carry every request. A host name of its
	 * own for each handle, resolved to the URL's address, keeps one connection per
	 * handle, as each agent has its own; the URL, and so the certificate check, stay. */
	snprintf(name, sizeof(name), "c%u.hbload.invalid", i);
	snprintf(line, sizeof(line), "::%s:%ld", name, t->port);
	h->connect_to = curl_slist_append(NULL, line);
	snprintf(line, sizeof(line), "%s:%ld:%s%s%s", name, t->port, v6 ? "[" : "", t->addr,
		 v6 ? "]" : "");
	h->resolve = curl_slist_append(NULL, line);
	if (!h->connect_to || !h->resolve) {
		curl_easy_cleanup(e);
		return NULL;
	}
	curl_easy_setopt(e, CURLOPT_CONNECT_TO, h->connect_to);
	curl_easy_setopt(e, CURLOPT_RESOLVE, h->resolve);
	/* Never expire those names: pruning the cache walks all of them on every transfer,
	 * which with thousands of handles costs the load generator more than the server. */
	curl_easy_setopt(e, CURLOPT_DNS_CACHE_TIMEOUT, -1L);
	curl_easy_setopt(e, CURLOPT_URL, o->url);
	curl_easy_setopt(e, CURLOPT_PRIVATE, h);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, h->errbuf);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "https");
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)o->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)o->timeout_ms);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, id->hdrs ? id->hdrs : hdrs);
	if (o->meter) {
		/* the URL and body change with each request: meter_prepare */
		h->easy = e;
		h->st = st;
		h->phase = CHECKOUT;
		client_id(h->client, i);
		meter_prepare(o, h, i);
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write_meter);
		curl_easy_setopt(e, CURLOPT_WRITEDATA, h);
	} else {
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, len);
		curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
		curl_easy_setopt(e, CURLOPT_WRITEDATA, st);
	}
	curl_easy_setopt(e, CURLOPT_SSLCERT, id->cert);
	curl_easy_setopt(e, CURLOPT_SSLKEY, id->key);
	curl_easy_setopt(e, CURLOPT_CAINFO, o->cacert ? o->cacert : id->ca);
	curl_easy_setopt(e, CURLOPT_CAPATH, NULL);
	/* A new connection is a full handshake, as for an agent whose connection dropped:
	 * the agent keeps no TLS session between its easy handles either. */
	curl_easy_setopt(e, CURLOPT_SSL_SESSIONID_CACHE, 0L);
	if (o->new_conn) {
		curl_easy_setopt(e, CURLOPT_FORBID_REUSE, 1L);
		curl_easy_setopt(e, CURLOPT_FRESH_CONNECT, 1L);
	}
	return e;
}

static int parse_args(int argc, char **argv, struct opts *o)
{
	enum { OPT_JSON = 256, OPT_CTO, OPT_TO, OPT_CACERT, OPT_EXE };
	static const struct option longopts[] = {
	    {"url", required_argument, NULL, 'u'},
	    {"body", required_argument, NULL, 'b'},
	    {"identity", required_argument, NULL, 'i'},
	    {"identities", required_argument, NULL, 'I'},
	    {"cacert", required_argument, NULL, OPT_CACERT},
	    {"connections", required_argument, NULL, 'c'},
	    {"duration", required_argument, NULL, 'd'},
	    {"warmup", required_argument, NULL, 'w'},
	    {"new-connections", no_argument, NULL, 'n'},
	    {"rate", required_argument, NULL, 'r'},
	    {"connect-timeout-ms", required_argument, NULL, OPT_CTO},
	    {"timeout-ms", required_argument, NULL, OPT_TO},
	    {"pid", required_argument, NULL, 'p'},
	    {"json", no_argument, NULL, OPT_JSON},
	    {"meter", no_argument, NULL, 'm'},
	    {"exe", required_argument, NULL, OPT_EXE},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	unsigned v;
	int c;

	while ((c = getopt_long(argc, argv, "u:b:i:I:c:d:w:nr:p:mh", longopts, NULL)) != -1) {
		switch (c) {
		case 'u': o->url = optarg; break;
		case 'b': o->body_file = optarg; break;
		case 'i':
			if (add_identity(o, optarg))
				return -1;
			break;
		case 'I':
			if (add_identity_list(o, optarg))
				return -1;
			break;
		case OPT_CACERT: o->cacert = optarg; break;
		case 'c':
			if (parse_uint(optarg, "--connections", 1, 10000, &o->conns))
				return -1;
			break;
		case 'd':
			if (parse_seconds(optarg, "--duration", &o->duration_s))
				return -1;
			break;
		case 'w':
			if (parse_seconds(optarg, "--warmup", &o->warmup_s))
				return -1;
			break;
		case 'n': o->new_conn = 1; break;
		case 'r':
			if (parse_uint(optarg, "--rate", 1, 10000000, &o->rate))
				return -1;
			break;
		case OPT_CTO:
			if (parse_uint(optarg, "--connect-timeout-ms", 1, 600000,
				       &o->connect_timeout_ms))
				return -1;
			break;
		case OPT_TO:
			if (parse_uint(optarg, "--timeout-ms", 1, 600000, &o->timeout_ms))
				return -1;
			break;
		case 'p':
			if (parse_uint(optarg, "--pid", 1, INT_MAX, &v))
				return -1;
			o->pid = (long)v;
			break;
		case OPT_JSON: o->json = 1; break;
		case 'm': o->meter = 1; break;
		case OPT_EXE: o->exe = optarg; break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return -1;
		}
	}
	if (optind != argc || !o->url || (!o->body_file && !o->meter) || o->nids == 0) {
		usage(stderr);
		return -1;
	}
	if (o->meter) {
		size_t n = strlen(o->url);

		if (o->body_file) {
			fprintf(stderr, "hbload: --meter sends its own bodies; no --body\n");
			return -1;
		}
		if (!o->exe)
			o->exe = "cadtool";
		/* The exe goes into a JSON string as is: keep it to what needs no escaping. */
		if (!*o->exe || strlen(o->exe) > 200 ||
		    strspn(o->exe,
			   "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") !=
			strlen(o->exe)) {
			fprintf(stderr, "hbload: --exe: 1-200 letters, digits, '.', '_' or '-'\n");
			return -1;
		}
		/* The server's address, with or without a trailing / or /v1/checkout. */
		if (n >= 12 && strcmp(o->url + n - 12, "/v1/checkout") == 0)
			n -= 12;
		while (n > 0 && o->url[n - 1] == '/')
			n--;
		if ((size_t)snprintf(o->checkout_url, sizeof(o->checkout_url), "%.*s/v1/checkout",
				     (int)n, o->url) >= sizeof(o->checkout_url) ||
		    (size_t)snprintf(o->checkin_url, sizeof(o->checkin_url), "%.*s/v1/checkin",
				     (int)n, o->url) >= sizeof(o->checkin_url)) {
			fprintf(stderr, "hbload: --url too long\n");
			return -1;
		}
	} else if (o->exe) {
		fprintf(stderr, "hbload: --exe goes with --meter\n");
		return -1;
	}
	if (o->duration_s <= 0) {
		fprintf(stderr, "hbload: --duration must be more than 0\n");
		return -1;
	}
	return 0;
}

static double core_pct(const struct cores *a, const struct cores *b, unsigned i, int softirq)
{
	unsigned long long t = b->total[i] - a->total[i];
	unsigned long long v = softirq ? b->softirq[i] - a->softirq[i] : b->busy[i] - a->busy[i];

	return t ? 100.0 * (double)v / (double)t : 0;
}

static void report(const struct opts *o, const struct stats *st, double window_s, int64_t server_us,
		   int64_t client_us, const struct cores *c0, const struct cores *c1)
{
	unsigned ncores = c0->n == c1->n ? c0->n : 0;

	double rps = window_s > 0 ? (double)st->n / window_s : 0;
	double srv_per = server_us >= 0 && st->n ? (double)server_us / (double)st->n : -1;
	double srv_pct = server_us >= 0 ? (double)server_us / (window_s * 1e4) : -1;
	double cli_pct = (double)client_us / (window_s * 1e4);

	if (o->json) {
		printf("{\"url\":\"%s\",\"connections\":%u,\"keepalive\":%s,\"rate_target\":%u,"
		       "\"seconds\":%.3f,\"requests\":%zu,\"rps\":%.1f,"
		       "\"p50_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
		       "\"errors\":%" PRIu64 ",\"http_errors\":%" PRIu64
		       ",\"warmup_errors\":%" PRIu64 ",\"connects\":%" PRIu64 ","
		       "\"client_cpu_pct\":%.1f",
		       o->url, o->conns, o->new_conn ? "false" : "true", o->rate, window_s, st->n,
		       rps, pct_ms(st, 50), pct_ms(st, 99),
		       st->n ? st->lat_us[st->n - 1] / 1000.0 : 0, st->errors, st->http_errors,
		       st->errors_outside, st->connects, cli_pct);
		if (o->pid)
			printf(",\"pid\":%ld,\"server_cpu_us\":%" PRId64
			       ",\"server_cpu_pct\":%.1f,\"server_cpu_us_per_req\":%.2f",
			       o->pid, server_us, srv_pct, srv_per);
		if (o->meter)
			printf(",\"mode\":\"meter\",\"exe\":\"%s\",\"pairs\":%" PRIu64
			       ",\"pairs_per_s\":%.1f,\"checkouts\":%zu,\"checkins\":%zu,"
			       "\"checkout_p50_ms\":%.3f,\"checkout_p99_ms\":%.3f,"
			       "\"checkin_p50_ms\":%.3f,\"checkin_p99_ms\":%.3f,"
			       "\"not_granted\":%" PRIu64 ",\"drain_errors\":%" PRIu64
			       ",\"held_at_end\":%" PRIu64,
			       o->exe, st->pairs, window_s > 0 ? (double)st->pairs / window_s : 0,
			       st->checkout.n, st->checkin.n,
			       pct_of(st->checkout.v, st->checkout.n, 50),
			       pct_of(st->checkout.v, st->checkout.n, 99),
			       pct_of(st->checkin.v, st->checkin.n, 50),
			       pct_of(st->checkin.v, st->checkin.n, 99), st->not_granted,
			       st->drain_errors, st->held_at_end);
		if (o->meter && o->rate)
			printf(",\"sent_late_p99_ms\":%.3f,\"sent_late_max_ms\":%.3f,"
			       "\"from_sent_p50_ms\":%.3f,\"from_sent_p99_ms\":%.3f",
			       pct_of(st->late.v, st->late.n, 99),
			       st->late.n ? st->late.v[st->late.n - 1] / 1000.0 : 0,
			       pct_of(st->from_sent.v, st->from_sent.n, 50),
			       pct_of(st->from_sent.v, st->from_sent.n, 99));
		printf(",\"core_busy_pct\":[");
		for (unsigned i = 0; i < ncores; i++)
			printf("%s%.1f", i ? "," : "", core_pct(c0, c1, i, 0));
		printf("],\"core_softirq_pct\":[");
		for (unsigned i = 0; i < ncores; i++)
			printf("%s%.1f", i ? "," : "", core_pct(c0, c1, i, 1));
		printf("]}\n");
		return;
	}
	printf("hbload: %u %s connections to %s, %.1f s after %.1f s warm-up", o->conns,
	       o->new_conn ? "new (no keep-alive)" : "keep-alive", o->url, window_s, o->warmup_s);
	if (o->rate)
		printf(", paced at %u requests/s", o->rate);
	printf("\n");
	printf("  requests    %zu (%.1f/s)\n", st->n, rps);
	printf("  latency     p50 %.2f ms, p99 %.2f ms, max %.2f ms\n", pct_ms(st, 50),
	       pct_ms(st, 99), st->n ? st->lat_us[st->n - 1] / 1000.0 : 0);
	if (o->meter) {
		printf("  pairs       %" PRIu64 " checkout+checkin of %s (%.1f/s)\n", st->pairs,
		       o->exe, window_s > 0 ? (double)st->pairs / window_s : 0);
		printf("  checkout    %zu, p50 %.2f ms, p99 %.2f ms; not granted %" PRIu64 "\n",
		       st->checkout.n, pct_of(st->checkout.v, st->checkout.n, 50),
		       pct_of(st->checkout.v, st->checkout.n, 99), st->not_granted);
		printf("  checkin     %zu, p50 %.2f ms, p99 %.2f ms\n", st->checkin.n,
		       pct_of(st->checkin.v, st->checkin.n, 50),
		       pct_of(st->checkin.v, st->checkin.n, 99));
		if (o->rate)
			printf(
			    "  sent late   p99 %.2f ms, max %.2f ms (hbload behind its schedule); "
			    "from sending: p50 %.2f ms, p99 %.2f ms\n",
			    pct_of(st->late.v, st->late.n, 99),
			    st->late.n ? st->late.v[st->late.n - 1] / 1000.0 : 0,
			    pct_of(st->from_sent.v, st->from_sent.n, 50),
			    pct_of(st->from_sent.v, st->from_sent.n, 99));
		printf("  afterwards  %" PRIu64 " leases left held, %" PRIu64
		       " errors checking in\n",
		       st->held_at_end, st->drain_errors);
	}
	printf("  errors      %" PRIu64 " (HTTP status not 200: %" PRIu64
	       "); during warm-up %" PRIu64 "\n",
	       st->errors, st->http_errors, st->errors_outside);
	printf("  connects    %" PRIu64 " new connections in the window\n", st->connects);
	if (o->pid) {
		if (server_us >= 0)
			printf("  pid %-7ld %.1f%% of a core, %.1f us CPU per request\n", o->pid,
			       srv_pct, srv_per);
		else
			printf("  pid %-7ld exited during the window\n", o->pid);
	}
	printf("  hbload      %.1f%% of a core\n", cli_pct);
	for (unsigned i = 0; i < ncores; i++)
		printf("  core %-6u %.1f%% busy (softirq %.1f%%)\n", i, core_pct(c0, c1, i, 0),
		       core_pct(c0, c1, i, 1));
}

/* --meter, after the window: leases still held are checked in, so the next run starts
 * from the same state; nothing new is checked out. Bounded by --timeout-ms. What could
 * not be checked in is counted (it expires on the server by its ttl). */
static void drain(const struct opts *o, CURLM *multi, struct handle *hs, struct stats *st)
{
	int64_t deadline = mono_us() + (int64_t)o->timeout_ms * 1000;
	int running, busy;

	for (;;) {
		CURLMsg *msg;
		int left;

		busy = 0;
		for (unsigned i = 0; i < o->conns; i++) {
			struct handle *h = &hs[i];

			if (!h->active && h->phase == CHECKIN) {
				meter_prepare(o, h, i);
				h->active = 1;
				curl_multi_add_handle(multi, h->easy);
			}
			busy += h->active;
		}
		if (!busy || mono_us() >= deadline)
			break;
		curl_multi_perform(multi, &running);
		while ((msg = curl_multi_info_read(multi, &left))) {
			struct handle *h;
			long status = 0;
			int pair;
			char why[200];

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&h);
			if (msg->data.result == CURLE_OK)
				curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
			if (msg->data.result != CURLE_OK || status != 200 ||
			    meter_reply(h, why, sizeof(why), &pair)) {
				st->drain_errors++;
				h->phase = CHECKOUT;
			}
			curl_multi_remove_handle(multi, h->easy);
			h->active = 0;
		}
		curl_multi_poll(multi, NULL, 0, 100, NULL);
	}
	st->held_at_end = 0;
	for (unsigned i = 0; i < o->conns; i++)
		st->held_at_end += hs[i].phase == CHECKIN || hs[i].active;
}

int main(int argc, char **argv)
{
	struct opts o = {.conns = 64,
			 .duration_s = 10,
			 .warmup_s = 2,
			 .connect_timeout_ms = 5000,
			 .timeout_ms = 10000};
	struct stats st;
	struct handle *hs = NULL;
	struct curl_slist *hdrs = NULL;
	CURLM *multi = NULL;
	char *body = NULL;
	long len = 0;
	struct handle **idle = NULL; /* a ring: every connection takes its turn */
	size_t nidle = 0, head = 0;
	uint64_t sent = 0;
	int64_t t0, warm_end, end, win_start = 0, now, next_due;
	int64_t srv0 = 0, srv1 = 0, cli0 = 0, cli1 = 0;
	struct cores cores0 = {0}, cores1 = {0};
	struct target target;
	int measuring = 0, rc = 1, running;

	memset(&st, 0, sizeof(st));
	if (parse_args(argc, argv, &o))
		return 2;
	/* --meter builds its bodies per request */
	if (!o.meter && !(body = read_body(o.body_file, &len)))
		return 2;
	if (o.pid && proc_cpu_us(o.pid) < 0) {
		fprintf(stderr, "hbload: no process %ld to measure\n", o.pid);
		goto out;
	}
	if (target_find(o.url, &target))
		goto out;
	if (curl_global_init(CURL_GLOBAL_DEFAULT)) {
		fprintf(stderr, "hbload: cannot initialise libcurl\n");
		goto out;
	}
	hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	hdrs = curl_slist_append(hdrs, "Expect:");
	for (unsigned i = 0; i < o.nids; i++) {
		struct identity *id = &o.ids[i];
		char line[sizeof(id->ticket) + 32];

		if (!id->ticket[0])
			continue;
		snprintf(line, sizeof(line), "Siteward-Ticket: %s", id->ticket);
		id->hdrs = curl_slist_append(NULL, "Content-Type: application/json");
		id->hdrs = curl_slist_append(id->hdrs, "Expect:");
		id->hdrs = curl_slist_append(id->hdrs, line);
		if (!id->hdrs) {
			fprintf(stderr, "hbload: out of memory\n");
			goto out;
		}
	}
	multi = curl_multi_init();
	hs = calloc(o.conns, sizeof(*hs));
	if (!hdrs || !multi || !hs) {
		fprintf(stderr, "hbload: out of memory\n");
		goto out;
	}
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long)o.conns);
	idle = calloc(o.conns, sizeof(*idle));
	if (!idle) {
		fprintf(stderr, "hbload: out of memory\n");
		goto out;
	}
	for (unsigned i = 0; i < o.conns; i++) {
		hs[i].easy =
		    easy_new(&o, &target, i, &o.ids[i % o.nids], hdrs, body, len, &st, &hs[i]);
		if (!hs[i].easy) {
			fprintf(stderr, "hbload: out of memory\n");
			goto out;
		}
		idle[i] = &hs[i];
	}
	nidle = o.conns;
	t0 = next_due = mono_us();
	warm_end = t0 + (int64_t)(o.warmup_s * 1e6);
	end = warm_end + (int64_t)(o.duration_s * 1e6);
	for (;;) {
		CURLMsg *msg;
		int left, wait_ms;

		/* Closed loop: every idle handle goes at once. Paced: one every 1/rate s,
		 * latency counted from when it was due, so a late start counts against it. */
		now = mono_us();
		while (nidle > 0 && (!o.rate || now >= next_due)) {
			struct handle *h = idle[head];

			head = (head + 1) % o.conns;
			nidle--;

			h->started_us = o.rate ? next_due : now;
			if (o.meter)
				meter_prepare(&o, h, (unsigned)(h - hs));
			h->active = 1;
			h->sent_us = now;
			curl_multi_add_handle(multi, h->easy);
			if (o.rate)
				next_due = t0 + (int64_t)((double)++sent * 1e6 / o.rate);
		}
		curl_multi_perform(multi, &running);
		now = mono_us();
		while ((msg = curl_multi_info_read(multi, &left))) {
			struct handle *h;
			long status = 0, nconn = 0;
			enum phase did;
			int bad = 0, pair = 0;
			char why[200];

			if (msg->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&h);
			if (msg->data.result == CURLE_OK)
				curl_easy_getinfo(h->easy, CURLINFO_RESPONSE_CODE, &status);
			curl_easy_getinfo(h->easy, CURLINFO_NUM_CONNECTS, &nconn);
			did = h->phase;
			if (o.meter && msg->data.result == CURLE_OK && status == 200)
				bad = meter_reply(h, why, sizeof(why), &pair);
			else if (o.meter)
				h->phase = CHECKOUT; /* a lease whose check-in failed expires */
			if (measuring) {
				st.connects += (uint64_t)nconn;
				if (msg->data.result != CURLE_OK) {
					char text[sizeof(st.errtext[0])];
					st.errors++;
					snprintf(text, sizeof(text), "%s",
						 h->errbuf[0]
						     ? h->errbuf
						     : curl_easy_strerror(msg->data.result));
					note_error(&st, text, target.addr);
				} else if (status != 200) {
					char text[64];
					st.errors++;
					st.http_errors++;
					snprintf(text, sizeof(text), "HTTP status %ld", status);
					note_error(&st, text, target.addr);
				} else if (bad) {
					st.errors++;
					st.not_granted += did == CHECKOUT;
					note_error(&st, why, target.addr);
				} else {
					int64_t us = now - h->started_us;
					uint32_t u = us > UINT32_MAX ? UINT32_MAX : (uint32_t)us;
					/* both within `us`, which fits */
					int64_t late = h->sent_us - h->started_us;
					int64_t since = now - h->sent_us;

					if (record(&st, u) ||
					    (o.meter &&
					     lat_add(did == CHECKOUT ? &st.checkout : &st.checkin,
						     u)) ||
					    (o.meter && o.rate &&
					     (lat_add(&st.late, late < 0 ? 0 : (uint32_t)late) ||
					      lat_add(&st.from_sent,
						      since < 0 ? 0 : (uint32_t)since)))) {
						fprintf(stderr, "hbload: out of memory\n");
						goto out;
					}
					st.pairs += (uint64_t)pair;
				}
			} else if (msg->data.result != CURLE_OK || status != 200 || bad) {
				st.errors_outside++;
			}
			h->errbuf[0] = '\0';
			curl_multi_remove_handle(multi, h->easy);
			h->active = 0;
			idle[(head + nidle++) % o.conns] = h;
		}
		if (!measuring && now >= warm_end) {
			measuring = 1;
			win_start = now;
			cli0 = self_cpu_us();
			cores_read(&cores0);
			if (o.pid)
				srv0 = proc_cpu_us(o.pid);
		}
		if (now >= end)
			break;
		if (nidle > 0 && !o.rate)
			continue;
		wait_ms = (int)(((measuring ? end : warm_end) - now) / 1000) + 1;
		if (nidle > 0 && (next_due - now) / 1000 < wait_ms)
			wait_ms = next_due > now ? (int)((next_due - now + 999) / 1000) : 0;
		if (wait_ms > 100)
			wait_ms = 100;
		curl_multi_poll(multi, NULL, 0, wait_ms, NULL);
	}
	cli1 = self_cpu_us();
	cores_read(&cores1);
	end = now;
	if (o.pid) {
		srv1 = proc_cpu_us(o.pid);
		srv1 = srv0 >= 0 && srv1 >= 0 ? srv1 - srv0 : -1;
	}
	if (o.meter)
		drain(&o, multi, hs, &st);
	qsort(st.lat_us, st.n, sizeof(*st.lat_us), cmp_u32);
	qsort(st.checkout.v, st.checkout.n, sizeof(uint32_t), cmp_u32);
	qsort(st.checkin.v, st.checkin.n, sizeof(uint32_t), cmp_u32);
	qsort(st.late.v, st.late.n, sizeof(uint32_t), cmp_u32);
	qsort(st.from_sent.v, st.from_sent.n, sizeof(uint32_t), cmp_u32);
	report(&o, &st, (double)(end - win_start) / 1e6, o.pid ? srv1 : -1, cli1 - cli0, &cores0,
	       &cores1);
	for (size_t i = 0; i < st.nerrtext; i++)
		fprintf(stderr, "hbload: error: %s\n", st.errtext[i]);
	/* Figures from a run where nothing got through would mislead a script. */
	rc = st.n == 0 && st.errors > 0 ? 1 : 0;
out:
	if (hs) {
		for (unsigned i = 0; i < o.conns; i++) {
			if (hs[i].easy) {
				curl_multi_remove_handle(multi, hs[i].easy);
				curl_easy_cleanup(hs[i].easy);
			}
			curl_slist_free_all(hs[i].connect_to);
			curl_slist_free_all(hs[i].resolve);
		}
	}
	free(hs);
	free(idle);
	curl_multi_cleanup(multi);
	curl_slist_free_all(hdrs);
	for (unsigned i = 0; i < o.nids; i++)
		curl_slist_free_all(o.ids[i].hdrs);
	curl_global_cleanup();
	free(st.lat_us);
	free(st.checkout.v);
	free(st.checkin.v);
	free(st.late.v);
	free(st.from_sent.v);
	free(o.ids);
	free(body);
	return rc;
}
