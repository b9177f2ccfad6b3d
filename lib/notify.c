#include "notify.h"

#include "log.h"

#include <stdint.h>
#include <stdio.h>
#include <systemd/sd-daemon.h>

static void on_watchdog(uv_timer_t *t)
{
	(void)t;
	sd_notify(0, "WATCHDOG=1");
}

void sw_notify_init(struct sw_notify *n, uv_loop_t *loop)
{
	uint64_t usec = 0;

	n->armed = 0;
	if (sd_watchdog_enabled(0, &usec) <= 0 || usec == 0)
		return;
	uint64_t ms = usec / 2000;
	if (ms < 10)
		ms = 10;
	uv_timer_init(loop, &n->watchdog);
	uv_unref((uv_handle_t *)&n->watchdog);
	uv_timer_start(&n->watchdog, on_watchdog, ms, ms);
	n->armed = 1;
	sw_info("watchdog: fed every %llu ms", (unsigned long long)ms);
}

void sw_notify_ready(struct sw_notify *n, const char *status)
{
	char msg[300];

	if (status)
		snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%s", status);
	else
		snprintf(msg, sizeof(msg), "READY=1");
	sd_notify(0, msg);
	if (n && n->armed)
		sd_notify(0, "WATCHDOG=1");
}

void sw_notify_waiting(const char *status, unsigned ms)
{
	char msg[400];

	snprintf(msg, sizeof(msg), "STATUS=%s\nEXTEND_TIMEOUT_USEC=%llu\nWATCHDOG=1", status,
		 (unsigned long long)ms * 1000);
	sd_notify(0, msg);
}

void sw_notify_stopping(struct sw_notify *n, int reexec)
{
	if (n && n->armed)
		uv_timer_stop(&n->watchdog);
	/* A daemon that says STOPPING=1 and then re-executes itself is a service that
	 * systemd believes is on its way out: the new program's READY=1 is not heard, and
	 * `systemctl stop` only waits out TimeoutStopSec, sending no signal. */
	sd_notify(0, reexec ? "RELOADING=1\nSTATUS=re-executing after an upgrade" : "STOPPING=1");
}
