/* /proc/PID/stat, read one way. */
#include "procstat.h"

#include "error.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int sw_proc_stat_parse(const char *buf, size_t len, struct sw_proc_stat *out)
{
	unsigned long long v[20];
	const char *p = NULL, *end = buf + len;
	int field;

	memset(out, 0, sizeof(*out));
	for (const char *q = buf; q < end; q++)
		if (*q == ')')
			p = q;
	/* ") S " and the fields after it, each one number */
	if (!p || end - p < 4 || p[1] != ' ' || p[3] != ' ' ||
	    !((p[2] >= 'A' && p[2] <= 'Z') || (p[2] >= 'a' && p[2] <= 'z')))
		return SW_EINVAL;
	out->state = p[2];
	p += 3;
	for (field = 4; field <= 22; field++) {
		unsigned long long n = 0;
		int neg = 0, digits = 0;

		if (p >= end || *p != ' ')
			return SW_EINVAL;
		p++;
		if (p < end && *p == '-') {
			neg = 1;
			p++;
		}
		for (; p < end && *p >= '0' && *p <= '9'; p++, digits++)
			n = n * 10 + (unsigned long long)(*p - '0');
		if (!digits || digits > 20)
			return SW_EINVAL;
		v[field - 4] = neg ? 0 : n;
	}
	out->ppid = (pid_t)v[0];
	out->pgrp = (pid_t)v[1];
	out->utime = v[14 - 4];
	out->stime = v[15 - 4];
	out->cutime = v[16 - 4];
	out->cstime = v[17 - 4];
	out->starttime = v[22 - 4];
	return 0;
}

int sw_proc_stat_read(pid_t pid, struct sw_proc_stat *out)
{
	char path[64], buf[1024];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return SW_ENOTFOUND;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	return n > 0 ? sw_proc_stat_parse(buf, (size_t)n, out) : SW_ENOTFOUND;
}
