/*
 * How long PROGRAM has used no processor: the CPU time of it and of everything it
 * started, read from /proc at each heartbeat. A product with an idle limit has its
 * license taken back by the metering server once this passes the limit.
 */
#include "run.h"

#include "procstat.h"

#include <dirent.h>
#include <stdio.h>

#define IDLE_MAX_PROCS 4096 /* a tree bigger than this is counted this far */
#define IDLE_MAX_DEPTH 64

/* The ticks of `pid` and its descendants: its own and its waited-for children's (which
 * keeps the sum from falling when one of them ends), then each live child's. */
static unsigned long long tree_ticks(pid_t pid, int depth, size_t *count)
{
	struct sw_proc_stat st;
	unsigned long long t;
	char path[64];
	struct dirent *e;
	DIR *d;

	if (depth > IDLE_MAX_DEPTH || ++*count > IDLE_MAX_PROCS || sw_proc_stat_read(pid, &st))
		return 0;
	t = st.utime + st.stime + st.cutime + st.cstime;
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	if (!(d = opendir(path)))
		return t;
	while ((e = readdir(d))) {
		char cpath[128];
		long c;
		FILE *f;

		if (e->d_name[0] < '0' || e->d_name[0] > '9')
			continue;
		snprintf(cpath, sizeof(cpath), "/proc/%d/task/%.20s/children", (int)pid, e->d_name);
		if (!(f = fopen(cpath, "re")))
			continue;
		/* pids separated by spaces, read one number at a time (a long list is not cut
		 * in the middle of one) */
		while (fscanf(f, "%ld", &c) == 1 && c > 0)
			t += tree_ticks((pid_t)c, depth + 1, count);
		fclose(f);
	}
	closedir(d);
	return t;
}

void idle_sample(struct run *r, int64_t mono)
{
	struct lease *l = &r->lease;
	size_t count = 0;
	unsigned long long t;

	if (r->child.pid <= 0 || r->child.exited)
		return;
	t = tree_ticks(r->child.pid, 0, &count);
	if (!l->cpu_seen || t != l->cpu_ticks) {
		l->cpu_ticks = t;
		l->cpu_changed = mono;
		l->cpu_seen = 1;
	}
}

int64_t idle_seconds(const struct run *r, int64_t mono)
{
	return r->lease.cpu_seen ? (mono - r->lease.cpu_changed) / 1000 : 0;
}
