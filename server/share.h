/* How a product's licenses are shared among the site's metering servers: a pure rule,
 * tested on its own (tests/unit/test_share.c). */
#ifndef SHARE_H
#define SHARE_H

#include <stddef.h>
#include <stdint.h>

/* A metering server's standing for one product, as stored in allotments. */
struct share {
	int64_t applied;  /* the share it last reported applying */
	int64_t in_use;	  /* licenses it last reported lent out */
	int64_t waiting;  /* clients it last reported queued */
	int64_t assigned; /* the share the site last gave it */
	int live;	  /* it reports as often as it is told to, and its service runs */
};

/*
 * The share of server `me` of `n`, in a fixed order every server is worked out in, of
 * `total` licenses. Targets follow demand: what is in use stays where it is; then each
 * live server's waiting clients; then what is left goes evenly to the live servers,
 * any odd ones to those that hold the most free licenses now (then in order), so that
 * licenses move only to even the shares out, never back and forth.
 * A server that has stopped reporting keeps its target at what it had in use, so free
 * licenses go where clients can reach them. But a share is raised only from licenses
 * that no other server holds or may still hold (the larger of what it last applied and
 * what it was last assigned), so the sum of every server's licenses never exceeds the
 * count whoever is unreachable. `former` are servers that lost the role but may still
 * grant from their last share: they get nothing new and keep what they had.
 */
int64_t share_of(const struct share *sh, size_t n, const struct share *former, size_t nformer,
		 size_t me, int64_t total);

#endif
