/* uart.c: 16550A UART: registers, receive FIFO, interrupt identification, host I/O. */
#include "mmio/uart.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "io/fd_io.h"
#include "log.h"
#include "migration/state.h"

/*
 * Simplifications, all invisible to Linux's 8250 driver:
 * - The transmitter is infinitely fast: a THR write goes straight to the host (or, in
 *   loopback, into the receive FIFO), so LSR always shows THRE and TEMT, and the THRE
 *   interrupt that a real chip raises once the byte has left is latched at once.
 * - Receive trigger levels (FCR bits 6-7) are honoured, but the character timeout is not
 *   timed: fewer bytes than the trigger level are reported at once as a timeout interrupt
 *   (IIR 0x0c), where a real chip waits four character times. Either way the driver reads
 *   RBR while LSR.DR is set.
 * - Line speed, parity and word length (LCR, divisor latch) are stored but have no effect;
 *   no parity, framing or break errors ever occur, so LSR bit 7 stays 0.
 * - With loopback off the modem lines read as a connected modem: DCD, DSR and CTS set.
 */

enum uart_reg {
    REG_RBR_THR = 0, /* DLAB=1: divisor latch low */
    REG_IER = 1,     /* DLAB=1: divisor latch high */
    REG_IIR_FCR = 2, /* IIR on read, FCR on write, whatever DLAB */
    REG_LCR = 3,
    REG_MCR = 4,
    REG_LSR = 5,
    REG_MSR = 6,
    REG_SCR = 7,
};

#define IER_ERBFI 0x01 /* received data available */
#define IER_ETBEI 0x02 /* transmitter holding register empty */
#define IER_ELSI 0x04  /* receiver line status */
#define IER_EDSSI 0x08 /* modem status */
#define IER_MASK 0x0f  /* bits 4-7 read 0 on a 16550A; Linux's probe checks it */

#define IIR_MODEM_STATUS 0x00
#define IIR_NO_INT 0x01
#define IIR_THRE 0x02
#define IIR_RX_DATA 0x04
#define IIR_LINE_STATUS 0x06
#define IIR_RX_TIMEOUT 0x0c
#define IIR_FIFOS_ENABLED 0xc0 /* both bits: a 16550A with working FIFOs */

#define FCR_ENABLE_FIFO 0x01
#define FCR_CLEAR_RX 0x02
#define FCR_TRIGGER_SHIFT 6

#define LCR_DLAB 0x80

#define MCR_DTR 0x01
#define MCR_RTS 0x02
#define MCR_OUT1 0x04
#define MCR_OUT2 0x08 /* on a PC, gates the UART's interrupt onto the ISA IRQ line */
#define MCR_LOOP 0x10
#define MCR_MASK 0x1f

#define LSR_DR 0x01
#define LSR_OE 0x02
#define LSR_ERRORS 0x1e /* OE, PE, FE, BI */
#define LSR_THRE 0x20
#define LSR_TEMT 0x40

#define MSR_DCTS 0x01
#define MSR_DDSR 0x02
#define MSR_TERI 0x04
#define MSR_DDCD 0x08
#define MSR_CTS 0x10
#define MSR_DSR 0x20
#define MSR_RI 0x40
#define MSR_DCD 0x80

static unsigned uart_rx_capacity(const struct uart *u)
{
    return u->st.fifo_enabled ? UART_FIFO_SIZE : 1;
}

static size_t uart_rx_space_locked(const struct uart *u)
{
    return uart_rx_capacity(u) - u->st.rx_count;
}

static bool uart_rx_push(struct uart *u, uint8_t byte)
{
    if (u->st.rx_count >= uart_rx_capacity(u))
        return false;
    u->st.rx_fifo[(u->st.rx_head + u->st.rx_count) % UART_FIFO_SIZE] = byte;
    u->st.rx_count++;
    return true;
}

static uint8_t uart_rx_pop(struct uart *u)
{
    uint8_t byte;
    if (u->st.rx_count == 0)
        return 0;
    byte = u->st.rx_fifo[u->st.rx_head];
    u->st.rx_head = (u->st.rx_head + 1) % UART_FIFO_SIZE;
    u->st.rx_count--;
    return byte;
}

static void uart_rx_clear(struct uart *u)
{
    u->st.rx_head = 0;
    u->st.rx_count = 0;
}

