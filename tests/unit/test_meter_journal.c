/* The meter's journal: group commit, replay, torn and corrupt lines, compaction. */
#include "error.h"
#include "meter/meter.h"
#include "util.h"

#include <fcntl.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#define CLIENT_A "0123456789abcdef0123456789abcdef"
#define CLIENT_B "fedcba9876543210fedcba9876543210"
#define WALL	 1700000000000LL

static const char cad_config[] =
    "{\"products\":[{\"name\":\"cad\",\"exe\":\"cad\",\"licenses\":2,\"allotment\":2,"
    "\"enforce\":true}],\"lease_ttl_ms\":30000}";

struct fixture {
	uv_loop_t loop;
	char dir[64];
	struct lease_table *t;
	struct journal *j;
};

static int apply(void *arg, const json_t *rec, char *err, size_t errlen)
{
	return lease_apply(arg, rec, WALL + 100000, 100000, err, errlen);
}

static void open_table(struct fixture *f)
{
	struct meter_config conf;
	char err[256];

	f->t = lease_table_new();
	assert_non_null(f->t);
	assert_int_equal(lease_config_parse(cad_config, strlen(cad_config), &conf, NULL, 0), 0);
	lease_configure(f->t, &conf, WALL, 0);
	lease_config_cleanup(&conf);
	assert_int_equal(
	    journal_open(&f->loop, f->dir, apply, lease_snapshot, f->t, &f->j, err, sizeof(err)),
	    0);
	f->t->journal = f->j;
}

