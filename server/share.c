/* The rule by which metering servers share a product's licenses (share.h). */
#include "share.h"

static int64_t held(const struct share *s)
{
	return s->applied > s->assigned ? s->applied : s->assigned;
}

/* What a server holds beyond what it has in use. */
static int64_t free_held(const struct share *s)
{
	return held(s) > s->in_use ? held(s) - s->in_use : 0;
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* What `rounds` rounds of one license to each live server with clients waiting give. */
static int64_t given_in(const struct share *sh, size_t n, int64_t rounds)
{
	int64_t sum = 0;

	for (size_t i = 0; i < n; i++)
		if (sh[i].live)
			sum += min64(sh[i].waiting, rounds);
	return sum;
}

int64_t share_of(const struct share *sh, size_t n, const struct share *former, size_t nformer,
		 size_t me, int64_t total)
{
	int64_t free_ = total, most = 0, lo = 0, hi, target, left, others = 0;
	size_t nlive = 0, rank = 0;

	if (me >= n)
		return 0;
	for (size_t i = 0; i < n; i++) {
		free_ -= sh[i].in_use;
		nlive += sh[i].live != 0;
		if (sh[i].live && sh[i].waiting > most)
			most = sh[i].waiting;
	}
	if (free_ < 0)
		free_ = 0;
	/* What is in use stays where it is. Then waiting clients, a license to each live
	 * server at a time: the whole rounds that fit, found by bisection... */
	for (hi = most; lo < hi;) {
		int64_t mid = lo + (hi - lo + 1) / 2;
		if (given_in(sh, n, mid) <= free_)
			lo = mid;
		else
			hi = mid - 1;
	}
	left = free_ - given_in(sh, n, lo);
	target = sh[me].in_use + (sh[me].live ? min64(sh[me].waiting, lo) : 0);
	/* ...and the round that does not fit, to the first servers in the order */
	for (size_t i = 0; i < n && left > 0; i++)
		if (sh[i].live && sh[i].waiting > lo) {
			left--;
			if (i == me)
				target++;
		}
	/* then the rest evenly over the live servers; the ones left over where free
	 * licenses are now (the first ones first among equals), so that a grant on one
	 * server does not move another's free license to it: a license on its way is
	 * held by neither, and a client asking then is denied */
	for (size_t i = 0; i < n; i++)
		if (i != me && sh[i].live &&
		    (free_held(&sh[i]) > free_held(&sh[me]) ||
		     (free_held(&sh[i]) == free_held(&sh[me]) && i < me)))
			rank++;
	if (sh[me].live && nlive)
		target += left / (int64_t)nlive + ((int64_t)rank < left % (int64_t)nlive);
	for (size_t i = 0; i < n; i++)
		if (i != me)
			others += held(&sh[i]);
	for (size_t i = 0; i < nformer; i++)
		others += held(&former[i]);
	return target < total - others ? (target > 0 ? target : 0)
				       : (total - others > 0 ? total - others : 0);
}