/* The modem status inputs (MSR bits 4-7): wired to MCR's outputs in loopback. */
static uint8_t uart_modem_inputs(const struct uart *u)
{
    uint8_t in = 0;
    if (!(u->st.mcr & MCR_LOOP))
        return MSR_DCD | MSR_DSR | MSR_CTS;
    if (u->st.mcr & MCR_DTR)
        in |= MSR_DSR;
    if (u->st.mcr & MCR_RTS)
        in |= MSR_CTS;
    if (u->st.mcr & MCR_OUT1)
        in |= MSR_RI;
    if (u->st.mcr & MCR_OUT2)
        in |= MSR_DCD;
    return in;
}

/* Highest-priority pending interrupt, as IIR bits 0-3 report it. */
static uint8_t uart_pending_interrupt(const struct uart *u)
{
    if ((u->st.ier & IER_ELSI) && (u->st.lsr_errors & LSR_ERRORS))
        return IIR_LINE_STATUS;
    if ((u->st.ier & IER_ERBFI) && u->st.rx_count > 0) {
        if (!u->st.fifo_enabled || u->st.rx_count >= u->st.rx_trigger)
            return IIR_RX_DATA;
        return IIR_RX_TIMEOUT;
    }
    if ((u->st.ier & IER_ETBEI) && u->st.thre_pending)
        return IIR_THRE;
    if ((u->st.ier & IER_EDSSI) && u->st.msr_delta)
        return IIR_MODEM_STATUS;
    return IIR_NO_INT;
}

/* Recomputes the line; only changes reach the irqchip (one ioctl each). Lock held. */
static void uart_update_irq(struct uart *u)
{
    /* In loopback the chip forces its OUT2 pin inactive, which on a PC cuts the IRQ. */
    bool gate_open = (u->st.mcr & (MCR_OUT2 | MCR_LOOP)) == MCR_OUT2;
    int level = gate_open && uart_pending_interrupt(u) != IIR_NO_INT;
    if (level != u->irq_level) {
        u->irq_level = level;
        irq_line_set(&u->irq, level);
    }
}

static uint8_t uart_read_iir(struct uart *u)
{
    uint8_t id = uart_pending_interrupt(u);
    /* Reading IIR acknowledges a THRE interrupt, and only when IIR reported it. */
    if (id == IIR_THRE)
        u->st.thre_pending = false;
    return id | (u->st.fifo_enabled ? IIR_FIFOS_ENABLED : 0);
}

static uint8_t uart_read_lsr(struct uart *u)
{
    uint8_t lsr = LSR_THRE | LSR_TEMT | u->st.lsr_errors;
    if (u->st.rx_count > 0)
        lsr |= LSR_DR;
    u->st.lsr_errors = 0;
    return lsr;
}

static uint8_t uart_read_msr(struct uart *u)
{
    uint8_t msr = uart_modem_inputs(u) | u->st.msr_delta;
    u->st.msr_delta = 0;
    return msr;
}

static uint8_t uart_read_reg(struct uart *u, unsigned reg)
{
    bool dlab = u->st.lcr & LCR_DLAB;
    switch (reg) {
    case REG_RBR_THR:
        return dlab ? u->st.dll : uart_rx_pop(u);
    case REG_IER:
        return dlab ? u->st.dlm : u->st.ier;
    case REG_IIR_FCR:
        return uart_read_iir(u);
    case REG_LCR:
        return u->st.lcr;
    case REG_MCR:
        return u->st.mcr;
    case REG_LSR:
        return uart_read_lsr(u);
    case REG_MSR:
        return uart_read_msr(u);
    case REG_SCR:
        return u->st.scr;
    }
    return 0xff;
}

static void uart_write_thr(struct uart *u, uint8_t byte)
{
    if (u->st.mcr & MCR_LOOP) {
        if (!uart_rx_push(u, byte))
            u->st.lsr_errors |= LSR_OE;
    } else if (u->host.out) {
        u->host.out(u->host.ctx, &byte, 1);
    }
    /* Writing THR clears the THRE interrupt; the byte leaves at once, which sets it again. */
    u->st.thre_pending = true;
}

