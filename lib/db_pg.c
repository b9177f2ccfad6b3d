#include "db_impl.h"
#include "error.h"
#include "log.h"

#include <ctype.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Type OIDs of the integer columns (server/catalog/pg_type.h). */
#define INT8OID 20
#define INT2OID 21
#define INT4OID 23

#define MAX_PARAMS   65535 /* the protocol's limit */
#define STACK_PARAMS 16
#define STACK_COLS   16
#define MSG_MAX	     512

struct db_pg {
	struct sw_db base;
	PGconn *conn;
	struct db_cache cache; /* statements prepared on the server, named sw_<id> */
	unsigned long next_id;
	int in_tx;   /* between sw_db_begin and its commit or rollback */
	int tx_lost; /* the connection broke inside that transaction */
};

/* Copies a libpq message, which may span lines, as one line. */
static void oneline(char *dst, size_t size, const char *src)
{
	size_t j = 0;
	int space = 0;

	for (; *src != '\0' && j + 1 < size; src++) {
		if (isspace((unsigned char)*src)) {
			space = j > 0;
			continue;
		}
		if (space && j + 2 < size)
			dst[j++] = ' ';
		space = 0;
		dst[j++] = *src;
	}
	dst[j] = '\0';
}

/* Replaces each copy of the `n` bytes at `secret` in `text` with "***". */
static void hide(char *text, const char *secret, size_t n)
{
	char out[MSG_MAX];
	const char *p = text;
	size_t j = 0;

	if (n == 0)
		return;
	while (*p != '\0' && j + 1 < sizeof(out)) {
		if (strncmp(p, secret, n) == 0) {
			if (j + 4 > sizeof(out))
				break;
			memcpy(out + j, "***", 3);
			j += 3;
			p += n;
		} else {
			out[j++] = *p++;
		}
	}
	out[j] = '\0';
	memcpy(text, out, j + 1);
}

/* Takes the password in `url` (after "user:" or as "password=") out of `text`, a
 * message that may quote the URL or a part of it. */
static void redact(char text[MSG_MAX], const char *url)
{
	const char *p = strstr(url, "://");
	const char *q;
	size_t len;

	if (p != NULL) {
		/* libpq ends the user information at the first '@' before any '/'. */
		p += 3;
		len = strcspn(p, "@/");
		q = memchr(p, ':', len);
		if (p[len] == '@' && q != NULL)
			hide(text, q + 1, (size_t)(p + len - q - 1));
	}
	for (q = strchr(url, '?'); q != NULL; q = strchr(q + 1, '&'))
		if (strncmp(q + 1, "password=", 9) == 0)
			hide(text, q + 10, strcspn(q + 10, "&"));
}

/* Server notices would go to stderr; the log's debug level is where they belong. */
static void notice(void *arg, const char *message)
{
	char line[MSG_MAX];

	oneline(line, sizeof(line), message);
	sw_debug("postgresql: %s", line);
}

/*
 * A little under statement_timeout, so that a statement waiting for a lock is reported as
 * such (SW_EBUSY): with equal values the statement's timer, started first, fires first.
 */
static unsigned lock_timeout_ms(const struct db_pg *p)
{
	unsigned ms = p->base.busy_timeout_ms;

	return ms > 10 ? ms - ms / 10 : ms;
}

