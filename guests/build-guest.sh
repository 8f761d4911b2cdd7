#!/usr/bin/env bash
# Builds godwit's default test guest from Debian's own packages: the kernel that
# linux-image-amd64 points at (bzImage and an extracted ELF vmlinux) and a small
# busybox initramfs with that kernel's virtio, vsock and pvpanic modules and the guest agent
# (guests/agent/, compiled here with the machine's cc -static).
#
# Everything lands in a cache outside the source tree, so the repository never
# holds binaries and a second run (everything cached) does nothing.
#
# Usage:
#   guests/build-guest.sh            build what is missing or stale, print paths
#   guests/build-guest.sh --print    print paths only if already built (exit 1 if not)
#   guests/build-guest.sh --make-initramfs OUT INIT [MODULE...]
#       build a busybox initramfs at OUT with INIT as /init and the named
#       modules (plus their dependencies) from the same kernel; used by
#       tools/testhost/testhost.sh for the test host's own initramfs.
#
# Output (stdout, key=value, one per line, for `eval` or line parsing):
#   kernel_bzimage= kernel_vmlinux= initrd= modules_dir= kernel_version= kernel_package=
#
# Environment:
#   GODWIT_CACHE        cache directory (default ${XDG_CACHE_HOME:-$HOME/.cache}/godwit)
#   GODWIT_KERNEL_PKG   kernel package to use instead of linux-image-amd64's dependency
#   GODWIT_KERNEL_DEB   a local kernel .deb to use (no network needed)
set -euo pipefail

prog=${0##*/}
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
note() { printf '%s: %s\n' "$prog" "$*" >&2; }

script_path=$(readlink -f -- "${BASH_SOURCE[0]}")
cache=${GODWIT_CACHE:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/godwit}

# Modules for the default guest, in load order; dependencies found in each
# module's own .modinfo are added ahead of it. crc32c_* satisfy ext4/jbd2's
# soft dependency on crypto-crc32c, which nothing would otherwise load (there
# is no modprobe/udev in the guest). Missing ones are skipped at build time.
guest_modules=(
    virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    virtio_mmio virtio_blk failover net_failover virtio_net virtio_console
    virtio_rng
    vsock vmw_vsock_virtio_transport_common vmw_vsock_virtio_transport
    crc16 mbcache jbd2 crc32c_generic crc32c_intel ext4
    pvpanic pvpanic_mmio pvpanic_pci
    button evdev
)

need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "'$c' not found (run tools/install-deps.sh)"
    done
}

# ---------------------------------------------------------------------------
# Kernel package: resolve, download, extract.
# ---------------------------------------------------------------------------

# apt-cache is slow (over 1 s) where the package cache file is disabled, as in
# Debian's Docker images, so the resolution is remembered together with the
# modification time of the package lists; apt-get update changes that time.
lists_dir=/var/lib/apt/lists
lists_stamp() { stat -c %Y "$lists_dir" 2>/dev/null || echo none; }

# Prints "PACKAGE VERSION" of the kernel that linux-image-amd64 depends on.
resolve_kernel_pkg() {
    local pkg ver
    if [[ -n ${GODWIT_KERNEL_PKG:-} ]]; then
        pkg=$GODWIT_KERNEL_PKG
    else
        pkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
              sed -n '/^ *Depends: linux-image-[0-9]/{s/^ *Depends: //p;q;}') || true
        [[ -n $pkg ]] || return 1
    fi
    ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null |
          sed -n '/^Version: /{s///p;q;}') || true
    [[ -n $ver ]] || return 1
    printf '%s %s\n' "$pkg" "$ver"
}

apt_update() {
    note "package lists missing or stale: running apt-get update"
    if [[ $(id -u) == 0 ]]; then
        apt-get update -qq >&2 || die "apt-get update failed"
    elif sudo -n true 2>/dev/null; then
        sudo apt-get update -qq >&2 || die "apt-get update failed"
    else
        die "apt package lists are missing or stale; run 'apt-get update' as root"
    fi
}

