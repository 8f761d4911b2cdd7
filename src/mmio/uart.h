/* uart.h: a 16550A serial port (the guest's console on COM1). */
#ifndef GODWIT_UART_H
#define GODWIT_UART_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vm/irq.h"
#include "mmio/bus.h"

#define UART_IO_LEN 8       /* eight registers from the base port */
#define UART_FIFO_SIZE 16   /* receive FIFO depth of a 16550A */

/* Where the guest's transmitted bytes and "room to receive again" go. */
struct uart_host_ops {
    /* Bytes the guest wrote to THR. Called on a vCPU thread with the UART locked, so
     * output from several vCPUs stays in order; must not call back into the UART. */
    void (*out)(void *ctx, const uint8_t *buf, size_t len);
    /* Optional: the guest freed receive space after uart_rx_space() had been 0. Called on
     * a vCPU thread without the lock held, so it may call uart_receive(). */
    void (*rx_ready)(void *ctx);
    void *ctx;
};

/*
 * The whole device state: plain values (the lock apart), so that saving and loading it for
 * migration is a copy of the fields.
 */
struct uart {
    pthread_mutex_t lock; /* vCPU threads (registers) vs the main thread (input) */
    struct irq_line irq;
    struct uart_host_ops host;

    uint8_t ier; /* interrupt enable, low nibble only */
    uint8_t lcr; /* line control; bit 7 (DLAB) maps the divisor latch */
    uint8_t mcr; /* modem control, bits 0-4 */
    uint8_t lsr_errors; /* sticky LSR error bits (overrun), cleared by reading LSR */
    uint8_t msr_delta;  /* MSR bits 0-3: modem status changes since MSR was last read */
    uint8_t scr;
    uint8_t dll, dlm; /* divisor latch */
    bool fifo_enabled;
    uint8_t rx_trigger; /* RX FIFO trigger level: 1, 4, 8 or 14 bytes */
    bool thre_pending;  /* THR-empty interrupt latched, until IIR reports it or THR is written */
    uint8_t rx_fifo[UART_FIFO_SIZE];
    uint8_t rx_head;  /* index of the oldest byte */
    uint8_t rx_count; /* bytes in the FIFO (at most 1 while the FIFO is disabled) */
    int irq_level;    /* last level sent to the interrupt line */
};

/* The register handlers to register on the port bus at PORT_COM1 for UART_IO_LEN bytes. */
extern const struct device_ops uart_ops;

/* Sets up a UART in its power-on state; the irq line starts low. Returns 0 or -errno. */
int uart_init(struct uart *u, const struct irq_line *irq, const struct uart_host_ops *host);
void uart_destroy(struct uart *u);

/*
 * Input from the host (main thread). Accepts as many bytes as the receive FIFO has room for
 * and returns that count. Bytes offered beyond it are what a real UART would lose: the guest
 * sees an overrun in LSR. A caller that keeps them and offers them again later loses
 * nothing; one that never wants overruns offers at most uart_rx_space() bytes.
 */
size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len);
/* Room in the receive FIFO now: 0..16 with the FIFO enabled, 0..1 without. */
size_t uart_rx_space(struct uart *u);

#endif
