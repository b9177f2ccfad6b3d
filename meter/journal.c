/*
 * The meter's durable journal: an append-only file of JSON lines, each with a sequence
 * number, written with group commit.
 *
 * Records go to an in-memory batch. When no flush is running, the batch is handed to
 * libuv's thread pool (write(2), then fdatasync) and the next batch starts collecting;
 * when the flush completes, everyone waiting for a record it held is told, and the
 * next batch goes. One fsync serves every request that arrived while the last one ran,
 * and the loop thread never touches the disk. At start the file is replayed (a torn
 * last line is ignored, a corrupt line elsewhere is logged and skipped) and replaced by
 * a snapshot of the live state; past a size bound it is compacted the same way, on the
 * thread pool. Every record keeps its JSON text, made once, so a snapshot costs the
 * loop a reference per record; the lines are made and written on the thread pool.
 */
#include "meter.h"

#include "error.h"
#include "json.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* A journal line longer than this is corrupt: the largest record is well under it. */
#define LINE_MAX_BYTES (1024 * 1024)
/* A snapshot goes to the file in writes of about this much. */
#define SNAP_CHUNK (256 * 1024)

struct jwait {
	struct jwait *next;
	journal_done_fn cb;
	void *arg;
};

struct batch {
	struct journal_buf buf;
	struct jwait *head, **tail;
	uint64_t last_seq;
	size_t nrec;
};

struct journal {
	uv_loop_t *loop;
	char path[PATH_MAX + 32], tmp[PATH_MAX + 32], dir[PATH_MAX + 16];
	int fd;
	uint64_t next_seq, durable_seq;
	uint64_t size;	     /* bytes of the file known to be good */
	uint64_t compact_at; /* compact when the file would grow past this */
	struct batch cur, flushing;
	int busy;
	uv_work_t work;
	uv_idle_t idle;
	/* the job on the thread pool: an append of `flushing`, or a snapshot */
	int job_compact, job_compacted, job_errno, new_fd;
	int lost; /* a batch failed to write: the file lags memory until a snapshot */
	struct journal_snap snap;
	uint64_t snap_last_seq;
	journal_snapshot_fn snapshot;
	void *arg;
	uint64_t flushes, records, max_batch;
	struct sw_counter *mx_fsyncs;
	struct sw_histogram *mx_batch; /* records per fsync of an append */
};

static void batch_reset(struct batch *b)
{
	memset(b, 0, sizeof(*b));
	b->tail = &b->head;
}

static int buf_put(struct journal_buf *b, const char *s, size_t n)
{
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		char *d;

		while (cap < b->len + n)
			cap *= 2;
		if (!(d = realloc(b->data, cap)))
			return SW_ENOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	return 0;
}

struct jtext *jtext_new(const char *s, size_t len)
{
	struct jtext *t = malloc(sizeof(*t) + len + 1);

	if (!t)
		return NULL;
	t->refs = 1;
	t->len = len;
	memcpy(t->s, s, len);
	t->s[len] = '\0';
	return t;
}

struct jtext *jtext_dump(json_t *j)
{
	char *text = j ? sw_json_dump(j) : NULL;
	struct jtext *t = text ? jtext_new(text, strlen(text)) : NULL;

	free(text);
	json_decref(j);
	return t;
}

struct jtext *jtext_ref(struct jtext *t)
{
	if (t)
		t->refs++;
	return t;
}

void jtext_unref(struct jtext *t)
{
	if (t && --t->refs == 0)
		free(t);
}

/* One line {"seq":N,"t":"type",members,"key":text}; `text` is an object, whose members
 * are spliced in when `key` is NULL. Runs on the loop and on the journal's thread. */
