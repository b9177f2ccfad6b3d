/*
 * The site database against SQLite (a file in a temporary directory) and, when
 * SITEWARD_TEST_PG holds a postgresql:// URL, against PostgreSQL as well. The PostgreSQL
 * database must be a throwaway one: each test drops and recreates its public schema.
 */
#include "db.h"
#include "error.h"
#include "migrations.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char tmpdir[64];
static const char *pg_url;
static int file_seq;

struct fixture {
	char url[512];
	struct sw_db *db;
	char err[512];
};

struct rows {
	int n;
	int ncols;
	enum sw_db_type type[8][8];
	int64_t i[8][8];
	char s[8][8][128];
};

static int collect(void *arg, int ncols, const struct sw_db_val *row)
{
	struct rows *r = arg;

	assert_true(r->n < 8);
	assert_true(ncols <= 8);
	r->ncols = ncols;
	for (int c = 0; c < ncols; c++) {
		r->type[r->n][c] = row[c].type;
		r->i[r->n][c] = row[c].i;
		if (row[c].type == SW_DB_TEXT)
			snprintf(r->s[r->n][c], sizeof(r->s[r->n][c]), "%s", row[c].s);
	}
	r->n++;
	return 0;
}

static double ms_since(const struct timespec *t0)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) * 1e3 + (double)(t.tv_nsec - t0->tv_nsec) / 1e6;
}

static int open_url(const char *url, unsigned busy_ms, struct sw_db **db, char *err, size_t errlen)
{
	struct sw_db_opts opts = {.url = url, .busy_timeout_ms = busy_ms};

	return sw_db_open(&opts, db, err, errlen);
}

static void exec_ok(struct fixture *f, const char *sql, const struct sw_db_val *params, int n,
		    struct rows *r)
{
	int rc = sw_db_exec(f->db, sql, params, n, r != NULL ? collect : NULL, r, NULL, f->err,
			    sizeof(f->err));

	if (rc != 0)
		fail_msg("%s: %d %s", sql, rc, f->err);
}

static int64_t count(struct fixture *f, const char *sql)
{
	struct rows r = {0};

	exec_ok(f, sql, NULL, 0, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.type[0][0], SW_DB_INT);
	return r.i[0][0];
}

static void migrate_ok(struct fixture *f)
{
	int rc = sw_db_migrate(f->db, f->err, sizeof(f->err));

	if (rc != 0)
		fail_msg("migrate: %d %s", rc, f->err);
}

static void add_system(struct fixture *f, const char *name)
{
	struct sw_db_val v[] = {SW_DB_TEXT(name), SW_DB_TEXT("192.0.2.1"), SW_DB_TEXT("01ab"),
				SW_DB_INT(1000)};

	exec_ok(f,
		"INSERT INTO systems (name, address, cert_serial, enrolled_at) "
		"VALUES (?, ?, ?, ?)",
		v, 4, NULL);
}

static int is_pg(struct fixture *f)
{
	return strcmp(sw_db_engine(f->db), "postgresql") == 0;
}

static int make_tmpdir(void **state)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/test_db.XXXXXX");
	return mkdtemp(tmpdir) != NULL ? 0 : -1;
}

static int remove_tmpdir(void **state)
{
	return rmdir(tmpdir);
}

static int setup_sqlite(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->url, sizeof(f->url), "sqlite:%s/t%d.db", tmpdir, ++file_seq);
	if (open_url(f->url, 0, &f->db, f->err, sizeof(f->err)) != 0)
		fail_msg("open %s: %s", f->url, f->err);
	*state = f;
	return 0;
}

static int setup_pg(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	snprintf(f->url, sizeof(f->url), "%s", pg_url);
	if (open_url(f->url, 0, &f->db, f->err, sizeof(f->err)) != 0)
		fail_msg("open %s: %s", f->url, f->err);
	exec_ok(f, "DROP SCHEMA public CASCADE", NULL, 0, NULL);
	exec_ok(f, "CREATE SCHEMA public", NULL, 0, NULL);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char path[600];

	sw_db_close(f->db);
	if (strncmp(f->url, "sqlite:", 7) == 0) {
		unlink(f->url + 7);
		snprintf(path, sizeof(path), "%s-wal", f->url + 7);
		unlink(path);
		snprintf(path, sizeof(path), "%s-shm", f->url + 7);
		unlink(path);
	}
	free(f);
	return 0;
}

