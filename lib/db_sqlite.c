#include "db_impl.h"
#include "error.h"
#include "log.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STACK_COLS 16

struct db_sqlite {
	struct sw_db base;
	sqlite3 *conn;
	struct db_cache cache;
};

/* Maps the connection's last error to an SW_E* code and a sentence. */
static int map_error(struct db_sqlite *s, int code, char *err, size_t errlen)
{
	switch (code & 0xff) {
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		sw_seterr(err, errlen, "database locked for more than %u ms",
			  s->base.busy_timeout_ms);
		return SW_EBUSY;
	case SQLITE_NOMEM: sw_seterr(err, errlen, "out of memory"); return SW_ENOMEM;
	case SQLITE_CONSTRAINT:
		sw_seterr(err, errlen, "%s", sqlite3_errmsg(s->conn));
		/* Only a duplicate key means "already exists", as on PostgreSQL. */
		if (code == SQLITE_CONSTRAINT_PRIMARYKEY || code == SQLITE_CONSTRAINT_UNIQUE)
			return SW_EEXIST;
		return SW_EDB;
	}
	sw_seterr(err, errlen, "%s", sqlite3_errmsg(s->conn));
	return SW_EDB;
}

/* Prepares the first statement of `sql` (*out is NULL if it holds none) and refuses a
 * second one, which PostgreSQL would refuse too. */
static int prepare(struct db_sqlite *s, const char *sql, sqlite3_stmt **out, char *err,
		   size_t errlen)
{
	sqlite3_stmt *st = NULL;
	sqlite3_stmt *extra = NULL;
	const char *tail = NULL;
	int code;
	int rc = 0;

	code = sqlite3_prepare_v3(s->conn, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, &tail);
	if (code != SQLITE_OK) {
		rc = map_error(s, code, err, errlen);
		goto out;
	}
	if (tail != NULL && tail[strspn(tail, " \t\r\n")] != '\0') {
		code = sqlite3_prepare_v2(s->conn, tail, -1, &extra, NULL);
		if (code != SQLITE_OK || extra != NULL) {
			sw_seterr(err, errlen, "more than one statement in \"%s\"", sql);
			rc = SW_EINVAL;
			goto out;
		}
	}
out:
	sqlite3_finalize(extra);
	if (rc < 0) {
		sqlite3_finalize(st);
		st = NULL;
	}
	*out = st;
	return rc;
}

/* The prepared statement for `sql`: from the cache (*cached set) or, when its cached
 * copy is running already under a row callback, a fresh one the caller finalizes. */
static int statement(struct db_sqlite *s, const char *sql, struct db_cached **cached,
		     sqlite3_stmt **out, char *err, size_t errlen)
{
	struct db_cached *c = db_cache_find(&s->cache, sql);
	int rc;

	*cached = NULL;
	if (c != NULL && !c->busy) {
		*cached = c;
		*out = c->stmt;
		return 0;
	}
	rc = prepare(s, sql, out, err, errlen);
	if (rc < 0 || *out == NULL || c != NULL)
		return rc;
	c = db_cache_victim(&s->cache);
	if (c == NULL)
		return 0;
	if (c->sql != NULL) {
		sqlite3_finalize(c->stmt);
		db_cache_clear(c);
	}
	/* Out of memory for the key, it runs uncached. */
	if (db_cache_fill(&s->cache, c, sql) == 0) {
		c->stmt = *out;
		*cached = c;
	}
	return 0;
}

static int bind(struct db_sqlite *s, sqlite3_stmt *st, const struct sw_db_val *params, int n,
		char *err, size_t errlen)
{
	int code = SQLITE_OK;

	if (sqlite3_bind_parameter_count(st) != n) {
		sw_seterr(err, errlen, "statement takes %d parameters but %d were given",
			  sqlite3_bind_parameter_count(st), n);
		return SW_EINVAL;
	}
	for (int i = 0; i < n && code == SQLITE_OK; i++) {
		const struct sw_db_val *v = &params[i];

		if (v->type == SW_DB_INT)
			code = sqlite3_bind_int64(st, i + 1, v->i);
		else if (v->type == SW_DB_TEXT && v->s != NULL)
			/* Static: the bindings are cleared before sw_db_exec returns. */
			code = sqlite3_bind_text(st, i + 1, v->s, -1, SQLITE_STATIC);
		else
			code = sqlite3_bind_null(st, i + 1);
	}
	return code == SQLITE_OK ? 0 : map_error(s, code, err, errlen);
}