static int line_put(struct journal_buf *b, uint64_t seq, const char *type, const char *members,
		    const char *key, const char *text, size_t tlen)
{
	char head[128];
	int n, rc;

	n = snprintf(head, sizeof(head), "{\"seq\":%llu,\"t\":\"%s\"", (unsigned long long)seq,
		     type);
	if (n < 0 || (size_t)n >= sizeof(head))
		return SW_EINVAL;
	if ((rc = buf_put(b, head, (size_t)n)))
		return rc;
	if (members && *members &&
	    ((rc = buf_put(b, ",", 1)) || (rc = buf_put(b, members, strlen(members)))))
		return rc;
	if (text && key) {
		n = snprintf(head, sizeof(head), ",\"%s\":", key);
		if (n < 0 || (size_t)n >= sizeof(head))
			return SW_EINVAL;
		if ((rc = buf_put(b, head, (size_t)n)) || (rc = buf_put(b, text, tlen)))
			return rc;
	} else if (text && tlen > 2) {
		if ((rc = buf_put(b, ",", 1)) || (rc = buf_put(b, text + 1, tlen - 2)))
			return rc;
	}
	return buf_put(b, "}\n", 2);
}

static void snap_cleanup(struct journal_snap *s)
{
	for (size_t i = 0; i < s->n; i++)
		jtext_unref(s->recs[i].text);
	free(s->recs);
	memset(s, 0, sizeof(*s));
}

int journal_snap_add(struct journal *j, struct journal_snap *s, const char *type, const char *key,
		     struct jtext *text, uint64_t *seq)
{
	if (!text || text->len < 2 || text->s[0] != '{')
		return SW_EINVAL;
	if (s->n == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 1024;
		struct journal_snap_rec *r = realloc(s->recs, cap * sizeof(*r));

		if (!r)
			return SW_ENOMEM;
		s->recs = r;
		s->cap = cap;
	}
	s->recs[s->n++] = (struct journal_snap_rec){
	    .seq = j->next_seq, .type = type, .key = key, .text = jtext_ref(text)};
	if (seq)
		*seq = j->next_seq;
	j->next_seq++;
	return 0;
}

int journal_parse_line(const char *line, size_t len, json_t **out, uint64_t *seq, char *err,
		       size_t errlen)
{
	json_t *j = NULL;
	int64_t s = 0;
	const char *type;
	int rc;

	*out = NULL;
	if ((rc = sw_json_parse_object(line, len, &j, err, errlen)))
		return rc;
	if ((rc = sw_json_int(j, "seq", 1, INT64_MAX, 1, &s, err, errlen)) ||
	    (rc = sw_json_str(j, "t", 16, 1, &type, err, errlen))) {
		json_decref(j);
		return rc;
	}
	*seq = (uint64_t)s;
	*out = j;
	return 0;
}

static int write_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, p, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* The snapshot's lines, made here from the records' texts (the loop only collected
 * them). Returns 0 or -errno. */
static int write_snap_lines(int fd, struct journal_snap *s)
{
	struct journal_buf b = {0};
	int rc = 0;

	s->bytes = 0;
	for (size_t i = 0; i < s->n && !rc; i++) {
		const struct journal_snap_rec *r = &s->recs[i];

		if (line_put(&b, r->seq, r->type, NULL, r->key, r->text->s, r->text->len)) {
			rc = -ENOMEM;
			break;
		}
		if (b.len >= SNAP_CHUNK || i + 1 == s->n) {
			rc = write_all(fd, b.data, b.len);
			s->bytes += b.len;
			b.len = 0;
		}
	}
	free(b.data);
	return rc;
}

/* Writes the snapshot to journal.tmp, syncs it, renames it over the journal and syncs
 * the folder; the file stays open for appending as *newfd. Returns 0 or -errno. */
static int write_snapshot(struct journal *j, struct journal_snap *s, int *newfd)
{
	int fd, dfd, rc;

	fd = open(j->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if ((rc = write_snap_lines(fd, s)) || (fsync(fd) < 0 && (rc = -errno)) ||
	    (rename(j->tmp, j->path) < 0 && (rc = -errno))) {
		close(fd);
		unlink(j->tmp);
		return rc;
	}
	dfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0 || fsync(dfd) < 0) {
		rc = -errno;
		if (dfd >= 0)
			close(dfd);
		close(fd);
		return rc;
	}
	close(dfd);
	*newfd = fd;
	return 0;
}