static void uart_write_ier(struct uart *u, uint8_t val)
{
    uint8_t enabled_now = val & ~u->st.ier;
    u->st.ier = val & IER_MASK;
    /* A 16550 raises THRE whenever ETBEI goes on while THR is empty: always, here.
     * Linux's startup test relies on this being repeatable (off, on, interrupt again). */
    if (enabled_now & IER_ETBEI)
        u->st.thre_pending = true;
    else if (!(u->st.ier & IER_ETBEI))
        u->st.thre_pending = false;
}

/* RX FIFO trigger levels, by FCR bits 6-7. */
static const uint8_t trigger_levels[4] = { 1, 4, 8, 14 };

static void uart_write_fcr(struct uart *u, uint8_t val)
{
    bool enable = val & FCR_ENABLE_FIFO;

    if (enable != u->st.fifo_enabled) {
        /* Turning the FIFOs on or off empties them. */
        u->st.fifo_enabled = enable;
        uart_rx_clear(u);
    }
    if (!enable)
        return; /* the other FCR bits take effect only together with bit 0 */
    if (val & FCR_CLEAR_RX)
        uart_rx_clear(u);
    u->st.rx_trigger = trigger_levels[val >> FCR_TRIGGER_SHIFT];
}

static void uart_write_mcr(struct uart *u, uint8_t val)
{
    uint8_t before = uart_modem_inputs(u), after, changed;

    u->st.mcr = val & MCR_MASK;
    after = uart_modem_inputs(u);
    changed = before ^ after;
    if (changed & MSR_CTS)
        u->st.msr_delta |= MSR_DCTS;
    if (changed & MSR_DSR)
        u->st.msr_delta |= MSR_DDSR;
    if ((before & MSR_RI) && !(after & MSR_RI))
        u->st.msr_delta |= MSR_TERI; /* trailing edge only */
    if (changed & MSR_DCD)
        u->st.msr_delta |= MSR_DDCD;
}

static void uart_write_reg(struct uart *u, unsigned reg, uint8_t val)
{
    bool dlab = u->st.lcr & LCR_DLAB;
    switch (reg) {
    case REG_RBR_THR:
        if (dlab)
            u->st.dll = val;
        else
            uart_write_thr(u, val);
        break;
    case REG_IER:
        if (dlab)
            u->st.dlm = val;
        else
            uart_write_ier(u, val);
        break;
    case REG_IIR_FCR:
        uart_write_fcr(u, val);
        break;
    case REG_LCR:
        u->st.lcr = val;
        break;
    case REG_MCR:
        uart_write_mcr(u, val);
        break;
    case REG_SCR:
        u->st.scr = val;
        break;
    default:
        break; /* LSR and MSR: read-only (a real chip's factory-test writes are not modelled) */
    }
}

/* Byte i of an access at offset lands on a register; false past the eight registers. */
static bool uart_reg_valid(uint64_t offset, uint32_t i)
{
    return offset < UART_IO_LEN && i < UART_IO_LEN - offset;
}

/* Ends a register access: interrupt line, then whether to tell the host there is room. */
static bool uart_finish_access(struct uart *u, size_t space_before)
{
    uart_update_irq(u);
    return space_before == 0 && uart_rx_space_locked(u) > 0 && u->host.rx_ready;
}

/* Wider accesses act like an ISA bus splitting them into byte accesses on consecutive ports. */
static void uart_read(void *dev, uint64_t offset, uint8_t *data, uint32_t len)
{
    struct uart *u = dev;
    bool room_again;

    pthread_mutex_lock(&u->lock);
    size_t space_before = uart_rx_space_locked(u);
    for (uint32_t i = 0; i < len; i++)
        data[i] = uart_reg_valid(offset, i) ? uart_read_reg(u, (unsigned)(offset + i)) : 0xff;
    room_again = uart_finish_access(u, space_before);
    pthread_mutex_unlock(&u->lock);
    if (room_again)
        u->host.rx_ready(u->host.ctx);
}

static void uart_write(void *dev, uint64_t offset, const uint8_t *data, uint32_t len)
{
    struct uart *u = dev;
    bool room_again;

    pthread_mutex_lock(&u->lock);
    size_t space_before = uart_rx_space_locked(u);
    for (uint32_t i = 0; i < len; i++)
        if (uart_reg_valid(offset, i))
            uart_write_reg(u, (unsigned)(offset + i), data[i]);
    room_again = uart_finish_access(u, space_before);
    pthread_mutex_unlock(&u->lock);
    if (room_again)
        u->host.rx_ready(u->host.ctx);
}

