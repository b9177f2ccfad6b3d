/* The schema migrations in sql/, compiled in by scripts/embed-sql. */
#ifndef SW_MIGRATIONS_H
#define SW_MIGRATIONS_H

struct sw_migration {
	int number;
	const char *name;
	const char *sql; /* one or more statements separated by ';' at line ends */
};

extern const struct sw_migration sw_migrations[];
extern const int sw_migrations_count;

#endif
