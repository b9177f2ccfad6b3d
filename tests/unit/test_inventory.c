/* A machine's inventory: hardware read from a root of its own (a made-up /sys and /proc),
 * and the deltas between two inventories. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "error.h"
#include "inventory.h"

static char root[] = "/tmp/sw-inv-XXXXXX";

static void put(const char *path, const char *text)
{
	char full[512], dir[512], *slash;
	FILE *f;

	snprintf(full, sizeof(full), "%s%s", root, path);
	snprintf(dir, sizeof(dir), "%s", full);
	for (slash = dir + strlen(root) + 1; (slash = strchr(slash, '/')); slash++) {
		*slash = '\0';
		mkdir(dir, 0755);
		*slash = '/';
	}
	assert_non_null(f = fopen(full, "w"));
	fputs(text, f);
	fclose(f);
}

static int setup(void **state)
{
	(void)state;
	assert_non_null(mkdtemp(root));
	put("/sys/class/dmi/id/sys_vendor", "ACME Corp   \n");
	put("/sys/class/dmi/id/product_name", "Bench 9000\n");
	put("/proc/cpuinfo", "processor\t: 0\nmodel name\t: Test CPU @ 3GHz\n\nprocessor\t: 1\n"
			     "model name\t: Test CPU @ 3GHz\n");
	put("/proc/meminfo", "MemTotal:        8000000 kB\nMemFree: 1 kB\nSwapTotal: 1024 kB\n");
	put("/sys/block/sda/size", "1000\n");
	put("/sys/block/sda/queue/rotational", "1\n");
	put("/sys/block/sda/device/model", "DISK\x01ONE\n");
	put("/sys/block/loop0/size", "8\n");
	put("/sys/block/nvme0n1/size", "2048\n");
	put("/sys/class/net/lo/address", "00:00:00:00:00:00\n");
	put("/sys/class/net/eth0/address", "02:00:00:00:00:01\n");
	put("/sys/class/net/eth0/speed", "1000\n");
	put("/sys/class/net/eth0/operstate", "up\n");
	put("/etc/os-release", "ID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n"
			       "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n");
	return 0;
}

static int teardown(void **state)
{
	char cmd[128];

	(void)state;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", root);
	return system(cmd);
}

static void test_hardware_from_a_root(void **state)
{
	json_t *hw = sw_inv_hardware(root), *disks, *net;
	char err[256];

	(void)state;
	assert_non_null(hw);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(hw, "dmi"), "sys_vendor")),
	    "ACME Corp");
	assert_int_equal(json_integer_value(json_object_get(json_object_get(hw, "cpu"), "count")),
			 2);
	assert_string_equal(json_string_value(json_object_get(json_object_get(hw, "cpu"), "model")),
			    "Test CPU @ 3GHz");
	assert_int_equal(
	    json_integer_value(json_object_get(json_object_get(hw, "memory"), "total")),
	    8000000LL * 1024);
	/* sorted, no loop device; a control character in a model is shown, not kept */
	disks = json_object_get(hw, "disks");
	assert_int_equal(json_array_size(disks), 2);
	assert_string_equal(json_string_value(json_object_get(json_array_get(disks, 0), "name")),
			    "nvme0n1");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(disks, 1), "bytes")),
			 512000);
	assert_true(json_is_true(json_object_get(json_array_get(disks, 1), "rotational")));
	assert_null(
	    strchr(json_string_value(json_object_get(json_array_get(disks, 1), "model")), '\x01'));
	net = json_object_get(hw, "interfaces");
	assert_int_equal(json_array_size(net), 1);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(net, 0), "speed_mbps")),
			 1000);
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(hw, "os"), "codename")), "bookworm");
	assert_string_equal(
	    json_string_value(json_object_get(json_object_get(hw, "os"), "version")), "12");
	/* what the agent sends, the server's check takes */
	json_t *inv = json_pack("{sO s[]}", "hardware", hw, "packages");
	assert_int_equal(sw_inv_check(inv, 0, err, sizeof(err)), 0);
	json_decref(inv);
	json_decref(hw);
}

static json_t *pkgs(const char *spec)
{
	json_t *arr = json_array();
	char buf[256], *save = NULL, *tok;

	snprintf(buf, sizeof(buf), "%s", spec);
	for (tok = strtok_r(buf, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
		char *eq = strchr(tok, '=');
		*eq = '\0';
		json_array_append_new(arr,
				      json_pack("{ss ss ss}", "n", tok, "a", "amd64", "v", eq + 1));
	}
	return json_pack("{s{} so}", "hardware", "packages", arr);
}

static void test_delta(void **state)
{
	json_t *a = pkgs("aa=1 bb=2 cc=3"), *b = pkgs("aa=1 bb=2.1 dd=4"), *d;
	char err[256];
	int same;

	(void)state;
	assert_non_null(d = sw_inv_delta(a, b, &same));
	assert_false(same);
	assert_string_equal(
	    json_string_value(json_object_get(json_array_get(json_object_get(d, "added"), 0), "n")),
	    "dd");
	assert_string_equal(json_string_value(json_object_get(
				json_array_get(json_object_get(d, "changed"), 0), "v")),
			    "2.1");
	assert_string_equal(json_string_value(json_object_get(
				json_array_get(json_object_get(d, "removed"), 0), "n")),
			    "cc");
	assert_null(json_object_get(d, "hardware"));
	json_object_set_new(d, "seq", json_integer(2));
	json_object_set_new(d, "from", json_integer(1));
	assert_int_equal(sw_inv_check(d, 1, err, sizeof(err)), 0);
	json_decref(d);
	assert_null(sw_inv_delta(a, a, &same));
	assert_true(same);
	/* only the hardware changed */
	json_object_set_new(json_object_get(b, "hardware"), "x", json_integer(1));
	json_decref(a);
	a = pkgs("aa=1 bb=2.1 dd=4");
	assert_non_null(d = sw_inv_delta(a, b, &same));
	assert_non_null(json_object_get(d, "hardware"));
	json_decref(d);
	json_decref(a);
	json_decref(b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_hardware_from_a_root),
	    cmocka_unit_test(test_delta),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