const struct device_ops uart_ops = { .read = uart_read, .write = uart_write };

int uart_init(struct uart *u, const struct irq_line *irq, const struct uart_host_ops *host)
{
    int ret;

    memset(u, 0, sizeof(*u));
    ret = pthread_mutex_init(&u->lock, NULL);
    if (ret)
        return -ret;
    if (irq)
        u->irq = *irq;
    if (host)
        u->host = *host;
    /* 8N1 at 9600 baud, as a PC BIOS leaves COM1; Linux reprograms all of it. */
    u->st.lcr = 0x03;
    u->st.dll = 12;
    u->st.rx_trigger = 1;
    return 0;
}

void uart_destroy(struct uart *u)
{
    pthread_mutex_destroy(&u->lock);
}

size_t uart_receive(struct uart *u, const uint8_t *buf, size_t len)
{
    size_t accepted = 0;

    pthread_mutex_lock(&u->lock);
    while (accepted < len && uart_rx_push(u, buf[accepted]))
        accepted++;
    if (accepted < len)
        u->st.lsr_errors |= LSR_OE;
    uart_update_irq(u);
    pthread_mutex_unlock(&u->lock);
    return accepted;
}

size_t uart_rx_space(struct uart *u)
{
    size_t space;

    pthread_mutex_lock(&u->lock);
    space = uart_rx_space_locked(u);
    pthread_mutex_unlock(&u->lock);
    return space;
}

/* ---- Snapshots: the fields of struct uart_state, one by one, in this order ---- */

void uart_save(void *dev, struct state_writer *w)
{
    struct uart *u = dev;
    struct uart_state s;

    pthread_mutex_lock(&u->lock);
    s = u->st;
    pthread_mutex_unlock(&u->lock);
    sw_u8(w, s.ier);
    sw_u8(w, s.lcr);
    sw_u8(w, s.mcr);
    sw_u8(w, s.lsr_errors);
    sw_u8(w, s.msr_delta);
    sw_u8(w, s.scr);
    sw_u8(w, s.dll);
    sw_u8(w, s.dlm);
    sw_u8(w, s.fifo_enabled);
    sw_u8(w, s.rx_trigger);
    sw_u8(w, s.thre_pending);
    sw_bytes(w, s.rx_fifo, sizeof(s.rx_fifo));
    sw_u8(w, s.rx_head);
    sw_u8(w, s.rx_count);
}

/* Reads the payload into s; the booleans into bytes of their own, checked afterwards. */
static void uart_state_read(struct state_cursor *c, struct uart_state *s, uint8_t *fifo_enabled,
                            uint8_t *thre_pending)
{
    s->ier = sc_u8(c);
    s->lcr = sc_u8(c);
    s->mcr = sc_u8(c);
    s->lsr_errors = sc_u8(c);
    s->msr_delta = sc_u8(c);
    s->scr = sc_u8(c);
    s->dll = sc_u8(c);
    s->dlm = sc_u8(c);
    *fifo_enabled = sc_u8(c);
    s->rx_trigger = sc_u8(c);
    *thre_pending = sc_u8(c);
    sc_bytes(c, s->rx_fifo, sizeof(s->rx_fifo));
    s->rx_head = sc_u8(c);
    s->rx_count = sc_u8(c);
}

static bool is_trigger_level(uint8_t v)
{
    for (unsigned i = 0; i < sizeof(trigger_levels); i++)
        if (v == trigger_levels[i])
            return true;
    return false;
}

/* Only values the registers can hold: the rest of the code relies on them (FIFO indexes). */
static int uart_state_check(const struct state_cursor *c, const struct uart_state *s)
{
    unsigned capacity = s->fifo_enabled ? UART_FIFO_SIZE : 1;

    if (s->ier & ~IER_MASK)
        return sc_reject(c, "ier 0x%02x: reserved bits set", s->ier);
    if (s->mcr & ~MCR_MASK)
        return sc_reject(c, "mcr 0x%02x: reserved bits set", s->mcr);
    if (s->lsr_errors & ~LSR_ERRORS)
        return sc_reject(c, "lsr_errors 0x%02x: not error bits", s->lsr_errors);
    if (s->msr_delta & ~(MSR_DCTS | MSR_DDSR | MSR_TERI | MSR_DDCD))
        return sc_reject(c, "msr_delta 0x%02x: not delta bits", s->msr_delta);
    if (!is_trigger_level(s->rx_trigger))
        return sc_reject(c, "rx_trigger %u: not 1, 4, 8 or 14", s->rx_trigger);
    if (s->rx_head >= UART_FIFO_SIZE)
        return sc_reject(c, "rx_head %u: past the %u-byte FIFO", s->rx_head, UART_FIFO_SIZE);
    if (s->rx_count > capacity)
        return sc_reject(c, "rx_count %u: more than the %u the FIFO holds (fifo_enabled %d)",
                         s->rx_count, capacity, s->fifo_enabled);
    return 0;
}

