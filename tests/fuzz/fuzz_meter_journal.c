/* One line of the meter's journal, as replay reads it from disk, applied to a table. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "log.h"
#include "meter/meter.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	struct lease_table *t;
	char err[256];
	uint64_t seq;
	json_t *rec;

	if (!quiet) {
		sw_log_init("fuzz", SW_LOG_ERR);
		quiet = 1;
	}
	if (journal_parse_line((const char *)data, size, &rec, &seq, err, sizeof(err)))
		return 0;
	if (seq == 0)
		abort();
	t = lease_table_new();
	if (t) {
		/* Applied twice: replaying a record again must change nothing. */
		if (lease_apply(t, rec, 1700000000000LL, 0, err, sizeof(err)) == 0) {
			size_t n = t->nleases, u = t->nusage;

			lease_apply(t, rec, 1700000000000LL, 0, err, sizeof(err));
			if (t->nleases != n || t->nusage != u)
				abort();
		}
		lease_table_free(t);
	}
	json_decref(rec);
	return 0;
}
