/* wire.h: reading and writing whole agent messages on a file descriptor (both sides). */
#ifndef GODWIT_AGENT_WIRE_H
#define GODWIT_AGENT_WIRE_H

#include "agent/proto.h"

#define AGENT_BUF_SIZE (AGENT_HEADER_SIZE + AGENT_MAX_PAYLOAD)

/* Reads one message into buf (AGENT_BUF_SIZE bytes) and decodes its header; the payload is
 * not checked (agent_msg_check() does that, so that an unknown type can be answered).
 * 0, -ECONNRESET at a clean end before a header, -EPROTO/-EMSGSIZE, or -errno. */
int agent_read_msg(int fd, uint8_t *buf, struct agent_msg *m);

#endif