static void test_migrate_creates_tables(void **state)
{
	struct fixture *f = *state;
	struct sw_db_val one = SW_DB_INT(1);
	struct rows r = {0};
	int version = -1;

	assert_int_equal(sw_db_schema_version(f->db, &version, f->err, sizeof(f->err)), 0);
	assert_int_equal(version, 0);
	migrate_ok(f);
	assert_int_equal(sw_db_schema_version(f->db, &version, f->err, sizeof(f->err)), 0);
	assert_int_equal(version, sw_migrations_count);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM systems"), 0);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM tokens"), 0);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM revoked"), 0);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM schema_migrations"), sw_migrations_count);
	exec_ok(f, "SELECT name, applied_at FROM schema_migrations WHERE number = ?", &one, 1, &r);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.s[0][0], "001_initial.sql");
	assert_int_equal(r.type[0][1], SW_DB_INT);
	assert_true(r.i[0][1] > INT64_C(1600000000000)); /* milliseconds */
}

static void test_migrate_idempotent(void **state)
{
	struct fixture *f = *state;
	int version = -1;

	migrate_ok(f);
	migrate_ok(f);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM schema_migrations"), sw_migrations_count);
	sw_db_close(f->db);
	assert_int_equal(open_url(f->url, 0, &f->db, f->err, sizeof(f->err)), 0);
	migrate_ok(f);
	assert_int_equal(sw_db_schema_version(f->db, &version, f->err, sizeof(f->err)), 0);
	assert_int_equal(version, sw_migrations_count);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM schema_migrations"), sw_migrations_count);
}

static void test_roundtrip(void **state)
{
	struct fixture *f = *state;
	const char *tricky = "it's a \"quoted\" ? and '?'; -- not a comment";
	struct sw_db_val in[] = {SW_DB_TEXT("h1"), SW_DB_INT(INT64_C(1700000000123)),
				 SW_DB_INT(-42), SW_DB_NULLV, SW_DB_TEXT(tricky)};
	struct sw_db_val ext[] = {SW_DB_TEXT("h2"), SW_DB_INT(INT64_MAX), SW_DB_INT(INT64_MIN),
				  SW_DB_INT(0), SW_DB_TEXT(NULL)};
	struct sw_db_val key = SW_DB_TEXT("h1");
	const char *insert = "INSERT INTO tokens (hash, created_at, expires_at, used_at, used_by) "
			     "VALUES (?, ?, ?, ?, ?)";
	const char *select = "SELECT hash, created_at, expires_at, used_at, used_by "
			     "FROM tokens WHERE hash = ?";
	struct rows r = {0};
	int64_t changes = -1;

	migrate_ok(f);
	assert_int_equal(
	    sw_db_exec(f->db, insert, in, 5, NULL, NULL, &changes, f->err, sizeof(f->err)), 0);
	assert_int_equal(changes, 1);
	exec_ok(f, insert, ext, 5, NULL);

	exec_ok(f, select, &key, 1, &r);
	assert_int_equal(r.n, 1);
	assert_int_equal(r.ncols, 5);
	assert_int_equal(r.type[0][0], SW_DB_TEXT);
	assert_string_equal(r.s[0][0], "h1");
	assert_int_equal(r.type[0][1], SW_DB_INT);
	assert_true(r.i[0][1] == INT64_C(1700000000123));
	assert_int_equal(r.type[0][2], SW_DB_INT);
	assert_true(r.i[0][2] == -42);
	assert_int_equal(r.type[0][3], SW_DB_NULL);
	assert_int_equal(r.type[0][4], SW_DB_TEXT);
	assert_string_equal(r.s[0][4], tricky);

	memset(&r, 0, sizeof(r));
	key = SW_DB_TEXT("h2");
	exec_ok(f, select, &key, 1, &r);
	assert_int_equal(r.n, 1);
	assert_true(r.i[0][1] == INT64_MAX);
	assert_true(r.i[0][2] == INT64_MIN);
	assert_int_equal(r.type[0][3], SW_DB_INT);
	assert_true(r.i[0][3] == 0);
	assert_int_equal(r.type[0][4], SW_DB_NULL);

	/* A parameter matched against text, quotes and all. */
	memset(&r, 0, sizeof(r));
	key = SW_DB_TEXT(tricky);
	exec_ok(f, "SELECT hash FROM tokens WHERE used_by = ?", &key, 1, &r);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.s[0][0], "h1");
}

