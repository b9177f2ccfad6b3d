/*
 * The program, run as if the user had run it directly: our stdin, stdout and stderr,
 * environment, process group and signal dispositions (nohup's ignored SIGHUP stays
 * ignored). Only descriptors siteward-run opened itself are kept from it.
 *
 * Signals arrive through a signalfd, which tells who sent each one. The terminal
 * signals the whole foreground process group, the program with us, so what the kernel
 * sends is not forwarded (the program would get it twice); what a process sends to us
 * with kill() is.
 */
#include "run.h"

#include "error.h"
#include "util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static const int forwarded[4] = {SIGINT, SIGTERM, SIGHUP, SIGQUIT};

#define FD_BITS ((int)sizeof(((struct child *)0)->fds) * 8)

static int fd_known(const struct child *c, long fd)
{
	return fd < FD_BITS && (c->fds[fd / 8] & (1u << (fd % 8)));
}

/* Calls fn on every open descriptor above stderr except the listing's own. */
static int each_fd(void (*fn)(struct child *, long), struct child *c)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;

	if (!d)
		return SW_EIO;
	while ((de = readdir(d))) {
		char *end;
		long fd = strtol(de->d_name, &end, 10);

		if (end != de->d_name && *end == '\0' && fd > 2 && fd != dirfd(d))
			fn(c, fd);
	}
	closedir(d);
	return 0;
}

static void note_fd(struct child *c, long fd)
{
	if (fd < FD_BITS)
		c->fds[fd / 8] |= (unsigned char)(1u << (fd % 8));
}

static void close_on_exec(struct child *c, long fd)
{
	int flags;

	/* Descriptors past the bitmap were the invoker's (ours are the lowest free). */
	if (fd >= FD_BITS || fd_known(c, fd))
		return;
	flags = fcntl((int)fd, F_GETFD);
	if (flags >= 0 && !(flags & FD_CLOEXEC))
		fcntl((int)fd, F_SETFD, flags | FD_CLOEXEC);
}

int child_init(struct child *c)
{
	struct sigaction sa;
	sigset_t set;

	memset(c, 0, sizeof(*c));
	c->pid = -1;
	c->sfd = -1;
	c->fds_known = each_fd(note_fd, c) == 0;
	/* An ignored SIGCHLD reaps children unasked; we need the status, the program gets
	 * the disposition it was given. */
	if (sigaction(SIGCHLD, NULL, &sa) == 0 && sa.sa_handler == SIG_IGN) {
		c->chld_ignored = 1;
		signal(SIGCHLD, SIG_DFL);
	}
	/* Blocked from the start, before any thread exists to receive them instead. */
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	for (size_t i = 0; i < SW_ARRAY_LEN(forwarded); i++) {
		/* A signal we were told to ignore, the program was told to ignore too. */
		if (sigaction(forwarded[i], NULL, &sa) == 0 && sa.sa_handler != SIG_IGN)
			sigaddset(&set, forwarded[i]);
	}
	c->sfd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (c->sfd < 0)
		return SW_EIO;
	/* SIGPIPE is blocked rather than ignored: an ignored signal would be inherited. */
	sigaddset(&set, SIGPIPE);
	sigprocmask(SIG_BLOCK, &set, &c->oldmask);
	return 0;
}

static void reap(struct child *c)
{
	pid_t p;
	int st;

	if (c->exited)
		return;
	do
		p = waitpid(c->pid, &st, WNOHANG);
	while (p < 0 && errno == EINTR);
	if (p != c->pid)
		return;
	c->exited = 1;
	c->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
	uv_poll_stop(&c->poll);
}

/* What the signal would have done to us, had we not been watching. */
static void die_by(int signo)
{
	sigset_t set;

	sigemptyset(&set);
	sigaddset(&set, signo);
	signal(signo, SIG_DFL);
	sigprocmask(SIG_UNBLOCK, &set, NULL);
	raise(signo);
	_exit(128 + signo);
}