int uart_load(void *dev, struct state_cursor *c, uint32_t version)
{
    struct uart *u = dev;
    struct uart_state s;
    uint8_t fifo_enabled, thre_pending;
    int ret;

    if (version != UART_STATE_VERSION)
        return sc_reject(c, "version %u unknown", version);
    memset(&s, 0, sizeof(s));
    uart_state_read(c, &s, &fifo_enabled, &thre_pending);
    if ((ret = sc_finish(c)) < 0)
        return ret;
    if (fifo_enabled > 1)
        return sc_reject(c, "fifo_enabled %u: not 0 or 1", fifo_enabled);
    if (thre_pending > 1)
        return sc_reject(c, "thre_pending %u: not 0 or 1", thre_pending);
    s.fifo_enabled = fifo_enabled;
    s.thre_pending = thre_pending;
    if ((ret = uart_state_check(c, &s)) < 0)
        return ret;
    pthread_mutex_lock(&u->lock);
    u->st = s;
    uart_update_irq(u); /* the line of this process: raised again if the state says so */
    pthread_mutex_unlock(&u->lock);
    return 0;
}

/* ---- the transmit buffer ---- */

/* One write to the sink: a pipe takes this much at once, or nothing, once it polls writable. */
#define TX_CHUNK 4096u
/* Writes one turn of the loop makes before it lets others run. */
#define TX_BUDGET 16u

static bool tx_fd_has_room(int fd)
{
    struct pollfd pfd = { .fd = fd, .events = POLLOUT };
    return fd < 0 || poll(&pfd, 1, 0) > 0; /* an error or hang-up too: the write says which */
}

/* Copies up to `max` bytes out of the ring; when it is empty, the next fill posts a drain. */
static size_t tx_take(struct uart_tx_buffer *b, uint8_t *out, size_t max)
{
    pthread_mutex_lock(&b->lock);
    size_t n = b->len < max ? b->len : max;
    size_t first = b->size - b->head < n ? b->size - b->head : n;
    memcpy(out, b->buf + b->head, first);
    memcpy(out + first, b->buf, n - first);
    b->head = (b->head + n) % b->size;
    b->len -= n;
    if (!n)
        b->scheduled = false;
    pthread_mutex_unlock(&b->lock);
    return n;
}

static void tx_emit(struct uart_tx_buffer *b, const uint8_t *buf, size_t len)
{
    if (b->sink) {
        b->sink(b->sink_opaque, buf, len);
        return;
    }
    (void)fd_write_all(b->fd, buf, len); /* a reader that is gone drops the output */
}

static bool tx_on_room(struct event_loop *loop, void *opaque, int res);
static bool tx_on_cont(struct event_loop *loop, void *opaque, int res);

/* Comes back through the ring: when the fd has room (poll), or on the next turn (a no-op). */
static void tx_later(struct uart_tx_buffer *b, bool for_room)
{
    struct loop_watch *w = for_room ? &b->poll : &b->cont;
    struct io_uring_sqe *sqe =
        loop_owner_prepare(b->loop, &b->io, w, for_room ? tx_on_room : tx_on_cont, b);
    if (!sqe) {
        pthread_mutex_lock(&b->lock);
        b->scheduled = false; /* the next fill tries again */
        pthread_mutex_unlock(&b->lock);
        return;
    }
    if (for_room)
        io_uring_prep_poll_add(sqe, b->fd, POLLOUT);
    else
        io_uring_prep_nop(sqe);
}

