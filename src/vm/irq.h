/* irq.h: how a device raises its interrupt line without knowing about KVM. */
#ifndef GODWIT_IRQ_H
#define GODWIT_IRQ_H

#include <stdint.h>

struct irq_line {
    void (*set_level)(void *ctx, uint32_t gsi, int level);
    void *ctx;
    uint32_t gsi;
};

static inline void irq_line_set(const struct irq_line *line, int level)
{
    if (line->set_level)
        line->set_level(line->ctx, line->gsi, level);
}

#endif