# Sets kpkg and kver, using the remembered answer while the lists are unchanged.
kernel_identity() {
    local memo=$cache/kernel.resolved line stamp key
    if [[ -n ${GODWIT_KERNEL_DEB:-} ]]; then
        [[ -f $GODWIT_KERNEL_DEB ]] || die "GODWIT_KERNEL_DEB=$GODWIT_KERNEL_DEB does not exist"
        kpkg=$(dpkg-deb -f "$GODWIT_KERNEL_DEB" Package) || die "cannot read $GODWIT_KERNEL_DEB"
        kver=$(dpkg-deb -f "$GODWIT_KERNEL_DEB" Version)
        return
    fi
    stamp=$(lists_stamp)
    key="$stamp ${GODWIT_KERNEL_PKG:-}"
    if [[ -f $memo ]]; then
        read -r line <"$memo" || true
        if [[ ${line%%|*} == "$key" ]]; then
            read -r kpkg kver <<<"${line#*|}"
            [[ -n $kpkg && -n $kver ]] && return
        fi
    fi
    need apt-cache
    if ! line=$(resolve_kernel_pkg); then
        # Without lists a previous build is still usable (offline machines).
        if [[ -f $cache/kernel.current ]]; then
            read -r kpkg kver <"$cache/kernel.current"
            note "cannot resolve linux-image-amd64 (no package lists?); using cached $kpkg $kver"
            return
        fi
        apt_update
        line=$(resolve_kernel_pkg) || die "cannot resolve the kernel package that linux-image-amd64 depends on"
        stamp=$(lists_stamp)
        key="$stamp ${GODWIT_KERNEL_PKG:-}"
    fi
    read -r kpkg kver <<<"$line"
    printf '%s|%s %s\n' "$key" "$kpkg" "$kver" >"$memo.tmp" && mv -f "$memo.tmp" "$memo"
}

