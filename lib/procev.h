/*
 * The kernel's process events through the proc connector (NETLINK_CONNECTOR,
 * CN_IDX_PROC): a process executing a program, and a process exiting. The connector lives
 * in the machine's own network namespace only, and older kernels let only
 * CAP_NET_ADMIN subscribe; where it cannot be had, callers scan /proc instead.
 */
#ifndef SW_PROCEV_H
#define SW_PROCEV_H

#include <stddef.h>

enum sw_procev_kind { SW_PROCEV_EXEC, SW_PROCEV_EXIT };

struct sw_procev {
	enum sw_procev_kind kind;
	int pid; /* the process (thread group), never one of its other threads */
};

/* A non-blocking socket subscribed to process events: its descriptor, or SW_EDENIED
 * (not permitted here), SW_ENOTFOUND (no connector in this kernel or network namespace)
 * or SW_EIO, with the reason in `err`. Close it with close(2),
 * after sw_procev_close() has unsubscribed. */
int sw_procev_open(char *err, size_t errlen);
void sw_procev_close(int fd);

/* Reads one datagram from `fd` into `buf` and gives its events to `fn`. Returns the
 * number of events, 0 for a datagram that holds none or that the kernel did not send,
 * SW_EBUSY when nothing is waiting, SW_ETOOBIG when the kernel dropped events (the
 * socket's buffer was full: the caller must look at every process again), SW_EIO. */
int sw_procev_read(int fd, void *buf, size_t buflen,
		   void (*fn)(void *arg, const struct sw_procev *ev), void *arg);

/* The events of one datagram of netlink messages; malformed parts are skipped. */
int sw_procev_parse(const void *buf, size_t len, void (*fn)(void *arg, const struct sw_procev *ev),
		    void *arg);

#endif
