/*
 * Writes to the site database off the loop: jobs run one at a time, in the order they
 * came, on the thread pool, through a connection of their own, so a slow or locked
 * database delays no heartbeat and no request. Each statement is bounded by the
 * database's own busy or statement timeout; a job slower than its bound is logged, and
 * the queue waits for it all the same, since the connection is the job's until then.
 */
#include "server.h"

#include "error.h"
#include "log.h"
#include "work.h"

#include <stdlib.h>

struct dbq_job {
	struct dbq_job *next;
	struct server *s;
	struct sw_db *db;
	unsigned bound_ms;
	dbq_run_fn run;
	dbq_done_fn done;
	void *arg;
	uint64_t queued_ns; /* uv_hrtime() when pushed */
};

static void next(struct server *s);

/* Runs a job, timed: how long it waited behind others, and how long it took. */
static void job_timed(struct dbq_job *j, struct sw_db *db)
{
	uint64_t start = uv_hrtime();

	sw_histogram_observe(j->s->mx_db_wait, (start - j->queued_ns) / 1000);
	j->run(db, j->arg);
	sw_histogram_observe(j->s->mx_db_job, (uv_hrtime() - start) / 1000);
}

static void job_run(void *arg)
{
	struct dbq_job *j = arg;

	job_timed(j, j->db);
}

static void job_slow(void *arg, int timed_out)
{
	struct dbq_job *j = arg;

	if (timed_out)
		sw_warn("a write to the site database has taken over %u s; later writes wait "
			"for it",
			j->bound_ms / 1000);
}

static void job_release(void *arg)
{
	struct dbq_job *j = arg;
	struct server *s = j->s;

	if (j->db != s->dbq_db)
		sw_db_close(j->db); /* detached meanwhile */
	s->dbq_busy = 0;
	j->done(s, j->arg);
	free(j);
	next(s);
}

/* Starts the next job; once detached, or when the pool will not take it, runs what is
 * queued on the loop's own connection, in a loop rather than by recursion. */
static void next(struct server *s)
{
	struct dbq_job *j;

	while (!s->dbq_busy && (j = s->dbq_head)) {
		s->dbq_head = j->next;
		if (!s->dbq_head)
			s->dbq_tail = &s->dbq_head;
		if (s->dbq_db) {
			j->db = s->dbq_db;
			s->dbq_busy = 1;
			if (sw_work_start(s->loop, j->bound_ms, job_run, job_slow, job_release,
					  j) == 0)
				return;
			s->dbq_busy = 0;
		}
		job_timed(j, s->db);
		j->done(s, j->arg);
		free(j);
	}
}

int dbq_open(struct server *s, char *err, size_t errlen)
{
	s->dbq_tail = &s->dbq_head;
	return sw_db_open(&s->db_opts, &s->dbq_db, err, errlen);
}

int dbq_push(struct server *s, unsigned bound_ms, dbq_run_fn run, dbq_done_fn done, void *arg)
{
	struct dbq_job *j = calloc(1, sizeof(*j));

	if (!j)
		return SW_ENOMEM;
	j->s = s;
	j->bound_ms = bound_ms;
	j->run = run;
	j->done = done;
	j->arg = arg;
	j->queued_ns = uv_hrtime();
	if (!s->dbq_tail) /* not open yet (the journal at start-up): runs on the loop */
		s->dbq_tail = &s->dbq_head;
	*s->dbq_tail = j;
	s->dbq_tail = &j->next;
	next(s);
	return 0;
}

void dbq_detach(struct server *s)
{
	struct sw_db *db = s->dbq_db;

	s->dbq_db = NULL;
	if (!s->dbq_busy)
		sw_db_close(db); /* else job_release closes it */
}

size_t dbq_length(const struct server *s)
{
	size_t n = 0;

	for (const struct dbq_job *j = s->dbq_head; j; j = j->next)
		n++;
	return n;
}

void dbq_drain(struct server *s)
{
	dbq_detach(s);
	while (s->dbq_busy)
		uv_run(s->loop, UV_RUN_ONCE);
	next(s);
}