/* Maps a failed result (or a NULL one) to an SW_E* code and a sentence. */
static int map_error(struct db_pg *p, const PGresult *res, char *err, size_t errlen)
{
	unsigned ms = p->base.busy_timeout_ms;
	const char *state = NULL;
	const char *msg = NULL;
	char text[MSG_MAX];

	if (PQstatus(p->conn) != CONNECTION_OK) {
		if (p->in_tx)
			p->tx_lost = 1;
		oneline(text, sizeof(text), PQerrorMessage(p->conn));
		sw_seterr(err, errlen, "database connection lost: %s", text);
		return SW_EUNREACH;
	}
	if (res != NULL) {
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		msg = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
	}
	oneline(text, sizeof(text), msg != NULL ? msg : PQerrorMessage(p->conn));
	if (text[0] == '\0')
		snprintf(text, sizeof(text), "unexpected result %s",
			 PQresStatus(PQresultStatus(res)));
	if (state == NULL)
		state = "";
	if (strcmp(state, "23505") == 0) { /* unique_violation */
		sw_seterr(err, errlen, "%s", text);
		return SW_EEXIST;
	}
	if (strcmp(state, "55P03") == 0) { /* lock_not_available: lock_timeout */
		sw_seterr(err, errlen, "database locked for more than %u ms", lock_timeout_ms(p));
		return SW_EBUSY;
	}
	if (strcmp(state, "57014") == 0) { /* query_canceled: statement_timeout */
		sw_seterr(err, errlen, "database statement ran for more than %u ms", ms);
		return SW_ETIMEDOUT;
	}
	if (strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0) {
		/* A deadlock or serialization failure: worth trying again, like a lock. */
		sw_seterr(err, errlen, "%s", text);
		return SW_EBUSY;
	}
	if (strncmp(state, "08", 2) == 0) {
		sw_seterr(err, errlen, "database unreachable: %s", text);
		return SW_EUNREACH;
	}
	sw_seterr(err, errlen, "%s", text);
	return SW_EDB;
}

/* Runs SQL that returns no rows, outside the statement cache. */
static int simple(struct db_pg *p, const char *sql, char *err, size_t errlen)
{
	PGresult *res = PQexec(p->conn, sql);
	int rc = 0;

	if (PQresultStatus(res) != PGRES_COMMAND_OK)
		rc = map_error(p, res, err, errlen);
	PQclear(res);
	return rc;
}

static int session_setup(struct db_pg *p, char *err, size_t errlen)
{
	char sql[160];

	snprintf(sql, sizeof(sql),
		 "SET statement_timeout = %u; SET lock_timeout = %u; "
		 "SET client_min_messages = warning",
		 p->base.busy_timeout_ms, lock_timeout_ms(p));
	return simple(p, sql, err, errlen);
}

/* Forgets the prepared statements, which died with the server session. */
static void forget(struct db_pg *p)
{
	for (int i = 0; i < DB_CACHE_SIZE; i++)
		db_cache_clear(&p->cache.slot[i]);
}

static int reconnect(struct db_pg *p, char *err, size_t errlen)
{
	char text[MSG_MAX];

	forget(p);
	/* Bounded by connect_timeout, as the first connection was. */
	PQreset(p->conn);
	if (PQstatus(p->conn) != CONNECTION_OK) {
		oneline(text, sizeof(text), PQerrorMessage(p->conn));
		sw_seterr(err, errlen, "database unreachable: %s", text);
		return SW_EUNREACH;
	}
	return session_setup(p, err, errlen);
}

/* Whether the connection can take a statement, reconnecting once if it broke. */
static int ready(struct db_pg *p, char *err, size_t errlen)
{
	int rc = 0;

	if (p->tx_lost) {
		sw_seterr(err, errlen,
			  "the database connection was lost during this transaction; "
			  "roll it back");
		return SW_EUNREACH;
	}
	/*
	 * Reads what a server that has closed the connection sent, without a round trip, so
	 * that a server restarted between statements costs no failed statement. The first
	 * read may take only its farewell message; the second then meets the end.
	 */
	if (PQstatus(p->conn) == CONNECTION_OK && PQtransactionStatus(p->conn) == PQTRANS_IDLE &&
	    PQconsumeInput(p->conn))
		PQconsumeInput(p->conn);
	if (PQstatus(p->conn) != CONNECTION_OK) {
		rc = reconnect(p, err, errlen);
		if (p->in_tx) {
			p->tx_lost = 1;
			if (rc == 0)
				sw_seterr(err, errlen,
					  "the database connection was lost during this "
					  "transaction; roll it back");
			rc = SW_EUNREACH;
		}
		return rc;
	}
	if (PQtransactionStatus(p->conn) == PQTRANS_INERROR) {
		sw_seterr(err, errlen,
			  "an earlier statement in this transaction failed; roll it back");
		return SW_EDB;
	}
	return 0;
}

