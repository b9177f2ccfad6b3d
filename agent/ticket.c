/*
 * The agent's local socket, <dir>/agent.sock (/run/siteward/agent.sock for the default
 * folder): whoever connects gets a user ticket
 * (lib/ticket.h) naming the account the kernel says it runs as (SO_PEERCRED), signed
 * with the agent's key. siteward-run hands it to metering servers, which take the user
 * from it. The socket reads nothing from its callers: a ticket is the whole answer, so
 * a caller can neither stall the agent nor say who it is.
 *
 * A ticket is also kept in <dir>/tickets/<uid>, readable by that user alone, so a
 * program started while the agent is restarting still has one.
 *
 * The agent also keeps the machine's clock mark (lib/clockmark.h) in <dir>/clock.json,
 * written at start, every minute and at stop: a borrowed license is checked against
 * it, so a user who sets the clock back does not make the loan last longer.
 */
#include "agent.h"

#include "clockmark.h"
#include "error.h"
#include "json.h"
#include "log.h"
#include "paths.h"
#include "strmap.h"
#include "ticket.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

struct issued {
	char *text;
	int64_t expires_ms;
};

#define CLOCKMARK_MS 60000

struct tickets {
	struct agent *a;
	uv_pipe_t pipe;
	struct sw_strmap *by_uid; /* uid → struct issued */
	char path[PATH_MAX];
	uv_timer_t mark_timer;
	char mark[PATH_MAX + 16]; /* <dir>/clock.json */
	int mark_failing;	  /* the last write failed, and was said */
};

static void clockmark(struct tickets *t)
{
	char err[PATH_MAX + 128];

	if (sw_clockmark_write(t->mark, err, sizeof(err)) == 0) {
		t->mark_failing = 0;
	} else if (!t->mark_failing) {
		t->mark_failing = 1;
		sw_warn("cannot keep the clock mark: %s; a borrowed license is checked by "
			"this machine's clock alone",
			err);
	}
}

static void on_mark_timer(uv_timer_t *h)
{
	clockmark(h->data);
}

static void issued_free(void *p)
{
	struct issued *i = p;

	if (i)
		free(i->text);
	free(i);
}

static void issued_free_each(const char *key, void *value, void *arg)
{
	(void)key, (void)arg;
	issued_free(value);
}

/* Keeps the user's ticket where only that user can read it. The folder is the agent's
 * own, so no user can put a link or a pipe where the file goes. */
static void ticket_keep(struct tickets *t, uid_t uid, const char *text)
{
	char dir[PATH_MAX + 16], name[32], tmp[48];
	int dfd, fd;

	sw_path_join(dir, sizeof(dir), t->a->dir, "tickets");
	if (mkdir(dir, 0711) < 0 && errno != EEXIST)
		return;
	if ((dfd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)) < 0)
		return;
	snprintf(name, sizeof(name), "%u", (unsigned)uid);
	snprintf(tmp, sizeof(tmp), ".%u.tmp", (unsigned)uid);
	unlinkat(dfd, tmp, 0);
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0400);
	if (fd >= 0) {
		size_t len = strlen(text);
		/* no fsync: a copy lost in a crash is issued again, and the loop waits for no
		 * disk */
		int ok = write(fd, text, len) == (ssize_t)len && fchown(fd, uid, (gid_t)-1) == 0;
		close(fd);
		if (!ok || renameat(dfd, tmp, dfd, name) < 0)
			unlinkat(dfd, tmp, 0);
	}
	close(dfd);
}

/* The ticket for `uid`: the one issued before while it has more than half its life
 * left, else a new one. */
static const char *ticket_for(struct tickets *t, uid_t uid)
{
	struct agent *a = t->a;
	struct sw_ticket tk = {0};
	struct passwd pw, *found = NULL;
	char key[16], buf[4096], err[256];
	struct issued *i;
	int64_t now = sw_now_ms();

	snprintf(key, sizeof(key), "%u", (unsigned)uid);
	i = sw_strmap_get(t->by_uid, key);
	if (i && i->expires_ms - now > SW_TICKET_LIFE_MS / 2)
		return i->text;
	snprintf(tk.host, sizeof(tk.host), "%s", a->name);
	tk.uid = (uint32_t)uid;
	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &found) == 0 && found &&
	    sw_ticket_user_valid(found->pw_name))
		snprintf(tk.user, sizeof(tk.user), "%s", found->pw_name);
	else
		snprintf(tk.user, sizeof(tk.user), "%u", (unsigned)uid);
	tk.issued_ms = now;
	tk.expires_ms = now + SW_TICKET_LIFE_MS;
	if (!(i = calloc(1, sizeof(*i))) ||
	    sw_ticket_make(a->key_pem, a->cert_pem, &tk, &i->text, err, sizeof(err))) {
		sw_warn("cannot issue a user ticket to uid %u: %s", (unsigned)uid,
			i ? err : "out of memory");
		issued_free(i);
		return NULL;
	}
	i->expires_ms = tk.expires_ms;
	issued_free(sw_strmap_del(t->by_uid, key));
	if (sw_strmap_set(t->by_uid, key, i)) {
		issued_free(i);
		return NULL;
	}
	ticket_keep(t, uid, i->text);
	return i->text;
}

static void caller_closed(uv_handle_t *h)
{
	free(h);
}

/* Each caller is answered at once: the ticket (a few hundred bytes) goes into the new
 * socket's empty buffer whether or not the caller reads, and the connection is closed,
 * so no caller holds anything of the agent's. */
