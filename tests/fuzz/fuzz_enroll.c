/* POST /v1/enroll bodies, as the server reads them from an agent it does not know yet. */
#include <stddef.h>
#include <stdint.h>

#include "json.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256], secret[SW_TOKEN_SECRET_HEX + 1], pin[SW_TOKEN_PIN_HEX + 1];
	struct sw_enroll_req req;
	json_t *j;

	if (sw_json_parse_object((const char *)data, size, &j, err, sizeof(err)))
		return 0;
	/* The server splits the token next, so follow it there. */
	if (sw_proto_enroll_parse(j, &req, err, sizeof(err)) == 0)
		sw_proto_token_split(req.token, secret, pin);
	json_decref(j);
	return 0;
}
