/* seccomp_rules.h: which system calls each kind of godwit thread may make. */
#ifndef GODWIT_SANDBOX_SECCOMP_RULES_H
#define GODWIT_SANDBOX_SECCOMP_RULES_H

#include <seccomp.h>

#include "sandbox/seccomp.h"

/* Sanitizer builds (tests) add their runtime's calls to every filter. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#define SANITIZER_BUILD 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define SANITIZER_BUILD 1
#endif
#endif

/* Adds the thread's allow rules to ctx. Returns 0 or -errno. */
int seccomp_rules_add(scmp_filter_ctx ctx, enum sandbox_thread thread);

#endif
