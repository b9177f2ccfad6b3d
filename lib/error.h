/* Error codes shared by every module: 0 is success, a negative SW_E* code failure. */
#ifndef SW_ERROR_H
#define SW_ERROR_H

enum {
	SW_OK = 0,
	SW_ENOMEM = -1,	   /* out of memory */
	SW_EINVAL = -2,	   /* invalid argument or malformed input */
	SW_EIO = -3,	   /* file or device error */
	SW_ETIMEDOUT = -4, /* a deadline passed */
	SW_EUNREACH = -5,  /* peer could not be reached */
	SW_ETLS = -6,	   /* TLS or certificate failure */
	SW_EDB = -7,	   /* site database error */
	SW_ENOTFOUND = -8, /* no such thing */
	SW_EEXIST = -9,	   /* already exists */
	SW_EDENIED = -10,  /* refused by policy or authorization */
	SW_EPROTO = -11,   /* peer broke the protocol */
	SW_ETOOBIG = -12,  /* input larger than its limit */
	SW_EBUSY = -13,	   /* resource locked or in use */
	SW_ECRYPTO = -14,  /* key, signature or certificate operation failed */
};

/* A short static description of an SW_E* code. */
const char *sw_strerror(int code);

#include <stddef.h>

/* Writes a sentence for a person into the caller's buffer `err` of `errlen` bytes, the
 * way every function that takes one reports a failure; nothing when `err` is NULL. */
void sw_seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