/* Whether the quote at `q` opens an E'…' literal, where backslashes escape. */
static int escape_string(const char *sql, const char *q)
{
	if (q == sql || (q[-1] != 'E' && q[-1] != 'e'))
		return 0;
	return q - 1 == sql || !(isalnum((unsigned char)q[-2]) || q[-2] == '_');
}

/*
 * Counts the ? placeholders in `sql` outside string literals, quoted identifiers and
 * comments, and if `out` is not NULL writes `sql` there with them as $1, $2 … (`out`
 * needs strlen(sql) + 5 * count + 1 bytes). A '' inside a literal closes and reopens it,
 * which comes to the same. Dollar quoting is not understood; our SQL is portable.
 */
static int placeholders(const char *sql, char *out)
{
	const char *p;
	size_t len;
	char quote = 0; /* ', ", '\\' in E'…', '-' in a line comment, '*' in a block one */
	int depth = 0;
	int count = 0;

	for (p = sql; *p != '\0'; p += len) {
		len = 1;
		if (quote == '-') {
			if (*p == '\n')
				quote = 0;
		} else if (quote == '*') {
			if (p[0] == '*' && p[1] == '/') {
				len = 2;
				if (--depth == 0)
					quote = 0;
			} else if (p[0] == '/' && p[1] == '*') {
				len = 2;
				depth++;
			}
		} else if (quote == '\\') {
			if (p[0] == '\\' && p[1] != '\0')
				len = 2;
			else if (*p == '\'')
				quote = 0;
		} else if (quote != 0) {
			if (*p == quote)
				quote = 0;
		} else if (*p == '\'') {
			quote = escape_string(sql, p) ? '\\' : '\'';
		} else if (*p == '"') {
			quote = '"';
		} else if (p[0] == '-' && p[1] == '-') {
			quote = '-';
			len = 2;
		} else if (p[0] == '/' && p[1] == '*') {
			quote = '*';
			depth = 1;
			len = 2;
		} else if (*p == '?') {
			count++;
			if (out != NULL && count <= MAX_PARAMS)
				out += sprintf(out, "$%d", count);
			continue;
		}
		if (out != NULL) {
			memcpy(out, p, len);
			out += len;
		}
	}
	if (out != NULL)
		*out = '\0';
	return count;
}

/* Drops a prepared statement from the server and the cache. Failing, it stays on the
 * server unused until the session ends: names are never reused. */
static void deallocate(struct db_pg *p, struct db_cached *c)
{
	char sql[48];

	snprintf(sql, sizeof(sql), "DEALLOCATE sw_%lu", c->id);
	PQclear(PQexec(p->conn, sql));
	db_cache_clear(c);
}

/* The cache entry for `sql`, preparing it on the server if it is not there yet. */
static int statement(struct db_pg *p, const char *sql, struct db_cached **out, char *err,
		     size_t errlen)
{
	struct db_cached *c = db_cache_find(&p->cache, sql);
	PGresult *res = NULL;
	char *text = NULL;
	char name[32];
	int count;
	int rc = 0;

	if (c != NULL)
		goto out;
	count = placeholders(sql, NULL);
	if (count > MAX_PARAMS) {
		sw_seterr(err, errlen, "statement has more than %d parameters", MAX_PARAMS);
		rc = SW_EINVAL;
		goto out;
	}
	text = malloc(strlen(sql) + 5 * (size_t)count + 1);
	/* Nothing here marks an entry busy: results are whole before rows are handed on. */
	c = db_cache_victim(&p->cache);
	if (text == NULL || c == NULL) {
		sw_seterr(err, errlen, "out of memory");
		rc = SW_ENOMEM;
		c = NULL;
		goto out;
	}
	placeholders(sql, text);
	if (c->sql != NULL)
		deallocate(p, c);
	if (db_cache_fill(&p->cache, c, sql) < 0) {
		sw_seterr(err, errlen, "out of memory");
		rc = SW_ENOMEM;
		c = NULL;
		goto out;
	}
	c->id = ++p->next_id;
	c->nparams = count;
	snprintf(name, sizeof(name), "sw_%lu", c->id);
	res = PQprepare(p->conn, name, text, 0, NULL);
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		rc = map_error(p, res, err, errlen);
		db_cache_clear(c);
		c = NULL;
	}
