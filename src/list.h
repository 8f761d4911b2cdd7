/* list.h: an intrusive doubly linked list, for sets whose members leave in any order (I/O in
 * flight, requests outstanding, pollers): each member embeds a link, and unlinking one is
 * O(1) without a search. Not thread-safe: each list belongs to one thread (or lock). */
#ifndef GODWIT_LIST_H
#define GODWIT_LIST_H

#include <stdbool.h>
#include <stddef.h>

struct list_link {
    struct list_link *prev, *next;
};

struct list {
    struct list_link *first;
};

/* The member that holds `link` as its field `member`. */
#define list_entry(link, type, member) ((type *)((char *)(link) - offsetof(type, member)))

static inline bool list_empty(const struct list *l)
{
    return !l->first;
}

/* Adds at the front. */
static inline void list_push(struct list *l, struct list_link *link)
{
    link->prev = NULL;
    link->next = l->first;
    if (l->first)
        l->first->prev = link;
    l->first = link;
}

static inline void list_unlink(struct list *l, struct list_link *link)
{
    if (link->prev)
        link->prev->next = link->next;
    else
        l->first = link->next;
    if (link->next)
        link->next->prev = link->prev;
    link->prev = link->next = NULL;
}

#endif