static void test_literal_question_mark(void **state)
{
	struct fixture *f = *state;
	struct sw_db_val x = SW_DB_TEXT("x");
	struct rows r = {0};

	exec_ok(f,
		"SELECT 'what?' || ?, 'it''s?' /* a ? here */ -- and here?\n"
		", \"?\" FROM (SELECT 'q?' AS \"?\") AS t",
		&x, 1, &r);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.s[0][0], "what?x");
	assert_string_equal(r.s[0][1], "it's?");
	assert_string_equal(r.s[0][2], "q?");

	assert_int_equal(
	    sw_db_exec(f->db, "SELECT ?", NULL, 0, NULL, NULL, NULL, f->err, sizeof(f->err)),
	    SW_EINVAL);
	assert_int_equal(
	    sw_db_exec(f->db, "SELECT 1", &x, 1, NULL, NULL, NULL, f->err, sizeof(f->err)),
	    SW_EINVAL);
	assert_int_equal(sw_db_exec(f->db, "SELECT 1; SELECT 2", NULL, 0, NULL, NULL, NULL, f->err,
				    sizeof(f->err)),
			 is_pg(f) ? SW_EDB : SW_EINVAL);
	assert_true(f->err[0] != '\0');
}

static void test_duplicate_key(void **state)
{
	struct fixture *f = *state;
	struct sw_db_val v[] = {SW_DB_TEXT("b"), SW_DB_NULLV, SW_DB_TEXT("01ab"), SW_DB_INT(1000)};
	int rc;

	migrate_ok(f);
	add_system(f, "a");
	rc = sw_db_exec(f->db,
			"INSERT INTO systems (name, address, cert_serial, enrolled_at) "
			"VALUES ('a', 'x', 'y', 1)",
			NULL, 0, NULL, NULL, NULL, f->err, sizeof(f->err));
	assert_int_equal(rc, SW_EEXIST);
	assert_true(f->err[0] != '\0');
	/* Another constraint is no "already exists". */
	rc = sw_db_exec(f->db,
			"INSERT INTO systems (name, address, cert_serial, enrolled_at) "
			"VALUES (?, ?, ?, ?)",
			v, 4, NULL, NULL, NULL, f->err, sizeof(f->err));
	assert_int_equal(rc, SW_EDB);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM systems"), 1);
}

static void test_rollback(void **state)
{
	struct fixture *f = *state;

	migrate_ok(f);
	assert_int_equal(sw_db_begin(f->db, f->err, sizeof(f->err)), 0);
	add_system(f, "a");
	assert_int_equal(count(f, "SELECT COUNT(*) FROM systems"), 1);
	sw_db_rollback(f->db);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM systems"), 0);

	assert_int_equal(sw_db_begin(f->db, f->err, sizeof(f->err)), 0);
	assert_int_equal(sw_db_begin(f->db, f->err, sizeof(f->err)), SW_EINVAL);
	add_system(f, "b");
	assert_int_equal(sw_db_commit(f->db, f->err, sizeof(f->err)), 0);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM systems"), 1);

	assert_int_equal(sw_db_commit(f->db, f->err, sizeof(f->err)), SW_EINVAL);
	sw_db_rollback(f->db); /* nothing to roll back: quiet */
}

