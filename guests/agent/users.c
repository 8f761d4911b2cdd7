/*
 * users.c: users and their groups from /etc/passwd and /etc/group, read directly: a static
 * binary has no NSS, and a busybox initramfs has nothing else.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent.h"

/* Splits a line at ':' into at most max fields; returns how many. */
static int split(char *line, char **fields, int max)
{
    int n = 0;
    line[strcspn(line, "\n")] = 0;
    while (n < max) {
        fields[n++] = line;
        char *colon = strchr(line, ':');
        if (!colon)
            break;
        *colon = 0;
        line = colon + 1;
    }
    return n;
}

static bool parse_id(const char *s, unsigned long *v)
{
    char *end;
    if (!s[0] || s[0] == '-')
        return false;
    errno = 0;
    *v = strtoul(s, &end, 10);
    return !errno && !*end && *v < 0xffffffffUL;
}

static bool member_of(char *members, const char *name)
{
    for (char *save, *m = strtok_r(members, ",", &save); m; m = strtok_r(NULL, ",", &save))
        if (strcmp(m, name) == 0)
            return true;
    return false;
}

/* The user's primary group, then every group that lists the user. */
static void find_groups(const char *group, struct agent_user *u)
{
    FILE *f = fopen(group, "re");
    char line[4096], *fld[4];
    u->groups[0] = u->gid;
    u->nr_groups = 1;
    if (!f)
        return;
    while (u->nr_groups < 64 && fgets(line, sizeof(line), f)) {
        unsigned long gid;
        if (split(line, fld, 4) == 4 && parse_id(fld[2], &gid) && gid != u->gid &&
            member_of(fld[3], u->name))
            u->groups[u->nr_groups++] = (gid_t)gid;
    }
    fclose(f);
}

int user_lookup(const char *passwd, const char *group, const char *who, struct agent_user *u)
{
    FILE *f = fopen(passwd, "re");
    char line[4096], *fld[7];
    unsigned long want = 0, uid, gid;
    bool by_id = parse_id(who, &want);
    if (!f)
        return -errno;
    while (fgets(line, sizeof(line), f)) {
        if (split(line, fld, 7) != 7 || !parse_id(fld[2], &uid) || !parse_id(fld[3], &gid))
            continue;
        if (by_id ? uid != want : strcmp(fld[0], who) != 0)
            continue;
        const char *home = fld[5][0] ? fld[5] : "/";
        fclose(f);
        /* A name, home or shell longer than we keep is refused, not cut to another path. */
        if (strlen(fld[0]) >= sizeof(u->name) || strlen(home) >= sizeof(u->home) ||
            strlen(fld[6]) >= sizeof(u->shell))
            return -ENAMETOOLONG;
        u->uid = (uid_t)uid;
        u->gid = (gid_t)gid;
        memcpy(u->name, fld[0], strlen(fld[0]) + 1);
        memcpy(u->home, home, strlen(home) + 1);
        memcpy(u->shell, fld[6], strlen(fld[6]) + 1);
        find_groups(group, u);
        return 0;
    }
    fclose(f);
    return -ENOENT;
}
