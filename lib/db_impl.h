/*
 * What db.c shares with the two backends, db_sqlite.c and db_pg.c: the operations each
 * backend provides, the fields every connection starts with, and a statement cache.
 */
#ifndef SW_DB_IMPL_H
#define SW_DB_IMPL_H

#include "db.h"
#include "error.h"

#include <stddef.h>
#include <stdint.h>

struct db_ops {
	const char *engine;
	/* One parameter, a table name; returns a row if that table exists. */
	const char *table_exists_sql;
	/* Run first in each migration's transaction so that two programs migrating the same
	 * database take turns; NULL when beginning the transaction already does that. */
	const char *migrate_lock_sql;
	int (*exec)(struct sw_db *db, const char *sql, const struct sw_db_val *params, int n,
		    sw_db_row_fn fn, void *arg, int64_t *changes, char *err, size_t errlen);
	int (*begin)(struct sw_db *db, char *err, size_t errlen);
	int (*commit)(struct sw_db *db, char *err, size_t errlen);
	void (*rollback)(struct sw_db *db);
	void (*close)(struct sw_db *db);
};

/* The first member of each backend's connection. */
struct sw_db {
	const struct db_ops *ops;
	unsigned busy_timeout_ms;
	unsigned connect_timeout_s;
};

/* Prepared statements by SQL text, least recently used out first. */
#define DB_CACHE_SIZE 64

struct db_cached {
	char *sql; /* the key, owned; NULL for a free slot */
	uint32_t hash;
	uint64_t used;	  /* when last found, for LRU */
	int busy;	  /* running (a row callback is on the stack): not to be evicted */
	void *stmt;	  /* SQLite: the sqlite3_stmt */
	unsigned long id; /* PostgreSQL: the statement is named "sw_<id>" */
	int nparams;	  /* PostgreSQL: placeholders in the statement */
};

struct db_cache {
	struct db_cached slot[DB_CACHE_SIZE];
	uint64_t tick;
};

/* db.c */
/* The entry for `sql`, marked as just used; NULL if not cached. */
struct db_cached *db_cache_find(struct db_cache *c, const char *sql);
/* A free slot, else the least recently used one not busy (the caller releases what it
 * holds, then calls db_cache_clear); NULL if every slot is busy. */
struct db_cached *db_cache_victim(struct db_cache *c);
/* Makes the free slot `e` the entry for `sql` (copied). 0 or SW_ENOMEM. */
int db_cache_fill(struct db_cache *c, struct db_cached *e, const char *sql);
/* Frees the key and marks the slot free; the backend has released the statement. */
void db_cache_clear(struct db_cached *e);

/* db_sqlite.c: `opts` carries the defaults already; `path` is the URL without "sqlite:". */
int db_sqlite_open(const struct sw_db_opts *opts, const char *path, struct sw_db **out, char *err,
		   size_t errlen);

/* db_pg.c */
int db_pg_open(const struct sw_db_opts *opts, struct sw_db **out, char *err, size_t errlen);

#endif