/* Thread pool: nothing here touches the loop or the lease table; the snapshot's texts
 * are read only, and let go on the loop when the job is done. */
static void work_cb(uv_work_t *w)
{
	struct journal *j = w->data;
	int rc;

	j->job_errno = 0;
	j->job_compacted = 0;
	if (j->job_compact) {
		if (write_snapshot(j, &j->snap, &j->new_fd) == 0) {
			j->job_compacted = 1;
			return;
		}
		/* No snapshot (disk full?): the batch it replaced still goes to the old file. */
	}
	if (j->flushing.buf.len == 0)
		return;
	rc = write_all(j->fd, j->flushing.buf.data, j->flushing.buf.len);
	if (!rc && fdatasync(j->fd) < 0)
		rc = -errno;
	if (rc) {
		j->job_errno = -rc;
		/* Cut a partial write off, so the next record starts on a line of its own. */
		if (ftruncate(j->fd, (off_t)j->size) < 0)
			(void)0;
	}
}

static void start_flush(struct journal *j);

static void after_work_cb(uv_work_t *w, int status)
{
	struct journal *j = w->data;
	struct jwait *wt, *next;
	int rc = 0;

	if (j->job_compacted) {
		close(j->fd);
		j->fd = j->new_fd;
		j->size = j->snap.bytes;
		j->durable_seq = j->snap_last_seq;
		j->compact_at = j->size * 2 > METER_JOURNAL_MAX ? j->size * 2 : METER_JOURNAL_MAX;
		if (j->lost)
			sw_info("journal %s: rewritten from memory after a failed write", j->path);
		j->lost = 0;
		sw_info("journal compacted to %llu bytes", (unsigned long long)j->size);
	} else if (j->job_errno) {
		sw_err("journal %s: cannot write: %s", j->path, strerror(j->job_errno));
		rc = SW_EIO;
		/* Memory holds what the file does not: the next flush is a snapshot. */
		j->lost = 1;
	} else {
		if (j->job_compact && !j->lost) {
			sw_warn("journal %s: cannot compact; appending instead", j->path);
			j->compact_at = j->size * 2;
		}
		j->size += j->flushing.buf.len;
		if (j->flushing.last_seq > j->durable_seq)
			j->durable_seq = j->flushing.last_seq;
	}
	j->flushes++;
	j->records += j->flushing.nrec;
	if (j->job_compacted || (!j->job_errno && j->flushing.buf.len)) {
		sw_counter_inc(j->mx_fsyncs);
		if (!j->job_compacted)
			sw_histogram_observe(j->mx_batch, j->flushing.nrec);
	}
	if (j->flushing.nrec > j->max_batch)
		j->max_batch = j->flushing.nrec;
	/* Back on the loop: the records' texts can be let go. */
	snap_cleanup(&j->snap);
	wt = j->flushing.head;
	free(j->flushing.buf.data);
	batch_reset(&j->flushing);
	j->busy = 0;
	for (; wt; wt = next) {
		next = wt->next;
		wt->cb(wt->arg, rc);
		free(wt);
	}
	start_flush(j);
}

static void start_flush(struct journal *j)
{
	if (j->busy || (j->cur.buf.len == 0 && !j->cur.head))
		return;
	j->job_compact = 0;
	if (j->snapshot && (j->lost || j->size + j->cur.buf.len > j->compact_at)) {
		memset(&j->snap, 0, sizeof(j->snap));
		if (j->snapshot(j->arg, j, &j->snap) == 0) {
			j->job_compact = 1;
			j->snap_last_seq = j->next_seq - 1;
		} else {
			snap_cleanup(&j->snap);
		}
	}
	j->flushing = j->cur;
	if (!j->cur.head)
		j->flushing.tail = &j->flushing.head;
	batch_reset(&j->cur);
	j->busy = 1;
	j->work.data = j;
	if (uv_queue_work(j->loop, &j->work, work_cb, after_work_cb) != 0) {
		/* Only on a closing loop; fail the waiters rather than leave them hanging. */
		j->job_errno = EIO;
		after_work_cb(&j->work, 0);
	}
}

