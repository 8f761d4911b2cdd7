#!/usr/bin/env bash
# Runs one command inside the "test host": QEMU in TCG mode with an emulated
# AMD-V CPU, booting Debian's kernel with its kvm/kvm-amd modules, which gives
# a real /dev/kvm with nested SVM on machines whose own /dev/kvm cannot run
# Linux guests. This machine's root is shared read-only into the test host and
# the command runs there under `chroot /host`, in the caller's working
# directory, with this machine's binaries and libraries.
#
# Usage: tools/testhost/testhost.sh [options] -- COMMAND [ARG...]
#   --mem MIB       test host memory (default 4096)
#   --smp N         test host CPUs (default 2)
#   --timeout SEC   kill the test host after SEC seconds (default 1200)
#   --results DIR   a directory the command may write to; it is mounted
#                   writable at the same path inside the test host and also
#                   given to the command as $GODWIT_TESTHOST_RESULTS
#   --interactive   the command gets this terminal: every key reaches it
#                   (the terminal is raw meanwhile and restored afterwards),
#                   it sees the terminal's size and follows its changes, and
#                   the test host's kernel keeps quiet on it
#
# Exit status: the command's own, 75 when the test host froze (a soft lockup, its
# kernel's panic, or no heartbeat from it for $GODWIT_TESTHOST_STALL_S seconds, default 60:
# worth running again; what its CPUs were doing is printed first), or 125
# when it did not boot, did not report a result, or timed out (one
# "testhost: error:" line says which).
#
# Inside the test host: everything runs as root; / is read-only except /tmp,
# /var/tmp, /run, /dev/shm (tmpfs, empty) and the results directory; the
# network has only loopback; $GODWIT_IN_TESTHOST=1. The caller's PATH, HOME,
# LANG, LC_ALL, every GODWIT_* variable and the variables named in
# $GODWIT_TESTHOST_ENV (space separated) are passed through.
#
# GODWIT_TESTHOST_QEMU names another qemu-system-x86_64 to run the test host with (to compare
# QEMU versions); the default is the one on PATH. GODWIT_TESTHOST_KVM_AMD gives the test
# host's kvm_amd module parameters (e.g. "npt=0": shadow paging instead of the emulated
# nested paging), to tell a failure of one emulated feature from godwit's.
#
# Test hosts run one at a time (a lock in the cache; see below).
set -euo pipefail

prog=testhost
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 125; }
note() { printf '%s: %s\n' "$prog" "$*" >&2; }

here=$(dirname -- "$(readlink -f -- "${BASH_SOURCE[0]}")")
root=$(cd -- "$here/../.." && pwd)
build_guest=$root/guests/build-guest.sh

mem=4096
smp=2
timeout_s=1200
results=
interactive=
while (($#)); do
    case $1 in
        --mem) mem=${2:?--mem needs a value}; shift 2 ;;
        --smp) smp=${2:?--smp needs a value}; shift 2 ;;
        --timeout) timeout_s=${2:?--timeout needs a value}; shift 2 ;;
        --results) results=${2:?--results needs a value}; shift 2 ;;
        --interactive) interactive=1; shift ;;
        --) shift; break ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option '$1' (usage: $0 [--mem MIB] [--timeout SEC] [--results DIR] -- COMMAND...)" ;;
    esac