static int column(sqlite3_stmt *st, int i, struct sw_db_val *v)
{
	switch (sqlite3_column_type(st, i)) {
	case SQLITE_INTEGER: *v = SW_DB_INT(sqlite3_column_int64(st, i)); return 0;
	case SQLITE_NULL: *v = SW_DB_NULLV; return 0;
	}
	/* Text, and whatever else, as text. */
	*v = (struct sw_db_val){.type = SW_DB_TEXT, .s = (const char *)sqlite3_column_text(st, i)};
	if (v->s != NULL)
		return 0;
	if (sqlite3_errcode(sqlite3_db_handle(st)) == SQLITE_NOMEM)
		return SW_ENOMEM;
	v->s = ""; /* an empty blob */
	return 0;
}

static int sqlite_exec(struct sw_db *db, const char *sql, const struct sw_db_val *params, int n,
		       sw_db_row_fn fn, void *arg, int64_t *changes, char *err, size_t errlen)
{
	struct db_sqlite *s = (struct db_sqlite *)db;
	struct sw_db_val stack_row[STACK_COLS];
	struct sw_db_val *row = stack_row;
	struct db_cached *cached = NULL;
	sqlite3_stmt *st = NULL;
	sqlite3_int64 before = -1;
	int ncols;
	int code;
	int rc;

	rc = statement(s, sql, &cached, &st, err, errlen);
	if (rc < 0 || st == NULL)
		goto out;
	if (cached != NULL)
		cached->busy = 1;
	rc = bind(s, st, params, n, err, errlen);
	if (rc < 0)
		goto out;
	ncols = sqlite3_column_count(st);
	if (fn != NULL && ncols > STACK_COLS) {
		row = calloc((size_t)ncols, sizeof(*row));
		if (row == NULL) {
			sw_seterr(err, errlen, "out of memory");
			rc = SW_ENOMEM;
			goto out;
		}
	}
	before = sqlite3_total_changes64(s->conn);
	while ((code = sqlite3_step(st)) == SQLITE_ROW) {
		if (fn == NULL)
			continue;
		for (int i = 0; i < ncols; i++) {
			rc = column(st, i, &row[i]);
			if (rc < 0) {
				sw_seterr(err, errlen, "out of memory");
				goto out;
			}
		}
		rc = fn(arg, ncols, row);
		if (rc != 0)
			goto out;
	}
	if (code != SQLITE_DONE)
		rc = map_error(s, code, err, errlen);
out:
	if (st != NULL) {
		sqlite3_reset(st);
		sqlite3_clear_bindings(st);
	}
	/* sqlite3_changes64() keeps the count of the last INSERT, UPDATE or DELETE; only
	 * a statement that changed the total changed anything. */
	if (changes != NULL && before >= 0 && sqlite3_total_changes64(s->conn) != before)
		*changes = sqlite3_changes64(s->conn);
	if (cached != NULL)
		cached->busy = 0;
	else
		sqlite3_finalize(st);
	if (row != stack_row)
		free(row);
	return rc;
}

static int sqlite_begin(struct sw_db *db, char *err, size_t errlen)
{
	struct db_sqlite *s = (struct db_sqlite *)db;

	if (!sqlite3_get_autocommit(s->conn)) {
		sw_seterr(err, errlen, "a transaction is already active");
		return SW_EINVAL;
	}
	/* IMMEDIATE takes the write lock now, waiting up to the busy timeout; a deferred
	 * transaction upgrading from read to write would fail at once instead. */
	return sqlite_exec(db, "BEGIN IMMEDIATE", NULL, 0, NULL, NULL, NULL, err, errlen);
}

