/* An intrusive, circular, doubly linked list in the manner of libuv's
 * queue.h: a node lives inside the object it links, so linking allocates
 * nothing, and a head is a node that links to itself when empty. Not
 * locked: the owner of a list holds its own lock around every call.
 */
#ifndef CT_LIB_LIST_H
#define CT_LIB_LIST_H

#include <stdbool.h>
#include <stddef.h>

typedef struct ct__list {
  struct ct__list *prev, *next;
} ct__list_t;

/* The object of type `type` whose member `field` is the node `node`. */
#define ct__list_entry(node, type, field) ((type *)((char *)(node) - offsetof(type, field)))

/* Every node of `head`, first to last; the body must not unlink `node`. */
#define ct__list_foreach(node, head) \
  for ((node) = (head)->next; (node) != (head); (node) = (node)->next)

static inline void ct__list_init(ct__list_t *head) { head->prev = head->next = head; }

static inline bool ct__list_empty(const ct__list_t *head) { return head->next == head; }

/* Link `node` in first. */
static inline void ct__list_push_front(ct__list_t *head, ct__list_t *node) {
  node->prev = head;
  node->next = head->next;
  head->next->prev = node;
  head->next = node;
}

/* Unlink `node` from whatever list holds it; it then links to itself, so a
 * second removal is harmless. */
static inline void ct__list_remove(ct__list_t *node) {
  node->prev->next = node->next;
  node->next->prev = node->prev;
  ct__list_init(node);
}

#endif