out:
	PQclear(res);
	free(text);
	*out = c;
	return rc;
}

/* Rows inserted, updated or deleted; PQcmdTuples counts a SELECT's rows as well. */
static int64_t changed(PGresult *res)
{
	const char *tag = PQcmdStatus(res);

	if (strncmp(tag, "INSERT ", 7) != 0 && strncmp(tag, "UPDATE ", 7) != 0 &&
	    strncmp(tag, "DELETE ", 7) != 0 && strncmp(tag, "MERGE ", 6) != 0)
		return 0;
	return strtoll(PQcmdTuples(res), NULL, 10);
}

static int pg_exec(struct sw_db *db, const char *sql, const struct sw_db_val *params, int n,
		   sw_db_row_fn fn, void *arg, int64_t *changes, char *err, size_t errlen)
{
	struct db_pg *p = (struct db_pg *)db;
	const char *stack_values[STACK_PARAMS];
	char stack_ints[STACK_PARAMS][24];
	struct sw_db_val stack_row[STACK_COLS];
	const char **values = stack_values;
	char(*ints)[24] = stack_ints;
	struct sw_db_val *row = stack_row;
	struct db_cached *c;
	PGresult *res = NULL;
	const char *state;
	char name[32];
	int ncols;
	int rc;

	rc = ready(p, err, errlen);
	if (rc < 0)
		goto out;
	rc = statement(p, sql, &c, err, errlen);
	if (rc < 0)
		goto out;
	if (c->nparams != n) {
		sw_seterr(err, errlen, "statement takes %d parameters but %d were given",
			  c->nparams, n);
		rc = SW_EINVAL;
		goto out;
	}
	if (n > STACK_PARAMS) {
		values = calloc((size_t)n, sizeof(*values));
		ints = calloc((size_t)n, sizeof(*ints));
		if (values == NULL || ints == NULL) {
			sw_seterr(err, errlen, "out of memory");
			rc = SW_ENOMEM;
			goto out;
		}
	}
	for (int i = 0; i < n; i++) {
		values[i] = NULL;
		if (params[i].type == SW_DB_INT) {
			snprintf(ints[i], sizeof(ints[i]), "%" PRId64, params[i].i);
			values[i] = ints[i];
		} else if (params[i].type == SW_DB_TEXT) {
			values[i] = params[i].s;
		}
	}
	snprintf(name, sizeof(name), "sw_%lu", c->id);
	res = PQexecPrepared(p->conn, name, n, values, NULL, NULL, 0);
	switch (PQresultStatus(res)) {
	case PGRES_TUPLES_OK:
	case PGRES_COMMAND_OK:
	case PGRES_EMPTY_QUERY: break;
	default:
		rc = map_error(p, res, err, errlen);
		/* After a schema change the server refuses a prepared statement whose
		 * result would change shape; prepare it afresh next time. */
		state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
		if (state != NULL && strcmp(state, "0A000") == 0)
			deallocate(p, c);
		goto out;
	}
	if (changes != NULL)
		*changes = changed(res);
	ncols = PQnfields(res);
	if (fn == NULL || ncols == 0)
		goto out;
	if (ncols > STACK_COLS) {
		row = calloc((size_t)ncols, sizeof(*row));
		if (row == NULL) {
			sw_seterr(err, errlen, "out of memory");
			rc = SW_ENOMEM;
			goto out;
		}
	}
	for (int r = 0; r < PQntuples(res) && rc == 0; r++) {
		for (int i = 0; i < ncols; i++) {
			const char *v = PQgetvalue(res, r, i);
			Oid type = PQftype(res, i);

			if (PQgetisnull(res, r, i))
				row[i] = SW_DB_NULLV;
			else if (type == INT8OID || type == INT4OID || type == INT2OID)
				row[i] = SW_DB_INT(strtoll(v, NULL, 10));
			else
				row[i] = (struct sw_db_val){.type = SW_DB_TEXT, .s = v};
		}
		rc = fn(arg, ncols, row);
	}
out:
	PQclear(res);
	if (values != stack_values)
		free(values);
	if (ints != stack_ints)
		free(ints);
	if (row != stack_row)
		free(row);
	return rc;
}