static void on_connection(uv_stream_t *server, int status)
{
	struct tickets *t = server->data;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	uv_pipe_t *c;
	uv_os_fd_t fd;
	const char *text;
	char line[SW_TICKET_MAX + 2];

	if (status < 0 || !(c = malloc(sizeof(*c))))
		return;
	uv_pipe_init(t->a->loop, c, 0);
	if (uv_accept(server, (uv_stream_t *)c) == 0 && uv_fileno((uv_handle_t *)c, &fd) == 0 &&
	    getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 &&
	    (text = ticket_for(t, cred.uid))) {
		int n = snprintf(line, sizeof(line), "%s\n", text);
		uv_buf_t b = uv_buf_init(line, (unsigned)n);

		if (uv_try_write((uv_stream_t *)c, &b, 1) != n)
			sw_debug("a local caller's ticket could not be written whole");
	}
	uv_close((uv_handle_t *)c, caller_closed);
}

int ticket_start(struct agent *a)
{
	struct tickets *t = calloc(1, sizeof(*t));
	int rc;

	if (!t || !(t->by_uid = sw_strmap_new())) {
		free(t);
		return SW_ENOMEM;
	}
	t->a = a;
	a->tickets = t;
	sw_path_join(t->mark, sizeof(t->mark), a->dir, SW_CLOCKMARK_FILE);
	clockmark(t);
	uv_timer_init(a->loop, &t->mark_timer);
	t->mark_timer.data = t;
	uv_timer_start(&t->mark_timer, on_mark_timer, CLOCKMARK_MS, CLOCKMARK_MS);
	/* the default folder's socket is /run/siteward/agent.sock (the unit's
	 * RuntimeDirectory=); a --dir folder holds its own */
	sw_path_runtime(a->dir, SW_PATH_AGENT_DIR, "agent.sock", t->path, sizeof(t->path));
	uv_pipe_init(a->loop, &t->pipe, 0);
	t->pipe.data = t;
	if (strlen(t->path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
		sw_warn("%s: path too long for a socket; local users get no ticket, and "
			"siteward-run follows its offline policy",
			t->path);
		return 0;
	}
	unlink(t->path); /* left by an agent that stopped without removing it */
	if ((rc = uv_pipe_bind(&t->pipe, t->path)) < 0 ||
	    (rc = uv_pipe_chmod(&t->pipe, UV_READABLE | UV_WRITABLE)) < 0 ||
	    (rc = uv_listen((uv_stream_t *)&t->pipe, 128, on_connection)) < 0) {
		sw_warn("cannot listen on %s: %s; local users get no ticket, and siteward-run "
			"follows its offline policy",
			t->path, uv_strerror(rc));
		return 0;
	}
	return 0;
}

void ticket_stop(struct agent *a)
{
	struct tickets *t = a->tickets;

	if (!t)
		return;
	unlink(t->path);
	if (!uv_is_closing((uv_handle_t *)&t->pipe))
		uv_close((uv_handle_t *)&t->pipe, NULL);
	if (!uv_is_closing((uv_handle_t *)&t->mark_timer)) {
		clockmark(t);
		uv_close((uv_handle_t *)&t->mark_timer, NULL);
	}
}

void ticket_renewed(struct agent *a)
{
	struct tickets *t = a->tickets;
	struct sw_strmap *fresh = sw_strmap_new();
	char dir[PATH_MAX + 16];
	struct dirent *e;
	DIR *d;

	if (!t || !fresh) {
		sw_strmap_free(fresh);
		return;
	}
	sw_strmap_each(t->by_uid, issued_free_each, NULL);
	sw_strmap_free(t->by_uid);
	t->by_uid = fresh;
	/* the copies kept for users go too: each is signed with the certificate before */
	sw_path_join(dir, sizeof(dir), a->dir, "tickets");
	if ((d = opendir(dir))) {
		while ((e = readdir(d)))
			if (e->d_name[0] != '.' || strstr(e->d_name, ".tmp"))
				unlinkat(dirfd(d), e->d_name, 0);
		closedir(d);
	}
}

void ticket_written_off(struct agent *a, const json_t *leases)
{
	char path[PATH_MAX + 32], err[PATH_MAX + 128], *text;
	json_t *list = json_array(), *v;
	size_t i;

	/* lease ids only: the list is the site server's, the file is read by every user */
	json_array_foreach(leases, i, v)
	{
		const char *id = json_string_value(v);

		if (id && strlen(id) == 32 && strspn(id, "0123456789abcdef") == 32 && i < 10000)
			json_array_append(list, v);
	}
	if (!list || json_equal(list, a->written_off) ||
	    (!a->written_off && json_array_size(list) == 0)) {
		json_decref(list);
		return;
	}
	sw_path_join(path, sizeof(path), a->dir, "written-off.json");
	text = sw_json_dump(list);
	if (!text || sw_file_write_atomic(path, text, strlen(text), 0644, err, sizeof(err))) {
		sw_warn("cannot write the loans written off here: %s",
			text ? err : "out of memory");
		json_decref(list);
	} else {
		json_decref(a->written_off);
		a->written_off = list;
	}
	free(text);
}

void ticket_free(struct agent *a)
{
	struct tickets *t = a->tickets;

	if (!t)
		return;
	sw_strmap_each(t->by_uid, issued_free_each, NULL);
	sw_strmap_free(t->by_uid);
	free(t);
	a->tickets = NULL;
}
