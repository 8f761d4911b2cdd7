/*
 * fuzz_agent_proto.c: the guest agent protocol's parser (src/agent/proto.c), as both the agent
 * (any host's bytes) and the host's client (a hostile guest's agent) run it.
 */
#include "fuzz_common.h"
#include "agent/proto.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fuzz_quiet();
    return 0;
}

/* A checked message's fields lie in its payload and build back into the same bytes. */
static void check_accepted(const struct agent_msg *m)
{
    static uint8_t again[AGENT_HEADER_SIZE + AGENT_MAX_PAYLOAD];
    struct agent_builder b;
    struct agent_field f;
    size_t pos = 0;
    agent_build_start(&b, again, m->h.type, m->h.flags, m->h.id);
    while (agent_field_next(m, &pos, &f)) {
        FUZZ_CHECK(f.value >= m->payload && f.value + f.len <= m->payload + m->h.length);
        agent_put_bytes(&b, f.tag, f.value, f.len);
    }
    FUZZ_CHECK(pos == m->h.length);
    size_t len = agent_build_end(&b);
    FUZZ_CHECK(len == AGENT_HEADER_SIZE + m->h.length);
    FUZZ_CHECK(memcmp(again + AGENT_HEADER_SIZE, m->payload, m->h.length) == 0);
    /* Every string getter NUL-terminates within its buffer. */
    char s[AGENT_MAX_VALUE + 1];
    for (uint16_t tag = 1; tag < AGENT_T_MAX_; tag++)
        if (agent_get_str(m, tag, s, sizeof(s)))
            FUZZ_CHECK(strlen(s) < sizeof(s));
    FUZZ_CHECK(agent_type_name(m->h.type) != NULL);
}

/*
 * The input is a stream of messages as they arrive on the socket: a 16-byte header, then its
 * payload (what the input lacks of it is absent, as a connection closed early).
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    while (size >= AGENT_HEADER_SIZE) {
        struct agent_msg m;
        if (agent_header_decode(data, &m.h) < 0)
            return 0; /* no frame to read past: the connection ends */
        FUZZ_CHECK(m.h.length <= AGENT_MAX_PAYLOAD);
        data += AGENT_HEADER_SIZE;
        size -= AGENT_HEADER_SIZE;
        if (m.h.length > size)
            return 0;
        /* A copy of its own: reading past the payload is then ASan's to see. */
        uint8_t *payload = malloc(m.h.length ? m.h.length : 1);
        FUZZ_CHECK(payload);
        memcpy(payload, data, m.h.length);
        m.payload = payload;
        if (agent_msg_check(&m) == 0)
            check_accepted(&m);
        free(payload);
        data += m.h.length;
        size -= m.h.length;
    }
    return 0;
}