static int pg_begin(struct sw_db *db, char *err, size_t errlen)
{
	struct db_pg *p = (struct db_pg *)db;
	int rc;

	if (p->in_tx) {
		sw_seterr(err, errlen, "a transaction is already active");
		return SW_EINVAL;
	}
	rc = ready(p, err, errlen);
	if (rc == 0)
		rc = simple(p, "BEGIN", err, errlen);
	if (rc == 0)
		p->in_tx = 1;
	return rc;
}

static int pg_commit(struct sw_db *db, char *err, size_t errlen)
{
	struct db_pg *p = (struct db_pg *)db;
	PGresult *res = NULL;
	int rc = 0;

	if (p->tx_lost || PQstatus(p->conn) != CONNECTION_OK) {
		sw_seterr(err, errlen,
			  "the database connection was lost during the transaction, "
			  "which the server rolled back");
		rc = SW_EUNREACH;
		goto out;
	}
	switch (PQtransactionStatus(p->conn)) {
	case PQTRANS_IDLE:
		sw_seterr(err, errlen, "no transaction is active");
		rc = SW_EINVAL;
		goto out;
	case PQTRANS_INERROR:
		/* COMMIT would roll back and report success. */
		simple(p, "ROLLBACK", NULL, 0);
		sw_seterr(err, errlen,
			  "an earlier statement in the transaction failed; it was rolled back");
		rc = SW_EDB;
		goto out;
	default: break;
	}
	p->in_tx = 0;
	res = PQexec(p->conn, "COMMIT");
	if (PQresultStatus(res) != PGRES_COMMAND_OK) {
		rc = map_error(p, res, err, errlen);
	} else if (strcmp(PQcmdStatus(res), "COMMIT") != 0) {
		sw_seterr(err, errlen, "the transaction was rolled back");
		rc = SW_EDB;
	}
out:
	PQclear(res);
	p->in_tx = 0;
	p->tx_lost = 0;
	return rc;
}

static void pg_rollback(struct sw_db *db)
{
	struct db_pg *p = (struct db_pg *)db;
	PGTransactionStatusType ts = PQtransactionStatus(p->conn);
	char err[MSG_MAX];

	p->in_tx = 0;
	p->tx_lost = 0;
	/* Idle has nothing to roll back; a lost connection's transaction is gone. */
	if (ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR)
		return;
	if (simple(p, "ROLLBACK", err, sizeof(err)) < 0)
		sw_warn("database rollback failed: %s", err);
}

static void pg_close(struct sw_db *db)
{
	struct db_pg *p = (struct db_pg *)db;

	forget(p);
	PQfinish(p->conn);
	free(p);
}

static const struct db_ops pg_ops = {
    .engine = "postgresql",
    .table_exists_sql = "SELECT 1 WHERE to_regclass(?) IS NOT NULL",
    .migrate_lock_sql = "LOCK TABLE schema_migrations IN SHARE ROW EXCLUSIVE MODE",
    .exec = pg_exec,
    .begin = pg_begin,
    .commit = pg_commit,
    .rollback = pg_rollback,
    .close = pg_close,
};