static void on_idle(uv_idle_t *h)
{
	uv_idle_stop(h);
	start_flush(h->data);
}

/* The flush starts at the loop's next turn, so every record appended while this turn's
 * events are handled rides in the same batch. */
static void kick(struct journal *j)
{
	if (!j->busy)
		uv_idle_start(&j->idle, on_idle);
}

int journal_append_text(struct journal *j, const char *type, const char *members, const char *key,
			const struct jtext *text, uint64_t *seq)
{
	size_t len = j->cur.buf.len;
	int rc;

	if (text && (text->len < 2 || text->s[0] != '{'))
		return SW_EINVAL;
	rc = line_put(&j->cur.buf, j->next_seq, type, members, key, text ? text->s : NULL,
		      text ? text->len : 0);
	if (rc) {
		j->cur.buf.len = len; /* no half line */
		return rc;
	}
	j->cur.last_seq = j->next_seq;
	j->cur.nrec++;
	if (seq)
		*seq = j->next_seq;
	j->next_seq++;
	kick(j);
	return 0;
}

int journal_wait(struct journal *j, journal_done_fn cb, void *arg)
{
	struct batch *b;
	struct jwait *w;

	if (j->cur.buf.len > 0)
		b = &j->cur;
	else if (j->busy)
		b = &j->flushing;
	else {
		cb(arg, 0);
		return 0;
	}
	if (!(w = calloc(1, sizeof(*w))))
		return SW_ENOMEM;
	w->cb = cb;
	w->arg = arg;
	*b->tail = w;
	b->tail = &w->next;
	return 0;
}

uint64_t journal_durable_seq(const struct journal *j)
{
	return j->durable_seq;
}

int journal_busy(const struct journal *j)
{
	return j->busy || j->cur.buf.len > 0;
}

int journal_failing(const struct journal *j)
{
	return j->lost;
}

void journal_set_metrics(struct journal *j, struct sw_counter *fsyncs,
			 struct sw_histogram *records_per_fsync)
{
	j->mx_fsyncs = fsyncs;
	j->mx_batch = records_per_fsync;
}

void journal_stats(const struct journal *j, uint64_t *flushes, uint64_t *records,
		   uint64_t *max_batch)
{
	*flushes = j->flushes;
	*records = j->records;
	*max_batch = j->max_batch;
}

/* Reads one line of at most LINE_MAX_BYTES; returns its length, -1 at the end of the
 * file, and sets *complete to whether a newline ended it. A longer line is consumed
 * and reported with *toolong. */
static ssize_t read_line(FILE *f, char *buf, int *complete, int *toolong)
{
	size_t n = 0;
	int c;

	*complete = 0;
	*toolong = 0;
	while ((c = getc_unlocked(f)) != EOF) {
		if (c == '\n') {
			*complete = 1;
			break;
		}
		if (n < LINE_MAX_BYTES)
			buf[n++] = (char)c;
		else
			*toolong = 1;
	}
	if (c == EOF && n == 0 && !*toolong)
		return -1;
	buf[n] = '\0';
	return (ssize_t)n;
}

