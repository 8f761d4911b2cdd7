/* fd_io.h: whole reads and writes on blocking file descriptors, interrupted calls retried. */
#ifndef GODWIT_IO_FD_IO_H
#define GODWIT_IO_FD_IO_H

#include <stddef.h>
#include <sys/types.h>

/* Writes all of buf. 0, or -errno (-EIO if the descriptor took nothing). */
int fd_write_all(int fd, const void *buf, size_t len);
/* Writes all of buf at offset `at`, the file position untouched. 0 or -errno, as above. */
int fd_pwrite_all(int fd, const void *buf, size_t len, off_t at);
/* Reads exactly len bytes. 0, -ECONNRESET when the other end closed first, or -errno. */
int fd_read_exact(int fd, void *buf, size_t len);

#endif