static void test_changes(void **state)
{
	struct fixture *f = *state;
	struct sw_db_val none = SW_DB_TEXT("none");
	struct sw_db_val a = SW_DB_TEXT("a");
	int64_t changes = -1;

	migrate_ok(f);
	add_system(f, "a");
	add_system(f, "b");
	add_system(f, "c");
	assert_int_equal(sw_db_exec(f->db, "UPDATE systems SET last_seen = 5", NULL, 0, NULL, NULL,
				    &changes, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(changes, 3);
	assert_int_equal(sw_db_exec(f->db, "UPDATE systems SET last_seen = 6 WHERE name = ?", &none,
				    1, NULL, NULL, &changes, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(changes, 0);
	assert_int_equal(sw_db_exec(f->db, "DELETE FROM systems WHERE name = ?", &a, 1, NULL, NULL,
				    &changes, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(changes, 1);
	/* Neither a query nor a definition changes rows. */
	changes = -1;
	assert_int_equal(sw_db_exec(f->db, "SELECT name FROM systems", NULL, 0, NULL, NULL,
				    &changes, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(changes, 0);
	changes = -1;
	assert_int_equal(sw_db_exec(f->db, "CREATE TABLE extra (x INTEGER)", NULL, 0, NULL, NULL,
				    &changes, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(changes, 0);
}

static int stop_after_one(void *arg, int ncols, const struct sw_db_val *row)
{
	int *calls = arg;

	(*calls)++;
	return 7;
}

static void test_row_stop(void **state)
{
	struct fixture *f = *state;
	struct rows r = {0};
	int calls = 0;

	migrate_ok(f);
	add_system(f, "a");
	add_system(f, "b");
	add_system(f, "c");
	assert_int_equal(sw_db_exec(f->db, "SELECT name FROM systems ORDER BY name", NULL, 0,
				    stop_after_one, &calls, NULL, f->err, sizeof(f->err)),
			 7);
	assert_int_equal(calls, 1);
	/* The statement was left ready to run again, and holds no lock. */
	exec_ok(f, "SELECT name FROM systems ORDER BY name", NULL, 0, &r);
	assert_int_equal(r.n, 3);
	assert_string_equal(r.s[2][0], "c");
	add_system(f, "d");
}

static void test_newer_schema(void **state)
{
	struct fixture *f = *state;
	int version = 0;
	int rc;

	migrate_ok(f);
	exec_ok(f,
		"INSERT INTO schema_migrations (number, name, applied_at) "
		"VALUES (999, '999_future.sql', 0)",
		NULL, 0, NULL);
	rc = sw_db_migrate(f->db, f->err, sizeof(f->err));
	assert_int_equal(rc, SW_EINVAL);
	assert_non_null(strstr(f->err, "schema version 999 is newer than this program"));
	assert_non_null(strstr(f->err, "upgrade siteward"));
	assert_int_equal(sw_db_schema_version(f->db, &version, f->err, sizeof(f->err)), 0);
	assert_int_equal(version, 999);
}

static void test_migration_fails(void **state)
{
	struct fixture *f = *state;
	int version = -1;
	int rc;

	/* A table in the way makes the first migration fail half way through. */
	exec_ok(f, "CREATE TABLE tokens (x INTEGER)", NULL, 0, NULL);
	rc = sw_db_migrate(f->db, f->err, sizeof(f->err));
	assert_true(rc < 0);
	assert_non_null(strstr(f->err, "migration 001_initial.sql failed: "));
	assert_int_equal(sw_db_schema_version(f->db, &version, f->err, sizeof(f->err)), 0);
	assert_int_equal(version, 0);
	/* Rolled back: the table made before the failure is gone. */
	assert_int_equal(sw_db_exec(f->db, "SELECT COUNT(*) FROM systems", NULL, 0, NULL, NULL,
				    NULL, f->err, sizeof(f->err)),
			 SW_EDB);
}

static void test_busy(void **state)
{
	struct fixture *f = *state;
	const char *touch = "UPDATE systems SET version = ? WHERE name = 'a'";
	struct sw_db_val v1 = SW_DB_TEXT("1");
	struct sw_db_val v2 = SW_DB_TEXT("2");
	struct sw_db *other = NULL;
	struct timespec t0;
	char err[512];
	double ms;
	int rc;

	migrate_ok(f);
	add_system(f, "a");
	assert_int_equal(open_url(f->url, 200, &other, err, sizeof(err)), 0);
	/* f->db holds the lock, `other` waits for it. */
	assert_int_equal(sw_db_begin(f->db, f->err, sizeof(f->err)), 0);
	exec_ok(f, touch, &v1, 1, NULL);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = sw_db_exec(other, touch, &v2, 1, NULL, NULL, NULL, err, sizeof(err));
	ms = ms_since(&t0);
	assert_int_equal(rc, SW_EBUSY);
	/* PostgreSQL gives up on the lock a little before the statement's own deadline. */
	assert_string_equal(err, is_pg(f) ? "database locked for more than 180 ms"
					  : "database locked for more than 200 ms");
	assert_true(ms >= 150);
	assert_true(ms < 2000);

	if (!is_pg(f)) {
		clock_gettime(CLOCK_MONOTONIC, &t0);
		assert_int_equal(sw_db_begin(other, err, sizeof(err)), SW_EBUSY);
		assert_true(ms_since(&t0) < 2000);
	}

	sw_db_rollback(f->db);
	rc = sw_db_exec(other, touch, &v2, 1, NULL, NULL, NULL, err, sizeof(err));
	if (rc != 0)
		fail_msg("after the lock: %s", err);
	sw_db_close(other);
}

static void test_statement_cache(void **state)
{
	struct fixture *f = *state;
	char sql[64];

	/* More statements than the cache holds, twice: each is evicted and comes back. */
	for (int round = 0; round < 2; round++) {
		for (int i = 0; i < 100; i++) {
			struct sw_db_val v = SW_DB_INT(i);
			struct rows r = {0};

			snprintf(sql, sizeof(sql), "SELECT ? + %d", i);
			exec_ok(f, sql, &v, 1, &r);
			assert_int_equal(r.n, 1);
			assert_int_equal(r.type[0][0], SW_DB_INT);
			assert_int_equal(r.i[0][0], 2 * i);
		}
	}
}

struct nested {
	struct fixture *f;
	int rows;
	int inner_rows;
};

static int nested_row(void *arg, int ncols, const struct sw_db_val *row)
{
	struct nested *n = arg;
	struct sw_db_val name = SW_DB_TEXT(row[0].s);
	struct rows r = {0};
	char sql[64];

	n->rows++;
	/* The statement running now, again, and enough others to flush the cache. */
	exec_ok(n->f, "SELECT name FROM systems ORDER BY name", NULL, 0, &r);
	n->inner_rows += r.n;
	for (int i = 0; i < 70; i++) {
		snprintf(sql, sizeof(sql), "SELECT %d", i);
		exec_ok(n->f, sql, NULL, 0, NULL);
	}
	exec_ok(n->f, "UPDATE systems SET last_seen = last_seen + 1 WHERE name = ?", &name, 1,
		NULL);
	return 0;
}

static void test_nested_exec(void **state)
{
	struct fixture *f = *state;
	struct nested n = {.f = f};

	migrate_ok(f);
	add_system(f, "a");
	add_system(f, "b");
	add_system(f, "c");
	assert_int_equal(sw_db_exec(f->db, "SELECT name FROM systems ORDER BY name", NULL, 0,
				    nested_row, &n, NULL, f->err, sizeof(f->err)),
			 0);
	assert_int_equal(n.rows, 3);
	assert_int_equal(n.inner_rows, 9);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM systems WHERE last_seen = 1"), 3);
}

/* PostgreSQL only. */

static void test_pg_placeholders(void **state)
{
	struct fixture *f = *state;
	struct sw_db_val p[] = {SW_DB_TEXT("x"), SW_DB_INT(5)};
	struct rows r = {0};

	exec_ok(f, "SELECT E'it\\'s ?', ? || E'\\\\', /* a /* nested ? */ ? */ ?::int + 1", p, 2,
		&r);
	assert_int_equal(r.n, 1);
	assert_string_equal(r.s[0][0], "it's ?");
	assert_string_equal(r.s[0][1], "x\\");
	assert_int_equal(r.type[0][2], SW_DB_INT);
	assert_int_equal(r.i[0][2], 6);
}

static void test_pg_statement_timeout(void **state)
{
	struct fixture *f = *state;
	struct sw_db *db = NULL;
	struct timespec t0;
	char err[512];
	int rc;

	assert_int_equal(open_url(f->url, 200, &db, err, sizeof(err)), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	rc = sw_db_exec(db, "SELECT pg_sleep(3)", NULL, 0, NULL, NULL, NULL, err, sizeof(err));
	assert_int_equal(rc, SW_ETIMEDOUT);
	assert_true(ms_since(&t0) < 2000);
	assert_non_null(strstr(err, "200 ms"));
	sw_db_close(db);
}

static int64_t backend_pid(struct fixture *f)
{
	return count(f, "SELECT pg_backend_pid()");
}

/* Ends f's server session from another connection, and waits until it is gone. */
static void kill_session(struct fixture *f)
{
	struct sw_db_val pid = SW_DB_INT(backend_pid(f));
	struct sw_db *other = NULL;
	struct rows r;
	char err[512];

	assert_int_equal(open_url(f->url, 0, &other, err, sizeof(err)), 0);
	assert_int_equal(sw_db_exec(other, "SELECT pg_terminate_backend(?)", &pid, 1, NULL, NULL,
				    NULL, err, sizeof(err)),
			 0);
	for (int i = 0; i < 200; i++) {
		memset(&r, 0, sizeof(r));
		assert_int_equal(sw_db_exec(other,
					    "SELECT COUNT(*) FROM pg_stat_activity WHERE pid = ?",
					    &pid, 1, collect, &r, NULL, err, sizeof(err)),
				 0);
		if (r.i[0][0] == 0)
			break;
		usleep(10000);
	}
	assert_int_equal(r.i[0][0], 0);
	sw_db_close(other);
	usleep(20000);
}

static void test_pg_reconnect(void **state)
{
	struct fixture *f = *state;
	int64_t pid;

	migrate_ok(f);
	pid = backend_pid(f);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM systems"), 0);
	kill_session(f);
	/* The same statement, prepared again on the new session. */
	assert_int_equal(count(f, "SELECT COUNT(*) FROM systems"), 0);
	assert_true(backend_pid(f) != pid);
}

static void test_pg_lost_in_transaction(void **state)
{
	struct fixture *f = *state;
	int rc;

	migrate_ok(f);
	assert_int_equal(sw_db_begin(f->db, f->err, sizeof(f->err)), 0);
	add_system(f, "a");
	kill_session(f);
	rc = sw_db_exec(f->db, "SELECT COUNT(*) FROM systems", NULL, 0, NULL, NULL, NULL, f->err,
			sizeof(f->err));
	assert_int_equal(rc, SW_EUNREACH);
	/* No statement runs outside the transaction it was meant for. */
	rc = sw_db_exec(f->db, "SELECT COUNT(*) FROM systems", NULL, 0, NULL, NULL, NULL, f->err,
			sizeof(f->err));
	assert_int_equal(rc, SW_EUNREACH);
	assert_int_equal(sw_db_commit(f->db, f->err, sizeof(f->err)), SW_EUNREACH);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM systems"), 0);
}

static void test_pg_commit_after_error(void **state)
{
	struct fixture *f = *state;

	migrate_ok(f);
	assert_int_equal(sw_db_begin(f->db, f->err, sizeof(f->err)), 0);
	add_system(f, "a");
	assert_int_equal(sw_db_exec(f->db,
				    "INSERT INTO systems (name, address, cert_serial, enrolled_at) "
				    "VALUES ('a', 'x', 'y', 1)",
				    NULL, 0, NULL, NULL, NULL, f->err, sizeof(f->err)),
			 SW_EEXIST);
	assert_int_equal(
	    sw_db_exec(f->db, "SELECT 1", NULL, 0, NULL, NULL, NULL, f->err, sizeof(f->err)),
	    SW_EDB);
	/* Not a silent rollback reported as a commit. */
	assert_int_equal(sw_db_commit(f->db, f->err, sizeof(f->err)), SW_EDB);
	assert_int_equal(count(f, "SELECT COUNT(*) FROM systems"), 0);
}

/* Without a database. */

static void test_open_dispatch(void **state)
{
	struct sw_db_opts opts = {0};
	struct sw_db *db = (struct sw_db *)&opts;
	char path[128];
	char err[256];

	sw_db_close(NULL);
	assert_int_equal(sw_db_open(&opts, &db, err, sizeof(err)), SW_EINVAL);
	assert_null(db);
	opts.url = "sqlite:";
	assert_int_equal(sw_db_open(&opts, &db, err, sizeof(err)), SW_EINVAL);
	assert_null(db);

	snprintf(path, sizeof(path), "sqlite:%s/dispatch.db", tmpdir);
	opts.url = path;
	assert_int_equal(sw_db_open(&opts, &db, err, sizeof(err)), 0);
	assert_string_equal(sw_db_engine(db), "sqlite");
	sw_db_close(db);
	opts.url = path + 7;
	assert_int_equal(sw_db_open(&opts, &db, NULL, 0), 0);
	assert_string_equal(sw_db_engine(db), "sqlite");
	sw_db_close(db);
	unlink(path + 7);
	snprintf(path, sizeof(path), "%s/dispatch.db-wal", tmpdir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/dispatch.db-shm", tmpdir);
	unlink(path);

	opts.url = "/nonexistent-siteward-dir/x.db";
	assert_int_equal(sw_db_open(&opts, &db, err, sizeof(err)), SW_EDB);
	assert_null(db);
	assert_non_null(strstr(err, "/nonexistent-siteward-dir/x.db"));
}

static void test_pg_unreachable(void **state)
{
	const char *urls[] = {"postgresql://127.0.0.1:1/x",
			      "postgres://siteward:s3cret@127.0.0.1:1/x?password=an0ther"};
	struct sw_db *db = NULL;
	struct timespec t0;
	char err[512];

	for (int i = 0; i < 2; i++) {
		struct sw_db_opts opts = {.url = urls[i], .connect_timeout_s = 2};

		clock_gettime(CLOCK_MONOTONIC, &t0);
		assert_int_equal(sw_db_open(&opts, &db, err, sizeof(err)), SW_EUNREACH);
		assert_true(ms_since(&t0) < 3000);
		assert_null(db);
		assert_non_null(strstr(err, "database unreachable: "));
		assert_null(strstr(err, "s3cret"));
		assert_null(strstr(err, "an0ther"));
	}
}

static void test_pg_bad_url_redacted(void **state)
{
	struct sw_db_opts opts = {.url = "postgresql://siteward:s3cret@[::1/x"};
	struct sw_db *db = NULL;
	char err[512];

	assert_int_equal(sw_db_open(&opts, &db, err, sizeof(err)), SW_EINVAL);
	assert_null(db);
	assert_non_null(strstr(err, "invalid database URL: "));
	assert_null(strstr(err, "s3cret"));
	assert_non_null(strstr(err, "siteward:***@"));

	opts.url = "postgresql://siteward:s3%zzcret@127.0.0.1/x";
	assert_int_equal(sw_db_open(&opts, &db, err, sizeof(err)), SW_EINVAL);
	assert_null(strstr(err, "s3%zzcret"));
}

/* pg_dump and psql are given the URL's settings in their environment, not argv. */
static void test_pg_environ(void **state)
{
	char err[256], **env;
	const char *want[] = {"PGHOST=db.example", "PGPORT=5433",     "PGUSER=siteward",
			      "PGPASSWORD=s3cret", "PGDATABASE=site", "PGSSLMODE=require"};
	int host = 0;

	setenv("PGHOST", "elsewhere", 1);
	env = sw_db_pg_environ("postgresql://siteward:s3cret@db.example:5433/site?sslmode=require",
			       err, sizeof(err));
	unsetenv("PGHOST");
	assert_non_null(env);
	for (size_t w = 0; w < sizeof(want) / sizeof(want[0]); w++) {
		size_t i;

		for (i = 0; env[i] && strcmp(env[i], want[w]) != 0; i++)
			;
		assert_non_null(env[i]);
	}
	for (size_t i = 0; env[i]; i++)
		host += strncmp(env[i], "PGHOST=", 7) == 0;
	assert_int_equal(host, 1); /* the URL's, in place of the server's own */
	sw_environ_free(env);
	assert_null(sw_db_pg_environ("postgresql://[bad", err, sizeof(err)));
	assert_non_null(strstr(err, "cannot be read"));
}

#define DB_TESTS(setup)                                                                            \
	cmocka_unit_test_setup_teardown(test_migrate_creates_tables, setup, teardown),             \
	    cmocka_unit_test_setup_teardown(test_migrate_idempotent, setup, teardown),             \
	    cmocka_unit_test_setup_teardown(test_roundtrip, setup, teardown),                      \
	    cmocka_unit_test_setup_teardown(test_literal_question_mark, setup, teardown),          \
	    cmocka_unit_test_setup_teardown(test_duplicate_key, setup, teardown),                  \
	    cmocka_unit_test_setup_teardown(test_rollback, setup, teardown),                       \
	    cmocka_unit_test_setup_teardown(test_changes, setup, teardown),                        \
	    cmocka_unit_test_setup_teardown(test_row_stop, setup, teardown),                       \
	    cmocka_unit_test_setup_teardown(test_newer_schema, setup, teardown),                   \
	    cmocka_unit_test_setup_teardown(test_migration_fails, setup, teardown),                \
	    cmocka_unit_test_setup_teardown(test_busy, setup, teardown),                           \
	    cmocka_unit_test_setup_teardown(test_statement_cache, setup, teardown),                \
	    cmocka_unit_test_setup_teardown(test_nested_exec, setup, teardown)

int main(void)
{
	const struct CMUnitTest common[] = {
	    cmocka_unit_test(test_open_dispatch),
	    cmocka_unit_test(test_pg_unreachable),
	    cmocka_unit_test(test_pg_bad_url_redacted),
	    cmocka_unit_test(test_pg_environ),
	};
	const struct CMUnitTest sqlite[] = {DB_TESTS(setup_sqlite)};
	const struct CMUnitTest pg[] = {
	    DB_TESTS(setup_pg),
	    cmocka_unit_test_setup_teardown(test_pg_placeholders, setup_pg, teardown),
	    cmocka_unit_test_setup_teardown(test_pg_statement_timeout, setup_pg, teardown),
	    cmocka_unit_test_setup_teardown(test_pg_reconnect, setup_pg, teardown),
	    cmocka_unit_test_setup_teardown(test_pg_lost_in_transaction, setup_pg, teardown),
	    cmocka_unit_test_setup_teardown(test_pg_commit_after_error, setup_pg, teardown),
	};
	int failed = 0;

	failed += cmocka_run_group_tests_name("db", common, make_tmpdir, remove_tmpdir);
	failed += cmocka_run_group_tests_name("db_sqlite", sqlite, make_tmpdir, remove_tmpdir);
	pg_url = getenv("SITEWARD_TEST_PG");
	if (pg_url != NULL && pg_url[0] != '\0')
		failed += cmocka_run_group_tests_name("db_postgresql", pg, NULL, NULL);
	else
		printf("[  SKIPPED ] db_postgresql: SITEWARD_TEST_PG is not set\n");
	return failed != 0;
}
