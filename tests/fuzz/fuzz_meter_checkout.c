/* The meter's request bodies (checkout, heartbeat, check-in, reclaim, borrow) and the site server's
 * configuration answer, as the meter reads them from the network. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "meter/meter.h"
#include "progver.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct heartbeat_req hb;
	struct checkout_req co;
	struct checkin_req ci;
	struct reclaim_req rr;
	struct borrow_req br;
	struct meter_config conf;
	char err[256];
	json_t *j;

	if (lease_config_parse((const char *)data, size, &conf, err, sizeof(err)) == 0)
		lease_config_cleanup(&conf);
	if (sw_json_parse_object((const char *)data, size, &j, err, sizeof(err)))
		return 0;
	if (proto_checkout_parse(j, &co, err, sizeof(err)) == 0 &&
	    (strlen(co.client) != 32 || !co.exe[0] || !co.user[0] || co.wait_ms < 0 ||
	     (co.version[0] && !sw_prog_version_valid(co.version)) ||
	     (!co.has_version && co.version[0])))
		abort();
	if (proto_heartbeat_parse(j, &hb, err, sizeof(err)) == 0) {
		if (hb.nleases > METER_HB_MAX_LEASES)
			abort();
		for (size_t i = 0; i < hb.nleases; i++)
			if (!proto_id_valid(hb.leases[i]) || hb.idle_s[i] < -1)
				abort();
	}
	if (proto_checkin_parse(j, &ci, err, sizeof(err)) == 0 &&
	    (!proto_id_valid(ci.client) || !proto_id_valid(ci.lease)))
		abort();
	if (proto_reclaim_parse(j, &rr, err, sizeof(err)) == 0 &&
	    ((!rr.lease[0] && !rr.user[0] && !rr.host[0]) ||
	     (rr.lease[0] && !proto_id_valid(rr.lease))))
		abort();
	if (proto_borrow_parse(j, &br, err, sizeof(err)) == 0 &&
	    (!proto_id_valid(br.client) || !br.product[0] || br.for_s < SW_BORROW_MIN_S ||
	     br.for_s > SW_BORROW_LIMIT_S))
		abort();
	json_decref(j);
	return 0;
}
