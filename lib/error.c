#include "error.h"

#include <stdarg.h>
#include <stdio.h>

const char *sw_strerror(int code)
{
	switch (code) {
	case SW_OK: return "success";
	case SW_ENOMEM: return "out of memory";
	case SW_EINVAL: return "invalid input";
	case SW_EIO: return "I/O error";
	case SW_ETIMEDOUT: return "timed out";
	case SW_EUNREACH: return "unreachable";
	case SW_ETLS: return "TLS failure";
	case SW_EDB: return "database error";
	case SW_ENOTFOUND: return "not found";
	case SW_EEXIST: return "already exists";
	case SW_EDENIED: return "denied";
	case SW_EPROTO: return "protocol error";
	case SW_ETOOBIG: return "too large";
	case SW_EBUSY: return "busy";
	case SW_ECRYPTO: return "cryptographic failure";
	}
	return "unknown error";
}

void sw_seterr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (err == NULL || errlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}
