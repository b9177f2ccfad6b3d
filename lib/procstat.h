/*
 * /proc/PID/stat, read one way: the fields siteward uses of a process. Its second field
 * (the command name in parentheses) is the process's own to choose and may hold spaces
 * and parentheses, so the fields are counted from the last ')'.
 */
#ifndef SW_PROCSTAT_H
#define SW_PROCSTAT_H

#include <stddef.h>
#include <sys/types.h>

struct sw_proc_stat {
	char state;		      /* R, S, D, Z, X, … */
	pid_t ppid, pgrp;	      /* fields 4 and 5 */
	unsigned long long utime;     /* 14, clock ticks */
	unsigned long long stime;     /* 15 */
	unsigned long long cutime;    /* 16: of its children it has waited for */
	unsigned long long cstime;    /* 17 */
	unsigned long long starttime; /* 22: ticks after boot */
};

/* Reads the text of a stat file (`len` bytes, need not end in NUL). 0, or SW_EINVAL
 * when it is not one. */
int sw_proc_stat_parse(const char *buf, size_t len, struct sw_proc_stat *out);
/* Reads /proc/PID/stat. 0, SW_ENOTFOUND (no such process, or unreadable) or
 * SW_EINVAL. */
int sw_proc_stat_read(pid_t pid, struct sw_proc_stat *out);

#endif
