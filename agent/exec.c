/*
 * POST /v1/exec {"argv": [PROGRAM, ARG...], "timeout_ms", "deadline_ms"}: a command an
 * administrator runs on this machine (siteward exec), as the agent's user, in a process
 * group of its own, from /, with standard input from /dev/null and a plain environment.
 * Its standard output and error together are read as they come; the first and the last
 * KiB are kept. At the timeout the whole group is killed. The answer: how it ended
 * (exit status or signal, and whether the timeout ended it), how long it ran, and its
 * output's head, tail and size.
 */
#include "agent.h"

#include "error.h"
#include "json.h"
#include "log.h"
#include "util.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define EXEC_KEEP     1024	    /* bytes kept of the output's head, and of its tail */
#define EXEC_MAX_MS   (3600 * 1000) /* the longest a command may run */
#define EXEC_ARGS_MAX 256
#define EXEC_RUNNING  8	   /* commands at once */
#define EXEC_DRAIN_MS 1000 /* after the exit, for output a child left behind */

struct exec {
	struct exec *next, **prev; /* every command running (exec_stop() ends them) */
	struct agent *a;
	exec_done done;
	void *arg;
	uv_process_t proc;
	uv_pipe_t out;
	uv_timer_t timer;
	int open_handles;
	int exited, eof, timed_out, answered, abandoned;
	int64_t status, signo;
	int64_t started;
	char head[EXEC_KEEP], tail[EXEC_KEEP];
	size_t nhead, ntail_total; /* bytes in head; bytes ever written to the tail ring */
	uint64_t bytes;
};

static int running;
static struct exec *all;

static void closed(uv_handle_t *h)
{
	struct exec *e = h->data;

	if (--e->open_handles == 0) {
		running--;
		if ((*e->prev = e->next))
			e->next->prev = e->prev;
		free(e);
	}
}

/* Output for a person: lines and tabs kept, other control bytes and bytes that are not
 * UTF-8 shown escaped (sw_printable), one piece between them at a time. */
static void text_of(char *out, size_t len, const char *in, size_t n)
{
	char piece[EXEC_KEEP + 1];
	size_t used = 0, i = 0;

	out[0] = '\0';
	while (i < n && used + 1 < len) {
		size_t k = 0;

		while (i + k < n && in[i + k] != '\n' && in[i + k] != '\t' && in[i + k] != '\0')
			k++;
		memcpy(piece, in + i, k);
		piece[k] = '\0';
		sw_printable(out + used, len - used, piece);
		used += strlen(out + used);
		i += k;
		if (i < n && in[i] == '\0') {
			/* a NUL would end the text: shown as the escape sw_printable uses */
			used += (size_t)snprintf(out + used, len - used, "\\x00");
			used = used < len ? used : len - 1;
			i++;
		} else if (i < n && used + 1 < len) {
			out[used++] = in[i++];
			out[used] = '\0';
		}
	}
}