int db_pg_open(const struct sw_db_opts *opts, struct sw_db **out, char *err, size_t errlen)
{
	PQconninfoOption *parsed = NULL;
	struct db_pg *p = NULL;
	char *why = NULL;
	char text[MSG_MAX];
	char timeout[16], idle[16], user_timeout[16];
	/*
	 * Later keywords override what the URL says. Keepalives notice a server whose host
	 * vanished while we wait for a reply, tcp_user_timeout one that never acknowledged
	 * what we sent; otherwise a call could hang for as long as TCP retries.
	 */
	const char *keys[] = {"dbname",
			      "connect_timeout",
			      "keepalives_idle",
			      "keepalives_interval",
			      "keepalives_count",
			      "tcp_user_timeout",
			      "fallback_application_name",
			      NULL};
	const char *values[] = {opts->url, timeout,	 idle,	     idle,
				"3",	   user_timeout, "siteward", NULL};
	int rc = 0;

	snprintf(timeout, sizeof(timeout), "%u", opts->connect_timeout_s);
	snprintf(idle, sizeof(idle), "%u", opts->connect_timeout_s);
	snprintf(user_timeout, sizeof(user_timeout), "%u",
		 4 * opts->connect_timeout_s * 1000 + opts->busy_timeout_ms);
	/* Parsing first tells a malformed URL from an unreachable server. */
	parsed = PQconninfoParse(opts->url, &why);
	if (parsed == NULL) {
		oneline(text, sizeof(text), why != NULL ? why : "out of memory");
		redact(text, opts->url);
		sw_seterr(err, errlen, "invalid database URL: %s", text);
		rc = why != NULL ? SW_EINVAL : SW_ENOMEM;
		goto out;
	}
	p = calloc(1, sizeof(*p));
	if (p == NULL) {
		sw_seterr(err, errlen, "out of memory");
		rc = SW_ENOMEM;
		goto out;
	}
	p->base.ops = &pg_ops;
	p->base.busy_timeout_ms = opts->busy_timeout_ms;
	p->base.connect_timeout_s = opts->connect_timeout_s;
	p->conn = PQconnectdbParams(keys, values, 1);
	if (p->conn == NULL) {
		sw_seterr(err, errlen, "out of memory");
		rc = SW_ENOMEM;
		goto out;
	}
	PQsetNoticeProcessor(p->conn, notice, NULL);
	if (PQstatus(p->conn) != CONNECTION_OK) {
		oneline(text, sizeof(text), PQerrorMessage(p->conn));
		redact(text, opts->url);
		sw_seterr(err, errlen, "database unreachable: %s", text);
		rc = SW_EUNREACH;
		goto out;
	}
	rc = session_setup(p, err, errlen);
out:
	PQconninfoFree(parsed);
	PQfreemem(why);
	if (rc < 0 && p != NULL) {
		PQfinish(p->conn);
		free(p);
		p = NULL;
	}
	*out = p != NULL ? &p->base : NULL;
	return rc;
}

char **sw_db_pg_environ(const char *url, char *err, size_t errlen)
{
	PQconninfoOption *opts, *o;
	char *perr = NULL, **env;
	size_t n = 0, k = 0;

	opts = PQconninfoParse(url, &perr);
	if (!opts) {
		sw_seterr(err, errlen, "the database URL cannot be read: %s",
			  perr ? perr : "out of memory");
		PQfreemem(perr);
		return NULL;
	}
	while (environ[n])
		n++;
	for (o = opts; o->keyword; o++)
		n++;
	env = calloc(n + 1, sizeof(*env));
	/* The URL's settings, in place of any the server itself was started with. */
	for (o = opts; env && o->keyword; o++) {
		if (!o->val || !o->envvar)
			continue;
		if (asprintf(&env[k], "%s=%s", o->envvar, o->val) < 0) {
			env[k] = NULL;
			sw_environ_free(env);
			env = NULL;
			break;
		}
		k++;
	}
	for (size_t i = 0, set = k; env && environ[i]; i++) {
		size_t j, len = strcspn(environ[i], "=");

		for (j = 0; j < set; j++)
			if (strncmp(env[j], environ[i], len + 1) == 0)
				break;
		if (j < set)
			continue;
		if (!(env[k++] = strdup(environ[i]))) {
			sw_environ_free(env);
			env = NULL;
		}
	}
	PQconninfoFree(opts);
	if (!env)
		sw_seterr(err, errlen, "out of memory");
	return env;
}

void sw_environ_free(char **env)
{
	if (!env)
		return;
	for (size_t i = 0; env[i]; i++)
		free(env[i]);
	free(env);
}