done
(($#)) || die "no command given (usage: $0 [options] -- COMMAND...)"
[[ $mem =~ ^[0-9]+$ && $smp =~ ^[0-9]+$ && $timeout_s =~ ^[0-9]+$ ]] ||
    die "--mem, --smp and --timeout take whole numbers"

stall_s=${GODWIT_TESTHOST_STALL_S:-60}
[[ $stall_s =~ ^[0-9]+$ ]] || die "GODWIT_TESTHOST_STALL_S takes a whole number of seconds"
if [[ -n $interactive ]] && ! [[ -t 0 && -t 1 ]]; then
    die "--interactive needs a terminal on standard input and output"
fi
qemu=${GODWIT_TESTHOST_QEMU:-$(command -v qemu-system-x86_64)} || die "qemu-system-x86_64 not found (install qemu-system-x86)"
command -v timeout >/dev/null || die "timeout (coreutils) not found"

# Kernel and modules: the same Debian package the default guest comes from.
declare -A kv=()
guest_out=$("$build_guest") || die "guests/build-guest.sh failed"
while IFS='=' read -r k v; do
    [[ -n $k ]] && kv[$k]=$v
done <<<"$guest_out"
bzimage=${kv[kernel_bzimage]:-}
[[ -f $bzimage ]] || die "guests/build-guest.sh did not report a kernel"
cache=${GODWIT_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/godwit}

# godwit boots a bzImage from its decompressed payload, cached in $GODWIT_CACHE/kernels
# (src/boot/unpack.c), which the test host sees read-only: fill it here for the default guest,
# with the vmlinux build-guest.sh extracted from the same bzImage, so that the guests there
# boot as users' do once the cache is warm. bench/boot.sh times the cold path itself.
warm_kernel_cache() {
    local elf=${kv[kernel_vmlinux]:-} dir=$cache/kernels hash
    [[ -f $elf ]] || return 0
    hash=$(sha256sum <"$bzimage") && hash=${hash%% *} || return 0
    [[ -f $dir/$hash.vmlinux ]] && return 0
    mkdir -p -m 0700 "$dir" && cp -- "$elf" "$dir/.$hash.$$" && chmod 0600 "$dir/.$hash.$$" &&
        mv -- "$dir/.$hash.$$" "$dir/$hash.vmlinux" || note "cannot fill the kernel cache in $dir"
}
warm_kernel_cache

# Modules of the test host: KVM itself, virtio-9p for the shared directories,
# and what tests use inside it (tap devices, veth/bridges between namespaces,
# loop-mounted ext4 for direct I/O, which tmpfs does not support).
l1_modules=(
    irqbypass ccp kvm kvm_amd
    virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
    netfs fscache 9pnet 9pnet_virtio 9p
    tun veth bridge loop crc32c_generic crc32c_intel ext4
)

write_l1_init() {
    cat >"$1" <<'EOF'
#!/bin/sh
# godwit test host init (generated by tools/testhost/testhost.sh).
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
# Plain "\n" line ends on the console, as the command's output would have had.
stty -onlcr 2>/dev/null
mount -t proc proc /proc
mount -t sysfs sysfs /sys

stop() {
    sync
    poweroff -f
    while :; do sleep 3600; done
}
fail() {
    echo "testhost: error: $*"
    stop
}

failed=
while read -r m; do
    [ -n "$m" ] || continue
    insmod "/$m" 2>/dev/null || failed="$failed ${m##*/}"
done </etc/modules.order
[ -c /dev/kvm ] || fail "no /dev/kvm in the test host (modules not loaded:$failed)"

p9=trans=virtio,version=9p2000.L,msize=262144
mkdir -p /ctl /host
mount -t 9p -o "$p9" testhost /ctl || fail "cannot mount the control share"
if [ -s /ctl/kvm_amd_params ]; then
    # Loaded again with the caller's parameters, before anything opens /dev/kvm.
    params=$(cat /ctl/kvm_amd_params)
    m=$(grep '/kvm-amd\.ko' /etc/modules.order)
    rmmod kvm_amd && insmod "/$m" $params || fail "cannot load kvm_amd with '$params'"
    echo "testhost: kvm_amd loaded with $params"
fi
# The heartbeat the caller watches: a test host that stops writing it has stopped answering.
# Beside the uptime, where this kernel lies, so that a stopped CPU's address can be placed.
text=$(grep ' _text$' /proc/kallsyms | cut -d' ' -f1)
(while :; do
    echo "$(cut -d' ' -f1 /proc/uptime) $text" >/ctl/heartbeat.new && mv /ctl/heartbeat.new /ctl/heartbeat
    sleep 5
done) &
# Its code's symbols, so that a stopped CPU's address is named (describe_cpus, outside).
grep -E ' [tT] ' /proc/kallsyms >/ctl/kallsyms 2>/dev/null &
# The host root never changes under us, so let the page cache keep it.
mount -t 9p -o "$p9,ro,cache=loose" hostroot /host || fail "cannot mount the host root"
mount -t proc proc /host/proc
mount -t sysfs sysfs /host/sys
mount -t devtmpfs devtmpfs /host/dev
# devtmpfs lacks the links udev would add; bash's process substitution needs /dev/fd.
ln -sf /proc/self/fd /host/dev/fd
ln -sf /proc/self/fd/0 /host/dev/stdin
ln -sf /proc/self/fd/1 /host/dev/stdout
ln -sf /proc/self/fd/2 /host/dev/stderr
mkdir -p /host/dev/pts /host/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts /host/dev/pts
mount -t tmpfs -o mode=1777 tmpfs /host/dev/shm
mount -t tmpfs -o mode=1777 tmpfs /host/tmp
mount -t tmpfs -o mode=1777 tmpfs /host/var/tmp
mount -t tmpfs -o mode=755 tmpfs /host/run
workdir=$(cat /ctl/workdir_path 2>/dev/null)
if [ -n "$workdir" ]; then
    # The caller works under a directory that is an empty tmpfs in here: share it, read-only.
    mkdir -p "/host$workdir" 2>/dev/null
    mount -t 9p -o "$p9,ro" workdir "/host$workdir" || fail "cannot mount the working directory at $workdir"
fi
results=$(cat /ctl/results_path 2>/dev/null)
if [ -n "$results" ]; then
    # Same path as on the host, so the command can use it as is; mkdir
    # matters when the path is under one of the tmpfs mounts above.
    mkdir -p "/host$results" 2>/dev/null
    mount -t 9p -o "$p9" results "/host$results" || fail "cannot mount the results share at $results"
fi
mkdir -p /host/run/testhost
cp /ctl/cmd.sh /host/run/testhost/cmd.sh
# Loopback is down in a fresh network namespace; the chroot shares this one.
ip link set lo up

[ -n "$failed" ] && echo "testhost: modules not loaded:$failed"
# One VM with one vCPU whose local APIC is off, kept for the test host's life: KVM flips static
# keys (preempt notifiers, APIC disabled) when the first VM or APIC comes and the last goes,
# and each flip patches this kernel's code live (int3, then IPIs). Under TCG that is where
# the test host's soft lockups stood (a CPU at asm_exc_int3, the other in KVM's
# __apic_accept_irq); with this VM there the keys never go back to zero, so the guests'
# VMs coming and going patch nothing.
env -i chroot /host python3 -c '
import fcntl, os, signal, struct
kvm = os.open("/dev/kvm", os.O_RDWR)
vm = fcntl.ioctl(kvm, 0xAE01, 0)                  # KVM_CREATE_VM
fcntl.ioctl(vm, 0xAE60, 0)                        # KVM_CREATE_IRQCHIP
vcpu = fcntl.ioctl(vm, 0xAE41, 0)                 # KVM_CREATE_VCPU
msrs = bytearray(struct.pack("<IIIIQ", 1, 0, 0x1B, 0, 0xFEE00000)) # IA32_APICBASE, disabled
assert fcntl.ioctl(vcpu, 0x4008AE89, msrs) == 1   # KVM_SET_MSRS
open("/run/testhost/keys-pinned", "w").close()
while True:
    signal.pause()
' </dev/null >/dev/null 2>&1 &
for _ in 1 2 3 4 5 6 7 8 9 10; do
    [ -e /host/run/testhost/keys-pinned ] && break
    sleep 1
done
[ -e /host/run/testhost/keys-pinned ] || echo "testhost: could not keep a VM to pin KVM's static keys"
read -r up _ </proc/uptime
# Told to the caller: a test host that ends without an exit status after this broke down
# while the command ran (below), not before it could start it.
: >/ctl/started
if [ -f /ctl/interactive ]; then
    # The caller's terminal: the command gets the serial line as its controlling terminal
    # (so that resizes reach it as SIGWINCH), with the terminal's size, kept up to date.
    dmesg -n 1
    set_size() { [ -n "$1" ] && set -- $1 && stty -F /dev/ttyS0 rows "$1" cols "$2"; }
    size=$(cat /ctl/winsize 2>/dev/null)
    set_size "$size"
    (while sleep 1; do
        new=$(cat /ctl/winsize 2>/dev/null)
        [ "$new" = "$size" ] || { size=$new; set_size "$size"; }
    done) &
    stty -F /dev/ttyS0 onlcr
    env -i setsid -c chroot /host /bin/sh /run/testhost/cmd.sh <>/dev/ttyS0 >&0 2>&0
else
    echo "testhost: ready after ${up}s"
    env -i chroot /host /bin/sh /run/testhost/cmd.sh </dev/null
fi
rc=$?
echo "$rc" >/ctl/rc.tmp && mv /ctl/rc.tmp /ctl/rc
sync
[ -n "$results" ] && umount "/host$results"
stop
EOF
}

# The test host's initramfs, rebuilt when this script, build-guest.sh (which
# assembles it), the kernel or busybox change.
l1=$cache/testhost/L1.cpio.gz
busybox_bin=$(command -v busybox) || die "busybox not found (install busybox-static)"
want=$(printf '%s\n' "$(sha256sum <"${BASH_SOURCE[0]}")" "$(sha256sum <"$build_guest")" \
    "${kv[kernel_package]:-}" "$(sha256sum <"$busybox_bin")" | sha256sum)
if [[ ! -f $l1 || $(cat "$cache/testhost/stamp" 2>/dev/null || true) != "$want" ]]; then
    note "building the test host initramfs"
    mkdir -p "$cache/testhost"
    init_tmp=$(mktemp "$cache/testhost/.init.XXXXXX")
    write_l1_init "$init_tmp"
    if ! "$build_guest" --make-initramfs "$l1" "$init_tmp" "${l1_modules[@]}"; then
        rm -f "$init_tmp"
        die "building the test host initramfs failed"
    fi
    rm -f "$init_tmp"
    printf '%s\n' "$want" >"$cache/testhost/stamp"
fi

# The machines this runs on have few cores and each test host keeps two of
# them busy, so test hosts run one at a time: later ones wait here (the wait
# does not count against --timeout). GODWIT_TESTHOST_PARALLEL=1 skips this.
# QEMU inherits the lock and holds it until it exits.
if [[ -z ${GODWIT_TESTHOST_PARALLEL:-} ]]; then
    command -v flock >/dev/null || die "flock (util-linux) not found"
    exec 8>"$cache/testhost/.run.lock"
    if ! flock -n 8; then
        note "waiting for another test host to finish"
        flock 8
    fi
fi

# Per-run state, removed on every exit path along with QEMU.
tmp=$(mktemp -d "${TMPDIR:-/tmp}/godwit-testhost.XXXXXX")
qpid=
# shellcheck disable=SC2317 # called through the EXIT trap
cleanup() {
    if [[ -n $qpid ]] && kill -0 "$qpid" 2>/dev/null; then
        kill -TERM "$qpid" 2>/dev/null || true
        wait "$qpid" 2>/dev/null || true
    fi
    [[ -n ${saved_stty:-} ]] && stty "$saved_stty" 2>/dev/null
    rm -rf -- "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

ctl=$tmp/ctl
mkdir "$ctl"

# Single quotes for /bin/sh (dash has no $'...'): ' becomes '\''.
shq() { local s=${1//\'/\'\\\'\'}; printf "'%s'" "$s"; }

if [[ -n $results ]]; then
    mkdir -p -- "$results" || die "cannot create $results"
    results=$(cd -- "$results" && pwd -P)
fi
printf '%s\n' "$results" >"$ctl/results_path"
[[ -n ${GODWIT_TESTHOST_KVM_AMD:-} ]] && printf '%s\n' "$GODWIT_TESTHOST_KVM_AMD" >"$ctl/kvm_amd_params"
# /tmp, /var/tmp, /run and /dev/shm are fresh tmpfs mounts in the test host: a caller working
# under one of them (a clone in /tmp) gets its directory shared read-only at the same path.
workdir=
case $(pwd -P)/ in
    /tmp/* | /var/tmp/* | /run/* | /dev/shm/*) workdir=$(pwd -P) ;;
esac
printf '%s\n' "$workdir" >"$ctl/workdir_path"
if [[ -n $interactive ]]; then
    : >"$ctl/interactive"
    exec {terminal_fd}<&0
    saved_stty=$(stty -g)
    # Written whole, then renamed: the test host polls it.
    send_size() { stty size >"$ctl/winsize.new" 2>/dev/null && mv -f "$ctl/winsize.new" "$ctl/winsize"; }
    send_size
    trap send_size WINCH
fi

{
    printf '# generated by testhost.sh\n'
    names=(PATH HOME LANG LC_ALL)
    [[ -n $interactive ]] && names+=(TERM)
    while IFS= read -r n; do names+=("$n"); done < <(compgen -e | grep '^GODWIT_' || true)
    # shellcheck disable=SC2206 # a list of names, split on blanks on purpose
    [[ -n ${GODWIT_TESTHOST_ENV:-} ]] && names+=($GODWIT_TESTHOST_ENV)
    for n in "${names[@]}"; do
        [[ $n =~ ^[A-Za-z_][A-Za-z0-9_]*$ && -n ${!n+set} ]] || continue
        printf 'export %s=%s\n' "$n" "$(shq "${!n}")"
    done
    printf 'export GODWIT_CACHE=%s\n' "$(shq "$cache")"
    printf 'export GODWIT_IN_TESTHOST=1\n'
    [[ -n $results ]] && printf 'export GODWIT_TESTHOST_RESULTS=%s\n' "$(shq "$results")"
    printf 'cd -- %s || { echo "testhost: error: cannot enter %s inside the test host"; exit 125; }\n' \
        "$(shq "$PWD")" "$(shq "$PWD")"
    printf 'exec'
    for a in "$@"; do printf ' %s' "$(shq "$a")"; done
    printf '\n'
} >"$ctl/cmd.sh"

# EPYC with AMD-V and nested paging; the features TCG cannot emulate are
# switched off, which changes nothing but QEMU's warning for each of them.
cpu=EPYC,+svm,+npt,-rdseed,-sha-ni,-fxsr-opt,-misalignsse,-3dnowprefetch,-osvw,-topoext,-nrip-save,-xsavec
# Multi-threaded TCG. It froze the test host a few times when a guest had more vCPUs than
# the test host (--cpus 3 or 4); single-threaded TCG avoided that but made the Linux-guest
# boots too slow (a --cpus 2 boot passed its 180 s limit), so this stays until diagnosed.
# shellcheck disable=SC2054 # the commas belong to QEMU's option syntax
args=(
    -accel "tcg,thread=${GODWIT_TESTHOST_TCG:-multi}" -cpu "$cpu" -smp "$smp" -m "$mem" -M pc
    -nodefaults -display none -no-reboot
    # What QEMU logs on a reset: a triple fault of the test host's own CPU shows there, when
    # it stops with nothing on its console (-no-reboot: QEMU just exits, status 0).
    -d cpu_reset -D "$tmp/resets.log"
    -chardev stdio,id=con,signal=off -serial chardev:con
    -kernel "$bzimage" -initrd "$l1"
    -append "console=ttyS0 panic=-1 $([[ -n $interactive ]] && echo loglevel=1 || echo quiet)"
    -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap
    -virtfs "local,path=$ctl,mount_tag=testhost,security_model=none"
)
[[ -n $results ]] && args+=(-virtfs "local,path=$results,mount_tag=results,security_model=none")
[[ -n $workdir ]] && args+=(-virtfs "local,path=$workdir,mount_tag=workdir,security_model=none,readonly=on")
# QEMU's monitor, where the test host's CPUs can be looked at when it stops answering.
args+=(-monitor "unix:$tmp/monitor.sock,server=on,wait=off")
[[ -n ${GODWIT_TESTHOST_MONITOR:-} ]] && ln -sf "$tmp/monitor.sock" "$GODWIT_TESTHOST_MONITOR"

# The console passes through a watcher: a soft lockup report means the test host froze (see
# above); it has never recovered from one, so QEMU is stopped at once instead of at the
# timeout, and the exit status (75) lets the caller run it again.
watch_console() {
    local line
    while IFS= read -r line; do
        printf '%s\n' "$line"
        if [[ $line == *"watchdog: BUG: soft lockup"* && ! -e $tmp/frozen ]]; then
            echo "a soft lockup" >"$tmp/frozen"
            # Its kernel is quiet: the lockup's own trace is not printed, so say where the
            # CPUs stand (by symbol) before QEMU goes.
            note "the test host's kernel reports a soft lockup; its CPUs:"
            describe_cpus >&2
            kill -TERM "$(cat "$tmp/qpid")" 2>/dev/null
        fi
        # Its own kernel's panic (seen: "stack guard page was hit" in error_entry, under
        # godwit and under QEMU alike; docs/testing.md) ends it too: it reboots, QEMU exits.
        if [[ $line == *"Kernel panic - not syncing"* && ! -e $tmp/frozen ]]; then
            echo "its kernel panicked" >"$tmp/frozen"
        fi
    done
}

# Not every freeze prints a soft lockup: the test host may stop running anything at all. Its
# heartbeat (written every 5 s) tells, and QEMU's monitor shows where its CPUs stand, which
# says whether they were in the test host's own kernel or in a guest of it.
describe_cpus() {
    local text
    text=$(cut -d' ' -f2 "$ctl/heartbeat" 2>/dev/null)
    python3 - "$tmp/monitor.sock" "${text:-0}" "$ctl/kallsyms" <<'PY' 2>/dev/null || true
import bisect, re, socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.settimeout(5)
s.connect(sys.argv[1])
s.sendall(b"info registers -a\n")
out, end = b"", time.time() + 5
while time.time() < end:
    try:
        chunk = s.recv(65536)
    except socket.timeout:
        break
    if not chunk:
        break
    out += chunk
    if out.count(b"EFER=") >= 1 and out.rstrip().endswith(b"(qemu)"):
        break
text = int(sys.argv[2], 16)
syms = []
try:
    for line in open(sys.argv[3]):
        f = line.split()
        syms.append((int(f[0], 16), f[2] + (" " + f[3] if len(f) > 3 else "")))
    syms.sort()
except (OSError, ValueError, IndexError):
    pass
addrs = [a for a, _ in syms]

def symbol(rip):
    i = bisect.bisect_right(addrs, rip) - 1
    if i < 0 or rip - addrs[i] >= 1 << 20:
        return ""
    return f" ({syms[i][1]}+{rip - addrs[i]:#x})"

for cpu, block in enumerate(out.decode(errors="replace").split("RAX=")[1:]):
    rip = re.search(r"RIP=([0-9a-f]+)", block)
    cpl = re.search(r"CPL=(\d)", block)
    hlt = re.search(r"HLT=(\d)", block)
    where = "?"
    if rip:
        off = int(rip.group(1), 16) - text
        where = "the test host's kernel" if text and 0 <= off < (64 << 20) else "a guest of the test host (or its user space)"
        named = symbol(int(rip.group(1), 16))
        if named and int(rip.group(1), 16) >= 0xffffffffc0000000:
            where = "the test host's modules" # kvm, kvm_amd: the module area
        if where.startswith("the test host's"):
            where += named
    print(f"testhost:   cpu{cpu}: RIP={rip.group(1) if rip else '?'} CPL={cpl.group(1) if cpl else '?'} "
          f"halted={hlt.group(1) if hlt else '?'}: in {where}")
PY
}

watch_heartbeat() {
    local beat age
    while sleep 5; do
        beat=$ctl/heartbeat
        [[ -e $beat ]] || beat=$tmp/qpid # before the first beat: since QEMU started
        age=$(($(date +%s) - $(stat -c %Y "$beat" 2>/dev/null || date +%s)))
        if ((age >= stall_s)); then
            note "the test host stopped answering: no heartbeat for ${age}s; its CPUs:"
            describe_cpus >&2
            echo "no heartbeat for ${age}s" >"$tmp/frozen"
            kill -TERM "$(cat "$tmp/qpid")" 2>/dev/null
            return
        fi
    done
}

start=$SECONDS
# timeout --foreground stays in our process group, so ^C reaches QEMU too, and so does the
# terminal in interactive mode: QEMU makes it raw (signal=off: ^C is a key for the guest)
# and restores it when it ends. Otherwise QEMU's stdin is /dev/null and its output passes
# through the watcher.
if [[ -n $interactive ]]; then
    # Explicitly: without job control, bash gives a background command /dev/null as stdin.
    timeout --foreground -k 10 "$timeout_s" "$qemu" "${args[@]}" <&"$terminal_fd" &
else
    timeout --foreground -k 10 "$timeout_s" "$qemu" "${args[@]}" </dev/null > >(watch_console) &
fi
qpid=$!
echo "$qpid" >"$tmp/qpid"
watch_heartbeat &
hpid=$!
# A resize (SIGWINCH, trapped above) interrupts wait; QEMU goes on.
while :; do
    qrc=0
    wait "$qpid" || qrc=$?
    kill -0 "$qpid" 2>/dev/null || break
done
qpid=
kill "$hpid" 2>/dev/null || true
wait "$hpid" 2>/dev/null || true

if [[ -e $tmp/frozen ]]; then
    note "the test host broke down ($(cat "$tmp/frozen")) after $((SECONDS - start))s; run it again"
    exit 75
fi
if [[ -f $ctl/rc ]]; then
    rc=$(cat "$ctl/rc")
    [[ $rc =~ ^[0-9]+$ ]] || die "the test host reported a bad exit status '$rc'"
    exit "$rc"
fi
if ((qrc == 124 || qrc == 137)); then
    die "timed out after ${timeout_s}s (the test host was killed)"
fi
# Ended with the command running and nothing in its console: a reset of the test host itself
# (twice in benchmarks, under a QEMU guest and under godwit's), which no guest can cause; the
# caller runs it again, as after a freeze.
if [[ -e $ctl/started ]]; then
    how="ended by itself (QEMU exit status $qrc: a reset or power-off of its own, or QEMU stopped from outside)"
    grep -qx 'Triple fault' "$tmp/resets.log" 2>/dev/null && how="reset itself (QEMU saw its CPU triple fault)"
    note "the test host $how after $((SECONDS - start))s while the command ran; run it again"
    exit 75
fi
die "the test host stopped after $((SECONDS - start))s without running the command (QEMU exit status $qrc; see its console output above)"
