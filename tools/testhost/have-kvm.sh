#!/usr/bin/env bash
# Exits 0 if this machine's /dev/kvm can run hardware-virtualised guests (so
# Linux guest tests may run directly), 1 if they must run inside the test host
# (tools/testhost/testhost.sh). With -q the reason is not printed.
#
# kvm_pvm is refused even though it offers a working /dev/kvm: it emulates
# ring 0, which is far too slow (and too incomplete) to boot a Linux kernel.
set -euo pipefail

quiet=false
[[ ${1:-} == -q ]] && quiet=true
no() {
    $quiet || printf 'have-kvm: %s\n' "$*" >&2
    exit 1
}

[[ -e /dev/kvm ]] || no "no /dev/kvm"
[[ -c /dev/kvm ]] || no "/dev/kvm is not a character device"
[[ ! -e /sys/module/kvm_pvm ]] || no "/dev/kvm is provided by kvm_pvm (ring 0 emulated)"
# Opening it read-write is what a VMM does; this fails without permission.
( exec 3<>/dev/kvm ) 2>/dev/null || no "cannot open /dev/kvm read-write (permissions?)"
exit 0
