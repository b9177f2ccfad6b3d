/* Process events: datagrams parsed (threads and damage skipped), and, where permitted,
 * the kernel's own events for a child of this test. */
#include "error.h"
#include "procev.h"
#include "procstat.h"
#include "util.h"

#include <linux/cn_proc.h>
#include <linux/connector.h>
#include <linux/netlink.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

struct seen {
	struct sw_procev ev[16];
	int n;
};

static void collect(void *arg, const struct sw_procev *ev)
{
	struct seen *s = arg;

	if (s->n < 16)
		s->ev[s->n++] = *ev;
}

/* Appends one connector message holding `pe` to buf at *len. */
static void put(char *buf, size_t *len, unsigned idx, const struct proc_event *pe)
{
	struct nlmsghdr nl = {.nlmsg_len = NLMSG_LENGTH(sizeof(struct cn_msg) + sizeof(*pe)),
			      .nlmsg_type = NLMSG_DONE};
	struct cn_msg cn = {.id = {.idx = idx, .val = CN_VAL_PROC}, .len = sizeof(*pe)};

	memcpy(buf + *len, &nl, sizeof(nl));
	memcpy(buf + *len + NLMSG_HDRLEN, &cn, sizeof(cn));
	memcpy(buf + *len + NLMSG_LENGTH(sizeof(cn)), pe, sizeof(*pe));
	*len += NLMSG_ALIGN(nl.nlmsg_len);
}

static void test_parse(void **state)
{
	char buf[4096];
	size_t len = 0;
	struct proc_event pe;
	struct seen s = {0};

	memset(&pe, 0, sizeof(pe));
	pe.what = PROC_EVENT_EXEC;
	pe.event_data.exec.process_pid = pe.event_data.exec.process_tgid = 100;
	put(buf, &len, CN_IDX_PROC, &pe);
	/* a thread of process 200 exits: not the process */
	memset(&pe, 0, sizeof(pe));
	pe.what = PROC_EVENT_EXIT;
	pe.event_data.exit.process_pid = 201;
	pe.event_data.exit.process_tgid = 200;
	put(buf, &len, CN_IDX_PROC, &pe);
	pe.event_data.exit.process_pid = 200;
	put(buf, &len, CN_IDX_PROC, &pe);
	/* another connector's message, a fork: no events */
	put(buf, &len, CN_IDX_PROC + 1, &pe);
	memset(&pe, 0, sizeof(pe));
	pe.what = PROC_EVENT_FORK;
	put(buf, &len, CN_IDX_PROC, &pe);
	assert_int_equal(sw_procev_parse(buf, len, collect, &s), 2);
	assert_int_equal(s.n, 2);
	assert_int_equal(s.ev[0].kind, SW_PROCEV_EXEC);
	assert_int_equal(s.ev[0].pid, 100);
	assert_int_equal(s.ev[1].kind, SW_PROCEV_EXIT);
	assert_int_equal(s.ev[1].pid, 200);
	/* cut short anywhere: only whole messages count, nothing read past the end */
	for (size_t cut = 0; cut < len; cut++) {
		struct seen t = {0};
		int n = sw_procev_parse(buf, cut, collect, &t);
		assert_true(n >= 0 && n <= 2);
	}
	/* a message claiming more than the datagram holds */
	((struct nlmsghdr *)buf)->nlmsg_len = 100000;
	s.n = 0;
	assert_int_equal(sw_procev_parse(buf, len, collect, &s), 0);
}

static void test_kernel_events(void **state)
{
	char err[256], buf[8192];
	int fd = sw_procev_open(err, sizeof(err)), saw_exec = 0, saw_exit = 0;
	int64_t deadline;
	pid_t pid;

	if (fd < 0) {
		/* not permitted (an older kernel, without CAP_NET_ADMIN) or not there (another
		 * network namespace): the agent scans /proc instead */
		printf("the process connector: %s\n", err);
		assert_true(fd == SW_EDENIED || fd == SW_ENOTFOUND);
		skip();
	}
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		execl("/bin/true", "true", (char *)NULL);
		_exit(127);
	}
	waitpid(pid, NULL, 0);
	deadline = sw_mono_ms() + 5000;
	while ((!saw_exec || !saw_exit) && sw_mono_ms() < deadline) {
		struct seen s = {0};
		int rc = sw_procev_read(fd, buf, sizeof(buf), collect, &s);

		if (rc == SW_EBUSY) {
			usleep(1000);
			continue;
		}
		assert_true(rc >= 0);
		for (int i = 0; i < s.n; i++) {
			if (s.ev[i].pid != pid)
				continue;
			if (s.ev[i].kind == SW_PROCEV_EXEC)
				saw_exec = 1;
			else if (saw_exec)
				saw_exit = 1; /* in order */
		}
	}
	sw_procev_close(fd);
	assert_true(saw_exec);
	assert_true(saw_exit);
}

/* /proc/PID/stat: a command name with spaces and parentheses does not shift the fields;
 * a line cut short is refused. */
static void test_proc_stat(void **state)
{
	static const char line[] = "77 (a) b ) S 1 2 3) R 9 77 77 0 -1 4194560 1 0 0 0 "
				   "300 40 5 6 20 0 1 0 123456 1000 100\n";
	struct sw_proc_stat st;

	assert_int_equal(sw_proc_stat_parse(line, strlen(line), &st), 0);
	assert_int_equal(st.state, 'R');
	assert_int_equal(st.ppid, 9);
	assert_int_equal(st.pgrp, 77);
	assert_int_equal(st.utime, 300);
	assert_int_equal(st.stime, 40);
	assert_int_equal(st.cutime, 5);
	assert_int_equal(st.cstime, 6);
	assert_int_equal(st.starttime, 123456);
	assert_int_not_equal(sw_proc_stat_parse(line, 40, &st), 0);
	assert_int_not_equal(sw_proc_stat_parse("1 (x", 4, &st), 0);
	assert_int_equal(sw_proc_stat_read(getpid(), &st), 0);
	assert_int_equal(st.ppid, getppid());
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_proc_stat),
	    cmocka_unit_test(test_parse),
	    cmocka_unit_test(test_kernel_events),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
