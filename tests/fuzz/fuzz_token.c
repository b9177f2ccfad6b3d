/* POST /v1/tokens bodies, and enrollment tokens as an agent or the server splits them. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[256], secret[SW_TOKEN_SECRET_HEX + 1], pin[SW_TOKEN_PIN_HEX + 1];
	const char *token;
	struct sw_token_req req;
	json_t *j;
	char *s;

	if (sw_json_parse_object((const char *)data, size, &j, err, sizeof(err)) == 0) {
		if (sw_proto_token_req_parse(j, &req, err, sizeof(err)) == 0 &&
		    (req.ttl_s < 1 || req.ttl_s > SW_TOKEN_TTL_MAX || req.uses < 1 ||
		     req.uses > SW_TOKEN_USES_MAX))
			abort();
		if (sw_json_str(j, "token", 128, 1, &token, err, sizeof(err)) == 0)
			sw_proto_token_split(token, secret, pin);
		json_decref(j);
	}

	/* The token alone, as it comes from the command line of `siteward-agent init`. */
	s = malloc(size + 1);
	if (s == NULL)
		return 0;
	memcpy(s, data, size);
	s[size] = '\0';
	if (sw_proto_token_split(s, secret, pin) == 0 &&
	    (strlen(secret) != SW_TOKEN_SECRET_HEX || strlen(pin) != SW_TOKEN_PIN_HEX))
		abort();
	free(s);
	return 0;
}
