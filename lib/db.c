#include "db.h"

#include "db_impl.h"
#include "error.h"
#include "migrations.h"
#include "util.h"

#include <dirent.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DEFAULT_BUSY_TIMEOUT_MS	  5000
#define DEFAULT_CONNECT_TIMEOUT_S 5

static const char create_migrations_sql[] = "CREATE TABLE IF NOT EXISTS schema_migrations ("
					    "number INTEGER PRIMARY KEY, "
					    "name TEXT NOT NULL, "
					    "applied_at BIGINT NOT NULL)";

static uint32_t hash_sql(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

struct db_cached *db_cache_find(struct db_cache *c, const char *sql)
{
	uint32_t h = hash_sql(sql);

	for (int i = 0; i < DB_CACHE_SIZE; i++) {
		struct db_cached *e = &c->slot[i];

		if (e->sql != NULL && e->hash == h && strcmp(e->sql, sql) == 0) {
			e->used = ++c->tick;
			return e;
		}
	}
	return NULL;
}

struct db_cached *db_cache_victim(struct db_cache *c)
{
	struct db_cached *victim = NULL;

	for (int i = 0; i < DB_CACHE_SIZE; i++) {
		struct db_cached *e = &c->slot[i];

		if (e->sql == NULL)
			return e;
		if (!e->busy && (victim == NULL || e->used < victim->used))
			victim = e;
	}
	return victim;
}

int db_cache_fill(struct db_cache *c, struct db_cached *e, const char *sql)
{
	char *copy = strdup(sql);

	if (copy == NULL)
		return SW_ENOMEM;
	*e = (struct db_cached){.sql = copy, .hash = hash_sql(sql), .used = ++c->tick};
	return 0;
}

void db_cache_clear(struct db_cached *e)
{
	free(e->sql);
	*e = (struct db_cached){0};
}

int sw_db_open(const struct sw_db_opts *opts, struct sw_db **out, char *err, size_t errlen)
{
	struct sw_db_opts o;
	const char *url;

	sw_seterr(err, errlen, "%s", "");
	if (out == NULL)
		return SW_EINVAL;
	*out = NULL;
	if (opts == NULL || opts->url == NULL || opts->url[0] == '\0') {
		sw_seterr(err, errlen, "no database URL given");
		return SW_EINVAL;
	}
	o = *opts;
	if (o.busy_timeout_ms == 0)
		o.busy_timeout_ms = DEFAULT_BUSY_TIMEOUT_MS;
	if (o.connect_timeout_s == 0)
		o.connect_timeout_s = DEFAULT_CONNECT_TIMEOUT_S;
	url = o.url;
	if (strncmp(url, "postgresql://", 13) == 0 || strncmp(url, "postgres://", 11) == 0)
		return db_pg_open(&o, out, err, errlen);
	if (strncmp(url, "sqlite:", 7) == 0)
		url += 7;
	if (url[0] == '\0') {
		sw_seterr(err, errlen, "database URL \"%s\" names no file", o.url);
		return SW_EINVAL;
	}
	return db_sqlite_open(&o, url, out, err, errlen);
}

void sw_db_close(struct sw_db *db)
{
	if (db != NULL)
		db->ops->close(db);
}

const char *sw_db_engine(const struct sw_db *db)
{
	return db->ops->engine;
}

int sw_db_exec(struct sw_db *db, const char *sql, const struct sw_db_val *params, int n,
	       sw_db_row_fn fn, void *arg, int64_t *changes, char *err, size_t errlen)
{
	sw_seterr(err, errlen, "%s", "");
	if (changes != NULL)
		*changes = 0;
	if (db == NULL || sql == NULL || n < 0 || (n > 0 && params == NULL)) {
		sw_seterr(err, errlen, "invalid arguments to a database statement");
		return SW_EINVAL;
	}
	return db->ops->exec(db, sql, params, n, fn, arg, changes, err, errlen);
}

int sw_db_begin(struct sw_db *db, char *err, size_t errlen)
{
	sw_seterr(err, errlen, "%s", "");
	return db->ops->begin(db, err, errlen);
}

int sw_db_commit(struct sw_db *db, char *err, size_t errlen)
{
	sw_seterr(err, errlen, "%s", "");
	return db->ops->commit(db, err, errlen);
}

void sw_db_rollback(struct sw_db *db)
{
	if (db != NULL)
		db->ops->rollback(db);
}

static int int_row(void *arg, int ncols, const struct sw_db_val *row)
{
	int64_t *v = arg;

	*v = ncols > 0 && row[0].type == SW_DB_INT ? row[0].i : 0;
	return 0;
}

static int found_row(void *arg, int ncols, const struct sw_db_val *row)
{
	*(int *)arg = 1;
	return 0;
}

int sw_db_schema_version(struct sw_db *db, int *version, char *err, size_t errlen)
{
	struct sw_db_val name = SW_DB_TEXT("schema_migrations");
	int64_t max = 0;
	int exists = 0;
	int rc;

	*version = 0;
	rc = sw_db_exec(db, db->ops->table_exists_sql, &name, 1, found_row, &exists, NULL, err,
			errlen);
	if (rc < 0 || !exists)
		return rc;
	rc = sw_db_exec(db, "SELECT MAX(number) FROM schema_migrations", NULL, 0, int_row, &max,
			NULL, err, errlen);
	if (rc < 0)
		return rc;
	*version = (int)max;
	return 0;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*
 * Runs each statement of a migration. Statements end with ';' at the end of a line;
 * quotes and comments are skipped so that a ';' inside them does not split, and a chunk
 * holding only comments and blanks is not sent.
 */
static int run_statements(struct sw_db *db, const char *sql, char *err, size_t errlen)
{
	char *copy = strdup(sql);
	char *start, *p;
	char quote = 0;
	int code = 0;
	int rc = 0;

	if (copy == NULL) {
		sw_seterr(err, errlen, "out of memory");
		return SW_ENOMEM;
	}
	start = copy;
	for (p = copy; *p != '\0'; p++) {
		if (quote == '-') {
			if (*p == '\n')
				quote = 0;
		} else if (quote == '*') {
			if (p[0] == '*' && p[1] == '/') {
				quote = 0;
				p++;
			}
		} else if (quote != 0) {
			if (*p == quote)
				quote = 0;
		} else if (*p == '\'' || *p == '"') {
			quote = *p;
			code = 1;
		} else if (p[0] == '-' && p[1] == '-') {
			quote = '-';
		} else if (p[0] == '/' && p[1] == '*') {
			quote = '*';
			p++;
		} else if (*p == ';' && strchr("\n", p[strspn(p + 1, " \t\r") + 1]) != NULL) {
			/* strchr finds the terminating NUL too: a ';' ending the file counts. */
			*p = '\0';
			if (code) {
				rc = sw_db_exec(db, start, NULL, 0, NULL, NULL, NULL, err, errlen);
				if (rc < 0)
					goto out;
			}
			start = p + 1;
			code = 0;
		} else if (*p != ' ' && *p != '\t' && *p != '\r' && *p != '\n') {
			code = 1;
		}
	}
	if (quote == '\'' || quote == '"' || quote == '*') {
		sw_seterr(err, errlen, "unterminated quote or comment");
		rc = SW_EINVAL;
	} else if (code) {
		rc = sw_db_exec(db, start, NULL, 0, NULL, NULL, NULL, err, errlen);
	}
out:
	free(copy);
	return rc;
}

static int newer_schema(int version, char *err, size_t errlen)
{
	sw_seterr(err, errlen,
		  "database schema version %d is newer than this program (%d); upgrade siteward",
		  version, sw_migrations_count);
	return SW_EINVAL;
}

static int apply(struct sw_db *db, const struct sw_migration *m, int known, char *err,
		 size_t errlen)
{
	struct sw_db_val row[3] = {SW_DB_INT(m->number), SW_DB_TEXT(m->name), SW_DB_INT(now_ms())};
	char why[512] = "";
	int began = 0;
	int version = 0;
	int rc;

	rc = sw_db_begin(db, why, sizeof(why));
	if (rc < 0)
		goto out;
	began = 1;
	if (db->ops->migrate_lock_sql != NULL) {
		rc = sw_db_exec(db, db->ops->migrate_lock_sql, NULL, 0, NULL, NULL, NULL, why,
				sizeof(why));
		if (rc < 0)
			goto out;
	}
	/* Another program may have applied it while we waited for the lock. */
	rc = sw_db_schema_version(db, &version, why, sizeof(why));
	if (rc < 0 || version >= m->number)
		goto out;
	rc = run_statements(db, m->sql, why, sizeof(why));
	if (rc < 0)
		goto out;
	rc = sw_db_exec(db,
			"INSERT INTO schema_migrations (number, name, applied_at) VALUES (?, ?, ?)",
			row, 3, NULL, NULL, NULL, why, sizeof(why));
	if (rc < 0)
		goto out;
	rc = sw_db_commit(db, why, sizeof(why));
	if (rc == 0)
		began = 0;
out:
	if (began)
		sw_db_rollback(db);
	if (rc < 0)
		sw_seterr(err, errlen, "migration %s failed: %s", m->name, why);
	else if (version > known)
		rc = newer_schema(version, err, errlen);
	return rc;
}

static int migration_cmp(const void *a, const void *b)
{
	const struct sw_migration *x = a, *y = b;

	return (x->number > y->number) - (x->number < y->number);
}

static void files_free(struct sw_migration *m, int n)
{
	for (int i = 0; i < n; i++) {
		free((char *)m[i].name);
		free((char *)m[i].sql);
	}
	free(m);
}

/* The migrations NNN_name.sql in `dir` numbered past the compiled-in ones, in order. */
static int files_load(const char *dir, struct sw_migration **out, int *count, char *err,
		      size_t errlen)
{
	struct sw_migration *m = NULL;
	struct dirent *e;
	int n = 0, cap = 0, rc = 0;
	DIR *d;

	*out = NULL;
	*count = 0;
	if (!dir || !(d = opendir(dir)))
		return 0;
	while ((e = readdir(d))) {
		char path[PATH_MAX], *sql = NULL;
		int number = 0, len = 0;

		if (sscanf(e->d_name, "%3d_%*[a-z0-9_].sq%*[l]%n", &number, &len) != 1 ||
		    len != (int)strlen(e->d_name) || number <= sw_migrations_count)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		if ((rc = sw_file_read(path, 16 << 20, &sql, NULL, err, errlen)))
			break;
		if (n == cap) {
			struct sw_migration *bigger;
			cap = cap ? cap * 2 : 8;
			bigger = realloc(m, (size_t)cap * sizeof(*m));
			if (!bigger) {
				free(sql);
				rc = SW_ENOMEM;
				break;
			}
			m = bigger;
		}
		m[n].number = number;
		m[n].sql = sql;
		m[n].name = strdup(e->d_name);
		n++;
		if (!m[n - 1].name) {
			rc = SW_ENOMEM;
			break;
		}
	}
	closedir(d);
	if (rc) {
		files_free(m, n);
		return rc;
	}
	if (n > 1)
		qsort(m, (size_t)n, sizeof(*m), migration_cmp);
	for (int i = 0; i < n; i++) {
		if (m[i].number != sw_migrations_count + i + 1) {
			sw_seterr(err, errlen, "%s: migrations must follow %d without gaps", dir,
				  sw_migrations_count);
			files_free(m, n);
			return SW_EINVAL;
		}
	}
	*out = m;
	*count = n;
	return 0;
}

int sw_db_migrate_with(struct sw_db *db, const char *dir, char *err, size_t errlen)
{
	struct sw_migration *files;
	int version, nfiles;
	int rc;

	rc = sw_db_exec(db, create_migrations_sql, NULL, 0, NULL, NULL, NULL, err, errlen);
	/* A program creating the table at the same moment made ours a duplicate. */
	if (rc < 0 && rc != SW_EEXIST)
		return rc;
	rc = sw_db_schema_version(db, &version, err, errlen);
	if (rc < 0)
		return rc;
	if ((rc = files_load(dir, &files, &nfiles, err, errlen)))
		return rc;
	if (version > sw_migrations_count + nfiles) {
		files_free(files, nfiles);
		return newer_schema(version, err, errlen);
	}
	for (int i = 0; i < sw_migrations_count + nfiles && rc == 0; i++) {
		const struct sw_migration *m =
		    i < sw_migrations_count ? &sw_migrations[i] : &files[i - sw_migrations_count];

		if (m->number > version)
			rc = apply(db, m, sw_migrations_count + nfiles, err, errlen);
	}
	files_free(files, nfiles);
	return rc < 0 ? rc : 0;
}

int sw_db_migrate(struct sw_db *db, char *err, size_t errlen)
{
	return sw_db_migrate_with(db, NULL, err, errlen);
}

int sw_db_int_row(void *arg, int ncols, const struct sw_db_val *row)
{
	(void)ncols;
	*(int64_t *)arg = row[0].type == SW_DB_INT ? row[0].i : 0;
	return 0;
}
