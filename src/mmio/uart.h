/* uart.h: a 16550A serial port (the guest's console on COM1). */
#ifndef GODWIT_UART_H
#define GODWIT_UART_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "io/loop.h"
#include "vm/irq.h"
#include "mmio/bus.h"

struct state_writer;
struct state_cursor;

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
 * What a snapshot carries: the guest-visible registers and the receive FIFO, plain values.
 * Everything else in struct uart is wiring to this process (lock, interrupt line, host).
 */
struct uart_state {
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
};

struct uart {
    pthread_mutex_t lock; /* vCPU threads (registers) vs the main thread (input) */
    struct irq_line irq;
    struct uart_host_ops host;
    /* Last level sent to this process's interrupt line. Not saved: it follows from the state,
     * and a load re-sends it to the (new) irqchip. */
    int irq_level;
    struct uart_state st;
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

/* ---- the transmit buffer: output that never waits for the host ---- */

#define UART_TX_BUFFER_SIZE (64u << 10)

/*
 * Serial output on its way to the host: a bounded buffer that vCPU threads fill without ever
 * waiting (uart_tx_buffer_out() is a uart_host_ops.out, with the buffer as ctx), drained by
 * the main loop whenever `fd` has room: at most PIPE_BUF bytes per write once poll() says
 * it is writable, so a blocking fd does not block the loop either. Output that does not fit
 * is dropped and counted: a reader that stalls costs the guest its output, never its vCPUs.
 */
struct uart_tx_buffer {
    pthread_mutex_t lock; /* vCPU threads (fill) vs the loop's thread (drain) */
    uint8_t *buf;
    size_t size, head, len; /* a ring: len bytes from head */
    uint64_t dropped;
    bool scheduled; /* a drain is posted, queued, or waits for room: fills need not post */
    bool closing;
    struct event_loop *loop; /* NULL: written from the filling thread, when fd has room */
    int fd;                  /* polled for room; -1: the sink never waits */
    /* Writes the bytes (libgodwit's console output); NULL: write() to fd. */
    void (*sink)(void *opaque, const uint8_t *buf, size_t len);
    void *sink_opaque;
    struct loop_call call;   /* a fill's wake-up, from a vCPU thread */
    struct loop_owner io;    /* the poll for room, and the continuation of a long drain */
    struct loop_watch poll, cont;
};

/* A buffer of `size` bytes (0: UART_TX_BUFFER_SIZE). Returns 0 or -errno. */
int uart_tx_buffer_init(struct uart_tx_buffer *b, size_t size, struct event_loop *loop, int fd,
                        void (*sink)(void *opaque, const uint8_t *buf, size_t len),
                        void *sink_opaque);
/* The uart_host_ops.out: queues the bytes (those past the buffer's room are dropped). */
void uart_tx_buffer_out(void *ctx, const uint8_t *buf, size_t len);
/* Bytes dropped so far. Any thread. */
uint64_t uart_tx_buffer_dropped(struct uart_tx_buffer *b);
/* Writes what the fd takes within flush_ms, drops the rest, and frees the buffer; on the
 * loop's thread, with nothing filling it any more. Does nothing if init did not succeed. */
void uart_tx_buffer_destroy(struct uart_tx_buffer *b, unsigned flush_ms);

/* Snapshots, as struct vm_device_ops save/load (dev: a struct uart). Load checks every value
 * before it applies any, then sets the interrupt line to what the loaded state implies. */
#define UART_STATE_VERSION 1
void uart_save(void *dev, struct state_writer *w);
int uart_load(void *dev, struct state_cursor *c, uint32_t version);

#endif