static int sqlite_commit(struct sw_db *db, char *err, size_t errlen)
{
	struct db_sqlite *s = (struct db_sqlite *)db;

	if (sqlite3_get_autocommit(s->conn)) {
		sw_seterr(err, errlen, "no transaction is active");
		return SW_EINVAL;
	}
	return sqlite_exec(db, "COMMIT", NULL, 0, NULL, NULL, NULL, err, errlen);
}

static void sqlite_rollback(struct sw_db *db)
{
	struct db_sqlite *s = (struct db_sqlite *)db;
	char err[256];

	/* Some errors (a full disk, for one) have rolled back already. */
	if (sqlite3_get_autocommit(s->conn))
		return;
	if (sqlite_exec(db, "ROLLBACK", NULL, 0, NULL, NULL, NULL, err, sizeof(err)) < 0)
		sw_warn("database rollback failed: %s", err);
}

static void sqlite_close(struct sw_db *db)
{
	struct db_sqlite *s = (struct db_sqlite *)db;

	for (int i = 0; i < DB_CACHE_SIZE; i++) {
		sqlite3_finalize(s->cache.slot[i].stmt);
		db_cache_clear(&s->cache.slot[i]);
	}
	sqlite3_close_v2(s->conn);
	free(s);
}

static const struct db_ops sqlite_ops = {
    .engine = "sqlite",
    .table_exists_sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
    .migrate_lock_sql = NULL, /* BEGIN IMMEDIATE */
    .exec = sqlite_exec,
    .begin = sqlite_begin,
    .commit = sqlite_commit,
    .rollback = sqlite_rollback,
    .close = sqlite_close,
};

static int journal_mode(void *arg, int ncols, char **values, char **names)
{
	char *mode = arg;

	if (ncols > 0 && values[0] != NULL)
		snprintf(mode, 16, "%s", values[0]);
	return 0;
}

int db_sqlite_open(const struct sw_db_opts *opts, const char *path, struct sw_db **out, char *err,
		   size_t errlen)
{
	struct db_sqlite *s;
	char mode[16] = "";
	char why[256];
	int code;
	int rc = 0;

	s = calloc(1, sizeof(*s));
	if (s == NULL) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	s->base.ops = &sqlite_ops;
	s->base.busy_timeout_ms = opts->busy_timeout_ms;
	s->base.connect_timeout_s = opts->connect_timeout_s;
	/* One connection serves one thread, the daemon's loop: no mutex needed. */
	code = sqlite3_open_v2(
	    path, &s->conn, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
	if (s->conn == NULL) {
		sw_seterr(err, errlen, "out of memory");
		rc = SW_ENOMEM;
		goto out;
	}
	sqlite3_extended_result_codes(s->conn, 1);
	if (code != SQLITE_OK)
		goto fail;
	sqlite3_busy_timeout(s->conn, (int)opts->busy_timeout_ms);
	code = sqlite3_exec(s->conn, "PRAGMA journal_mode = WAL", journal_mode, mode, NULL);
	if (code != SQLITE_OK)
		goto fail;
	/* An in-memory database stays "memory", and cannot be shared anyway. */
	if (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0) {
		sw_seterr(err, errlen, "database %s: cannot use WAL journal mode (got \"%s\")",
			  path, mode);
		rc = SW_EDB;
		goto out;
	}
	/*
	 * synchronous=FULL: a commit is on disk (the WAL synced) before it returns, so what
	 * the server acknowledged (usage a license server then forgets, an enrollment)
	 * survives a power loss too, not only a crash of the process. Writes are batched
	 * (heartbeat state once per flush, usage by the hundred), so this is one fsync per
	 * batch. A 32 MiB page cache keeps the usage table's indexes in memory as it grows.
	 */
	code = sqlite3_exec(s->conn,
			    "PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON; "
			    "PRAGMA cache_size = -32768",
			    NULL, NULL, NULL);
	if (code != SQLITE_OK)
		goto fail;
	goto out;
fail:
	rc = map_error(s, code, why, sizeof(why));
	sw_seterr(err, errlen, "cannot open database %s: %s", path, why);
out:
	if (rc < 0) {
		sqlite_close(&s->base);
		s = NULL;
	}
	*out = s != NULL ? &s->base : NULL;
	return rc;
}