/* Writes while the fd has room, TX_BUDGET chunks at most; then waits for room or a turn. */
static void tx_drain(struct uart_tx_buffer *b)
{
    uint8_t chunk[TX_CHUNK];
    for (unsigned i = 0; i < TX_BUDGET; i++) {
        if (!tx_fd_has_room(b->fd)) {
            if (b->loop)
                tx_later(b, true);
            return; /* without a loop, the next fill tries again */
        }
        size_t n = tx_take(b, chunk, sizeof(chunk));
        if (!n)
            return;
        tx_emit(b, chunk, n);
    }
    if (b->loop)
        tx_later(b, false);
}

static bool tx_on_room(struct event_loop *loop, void *opaque, int res)
{
    struct uart_tx_buffer *b = opaque;
    (void)loop, (void)res;
    if (!b->closing)
        tx_drain(b);
    return false;
}

static bool tx_on_cont(struct event_loop *loop, void *opaque, int res)
{
    return tx_on_room(loop, opaque, res);
}

static void tx_posted(void *opaque)
{
    tx_on_room(NULL, opaque, 0);
}

int uart_tx_buffer_init(struct uart_tx_buffer *b, size_t size, struct event_loop *loop, int fd,
                        void (*sink)(void *opaque, const uint8_t *buf, size_t len),
                        void *sink_opaque)
{
    memset(b, 0, sizeof(*b));
    b->size = size ? size : UART_TX_BUFFER_SIZE;
    b->buf = malloc(b->size);
    if (!b->buf)
        return -ENOMEM;
    pthread_mutex_init(&b->lock, NULL);
    loop_owner_init(&b->io);
    b->loop = loop;
    b->fd = fd;
    b->sink = sink;
    b->sink_opaque = sink_opaque;
    return 0;
}

void uart_tx_buffer_out(void *ctx, const uint8_t *buf, size_t len)
{
    struct uart_tx_buffer *b = ctx;
    pthread_mutex_lock(&b->lock);
    size_t n = b->size - b->len < len ? b->size - b->len : len;
    for (size_t i = 0; i < n; i++)
        b->buf[(b->head + b->len + i) % b->size] = buf[i];
    b->len += n;
    b->dropped += len - n;
    bool post = n && !b->scheduled && b->loop;
    b->scheduled |= post;
    pthread_mutex_unlock(&b->lock);
    if (post)
        loop_post(b->loop, &b->call, tx_posted, b);
    else if (!b->loop)
        tx_drain(b); /* no loop: what the fd takes now, from this thread */
}

uint64_t uart_tx_buffer_dropped(struct uart_tx_buffer *b)
{
    pthread_mutex_lock(&b->lock);
    uint64_t dropped = b->dropped;
    pthread_mutex_unlock(&b->lock);
    return dropped;
}

/* What the fd takes within `ms`; the rest is counted dropped. */
static void tx_flush(struct uart_tx_buffer *b, unsigned ms)
{
    uint8_t chunk[TX_CHUNK];
    struct pollfd pfd = { .fd = b->fd, .events = POLLOUT };
    struct timespec end, now;
    clock_gettime(CLOCK_MONOTONIC, &end);
    end.tv_sec += ms / 1000;
    end.tv_nsec += (long)(ms % 1000) * 1000000;
    for (;;) {
        clock_gettime(CLOCK_MONOTONIC, &now);
        long left = (end.tv_sec - now.tv_sec) * 1000 + (end.tv_nsec - now.tv_nsec) / 1000000;
        if (left <= 0 || (b->fd >= 0 && poll(&pfd, 1, (int)left) <= 0))
            break;
        size_t n = tx_take(b, chunk, sizeof(chunk));
        if (!n)
            return;
        tx_emit(b, chunk, n);
    }
    b->dropped += b->len;
}

void uart_tx_buffer_destroy(struct uart_tx_buffer *b, unsigned flush_ms)
{
    if (!b->buf)
        return;
    b->closing = true;
    if (b->loop) {
        loop_cancel_post(b->loop, &b->call);
        if (loop_owner_cancel(b->loop, &b->io) < 0 || loop_owner_drain(b->loop, &b->io) < 0) {
            log_error("uart: its output's poll is still queued: the buffer is leaked");
            return;
        }
    }
    tx_flush(b, flush_ms);
    loop_owner_destroy(&b->io);
    pthread_mutex_destroy(&b->lock);
    free(b->buf);
    b->buf = NULL;
}