# Extracts the kernel package into $kroot (once per package version).
fetch_kernel() {
    kroot=$cache/kernel/${kpkg}_${kver//:/%}
    if [[ -f $kroot/.complete ]]; then
        return
    fi
    need dpkg-deb
    local tmp deb
    tmp=$(mktemp -d "$cache/kernel/.fetch.XXXXXX")
    if [[ -n ${GODWIT_KERNEL_DEB:-} ]]; then
        deb=$GODWIT_KERNEL_DEB
    else
        need apt-get
        local aptopts=(-q)
        # As root apt drops to the _apt user, which cannot write into our
        # private temp dir; the download is then done unsandboxed anyway, so
        # say so up front and spare the warning.
        [[ $(id -u) == 0 ]] && aptopts+=(-o APT::Sandbox::User=root)
        note "downloading $kpkg=$kver"
        if ! (cd "$tmp" && apt-get "${aptopts[@]}" download "$kpkg=$kver" >&2); then
            # Usually stale lists (the version is gone from the mirror):
            # refresh them, resolve again (the package name may change), retry.
            apt_update
            rm -f "$cache/kernel.resolved"
            kernel_identity
            kroot=$cache/kernel/${kpkg}_${kver//:/%}
            (cd "$tmp" && apt-get "${aptopts[@]}" download "$kpkg=$kver" >&2) ||
                die "apt-get download $kpkg=$kver failed"
        fi
        deb=$(find "$tmp" -maxdepth 1 -name '*.deb' | head -n 1)
        [[ -n $deb ]] || die "apt-get download produced no .deb"
    fi
    note "extracting $(basename -- "$deb")"
    mkdir "$tmp/root"
    dpkg-deb -x "$deb" "$tmp/root" || die "dpkg -x $deb failed"
    rm -rf "$kroot"
    mv "$tmp/root" "$kroot"
    rm -rf "$tmp"
    touch "$kroot/.complete"
}

# Sets kversion (the uname -r string), bzimage_src and moddir from $kroot.
locate_kernel_files() {
    local d
    moddir=
    for d in "$kroot"/lib/modules/*/; do
        [[ -d $d/kernel ]] && moddir=${d%/}
    done
    [[ -n $moddir ]] || die "no lib/modules/*/kernel in $kpkg"
    kversion=${moddir##*/}
    bzimage_src=$kroot/boot/vmlinuz-$kversion
    [[ -f $bzimage_src ]] || die "no boot/vmlinuz-$kversion in $kpkg"
}

# ---------------------------------------------------------------------------
# vmlinux from bzImage.
# ---------------------------------------------------------------------------

# Reads an unsigned little-endian integer of SIZE bytes at OFFSET.
read_le() { od -An -t "u$3" -j "$2" -N "$3" -- "$1" | tr -d ' \n'; }

# The x86 boot protocol header (2.08+) says where the compressed kernel is:
# payload_offset (0x248) and payload_length (0x24c), counted from the start of
# the protected-mode code, which follows (setup_sects + 1) 512-byte sectors.
# The build appends the uncompressed size (le32) to the compressed data; that
# is both trimmed off (so any decompressor sees exactly one stream) and used to
# check the result.
extract_vmlinux() {
    local bz=$1 out=$2 magic setup_sects poff plen start size magic_hex
    magic=$(od -An -c -j $((0x202)) -N 4 -- "$bz" | tr -d ' \n')
    [[ $magic == HdrS ]] || die "$bz is not a bzImage (no HdrS header)"
    setup_sects=$(read_le "$bz" $((0x1f1)) 1)
    ((setup_sects == 0)) && setup_sects=4
    poff=$(read_le "$bz" $((0x248)) 4)
    plen=$(read_le "$bz" $((0x24c)) 4)
    ((poff > 0 && plen > 4)) || die "$bz has no payload_offset/payload_length (boot protocol < 2.08)"
    start=$(((setup_sects + 1) * 512 + poff))
    dd if="$bz" of="$out.payload" iflag=skip_bytes,count_bytes skip="$start" count="$plen" \
        bs=4M status=none || die "cannot read the payload of $bz"
    [[ $(stat -c %s "$out.payload") == "$plen" ]] || die "$bz is truncated"
    size=$(read_le "$out.payload" $((plen - 4)) 4)
    truncate -s $((plen - 4)) "$out.payload"
    magic_hex=$(od -An -t x1 -N 6 -- "$out.payload" | tr -d ' \n')
    local dec
    case $magic_hex in
        fd377a585a00*) need xz; dec=(xz -dc --single-stream) ;;
        1f8b*) need gzip; dec=(gzip -dc) ;;
        28b52ffd*) need zstd; dec=(zstd -dcq) ;;
        425a68*) need bzip2; dec=(bzip2 -dc) ;;
        5d0000*) need xz; dec=(xz -dc --format=lzma) ;;
        *) die "unknown compression of the kernel payload in $bz (magic $magic_hex)" ;;
    esac
    "${dec[@]}" <"$out.payload" >"$out.tmp" || die "decompressing the kernel payload of $bz failed"
    rm -f "$out.payload"
    [[ $(od -An -c -N 4 -- "$out.tmp" | tr -d ' \n') == '177ELF' ]] ||
        die "the payload of $bz is not an ELF image"
    [[ $(stat -c %s "$out.tmp") == "$size" ]] ||
        die "the payload of $bz decompressed to $(stat -c %s "$out.tmp") bytes, expected $size"
    mv -f "$out.tmp" "$out"
}

# ---------------------------------------------------------------------------
# Initramfs construction.
# ---------------------------------------------------------------------------