static void on_signal(uv_poll_t *p, int status, int events)
{
	struct run *r = p->data;
	struct child *c = &r->child;
	struct signalfd_siginfo si;

	while (read(c->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD || c->exited)
			continue;
		/* Before PROGRAM starts, a signal ends siteward-run as it would anyway. */
		if (c->pid <= 0)
			die_by((int)si.ssi_signo);
		/* From the terminal (the program has it already) or from the program itself
		 * (which signalled its group, or us on purpose). */
		if (si.ssi_code == SI_KERNEL || (pid_t)si.ssi_pid == c->pid)
			continue;
		if (r->verbose)
			fprintf(stderr, "siteward-run: passing signal %u from pid %u to %s\n",
				si.ssi_signo, si.ssi_pid, r->exe);
		kill(c->pid, (int)si.ssi_signo);
	}
	if (c->pid > 0)
		reap(c);
}

int child_watch(struct run *r)
{
	struct child *c = &r->child;
	int rc;

	if ((rc = uv_poll_init(r->loop, &c->poll, c->sfd)) < 0)
		return SW_EIO;
	c->poll_on = 1;
	c->poll.data = r;
	uv_poll_start(&c->poll, UV_READABLE, on_signal);
	return 0;
}

/* Puts back what the program is to inherit; async-signal-safe, for after fork(). */
static void restore(struct child *c)
{
	sigset_t pipe;
	const struct timespec zero = {0, 0};

	/* A SIGPIPE left pending while blocked would kill the program at once. */
	sigemptyset(&pipe);
	sigaddset(&pipe, SIGPIPE);
	while (sigtimedwait(&pipe, NULL, &zero) > 0)
		;
	if (c->chld_ignored)
		signal(SIGCHLD, SIG_IGN);
	sigprocmask(SIG_SETMASK, &c->oldmask, NULL);
}

int child_start(struct run *r, char *err, size_t errlen)
{
	struct child *c = &r->child;
	int pfd[2] = {-1, -1}, e = 0, rc = SW_EIO;
	ssize_t n;

	if (pipe2(pfd, O_CLOEXEC) < 0) {
		sw_seterr(err, errlen, "cannot start %s: %s", r->argv[0], strerror(errno));
		goto out;
	}
	if (c->fds_known)
		each_fd(close_on_exec, c);
	/* A signal that came while the loop was held (by a version lookup, say) has not
	 * been read yet: the loop runs the timer that decided to go on before it reads the
	 * signal. It still ends siteward-run before PROGRAM starts. */
	if (c->sfd >= 0) {
		struct signalfd_siginfo si;

		while (read(c->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			if (si.ssi_signo != SIGCHLD)
				die_by((int)si.ssi_signo);
	}
	c->pid = fork();
	if (c->pid == 0) {
		restore(c);
		execvp(r->argv[0], r->argv);
		e = errno;
		if (write(pfd[1], &e, sizeof(e)) < 0)
			_exit(RUN_EX_NOEXEC);
		_exit(e == ENOENT ? RUN_EX_NOTFOUND : RUN_EX_NOEXEC);
	}
	close(pfd[1]);
	pfd[1] = -1;
	if (c->pid < 0) {
		sw_seterr(err, errlen, "cannot start %s: %s", r->argv[0], strerror(errno));
		goto out;
	}
	/* The pipe closes on a successful exec; a failed one writes its errno first. Both
	 * happen at once, so this read is as bounded as execve itself. */
	do
		n = read(pfd[0], &e, sizeof(e));
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(e)) {
		/* sw_path_find() saw the file itself: what is missing is what runs it. */
		sw_seterr(err, errlen, "%s: %s%s", r->argv[0], strerror(e),
			  e == ENOENT ? " (its #! interpreter or its loader)" : "");
		rc = e == ENOENT ? SW_ENOTFOUND : SW_EDENIED;
		while (waitpid(c->pid, NULL, 0) < 0 && errno == EINTR)
			;
		c->exited = 1;
		goto out;
	}
	rc = 0;
out:
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	return rc;
}

int child_exec(struct run *r)
{
	struct child *c = &r->child;

	if (c->fds_known)
		each_fd(close_on_exec, c);
	restore(c);
	execvp(r->argv[0], r->argv);
	return errno;
}

void child_cleanup(struct child *c)
{
	if (c->poll_on) {
		uv_close((uv_handle_t *)&c->poll, NULL);
		c->poll_on = 0;
	}
	if (c->sfd >= 0) {
		close(c->sfd);
		c->sfd = -1;
	}
}