static void close_table(struct fixture *f)
{
	journal_close(f->j);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	lease_table_free(f->t);
	f->j = NULL;
	f->t = NULL;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	assert_int_equal(uv_loop_init(&f->loop), 0);
	strcpy(f->dir, "/tmp/test_meter_journal.XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char cmd[128];

	if (f->j)
		close_table(f);
	uv_loop_close(&f->loop);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	assert_int_equal(system(cmd), 0);
	free(f);
	return 0;
}

static int done_count;

static void on_done(void *arg, int rc)
{
	assert_int_equal(rc, 0);
	done_count++;
}

static void flush(struct fixture *f)
{
	while (journal_busy(f->j))
		uv_run(&f->loop, UV_RUN_ONCE);
}

static struct checkout_req req_for(const char *user, const char *client)
{
	struct checkout_req r;

	memset(&r, 0, sizeof(r));
	strcpy(r.exe, "cad");
	strcpy(r.user, user);
	strcpy(r.client, client);
	r.pid = 7;
	return r;
}

static char *read_journal(struct fixture *f, size_t *lines)
{
	char path[128], *buf = NULL;
	size_t len;

	snprintf(path, sizeof(path), "%s/journal", f->dir);
	assert_int_equal(sw_file_read(path, 1 << 20, &buf, &len, NULL, 0), 0);
	*lines = 0;
	for (size_t i = 0; i < len; i++)
		*lines += buf[i] == '\n';
	return buf;
}

static void write_journal(struct fixture *f, const char *text)
{
	char path[128];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/journal", f->dir);
	assert_non_null(fp = fopen(path, "w"));
	fputs(text, fp);
	fclose(fp);
}

static void test_group_commit(void **state)
{
	struct fixture *f = *state;
	struct checkout_req r = req_for("alice", CLIENT_A);
	struct checkout_out out;
	struct waiter w = {0};
	uint64_t flushes, records, max_batch;

	open_table(f);
	done_count = 0;
	/* Everything appended in one turn of the loop rides in one flush. */
	for (int i = 0; i < 50; i++) {
		assert_int_equal(lease_checkout(f->t, &r, "web1", WALL, 0, &w, &out), 0);
		assert_int_equal(journal_wait(f->j, on_done, NULL), 0);
	}
	assert_int_equal(done_count, 0);
	flush(f);
	assert_int_equal(done_count, 50);
	journal_stats(f->j, &flushes, &records, &max_batch);
	assert_int_equal(flushes, 1);
	assert_int_equal(records, 50);
	/* Nothing pending: the answer comes at once. */
	assert_int_equal(journal_wait(f->j, on_done, NULL), 0);
	assert_int_equal(done_count, 51);
}

static void test_replay_restores_state(void **state)
{
	struct fixture *f = *state;
	struct checkout_req a = req_for("alice", CLIENT_A), b = req_for("bob", CLIENT_B);
	struct checkout_out out;
	struct waiter w = {0};
	char kept[33], released[33], denied[33];
	struct usage_batch batch;
	json_t *arr;

	open_table(f);
	assert_int_equal(lease_checkout(f->t, &a, "web1", WALL, 0, &w, &out), 0);
	strcpy(kept, out.lease->id);
	assert_int_equal(lease_checkout(f->t, &b, "web2", WALL, 0, &w, &out), 0);
	strcpy(released, out.lease->id);
	assert_int_equal(lease_checkout(f->t, &b, "web2", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
	strcpy(denied, f->t->utail->id);
	assert_int_equal(lease_checkin(f->t, released, CLIENT_B, "web2", WALL + 500, 500), 0);
	flush(f);
	/* The denial is uploaded: it must not come back. */
	assert_int_equal(lease_usage_take(f->t, journal_durable_seq(f->j), 1, &batch), 1);
	assert_string_equal(batch.ids[0], denied);
	/* what is uploaded: a JSON array of the records */
	assert_non_null(arr = json_loadb(batch.json, batch.len, 0, NULL));
	assert_int_equal(json_array_size(arr), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "id")),
			    denied);
	assert_string_equal(json_string_value(json_object_get(json_array_get(arr, 0), "kind")),
			    "denied");
	json_decref(arr);
	lease_usage_done(f->t, &batch, 1);
	usage_batch_cleanup(&batch);
	flush(f);
	close_table(f);

	open_table(f);
	assert_int_equal(f->t->nleases, 1);
	assert_non_null(lease_find(f->t, kept));
	assert_string_equal(lease_find(f->t, kept)->user, "alice");
	assert_string_equal(lease_find(f->t, kept)->host, "web1");
	assert_int_equal(lease_find(f->t, kept)->granted_at, WALL);
	/* A recovered lease gets a fresh ttl from the restart. */
	assert_int_equal(lease_find(f->t, kept)->deadline, 100000 + 30000);
	assert_int_equal(f->t->nusage, 1);
	assert_string_equal(f->t->uhead->id, released);
	assert_string_equal(f->t->uhead->kind, "run");
	assert_int_equal(f->t->uhead->end, WALL + 500);
	/* The recovered lease still counts against the allotment. */
	assert_int_equal(lease_checkout(f->t, &b, "web2", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_GRANTED);
	assert_int_equal(lease_checkout(f->t, &b, "web2", WALL, 0, &w, &out), 0);
	assert_int_equal(out.result, CHECKOUT_DENIED);
}

static void test_torn_and_corrupt_lines(void **state)
{
	struct fixture *f = *state;
	size_t lines;
	char *text;

	write_journal(
	    f, "{\"seq\":1,\"t\":\"grant\",\"lease\":\"11111111111111111111111111111111\","
	       "\"client\":\"" CLIENT_A "\",\"product\":\"cad\",\"exe\":\"cad\",\"user\":\"a\","
	       "\"host\":\"h\",\"pid\":1,\"granted_at\":5,\"wait_ms\":0}\n"
	       "this line is garbage\n"
	       "{\"seq\":3,\"t\":\"grant\",\"lease\":\"22222222222222222222222222222222\","
	       "\"client\":\"" CLIENT_A "\",\"product\":\"cad\",\"exe\":\"cad\",\"user\":\"a\","
	       "\"host\":\"h\",\"pid\":1,\"granted_at\":5}\n"
	       "{\"seq\":4,\"t\":\"bogus\"}\n"
	       "{\"seq\":5,\"t\":\"grant\",\"lease\":\"33333333333333333333333333333333\","
	       "\"client\":\"" CLIENT_A "\",\"product\":\"cad\",\"ex");
	open_table(f);
	assert_int_equal(f->t->nleases, 2);
	assert_non_null(lease_find(f->t, "11111111111111111111111111111111"));
	assert_non_null(lease_find(f->t, "22222222222222222222222222222222"));
	assert_null(lease_find(f->t, "33333333333333333333333333333333"));
	/* The snapshot replaced the file: two leases, no torn tail. */
	text = read_journal(f, &lines);
	assert_int_equal(lines, 2);
	assert_null(strstr(text, "garbage"));
	assert_int_equal(text[strlen(text) - 1], '\n');
	free(text);
	/* New records continue the sequence. */
	{
		struct checkout_req r = req_for("x", CLIENT_A);
		struct checkout_out out;
		struct waiter w = {0};

		assert_int_equal(lease_checkout(f->t, &r, "h", WALL, 0, &w, &out), 0);
		assert_int_equal(out.result, CHECKOUT_DENIED);
		assert_true(f->t->utail->seq > 5);
	}
}

#define LEASE_1 "11111111111111111111111111111111"
#define LEASE_2 "22222222222222222222222222222222"
#define DENIAL	"33333333333333333333333333333333"
#define GONE	"44444444444444444444444444444444"

/* The state an old-format journal holds: lease 1 live, lease 2 released into a pending
 * run, a pending denial (one more was uploaded). */
static void check_old_state(struct fixture *f)
{
	struct usage_batch batch;
	json_t *arr, *rec;

	assert_int_equal(f->t->nleases, 1);
	assert_non_null(lease_find(f->t, LEASE_1));
	assert_string_equal(lease_find(f->t, LEASE_1)->exe, "cad \"pro\"");
	assert_int_equal(f->t->nusage, 2);
	assert_string_equal(f->t->uhead->id, LEASE_2);
	assert_string_equal(f->t->utail->id, DENIAL);
	assert_int_equal(lease_usage_take(f->t, journal_durable_seq(f->j), 10, &batch), 2);
	assert_non_null(arr = json_loadb(batch.json, batch.len, 0, NULL));
	assert_int_equal(json_array_size(arr), 2);
	rec = json_array_get(arr, 0);
	assert_string_equal(json_string_value(json_object_get(rec, "id")), LEASE_2);
	assert_string_equal(json_string_value(json_object_get(rec, "user")), "b\u00e9");
	assert_string_equal(json_string_value(json_object_get(rec, "kind")), "run");
	assert_int_equal(json_integer_value(json_object_get(rec, "start")), 5);
	assert_int_equal(json_integer_value(json_object_get(rec, "end")), 9);
	assert_int_equal(json_integer_value(json_object_get(rec, "wait_ms")), 3);
	assert_string_equal(json_string_value(json_object_get(rec, "source")), "meter");
	rec = json_array_get(arr, 1);
	assert_string_equal(json_string_value(json_object_get(rec, "id")), DENIAL);
	assert_string_equal(json_string_value(json_object_get(rec, "kind")), "denied");
	json_decref(arr);
	lease_usage_done(f->t, &batch, 0);
	usage_batch_cleanup(&batch);
}

/* A journal as earlier versions wrote it replays, and so does the snapshot made of it. */
static void test_old_journal_replays(void **state)
{
	struct fixture *f = *state;
	size_t lines;
	char *text;

	write_journal(
	    f, "{\"seq\":1,\"t\":\"grant\",\"lease\":\"" LEASE_1 "\",\"client\":\"" CLIENT_A
	       "\",\"product\":\"cad\",\"exe\":\"cad \\\"pro\\\"\",\"user\":\"a\",\"host\":\"h\","
	       "\"pid\":1,\"granted_at\":5,\"wait_ms\":0}\n"
	       "{\"seq\":2,\"t\":\"grant\",\"lease\":\"" LEASE_2 "\",\"client\":\"" CLIENT_A
	       "\",\"product\":\"cad\",\"exe\":\"cad\",\"user\":\"b\\u00e9\",\"host\":\"h\","
	       "\"pid\":1,\"granted_at\":5,\"wait_ms\":3}\n"
	       "{\"seq\":3,\"t\":\"usage\",\"usage\":{\"id\":\"" GONE "\",\"product\":\"cad\","
	       "\"exe\":\"cad\",\"user\":\"c\",\"host\":\"h\",\"start\":6,\"end\":6,"
	       "\"kind\":\"denied\",\"wait_ms\":0,\"source\":\"meter\"}}\n"
	       "{\"seq\":4,\"t\":\"release\",\"lease\":\"" LEASE_2 "\",\"usage\":{\"id\":\"" LEASE_2
	       "\",\"product\":\"cad\",\"exe\":\"cad\",\"user\":\"b\\u00e9\",\"host\":\"h\","
	       "\"start\":5,\"end\":9,\"kind\":\"run\",\"wait_ms\":3,\"source\":\"meter\"}}\n"
	       "{\"seq\":5,\"t\":\"usage\",\"usage\":{\"id\":\"" DENIAL "\",\"product\":\"cad\","
	       "\"exe\":\"cad\",\"user\":\"c\",\"host\":\"h\",\"start\":7,\"end\":7,"
	       "\"kind\":\"denied\",\"wait_ms\":0,\"source\":\"meter\"}}\n"
	       "{\"seq\":6,\"t\":\"uploaded\",\"ids\":[\"" GONE "\"]}\n");
	open_table(f);
	check_old_state(f);
	/* the snapshot: one grant and two usage records, numbered on from the old file */
	text = read_journal(f, &lines);
	assert_int_equal(lines, 3);
	assert_non_null(strstr(text, "{\"seq\":7,\"t\":\"grant\",\"lease\":\"" LEASE_1));
	assert_non_null(strstr(text, "{\"seq\":8,\"t\":\"usage\",\"usage\":{\"id\":\"" LEASE_2));
	assert_non_null(strstr(text, "{\"seq\":9,\"t\":\"usage\",\"usage\":{\"id\":\"" DENIAL));
	free(text);
	close_table(f);
	open_table(f);
	check_old_state(f);
}

static void test_compaction_keeps_live_state(void **state)
{
	struct fixture *f = *state;
	struct checkout_req a = req_for("alice", CLIENT_A);
	struct checkout_out out;
	struct waiter w = {0};
	char live[33];
	size_t lines;
	char *text;

	open_table(f);
	/* Churn: many grants and check-ins, every run uploaded. */
	for (int i = 0; i < 200; i++) {
		struct usage_batch batch;

		assert_int_equal(lease_checkout(f->t, &a, "web1", WALL + i, i, &w, &out), 0);
		assert_int_equal(lease_checkin(f->t, out.lease->id, CLIENT_A, "web1", WALL + i, i),
				 0);
		flush(f);
		assert_int_equal(lease_usage_take(f->t, journal_durable_seq(f->j), 500, &batch), 1);
		lease_usage_done(f->t, &batch, 1);
		usage_batch_cleanup(&batch);
	}
	assert_int_equal(lease_checkout(f->t, &a, "web1", WALL, 0, &w, &out), 0);
	strcpy(live, out.lease->id);
	assert_int_equal(lease_checkout(f->t, &a, "web1", WALL, 0, &w, &out), 0);
	assert_int_equal(lease_checkin(f->t, out.lease->id, CLIENT_A, "web1", WALL + 9, 9), 0);
	flush(f);
	text = read_journal(f, &lines);
	assert_true(lines > 600);
	free(text);
	close_table(f);

	open_table(f);
	text = read_journal(f, &lines);
	/* Exactly the live state: one lease and one pending run. */
	assert_int_equal(lines, 2);
	assert_non_null(strstr(text, live));
	free(text);
	assert_int_equal(f->t->nleases, 1);
	assert_int_equal(f->t->nusage, 1);
	assert_non_null(lease_find(f->t, live));
}

static void test_compaction_at_runtime(void **state)
{
	struct fixture *f = *state;
	struct checkout_req r = req_for("alice", CLIENT_A);
	struct checkout_out out;
	struct waiter w = {0};
	char path[128];
	struct stat st;
	off_t last = 0, written = 0;
	struct usage_batch batch;

	open_table(f);
	snprintf(path, sizeof(path), "%s/journal", f->dir);
	/* Two leases stay live; denials come and are uploaded, a thousand at a time, until
	 * the file shrinks: the flush that would have crossed the bound wrote a snapshot. */
	for (;;) {
		for (int i = 0; i < 1000; i++)
			assert_int_equal(lease_checkout(f->t, &r, "web1", WALL, 0, &w, &out), 0);
		flush(f);
		while (
		    lease_usage_take(f->t, journal_durable_seq(f->j), METER_UPLOAD_BATCH, &batch)) {
			lease_usage_done(f->t, &batch, 1);
			usage_batch_cleanup(&batch);
		}
		done_count = 0;
		assert_int_equal(journal_wait(f->j, on_done, NULL), 0);
		flush(f);
		assert_int_equal(done_count, 1);
		assert_int_equal(stat(path, &st), 0);
		if (st.st_size < last)
			break;
		written = last = st.st_size;
		assert_true(written <= METER_JOURNAL_MAX);
	}
	assert_true(written > METER_JOURNAL_MAX - 1024 * 1024);
	/* The snapshot held what was live then: two leases and the denials of the batch
	 * not yet uploaded; the uploads since are appended. */
	assert_true(st.st_size < 1024 * 1024);
	assert_int_equal(f->t->nusage, 0);
	assert_int_equal(f->t->nleases, 2);
	/* Appending goes on in the new file. */
	assert_int_equal(lease_checkout(f->t, &r, "web1", WALL, 0, &w, &out), 0);
	flush(f);
	close_table(f);
	open_table(f);
	assert_int_equal(f->t->nleases, 2);
	assert_int_equal(f->t->nusage, 1);
}

static int eio_count;

static void on_eio(void *arg, int rc)
{
	assert_int_equal(rc, SW_EIO);
	eio_count++;
}

static void test_failed_write_is_recovered(void **state)
{
	struct fixture *f = *state;
	struct checkout_req r = req_for("alice", CLIENT_A);
	struct checkout_out out;
	struct waiter w = {0};
	struct rlimit old, small;
	char lost[33];

	open_table(f);
	/* The disk refuses: the waiting request hears so, and memory keeps the lease. */
	signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	small = old;
	small.rlim_cur = 0;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &small), 0);
	assert_int_equal(lease_checkout(f->t, &r, "web1", WALL, 0, &w, &out), 0);
	strcpy(lost, out.lease->id);
	eio_count = 0;
	assert_int_equal(journal_wait(f->j, on_eio, NULL), 0);
	flush(f);
	assert_int_equal(eio_count, 1);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	/* The next flush rewrites the file from memory, so nothing is missing from it. */
	assert_int_equal(lease_checkout(f->t, &r, "web1", WALL, 0, &w, &out), 0);
	done_count = 0;
	assert_int_equal(journal_wait(f->j, on_done, NULL), 0);
	flush(f);
	assert_int_equal(done_count, 1);
	close_table(f);
	open_table(f);
	assert_int_equal(f->t->nleases, 2);
	assert_non_null(lease_find(f->t, lost));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_group_commit, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_replay_restores_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_torn_and_corrupt_lines, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_old_journal_replays, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_compaction_keeps_live_state, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_compaction_at_runtime, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_failed_write_is_recovered, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
