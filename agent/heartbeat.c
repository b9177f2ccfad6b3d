/* Heartbeats: what the agent reports of itself, and what it does with the server's
 * reply. They go on the channel's polls (channel.c): on the interval the server sets,
 * and on the first poll after a change. */
#include "agent.h"

#include "error.h"
#include "json.h"
#include "util.h"

int heartbeat_took(struct agent *a, const json_t *j)
{
	int64_t interval = a->heartbeat_s;
	json_t *roles;

	if (!json_is_object(j) ||
	    sw_json_int(j, "heartbeat_interval", 1, 3600, 0, &interval, NULL, 0) != 0)
		return SW_EPROTO;
	/* The reply carries the roles the server wants: an agent that was away catches up
	 * here, with no call from the server needed. */
	if ((roles = json_object_get(j, "roles")))
		roles_apply(a, roles);
	dp_revoked(a, json_object_get(j, "revoked"));
	usage_meters_save(a, json_object_get(j, "meters"), json_object_get(j, "meter_names"));
	/* a rotation of the site's CA: the CAs to trust, then a certificate of the new one */
	if (json_is_string(json_object_get(j, "ca")))
		renew_trust(a, json_string_value(json_object_get(j, "ca")));
	if (json_is_true(json_object_get(j, "renew")))
		renew_now(a);
	passive_products_version(a->passive, json_object_get(j, "products_version"));
	ticket_written_off(a, json_object_get(j, "written_off"));
	a->heartbeat_s = (unsigned)interval;
	a->last_heartbeat_ok = sw_now_ms();
	usage_upload(a);
	inventory_heard(a);
	return 0;
}

json_t *heartbeat_body(struct agent *a)
{
	json_t *msg = json_pack("{ss so sO so}", "version", a->version, "facts", facts_collect(a),
				"roles", a->roles, "services", supervisor_json(a->sup));

	/* the server learns this agent's clock error from it, for deadlines it sends */
	if (msg)
		json_object_set_new(msg, "now", json_integer(sw_now_ms()));
	/* which of the site's CAs it trusts, so a rotation knows when to go on */
	if (msg)
		json_object_set_new(msg, "ca_id", json_string(a->ca_id));
	if (msg && supervisor_find(a->sup, "meter") && a->meter_listen[0])
		json_object_set_new(msg, "meter_address", json_string(a->meter_listen));
	if (msg && dp_address(a))
		json_object_set_new(msg, "dp_address", json_string(dp_address(a)));
	return msg;
}

void heartbeat_soon(struct agent *a)
{
	channel_soon(a);
}