static void answer(struct exec *e)
{
	char head[EXEC_KEEP * 4 + 1], tail[EXEC_KEEP * 4 + 1], ring[EXEC_KEEP];
	size_t n = e->ntail_total < EXEC_KEEP ? e->ntail_total : EXEC_KEEP;
	size_t start = e->ntail_total < EXEC_KEEP ? 0 : e->ntail_total % EXEC_KEEP;
	struct exec_result r;

	if (e->answered)
		return;
	e->answered = 1;
	for (size_t i = 0; i < n; i++)
		ring[i] = e->tail[(start + i) % EXEC_KEEP];
	text_of(head, sizeof(head), e->head, e->nhead);
	/* the tail repeats none of the head */
	if (e->bytes <= EXEC_KEEP) {
		tail[0] = '\0';
	} else {
		size_t skip = e->bytes < 2 * EXEC_KEEP ? (size_t)(2 * EXEC_KEEP - e->bytes) : 0;

		text_of(tail, sizeof(tail), ring + skip, n - skip);
	}
	r.timed_out = e->timed_out;
	r.abandoned = e->abandoned;
	r.status = e->status;
	r.signo = e->signo;
	r.elapsed_ms = sw_mono_ms() - e->started;
	r.head = head;
	r.tail = tail;
	r.bytes = e->bytes;
	e->done(&r, e->arg);
	uv_timer_stop(&e->timer);
	if (!uv_is_closing((uv_handle_t *)&e->timer))
		uv_close((uv_handle_t *)&e->timer, closed);
	if (!uv_is_closing((uv_handle_t *)&e->out))
		uv_close((uv_handle_t *)&e->out, closed);
	if (!uv_is_closing((uv_handle_t *)&e->proc))
		uv_close((uv_handle_t *)&e->proc, closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
	static char chunk[16384];

	(void)h, (void)suggested;
	buf->base = chunk;
	buf->len = sizeof(chunk);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
	struct exec *e = s->data;

	if (n < 0) {
		e->eof = 1;
		uv_read_stop(s);
		if (e->exited)
			answer(e);
		return;
	}
	for (ssize_t i = 0; i < n; i++) {
		if (e->nhead < EXEC_KEEP)
			e->head[e->nhead++] = buf->base[i];
		e->tail[e->ntail_total++ % EXEC_KEEP] = buf->base[i];
	}
	e->bytes += (uint64_t)n;
}

static void on_timer(uv_timer_t *t)
{
	struct exec *e = t->data;

	if (e->exited) {
		answer(e); /* its output's last holder went on: answered without the rest */
		return;
	}
	e->timed_out = 1;
	sw_warn("exec: pid %d ran past its timeout; killing its process group", e->proc.pid);
	kill(-e->proc.pid, SIGKILL);
}

static void exited(uv_process_t *p, int64_t status, int signo)
{
	struct exec *e = p->data;

	e->exited = 1;
	e->status = status;
	e->signo = signo;
	/* a background child may still hold the output: a moment for it, then the answer */
	kill(-p->pid, SIGKILL);
	if (e->eof)
		answer(e);
	else
		uv_timer_start(&e->timer, on_timer, EXEC_DRAIN_MS, 0);
}

int exec_spawn(struct agent *a, char **argv, char **env, int64_t timeout_ms, exec_done done,
	       void *arg, char *err, size_t errlen)
{
	uv_process_options_t o;
	uv_stdio_container_t io[3];
	struct exec *e;
	int fds[2] = {-1, -1}, rc;

	if (running >= EXEC_RUNNING) {
		sw_seterr(err, errlen, "%d commands run here already; ask again", EXEC_RUNNING);
		return SW_EBUSY;
	}
	if (!(e = calloc(1, sizeof(*e))) ||
	    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) < 0) {
		sw_seterr(err, errlen, "cannot run a command: %s", strerror(errno));
		free(e);
		return SW_EIO;
	}
	e->a = a;
	e->done = done;
	e->arg = arg;
	e->started = sw_mono_ms();
	memset(&o, 0, sizeof(o));
	memset(io, 0, sizeof(io));
	io[0].flags = UV_IGNORE;
	io[1].flags = io[2].flags = UV_INHERIT_FD;
	io[1].data.fd = io[2].data.fd = fds[1];
	o.file = argv[0];
	o.args = argv;
	o.env = env;
	o.cwd = "/";
	o.flags = UV_PROCESS_DETACHED; /* its own process group, killed whole */
	o.stdio = io;
	o.stdio_count = 3;
	o.exit_cb = exited;
	e->proc.data = e->out.data = e->timer.data = e;
	uv_pipe_init(a->loop, &e->out, 0);
	uv_timer_init(a->loop, &e->timer);
	e->open_handles = 2;
	running++;
	if ((e->next = all))
		all->prev = &e->next;
	e->prev = &all;
	all = e;
	rc = uv_spawn(a->loop, &e->proc, &o);
	close(fds[1]);
	if (rc < 0) {
		close(fds[0]);
		sw_seterr(err, errlen, "cannot start %s: %s", argv[0], uv_strerror(rc));
		e->answered = 1;
		uv_close((uv_handle_t *)&e->out, closed);
		uv_close((uv_handle_t *)&e->timer, closed);
		return SW_ENOTFOUND;
	}
	e->open_handles = 3;
	sw_info("exec: %s started (pid %d, at most %lld ms)", argv[0], e->proc.pid,
		(long long)timeout_ms);
	if (uv_pipe_open(&e->out, fds[0]) == 0)
		uv_read_start((uv_stream_t *)&e->out, on_alloc, on_read);
	else
		e->eof = 1;
	uv_timer_start(&e->timer, on_timer, (uint64_t)timeout_ms, 0);
	return 0;
}

