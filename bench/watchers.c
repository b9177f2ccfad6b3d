/*
 * watchers: many clients following the site upgrade's event stream, for bench/events.
 *
 *   watchers --site DIR --url https://HOST:PORT --count N [--path P]
 *
 * Opens N streams (GET P, default /v1/upgrades/current, with the site's admin
 * certificate) on one loop, each on its own connection, counts what they carry, and
 * opens again after a pause (0.2 to 1 s) any that ends. Every 500 ms prints one line:
 *   open=N events=E comments=C bytes=B ended=K refused=R
 * open: streams that have had their first event; the rest are totals since the start.
 * Runs until SIGTERM or SIGINT.
 */
#include "error.h"
#include "http_client.h"
#include "paths.h"
#include "pki.h"
#include "sse.h"
#include "util.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

struct watcher;

struct bench {
	uv_loop_t *loop;
	struct sw_http_client *client;
	char url[600];
	unsigned open;
	uint64_t events, comments, bytes, ended, refused;
	struct watcher *w;
	uv_timer_t report;
	uv_signal_t term, intr;
	int stopping;
};

struct watcher {
	struct bench *b;
	struct sw_sse_parser parser;
	uv_timer_t again;
	int open, busy;
	uint64_t comments;
};

static void start(struct watcher *w);

static int on_event(const struct sw_sse_event *ev, void *arg)
{
	struct watcher *w = arg;

	(void)ev;
	if (!w->open) {
		w->open = 1;
		w->b->open++;
	}
	w->b->events++;
	return 0;
}

static int on_data(const char *data, size_t len, void *arg)
{
	struct watcher *w = arg;

	w->b->bytes += len;
	if (sw_sse_feed(&w->parser, data, len, NULL, 0))
		return 1;
	w->b->comments += w->parser.comments - w->comments;
	w->comments = w->parser.comments;
	return 0;
}

static void on_again(uv_timer_t *t)
{
	start(t->data);
}

static void on_done(const struct sw_http_result *res, void *arg)
{
	struct watcher *w = arg;
	struct bench *b = w->b;

	w->busy = 0;
	if (w->open) {
		w->open = 0;
		b->open--;
	}
	if (res->streamed)
		b->ended++;
	else
		b->refused++;
	if (!b->stopping)
		uv_timer_start(&w->again, on_again, 200 + sw_random_u32() % 800, 0);
}

static void start(struct watcher *w)
{
	struct bench *b = w->b;

	sw_sse_parser_cleanup(&w->parser);
	sw_sse_parser_init(&w->parser, SW_HTTP_CLIENT_MAX_BODY, on_event, w);
	w->comments = 0;
	/* a bound on each stream, as the command line has; the pause reopens it */
	if (sw_http_client_stream(b->client, b->url, "text/event-stream", 600000, 15000, on_data,
				  on_done, w) == 0)
		w->busy = 1;
	else
		uv_timer_start(&w->again, on_again, 1000, 0);
}

static void on_report(uv_timer_t *t)
{
	struct bench *b = t->data;

	printf("open=%u events=%llu comments=%llu bytes=%llu ended=%llu refused=%llu\n", b->open,
	       (unsigned long long)b->events, (unsigned long long)b->comments,
	       (unsigned long long)b->bytes, (unsigned long long)b->ended,
	       (unsigned long long)b->refused);
	fflush(stdout);
}

static void on_signal(uv_signal_t *h, int signum)
{
	(void)signum;
	((struct bench *)h->data)->stopping = 1;
	uv_stop(h->loop);
}

int main(int argc, char **argv)
{
	const char *site = NULL, *url = NULL, *path = "/v1/upgrades/current";
	char ca[PATH_MAX + 16], crt[PATH_MAX + 16], key[PATH_MAX + 16];
	struct bench b = {0};
	struct sw_nofile nofile;
	long count = 0;

	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--site") == 0)
			site = argv[i + 1];
		else if (strcmp(argv[i], "--url") == 0)
			url = argv[i + 1];
		else if (strcmp(argv[i], "--count") == 0)
			count = strtol(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--path") == 0)
			path = argv[i + 1];
	}
	if (!site || !url || count <= 0 || count > 100000) {
		fprintf(stderr, "usage: watchers --site DIR --url https://HOST:PORT --count N "
				"[--path P]\n");
		return 2;
	}
	sw_nofile_raise(&nofile);
	sw_path_join(ca, sizeof(ca), site, "ca.crt");
	sw_path_join(crt, sizeof(crt), site, "admin.crt");
	sw_path_join(key, sizeof(key), site, "admin.key");
	struct sw_http_client_opts o = {.ca_file = ca,
					.cert_file = crt,
					.key_file = key,
					.connect_timeout_ms = 10000,
					.peer_role = SW_PKI_ROLE_SERVER};
	b.loop = uv_default_loop();
	snprintf(b.url, sizeof(b.url), "%s%s", url, path);
	if (sw_http_client_new(b.loop, &o, &b.client)) {
		fprintf(stderr, "watchers: cannot make a client\n");
		return 1;
	}
	b.w = calloc((size_t)count, sizeof(*b.w));
	if (!b.w)
		return 1;
	for (long i = 0; i < count; i++) {
		struct watcher *w = &b.w[i];

		w->b = &b;
		uv_timer_init(b.loop, &w->again);
		w->again.data = w;
		sw_sse_parser_init(&w->parser, SW_HTTP_CLIENT_MAX_BODY, on_event, w);
		/* spread over the first second, as watchers do not all come at once */
		uv_timer_start(&w->again, on_again, (uint64_t)(i * 1000 / count), 0);
	}
	uv_timer_init(b.loop, &b.report);
	b.report.data = &b;
	uv_timer_start(&b.report, on_report, 500, 500);
	uv_signal_init(b.loop, &b.term);
	uv_signal_init(b.loop, &b.intr);
	b.term.data = b.intr.data = &b;
	uv_signal_start(&b.term, on_signal, SIGTERM);
	uv_signal_start(&b.intr, on_signal, SIGINT);
	uv_run(b.loop, UV_RUN_DEFAULT);
	on_report(&b.report);
	return 0;
}
