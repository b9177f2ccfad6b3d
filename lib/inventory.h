/*
 * What a machine is and has. Hardware is read directly from /sys and /proc (no dmidecode
 * or lshw process): DMI, processors, memory, block devices, network interfaces, the
 * kernel and the OS release. Software is every installed Debian package, from dpkg's own
 * database (dpkgdb.h). Every path is under `root` ("" for this machine), so a test or a
 * container's root can be read alike.
 *
 * An inventory: {"hardware": {...}, "packages": [{"n": name, "a": arch, "v": version},
 * ...] sorted by name, then architecture}. A delta from one to the next: {"hardware":
 * {...} when it changed, "added": [{n, a, v}], "changed": [{n, a, v}], "removed": [{n,
 * a}]}: what an agent sends once the site has a full one, instead of the whole list.
 */
#ifndef SW_INVENTORY_H
#define SW_INVENTORY_H

#include <jansson.h>
#include <stddef.h>

#define SW_INV_TEXT_MAX	   256 /* bytes of one hardware string */
#define SW_INV_DEVICES_MAX 256 /* block devices, or network interfaces */

/* The hardware under `root`; what cannot be read is left out. NULL only when out of
 * memory. */
json_t *sw_inv_hardware(const char *root);

/* The whole inventory: hardware, and the packages of the dpkg status file at
 * `dpkg_status` (under no root: the caller says where). 0, or an SW_E* code with the
 * reason when the packages cannot be read. */
int sw_inv_collect(const char *root, const char *dpkg_status, json_t **out, char *err,
		   size_t errlen);

/* The delta from inventory `from` to `to`; NULL when they are the same (or out of
 * memory: *same says which). */
json_t *sw_inv_delta(const json_t *from, const json_t *to, int *same);

/* Checks an inventory or a delta as the site server receives it: the shapes above, every
 * package name, architecture and version valid, at most SW_DPKG_PACKAGES_MAX of them, the
 * hardware an object of bounded strings and numbers. 0, or SW_EINVAL with the reason. */
int sw_inv_check(const json_t *j, int delta, char *err, size_t errlen);

#endif
