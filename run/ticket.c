/*
 * The user ticket siteward-run shows metering servers (lib/ticket.h): from the agent's
 * socket, or, while the agent does not answer, the copy it keeps for this user in
 * <dir>/tickets/<uid>. Without one no metering server is asked (it would refuse), and
 * the run follows the offline policy.
 */
#include "run.h"

#include "error.h"
#include "ticket.h"
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define ASK_MS 1000 /* the agent's answer on its socket */

/* A ticket for this user on this system, or NULL. */
static char *checked(const struct run *r, char *text, size_t len, int64_t min_left_ms)
{
	struct sw_ticket t;

	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		text[--len] = '\0';
	if (sw_ticket_parse(text, len, &t, NULL, 0) || strcmp(t.host, r->conf.host) != 0 ||
	    t.uid != (uint32_t)getuid() || t.expires_ms - sw_now_ms() <= min_left_ms) {
		free(text);
		return NULL;
	}
	return text;
}

static char *from_file(const struct run *r, int64_t min_left_ms)
{
	char path[PATH_MAX + 48], *text;
	struct stat st;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/tickets/%u", r->conf.dir, (unsigned)getuid());
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > SW_TICKET_MAX ||
	    !(text = malloc(SW_TICKET_MAX + 1))) {
		close(fd);
		return NULL;
	}
	n = read(fd, text, SW_TICKET_MAX);
	close(fd);
	if (n <= 0) {
		free(text);
		return NULL;
	}
	text[n] = '\0';
	return checked(r, text, (size_t)n, min_left_ms);
}

static char *from_agent(const struct run *r, char *why, size_t whylen)
{
	struct sockaddr_un sa = {.sun_family = AF_UNIX};
	struct timeval tv = {ASK_MS / 1000, (ASK_MS % 1000) * 1000};
	char *text = NULL;
	size_t len = 0;
	int fd;

	if (snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", r->conf.sock) >=
	    (int)sizeof(sa.sun_path)) {
		snprintf(why, whylen, "%s: path too long for a socket", r->conf.sock);
		return NULL;
	}
	/* the timeouts bound the connect (a full backlog) and every read */
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) < 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0 ||
	    connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		snprintf(why, whylen, "%s: %s", sa.sun_path, strerror(errno));
		goto out;
	}
	if (!(text = malloc(SW_TICKET_MAX + 2)))
		goto out;
	for (int64_t end = sw_mono_ms() + ASK_MS; len <= SW_TICKET_MAX && sw_mono_ms() < end;) {
		ssize_t n = read(fd, text + len, SW_TICKET_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (memchr(text + len - (size_t)n, '\n', (size_t)n))
			break;
	}
	text[len] = '\0';
	if (len == 0 || !memchr(text, '\n', len)) {
		snprintf(why, whylen, "%s: no ticket in the agent's answer", sa.sun_path);
		free(text);
		text = NULL;
		goto out;
	}
	if (!(text = checked(r, text, len, 0)))
		snprintf(why, whylen, "%s: the agent's ticket is not for this user here",
			 sa.sun_path);
out:
	if (fd >= 0)
		close(fd);
	return text;
}

int ticket_get(struct run *r, char *why, size_t whylen)
{
	char *t;

	/* the copy kept is good while it has more than half its life left */
	if (!(t = from_file(r, SW_TICKET_LIFE_MS / 2)) && !(t = from_agent(r, why, whylen)))
		t = from_file(r, 0);
	free(r->ticket);
	r->ticket = t;
	return t ? 0 : SW_ENOTFOUND;
}