declare -A mod_path=()  # module name -> path relative to $moddir
index_modules() {
    local f rel name
    while IFS= read -r -d '' f; do
        rel=${f#"$moddir"/}
        name=${f##*/}
        name=${name%%.ko*}
        mod_path[${name//-/_}]=$rel
    done < <(find "$moddir/kernel" -name '*.ko*' -print0)
}

declare -A mod_done=()
mod_order=()
# Copies module NAME (decompressed: busybox insmod takes plain .ko only) and
# its dependencies into $stage, appending to mod_order in dependency order.
stage_module() {
    local name=${1//-/_} rel dst deps dep
    [[ -n ${mod_done[$name]:-} ]] && return 0
    mod_done[$name]=1
    rel=${mod_path[$name]:-}
    if [[ -z $rel ]]; then
        note "module $name is not in $kpkg (built in or absent); skipped"
        return 0
    fi
    dst=$stage/lib/modules/$kversion/${rel%.ko*}.ko
    mkdir -p "${dst%/*}"
    case $rel in
        *.ko) cp -- "$moddir/$rel" "$dst" ;;
        *.ko.xz) xz -dc -- "$moddir/$rel" >"$dst" ;;
        *.ko.zst) zstd -dcq -- "$moddir/$rel" >"$dst" ;;
        *.ko.gz) gzip -dc -- "$moddir/$rel" >"$dst" ;;
        *) die "unknown module compression: $rel" ;;
    esac
    # modules.dep is made by depmod at install time and is not in the .deb;
    # the same information is the depends= string in the module's .modinfo.
    deps=$(tr '\0' '\n' <"$dst" | sed -n 's/^depends=//p')
    local IFS=,
    for dep in $deps; do
        stage_module "$dep"
    done
    mod_order+=("lib/modules/$kversion/${rel%.ko*}.ko")
}

# The guest agent: its sources (guests/agent/, the protocol's files in src/agent/ and
# src/io/fd_io's whole reads and writes), and
# build_agent OUT, which compiles them statically, with no CMake build directory needed.
src_root=$(cd -- "$(dirname -- "$script_path")/.." && pwd)
agent_sources() {
    printf '%s\n' "$src_root"/guests/agent/*.[ch] "$src_root"/src/agent/{proto,wire,sha256}.[ch] \
        "$src_root"/src/io/fd_io.[ch] |
        LC_ALL=C sort
}
build_agent() {
    local cc=${CC:-cc} srcs
    need "$cc"
    mapfile -t srcs < <(agent_sources | grep '\.c$')
    "$cc" -std=gnu11 -O2 -static -Wall -Wextra -Wno-missing-field-initializers \
        -I"$src_root/src" -I"$src_root/guests/agent" -o "$1" "${srcs[@]}" ||
        die "cannot build the guest agent (guests/agent/) with $cc -static (libc6-dev?)"
}
agent_bin=  # set: make_initramfs puts it in as /usr/sbin/godwit-agent

# make_initramfs OUT INIT MODULE...: busybox, the modules, INIT as /init.
make_initramfs() {
    local out=$1 init=$2 m applet
    shift 2
    need cpio gzip find
    local busybox
    busybox=$(command -v busybox) || die "busybox not found (install busybox-static)"
    # The guest has no libraries: a dynamically linked busybox would not run.
    if ldd "$busybox" >/dev/null 2>&1; then
        die "$busybox is dynamically linked; install busybox-static"
    fi
    stage=$(mktemp -d "$cache/.stage.XXXXXX")
    mkdir -p "$stage"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,mnt}
    cp -- "$busybox" "$stage/bin/busybox"
    while IFS= read -r applet; do
        applet=${applet#/}
        [[ -e $stage/$applet || -L $stage/$applet ]] && continue
        mkdir -p "$stage/$(dirname -- "$applet")"
        ln -s /bin/busybox "$stage/$applet"
    done < <("$busybox" --list-full)
    ((${#mod_path[@]})) || index_modules
    mod_done=()
    mod_order=()
    for m in "$@"; do
        stage_module "$m"
    done
    if ((${#mod_order[@]})); then
        printf '%s\n' "${mod_order[@]}" >"$stage/etc/modules.order"
    else
        : >"$stage/etc/modules.order"
    fi
    printf '%s\n' "$kversion" >"$stage/etc/kernel-version"
    install -m 0755 -- "$init" "$stage/init"
    [[ -n $agent_bin ]] && install -m 0755 -- "$agent_bin" "$stage/usr/sbin/godwit-agent"
    # Sorted names and owner 0 make the archive depend only on its inputs.
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc -R 0:0 | gzip -9n) >"$out.tmp"
    rm -rf "$stage"
    mv -f "$out.tmp" "$out"
}

# The default guest's /init.
write_guest_init() {
    cat >"$1" <<'EOF'
#!/bin/sh
# godwit default guest init (generated by guests/build-guest.sh).
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The initramfs has no /dev/console node, so the kernel may have started us
# without stdio: take the console now that devtmpfs provides it.
exec </dev/console >/dev/console 2>&1
echo "godwit-guest: init started"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts && mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
hostname godwit-guest

# Dependency order was fixed at build time; modules absent from this kernel
# or without hardware (e.g. crc32c_intel without SSE4.2) fail harmlessly.
failed=
while read -r m; do
    [ -n "$m" ] || continue
    insmod "/$m" 2>/dev/null || failed="$failed ${m##*/}"
