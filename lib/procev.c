/* Process events from the proc connector; see procev.h. */
#include "procev.h"

#include "error.h"

#include <errno.h>
#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* One subscription message: a netlink header, a connector header, the operation. */
static int send_op(int fd, enum proc_cn_mcast_op op)
{
	char msg[NLMSG_SPACE(sizeof(struct cn_msg) + sizeof(op))];
	struct nlmsghdr *nl = (struct nlmsghdr *)msg;
	struct cn_msg *cn = NLMSG_DATA(nl);

	memset(msg, 0, sizeof(msg));
	nl->nlmsg_len = NLMSG_LENGTH(sizeof(*cn) + sizeof(op));
	nl->nlmsg_type = NLMSG_DONE;
	nl->nlmsg_pid = 0;
	cn->id.idx = CN_IDX_PROC;
	cn->id.val = CN_VAL_PROC;
	cn->len = sizeof(op);
	memcpy(cn->data, &op, sizeof(op));
	return send(fd, msg, nl->nlmsg_len, 0) == (ssize_t)nl->nlmsg_len ? 0 : -1;
}

/* Why the connector cannot be had here, as an error code. */
static int unavailable(int e, const char *what, char *err, size_t errlen)
{
	if (e == EPERM || e == EACCES) {
		sw_seterr(err, errlen, "%s: not permitted (%s)", what, strerror(e));
		return SW_EDENIED;
	}
	/* a kernel without it, or a network namespace other than the machine's own */
	if (e == EPROTONOSUPPORT || e == EAFNOSUPPORT || e == ENOENT || e == ECONNREFUSED) {
		sw_seterr(err, errlen, "%s: not available here (%s)", what, strerror(e));
		return SW_ENOTFOUND;
	}
	sw_seterr(err, errlen, "%s: %s", what, strerror(e));
	return SW_EIO;
}

int sw_procev_open(char *err, size_t errlen)
{
	struct sockaddr_nl sa = {.nl_family = AF_NETLINK, .nl_groups = CN_IDX_PROC};
	int fd, rcvbuf = 1 << 20;

	fd = socket(PF_NETLINK, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, NETLINK_CONNECTOR);
	if (fd < 0)
		return unavailable(errno, "no process connector", err, errlen);
	/* Room for bursts (a build starting thousands of processes); past it, events are
	 * dropped and the caller is told. */
	setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || send_op(fd, PROC_CN_MCAST_LISTEN)) {
		int e = errno;

		close(fd);
		return unavailable(e, "cannot listen to process events", err, errlen);
	}
	return fd;
}

void sw_procev_close(int fd)
{
	if (fd < 0)
		return;
	send_op(fd, PROC_CN_MCAST_IGNORE);
	close(fd);
}

/* An exec or an exit of a whole process: threads exec and exit too, and do not count. */
static int event_of(const struct proc_event *pe, struct sw_procev *ev)
{
	int pid, tgid;

	if (pe->what == PROC_EVENT_EXEC) {
		ev->kind = SW_PROCEV_EXEC;
		pid = pe->event_data.exec.process_pid;
		tgid = pe->event_data.exec.process_tgid;
	} else if (pe->what == PROC_EVENT_EXIT) {
		ev->kind = SW_PROCEV_EXIT;
		pid = pe->event_data.exit.process_pid;
		tgid = pe->event_data.exit.process_tgid;
	} else {
		return 0;
	}
	ev->pid = tgid;
	return pid == tgid && tgid > 0;
}

int sw_procev_parse(const void *buf, size_t len, void (*fn)(void *arg, const struct sw_procev *ev),
		    void *arg)
{
	const char *p = buf;
	int n = 0;

	while (len >= sizeof(struct nlmsghdr)) {
		struct nlmsghdr nl;
		struct cn_msg cn;
		struct proc_event pe;
		struct sw_procev ev;
		size_t msglen, step;

		memcpy(&nl, p, sizeof(nl));
		msglen = nl.nlmsg_len;
		if (msglen < sizeof(nl) || msglen > len)
			break;
		step = NLMSG_ALIGN(msglen);
		/* The connector's messages; an error or anything else is no event. */
		if (msglen >= NLMSG_LENGTH(sizeof(cn))) {
			memcpy(&cn, p + NLMSG_HDRLEN, sizeof(cn));
			if (cn.id.idx == CN_IDX_PROC && cn.id.val == CN_VAL_PROC &&
			    cn.len >= sizeof(pe) &&
			    NLMSG_LENGTH(sizeof(cn)) + (size_t)cn.len <= msglen) {
				memcpy(&pe, p + NLMSG_LENGTH(sizeof(cn)), sizeof(pe));
				if (event_of(&pe, &ev)) {
					fn(arg, &ev);
					n++;
				}
			}
		}
		if (step >= len)
			break;
		p += step;
		len -= step;
	}
	return n;
}

int sw_procev_read(int fd, void *buf, size_t buflen,
		   void (*fn)(void *arg, const struct sw_procev *ev), void *arg)
{
	struct sockaddr_nl from;
	socklen_t fromlen = sizeof(from);
	ssize_t n;

	do
		n = recvfrom(fd, buf, buflen, 0, (struct sockaddr *)&from, &fromlen);
	while (n < 0 && errno == EINTR);
	if (n < 0) {
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			return SW_EBUSY;
		return errno == ENOBUFS ? SW_ETOOBIG : SW_EIO;
	}
	/* Only the kernel speaks for processes: a datagram from a process is ignored. */
	if (fromlen != sizeof(from) || from.nl_pid != 0)
		return 0;
	return sw_procev_parse(buf, (size_t)n, fn, arg);
}
