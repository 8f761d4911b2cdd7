/* fuzz_uart.c: the 16550A's registers under any sequence of guest accesses and host input. */
#include "fuzz_regs.h"
#include "mmio/uart.h"

static void set_level(void *ctx, uint32_t gsi, int level)
{
    (void)ctx;
    (void)gsi;
    FUZZ_CHECK(level == 0 || level == 1);
}

static void out(void *ctx, const uint8_t *buf, size_t len)
{
    (void)ctx;
    FUZZ_CHECK(len > 0 && buf != NULL);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

/* Each step: a register access, bytes from the host, or a snapshot put back. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct fuzz_in in = fuzz_in(data, size);
    struct irq_line irq = { .set_level = set_level, .gsi = 4 };
    struct uart_host_ops host = { .out = out };
    struct uart u;
    uint8_t buf[32];

    FUZZ_CHECK(uart_init(&u, &irq, &host) == 0);
    struct fuzz_range r = { &uart_ops, &u, UART_IO_LEN, 1 };
    while (!fuzz_done(&in)) {
        switch (fuzz_u8(&in) % 8) {
        case 6: {
            size_t n = fuzz_bytes(&in, buf, fuzz_u8(&in) % sizeof(buf));
            FUZZ_CHECK(uart_receive(&u, buf, n) <= n);
            FUZZ_CHECK(uart_rx_space(&u) <= UART_FIFO_SIZE);
            break;
        }
        case 7:
            fuzz_state_round_trip(uart_save, uart_load, &u, UART_STATE_VERSION);
            break;
        default:
            fuzz_access(&in, &r, 1);
            break;
        }
        FUZZ_CHECK(u.st.rx_count <= UART_FIFO_SIZE && u.st.rx_head < UART_FIFO_SIZE);
    }
    uart_destroy(&u);
    return 0;
}
