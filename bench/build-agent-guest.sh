#!/usr/bin/env bash
# build-agent-guest.sh: the guest of bench/agent.sh: the default guest's initramfs (its init
# starts godwit-agent) with Debian's qemu-ga and the shared libraries it loads appended, so
# that godwit's agent and QEMU's run in the same guest, and bench/vsock-stream.c compiled
# statically as /usr/bin/vsock-stream (the guest's end of the vsock stream throughput).
#
# Usage: bench/build-agent-guest.sh [OUT]
#   OUT defaults to $GODWIT_CACHE/bench/agent-initrd.cpio (GODWIT_CACHE as in build-guest.sh);
#   the path is printed on stdout. Nothing is rebuilt while the inputs are unchanged, so the
#   test host (whose / is read-only) can call it once it has been built outside.
#
# qemu-ga comes from the qemu-guest-agent package of this machine's distribution (apt-get
# download, kept in $GODWIT_CACHE/bench), its libraries from this machine at the same paths
# (ldd), as bench/build-bench-guest.sh does for fio. The archive is the default guest's
# gzipped one followed by an uncompressed cpio of qemu-ga and its libraries: the kernel
# accepts concatenated archives.
set -euo pipefail

note() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
die() { note "error: $*"; exit 1; }
root=$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)
cache=${GODWIT_CACHE:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/godwit}
out=${1:-$cache/bench/agent-initrd.cpio}
eval "$("$root/guests/build-guest.sh" --print)" || die "build the default guest first (guests/build-guest.sh)"
[[ -f $initrd ]] || die "no default guest initramfs at $initrd (guests/build-guest.sh)"

debdir=$cache/bench/qemu-guest-agent
deb() { compgen -G "$debdir/qemu-guest-agent_*.deb" | head -n 1; }
if [[ -z $(deb) ]]; then
    for c in apt-get dpkg-deb cpio ldd; do
        command -v $c >/dev/null || die "$c not found (a Debian-like host is needed)"
    done
    mkdir -p "$debdir"
    note "downloading qemu-guest-agent"
    sudo=; [[ $(id -u) == 0 ]] || sudo=sudo
    $sudo apt-get update -qq >&2 || die "apt-get update failed"
    # apt's _apt user must be able to write where the package lands.
    dl=$(mktemp -d "${TMPDIR:-/tmp}/qga-deb.XXXXXX")
    chmod 0777 "$dl"
    (cd "$dl" && apt-get download -q qemu-guest-agent >&2) || { rm -rf "$dl"; die "apt-get download qemu-guest-agent failed"; }
    mv -f "$dl"/qemu-guest-agent_*.deb "$debdir/" && rm -rf "$dl"
fi
pkg=$(deb)

want=$( { sha256sum <"$root/bench/build-agent-guest.sh"; sha256sum <"$root/bench/vsock-stream.c"
    echo "$pkg"; stat -L -c '%n %s %Y' "$initrd"; } | sha256sum)
if [[ -f $out && $(cat "$out.stamp" 2>/dev/null || true) == "$want" ]]; then
    echo "$out"
    exit 0
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/agent-guest.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
note "building $out from $(basename "$pkg")"
dpkg-deb -x "$pkg" "$tmp/deb"
qga=$tmp/deb/usr/sbin/qemu-ga
[[ -x $qga ]] || die "no usr/sbin/qemu-ga in $pkg"
# Every file qemu-ga loads: ldd's resolved paths and the dynamic loader.
mapfile -t libs < <(ldd "$qga" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// && $1 !~ /:$/ {print $1}' | sort -u)
((${#libs[@]})) || die "ldd found no libraries for qemu-ga"
ldd "$qga" | grep -q 'not found' && die "qemu-ga needs libraries this machine lacks: $(ldd "$qga" | grep 'not found' | tr -s ' \n' ' ')"

stage=$tmp/stage
mkdir -p "$stage/usr/sbin"
cp -- "$qga" "$stage/usr/sbin/qemu-ga"
mkdir -p "$stage/usr/bin"
"${CC:-cc}" -std=gnu11 -O2 -static -Wall -Wextra -o "$stage/usr/bin/vsock-stream" \
    "$root/bench/vsock-stream.c" || die "cannot build bench/vsock-stream.c with ${CC:-cc} -static"
for f in "${libs[@]}"; do
    mkdir -p "$stage$(dirname "$f")"
    cp -L -- "$f" "$stage$f"
done
# Directories first (sorted find does that): the kernel does not create parents.
(cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) >"$tmp/qga.cpio"
mkdir -p "$(dirname "$out")"
cp -- "$initrd" "$out.tmp"
# The kernel looks for the next archive at 4-byte-aligned offsets and skips zero bytes.
size=$(stat -c %s "$out.tmp")
head -c $(( (512 - size % 512) % 512 )) /dev/zero >>"$out.tmp"
cat "$tmp/qga.cpio" >>"$out.tmp"
mv -f "$out.tmp" "$out"
printf '%s\n' "$want" >"$out.stamp"
note "$(du -h "$out" | cut -f1) in $out"
echo "$out"