static int replay(struct journal *j, journal_apply_fn apply, void *arg, char *err, size_t errlen)
{
	FILE *f = fopen(j->path, "r");
	char *line = NULL, sub[256];
	size_t lineno = 0, applied = 0, skipped = 0;
	uint64_t max_seq = 0;
	int complete, toolong, rc = 0;
	ssize_t n;

	if (!f) {
		if (errno == ENOENT)
			return 0;
		sw_seterr(err, errlen, "cannot read %s: %s", j->path, strerror(errno));
		return SW_EIO;
	}
	if (!(line = malloc(LINE_MAX_BYTES + 1))) {
		rc = SW_ENOMEM;
		goto out;
	}
	while ((n = read_line(f, line, &complete, &toolong)) >= 0) {
		json_t *rec;
		uint64_t seq;

		lineno++;
		if (!complete) {
			/* A crash in the middle of a write: the record was never acknowledged. */
			sw_warn("journal %s:%zu: ignoring a torn last line", j->path, lineno);
			break;
		}
		if (n == 0)
			continue;
		if (toolong) {
			sw_warn("journal %s:%zu: skipping a corrupt record: longer than %d bytes",
				j->path, lineno, LINE_MAX_BYTES);
			skipped++;
			continue;
		}
		if (journal_parse_line(line, (size_t)n, &rec, &seq, sub, sizeof(sub))) {
			sw_warn("journal %s:%zu: skipping a corrupt record: %s", j->path, lineno,
				sub);
			skipped++;
			continue;
		}
		if (seq > max_seq)
			max_seq = seq;
		if (apply(arg, rec, sub, sizeof(sub))) {
			sw_warn("journal %s:%zu: skipping a record: %s", j->path, lineno, sub);
			skipped++;
		} else {
			applied++;
		}
		json_decref(rec);
	}
	if (ferror(f)) {
		sw_seterr(err, errlen, "cannot read %s: %s", j->path, strerror(errno));
		rc = SW_EIO;
		goto out;
	}
	j->next_seq = max_seq + 1;
	sw_info("journal %s: replayed %zu records%s", j->path, applied,
		skipped ? " (some skipped, see above)" : "");
out:
	free(line);
	fclose(f);
	return rc;
}

int journal_open(uv_loop_t *loop, const char *dir, journal_apply_fn apply,
		 journal_snapshot_fn snapshot, void *arg, struct journal **out, char *err,
		 size_t errlen)
{
	struct journal *j;
	int rc;

	*out = NULL;
	if (!(j = calloc(1, sizeof(*j))))
		return SW_ENOMEM;
	j->loop = loop;
	j->fd = -1;
	j->next_seq = 1;
	j->snapshot = snapshot;
	j->arg = arg;
	j->compact_at = METER_JOURNAL_MAX;
	batch_reset(&j->cur);
	batch_reset(&j->flushing);
	if (snprintf(j->dir, sizeof(j->dir), "%s", dir) >= (int)sizeof(j->dir)) {
		sw_seterr(err, errlen, "folder name too long: %s", dir);
		rc = SW_ETOOBIG;
		goto fail;
	}
	snprintf(j->path, sizeof(j->path), "%s/journal", dir);
	snprintf(j->tmp, sizeof(j->tmp), "%s/journal.tmp", dir);
	if ((rc = replay(j, apply, arg, err, errlen)))
		goto fail;
	/* Start from a snapshot: the file holds only what is live, with no torn tail. */
	if ((rc = snapshot(arg, j, &j->snap))) {
		sw_seterr(err, errlen, "cannot build a snapshot of the journal: %s",
			  sw_strerror(rc));
		goto fail;
	}
	if ((rc = write_snapshot(j, &j->snap, &j->fd))) {
		sw_seterr(err, errlen, "cannot write %s: %s", j->tmp, strerror(-rc));
		rc = SW_EIO;
		goto fail;
	}
	j->size = j->snap.bytes;
	j->compact_at = j->size * 2 > METER_JOURNAL_MAX ? j->size * 2 : METER_JOURNAL_MAX;
	j->durable_seq = j->next_seq - 1;
	snap_cleanup(&j->snap);
	uv_idle_init(loop, &j->idle);
	j->idle.data = j;
	*out = j;
	return 0;
fail:
	snap_cleanup(&j->snap);
	free(j);
	return rc;
}

static void on_closed(uv_handle_t *h)
{
	free(h->data);
}

void journal_close(struct journal *j)
{
	if (!j)
		return;
	/* Whatever was acknowledged is on disk already; what is pending still gets its
	 * flush and its replies. Bounded by the disk: no network here. */
	while (journal_busy(j)) {
		start_flush(j);
		uv_run(j->loop, UV_RUN_ONCE);
	}
	free(j->cur.buf.data);
	if (j->fd >= 0)
		close(j->fd);
	uv_idle_stop(&j->idle);
	uv_close((uv_handle_t *)&j->idle, on_closed);
}
