/*
 * A group of the site: a name, and the users and the hosts in it, which product rules
 * name. The site server keeps them and sends them to the license servers; both read a
 * group's members by the rules here, so a name one of them takes the other takes too.
 */
#ifndef SW_GROUP_H
#define SW_GROUP_H

#include <jansson.h>
#include <stddef.h>

#define SW_GROUPS_MAX	     1000  /* groups a site keeps */
#define SW_GROUP_MEMBERS_MAX 10000 /* users and hosts of one group, together */
#define SW_GROUP_USER_MAX    64	   /* bytes of a user name */

/* A user name: 1 to SW_GROUP_USER_MAX bytes of UTF-8, none of them a control
 * character (C0, DEL, C1), a space, a comma or a slash: what a lease names as its user,
 * kept apart from the lists, paths and command lines it is written into. */
int sw_group_user_valid(const char *name);

/*
 * Checks the members a request names, the object {"users": [...], "hosts": [...]}:
 * either list may be absent, no other member is allowed, each list holds at most
 * SW_GROUP_MEMBERS_MAX names, users are sw_group_user_valid() and hosts sw_name_valid()
 * (they are the systems' names). *users and *hosts get the lists, borrowed from `body`,
 * or NULL where absent. 0, or SW_EINVAL with a sentence for a person in `err`, which
 * shows a refused name made safe for a terminal.
 */
int sw_group_members_check(const json_t *body, const json_t **users, const json_t **hosts,
			   char *err, size_t errlen);

#endif
