/*
 * The site database: one interface over embedded SQLite and PostgreSQL.
 *
 * SQL is written once, portable between both engines, with `?` placeholders; the
 * PostgreSQL backend rewrites them to $1, $2 … outside string literals. Every call is
 * synchronous and bounded: SQLite waits at most `busy_timeout_ms` for a lock;
 * PostgreSQL connects within `connect_timeout_s` and each statement runs under
 * statement_timeout of `busy_timeout_ms` and a lock_timeout a tenth shorter, so a lock
 * wait is reported as SW_EBUSY before the statement as a whole times out.
 *
 * Errors return a negative SW_E* code with a sentence in `err` (if not NULL).
 */
#ifndef SW_DB_H
#define SW_DB_H

#include <stddef.h>
#include <stdint.h>

enum sw_db_type { SW_DB_NULL, SW_DB_INT, SW_DB_TEXT };

/* A parameter or a column value. Text points into storage owned by whoever made the
 * value: for a row callback, valid only during the call. */
struct sw_db_val {
	enum sw_db_type type;
	int64_t i;
	const char *s;
};

#define SW_DB_INT(x) ((struct sw_db_val){.type = SW_DB_INT, .i = (x)})
/* A function, not a macro, so that a NULL check on an array argument does not warn. */
static inline struct sw_db_val sw_db_text(const char *s)
{
	struct sw_db_val v = {.type = s ? SW_DB_TEXT : SW_DB_NULL, .s = s};
	return v;
}
#define SW_DB_TEXT(x) sw_db_text(x)
#define SW_DB_NULLV   ((struct sw_db_val){.type = SW_DB_NULL})

/* Called once per result row; a non-zero return stops the query and is returned. */
typedef int (*sw_db_row_fn)(void *arg, int ncols, const struct sw_db_val *row);
/* A row function that puts the first column's integer in the int64_t at `arg` (for
 * SELECT COUNT(*) and the like). */
int sw_db_int_row(void *arg, int ncols, const struct sw_db_val *row);

struct sw_db_opts {
	/* "postgresql://…" or "postgres://…" for PostgreSQL; anything else is a path to an
	 * SQLite file (an optional "sqlite:" prefix is stripped), created if missing. */
	const char *url;
	unsigned busy_timeout_ms;   /* default 5000 */
	unsigned connect_timeout_s; /* PostgreSQL only; default 5 */
};

struct sw_db;

int sw_db_open(const struct sw_db_opts *opts, struct sw_db **out, char *err, size_t errlen);
void sw_db_close(struct sw_db *db); /* NULL is a no-op */

/* "sqlite" or "postgresql". */
const char *sw_db_engine(const struct sw_db *db);

/* Applies every migration in sql/ (compiled in) that the database has not recorded,
 * each in its own transaction, in number order. Refuses a database whose recorded
 * version is newer than this program knows. */
int sw_db_migrate(struct sw_db *db, char *err, size_t errlen);
/* The same, then the migrations in `dir` (files NNN_name.sql numbered on from the
 * compiled-in ones, as an upgrade's install tree carries them in share/siteward/sql/).
 * A schema newer than both is refused. `dir` may be NULL or missing. */
int sw_db_migrate_with(struct sw_db *db, const char *dir, char *err, size_t errlen);
/* The highest applied migration number, 0 for none. */
int sw_db_schema_version(struct sw_db *db, int *version, char *err, size_t errlen);

/* Runs one statement with `n` parameters. Rows go to `fn` (may be NULL); `changes`
 * (may be NULL) receives the number of rows inserted, updated or deleted. */
int sw_db_exec(struct sw_db *db, const char *sql, const struct sw_db_val *params, int n,
	       sw_db_row_fn fn, void *arg, int64_t *changes, char *err, size_t errlen);

int sw_db_begin(struct sw_db *db, char *err, size_t errlen);
int sw_db_commit(struct sw_db *db, char *err, size_t errlen);
void sw_db_rollback(struct sw_db *db); /* best effort; logs a failure */

/* This process's environment with the connection settings of a PostgreSQL URL as
 * libpq's variables (PGHOST, PGDATABASE, PGPASSWORD...), for pg_dump and psql: a
 * password in the URL then never shows on a command line. NULL on failure, with the
 * reason; free with sw_environ_free(). */
char **sw_db_pg_environ(const char *url, char *err, size_t errlen);
void sw_environ_free(char **env);

#endif