done </etc/modules.order
[ -n "$failed" ] && echo "godwit-guest: modules not loaded:$failed"

# The guest agent (godwit exec, cp, kvp) on vsock port 1024, when the VM has a vsock device;
# it waits quietly without one. Its own session: no signal meant for this console reaches it.
if [ -x /usr/sbin/godwit-agent ]; then
    setsid /usr/sbin/godwit-agent </dev/null &
fi

# The ACPI power button (the VMM's graceful shutdown) powers the guest off. Its input
# device reports each press; the first byte read is enough.
for d in /sys/class/input/event*; do
    [ "$(cat "$d/device/name" 2>/dev/null)" = "Power Button" ] || continue
    (head -c 1 "/dev/input/${d##*/}" >/dev/null &&
        echo "godwit-guest: power button pressed" && sync && poweroff -f) &
done

cpus=$(nproc 2>/dev/null)
[ -n "$cpus" ] || cpus=$(cat /sys/devices/system/cpu/online)
echo "godwit-guest: cpus=$cpus"

# Dotted kernel parameters are not passed to init, so read /proc/cmdline.
test=
for arg in $(cat /proc/cmdline); do
    case $arg in godwit.test=*) test=${arg#godwit.test=} ;; esac
done

# A virtio console (godwit run --console virtio) gets a shell of its own; in the default
# mode that shell is the user's (below), in test modes it runs beside the test.
if [ -c /dev/hvc0 ] && [ -n "$test" ]; then
    (while :; do setsid sh -c 'exec sh -l </dev/hvc0 >/dev/hvc0 2>&1'; done) &
    echo "godwit-guest: shell on hvc0"
fi

case $test in
script)
    # The host's test script is the disk whose serial is godwit-script: its bytes are the
    # script, padded with newlines to whole sectors. Exit status and output are the result.
    dev=
    for s in /sys/block/vd*/serial; do
        [ "$(cat "$s" 2>/dev/null)" = godwit-script ] || continue
        dev=${s%/serial}
        dev=/dev/${dev##*/}
    done
    if [ -z "$dev" ]; then
        echo "godwit-guest: no disk with serial godwit-script"
    else
        echo "godwit-guest: running the script on $dev"
        sh "$dev"
        echo "godwit-guest: script exit status $?"
    fi
    sync
    poweroff -f
    ;;
'')
    if [ -c /dev/hvc0 ]; then
        # The terminal's keys go to hvc0 (and its window size, as the console follows it);
        # the serial port keeps the kernel's messages.
        echo "godwit-guest: shell on hvc0 (exit to power off)"
        setsid sh -c 'exec sh -l </dev/hvc0 >/dev/hvc0 2>&1'
    else
        echo "godwit-guest: shell (exit to power off)"
        # cttyhack finds the real console (ttyS0) so that job control works.
        setsid cttyhack sh -l
    fi
    echo "godwit-guest: poweroff"
    sync
    poweroff -f
    ;;
poweroff)
    echo "godwit-guest: poweroff"
    sync
    poweroff -f
    ;;
reboot)
    echo "godwit-guest: reboot"
    sync
    reboot -f
    ;;
panic)
    echo "godwit-guest: panic"
    # Writes to sysrq-trigger are allowed whatever kernel.sysrq says.
    echo c >/proc/sysrq-trigger
    ;;
ticker)
    # One line a second with the guest's own uptime: shows when the guest runs and
    # whether its clock stood still while the VM was paused.
    n=0
    while :; do
        n=$((n + 1))
        echo "godwit-guest: tick $n uptime $(cut -d' ' -f1 /proc/uptime)"
        sleep 1
    done
    ;;