void exec_stop(struct agent *a)
{
	struct exec *e, *next;

	for (e = all; e; e = next) {
		next = e->next;
		if (e->a != a || e->answered)
			continue;
		/* the command runs on (a package half installed is worse than one the agent
		 * no longer watches); its caller hears that the agent stopped */
		sw_warn("exec: pid %d runs on without the agent", e->proc.pid);
		e->abandoned = 1;
		answer(e);
	}
}

static void replied(const struct exec_result *r, void *arg)
{
	if (r->abandoned) {
		sw_http_reply_error(arg, 503,
				    "the agent stopped while the command ran; it runs on");
		return;
	}
	sw_http_reply_json(arg, 200,
			   json_pack("{sb sb sI sI sI ss ss sI}", "started", 1, "timed_out",
				     r->timed_out, "exit", (json_int_t)r->status, "signal",
				     (json_int_t)r->signo, "elapsed_ms", (json_int_t)r->elapsed_ms,
				     "head", r->head, "tail", r->tail, "bytes",
				     (json_int_t)r->bytes));
}

void exec_post(struct sw_http_req *req, void *arg)
{
	struct agent *a = arg;
	static char *const env[] = {
	    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
	    "HOME=/", NULL};
	char *args[EXEC_ARGS_MAX + 1], err[300];
	int64_t timeout_ms = 60000, deadline_ms = 0;
	const json_t *argv, *v;
	json_t *j;
	size_t i;
	int rc;

	if (!(j = sw_http_req_json(req)))
		return;
	argv = json_object_get(j, "argv");
	if (sw_json_int(j, "timeout_ms", 1, EXEC_MAX_MS, 0, &timeout_ms, err, sizeof(err)) ||
	    sw_json_int(j, "deadline_ms", 0, INT64_MAX / 2, 0, &deadline_ms, err, sizeof(err))) {
		sw_http_reply_error(req, 400, "%s", err);
		goto out;
	}
	if (!json_is_array(argv) || json_array_size(argv) == 0 ||
	    json_array_size(argv) > EXEC_ARGS_MAX) {
		sw_http_reply_error(req, 400, "argv is a list of 1 to %d strings", EXEC_ARGS_MAX);
		goto out;
	}
	json_array_foreach(argv, i, v)
	{
		if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
			sw_http_reply_error(req, 400, "argv[%zu] is not a string", i);
			goto out;
		}
		args[i] = (char *)json_string_value(v);
	}
	args[i] = NULL;
	/* one that waited past its caller's deadline is not run */
	if (deadline_ms && sw_now_ms() > deadline_ms) {
		sw_http_reply_error(req, 410, "the request expired before it arrived; not run");
		goto out;
	}
	rc = exec_spawn(a, args, (char **)env, timeout_ms, replied, req, err, sizeof(err));
	if (rc == SW_EBUSY)
		sw_http_reply_error(req, 503, "%s", err);
	else if (rc)
		sw_http_reply_json(req, 200, json_pack("{sb ss}", "started", 0, "error", err));
out:
	json_decref(j);
}