echo)
    stty -echo 2>/dev/null
    echo "godwit-guest: ready for input"
    read -r line
    echo "godwit-guest: got $line"
    sync
    poweroff -f
    ;;
*)
    echo "godwit-guest: unknown test '$test'"
    poweroff -f
    ;;
esac
# poweroff -f returns only if it failed; init must never exit (panic).
echo "godwit-guest: still running after '$test'"
while :; do sleep 3600; done
EOF
}

# ---------------------------------------------------------------------------
# Main.
# ---------------------------------------------------------------------------

mode=build
case ${1:-} in
    --print) mode=print ;;
    --make-initramfs)
        mode=initramfs
        [[ $# -ge 3 ]] || die "usage: $prog --make-initramfs OUT INIT [MODULE...]"
        ;;
    -h | --help) sed -n '2,/^set -euo/p' "$script_path" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    '') ;;
    *) die "unknown argument '$1' (try --help)" ;;
esac

guest=$cache/guest

print_paths() {
    printf 'kernel_bzimage=%s\n' "$guest/vmlinuz"
    printf 'kernel_vmlinux=%s\n' "$guest/vmlinux"
    printf 'initrd=%s\n' "$guest/initrd.cpio.gz"
    printf 'modules_dir=%s\n' "$moddir"
    printf 'kernel_version=%s\n' "$kversion"
    printf 'kernel_package=%s\n' "$kpkg=$kver"
}

if [[ $mode == print ]]; then
    # No locking, no network: report what the last complete build made.
    [[ -f $guest/stamp && -f $cache/kernel.current ]] || die "guest not built (run $script_path)"
    read -r kpkg kver <"$cache/kernel.current"
    kroot=$cache/kernel/${kpkg}_${kver//:/%}
    [[ -f $kroot/.complete ]] || die "guest not built (run $script_path)"
    locate_kernel_files
    print_paths
    exit 0
fi

mkdir -p "$cache/kernel" "$guest" || die "cannot create cache directory $cache"
need flock sha256sum
# One builder at a time per cache (parallel test runs may all call this).
exec 9>"$cache/.lock"
flock 9

kernel_identity
fetch_kernel
locate_kernel_files
printf '%s %s\n' "$kpkg" "$kver" >"$cache/kernel.current"

if [[ $mode == initramfs ]]; then
    make_initramfs "$2" "$3" "${@:4}"
    exit 0
fi

# The stamp names every input: this script (it holds the init and the module
# list), the kernel package, the busybox binary and the agent's sources.
busybox_bin=$(command -v busybox) || die "busybox not found (install busybox-static)"
agent_sum=$(agent_sources | xargs cat | sha256sum)
want=$(printf '%s\n' "$(sha256sum <"$script_path")" "$kpkg=$kver" "$(sha256sum <"$busybox_bin")" \
    "agent $agent_sum" | sha256sum)
have=$(cat "$guest/stamp" 2>/dev/null || true)
if [[ $want != "$have" || ! -f $guest/vmlinux || ! -f $guest/initrd.cpio.gz || ! -f $guest/vmlinuz ]]; then
    note "building the guest from $kpkg=$kver"
    rm -f "$guest/stamp"
    # Replace files by rename only: a test host or guest running now may be
    # reading the old ones.
    cp -f -- "$bzimage_src" "$guest/vmlinuz.tmp"
    mv -f -- "$guest/vmlinuz.tmp" "$guest/vmlinuz"
    extract_vmlinux "$guest/vmlinuz" "$guest/vmlinux"
    init_file=$(mktemp "$cache/.init.XXXXXX")
    write_guest_init "$init_file"
    agent_bin=$(mktemp "$cache/.agent.XXXXXX")
    build_agent "$agent_bin"
    make_initramfs "$guest/initrd.cpio.gz" "$init_file" "${guest_modules[@]}"
    rm -f "$init_file" "$agent_bin"
    printf '%s\n' "$want" >"$guest/stamp"
fi
print_paths
