#!/usr/bin/env bash
# run-kvm-tests.sh: boots each tiny guest (guests/tiny) with BUILD_DIR/godwit on /dev/kvm and checks exit status and output.
#
# Usage: tests/kvm/run-kvm-tests.sh BUILD_DIR
#
# Prints "PASS name" or "FAIL name: reason" per case (with the captured output after a
# failure), then "N passed, M failed". Exit status: 0 all passed, 1 some failed, 2 cannot run
# here (no usable /dev/kvm, no godwit binary): the caller decides where to run it
# (tools/testhost/testhost.sh gives a /dev/kvm that works).
set -uo pipefail

prog=run-kvm-tests
die() {
    printf '%s: error: %s\n' "$prog" "$*" >&2
    exit 2
}

(($# == 1)) || die "usage: $0 BUILD_DIR"
build=$1
godwit=$build/godwit
guests=$build/guests/tiny

[[ -x $godwit ]] || die "$godwit is not an executable (build godwit first)"
[[ -e /dev/kvm ]] || die "no /dev/kvm on this machine (run it in the test host: tools/testhost/testhost.sh -- $0 $build)"
[[ -c /dev/kvm ]] || die "/dev/kvm is not a character device"
(exec 3<>/dev/kvm) 2>/dev/null || die "cannot open /dev/kvm read-write (permissions?)"
command -v timeout >/dev/null || die "timeout (coreutils) not found"

# One minute per boot: the slowest case takes seconds even in the nested test host, so a
# timeout means a hang, not slowness.
TIMEOUT_S=${GODWIT_KVM_TEST_TIMEOUT:-60}

work=$(mktemp -d "${TMPDIR:-/tmp}/godwit-kvm-tests.XXXXXX") || die "cannot create a temporary directory"
# VMs started in the background (the snapshot case): none may outlive the script.
bg_pids=()
kill_background() {
    local pid
    for pid in "${bg_pids[@]}"; do
        kill -KILL "$pid" 2>/dev/null
    done
}
trap 'kill_background; rm -rf -- "$work"' EXIT

passed=0
failed=0
out=$work/stdout
err=$work/stderr
status=0

# run ARGS...: runs godwit with ARGS, no stdin; sets $status, fills $out and $err.
run() {
    status=0
    timeout -k 5 "$TIMEOUT_S" "$godwit" "$@" </dev/null >"$out" 2>"$err" || status=$?
}

pass() {
    echo "PASS $1"
    passed=$((passed + 1))
}

# fail NAME REASON [FILE...]: reports the case with the last lines of the FILEs, indented; by
# default of what godwit printed ($out and $err).
fail() {
    local name=$1 reason=$2 f
    shift 2
    (($#)) || set -- "$out" "$err"
    echo "FAIL $name: $reason"
    failed=$((failed + 1))
    for f; do
        [[ -s $f ]] || continue
        echo "  --- ${f#"$work/"} (last 20 lines):"
        tail -n 20 -- "$f" | tr -d '\r' | cut -c1-300 | sed 's/[^[:print:]\t]/?/g; s/^/  | /'
    done
}

# Reasons a run is broken whatever the case expects; empty when none.
common_problem() {
    if ((status == 124 || status == 137)); then
        echo "timed out after ${TIMEOUT_S}s (exit status $status)"
    elif grep -aqE 'Sanitizer|runtime error:|Segmentation|core dumped' "$out" "$err"; then
        echo "sanitizer report or crash in the output: $(grep -ahE 'Sanitizer|runtime error:|Segmentation|core dumped' "$out" "$err" | head -n 1 | cut -c1-200)"
    elif ((status >= 128)); then
        echo "godwit died of signal $((status - 128))"
    fi
}

# has_line FILE REGEX: a whole line of FILE matches the extended REGEX (carriage returns
# ignored).
has_line() {
    tr -d '\r' <"$1" | grep -aqxE -- "$2"
}

# guest_case NAME WANT_STATUS WANT_LINE GUEST [GODWIT ARGS...]: boots guests/tiny/GUEST.elf
# and wants the exit status and a console line (on stdout) matching the regex WANT_LINE. A guest that reports a
# failed check prints "tiny: FAIL: ..." and exits through pvpanic (5).
guest_case() {
    local name=$1 want_status=$2 want_line=$3 guest=$guests/$4.elf problem
    shift 4
    if [[ ! -f $guest ]]; then
        : >"$out"
        : >"$err"
        fail "$name" "$guest is missing (build the tiny_guests target)"
        return
    fi
    run run --kernel "$guest" --memory 64 --no-reboot "$@"
    problem=$(common_problem)
    if [[ -n $problem ]]; then
        fail "$name" "$problem"
    elif grep -aq 'tiny: FAIL:' "$out"; then
        fail "$name" "the guest reported: $(tr -d '\r' <"$out" | grep -a -m1 -o 'tiny: FAIL:.*' | cut -c1-200) (exit status $status)"
    elif ((status != want_status)); then
        fail "$name" "exit status $status, expected $want_status"
    elif ! has_line "$out" "$want_line"; then
        fail "$name" "no line '$want_line' on stdout"
    else
        return 0
    fi
    return 1
}

# A guest that powered off cleanly has nothing to report as an error.
no_error_lines() {
    local name=$1
    if grep -aqi 'error' "$err"; then
        fail "$name" "error on stderr: $(grep -ai -m1 'error' "$err" | tr -d '\r' | cut -c1-200)"
        return 1
    fi
    return 0
}

# --- Guests -----------------------------------------------------------------------------

guest_case hello 0 'tiny: hello from the guest' hello && no_error_lines hello && pass hello

guest_case io 0 'tiny: io ok vendor=[0-9a-f]{4} device=[0-9a-f]{4}' io && no_error_lines io && pass io

for n in 1 2 4; do
    guest_case "smp-$n" 0 "tiny: smp $n cpus up" smp --cpus "$n" && no_error_lines "smp-$n" &&
        pass "smp-$n"
done

if guest_case triple 4 'tiny: about to triple fault' triple; then
    if ! grep -aqi 'triple fault' "$err"; then
        fail triple "stderr does not mention the triple fault"
    elif ! grep -aq 'rip=' "$err"; then
        fail triple "stderr has no register dump (no 'rip=')"
    else
        pass triple
    fi
fi

guest_case panic 5 'tiny: panicking on purpose' panic && pass panic

guest_case hostile 0 'tiny: survived' hostile && pass hostile

# --- virtio-blk: guests/tiny/virtio_blk.c drives a disk through godwit's virtio-pci ----------

# The contract with virtio_blk.c: a 1 MiB image, zero but for sector 0, which holds the host
# pattern; the guest writes the guest pattern to sectors 129..136 and expects the serial.
BLK_SECTORS=2048
BLK_TEST_SECTOR=129
BLK_TEST_SECTORS=8
BLK_HOST_SEED=$((0x3c))
BLK_GUEST_SEED=$((0x5a))
BLK_SERIAL=tiny-serial

# pattern_sectors SEED FIRST COUNT: writes to stdout the bytes virtio_blk.c's pattern() gives
# sectors FIRST..FIRST+COUNT-1: (seed + sector * 37 + i * 7 + (i >> 8) * 101) mod 256.
pattern_sectors() {
    local seed=$1 first=$2 count=$3 s i fmt b
    for ((s = first; s < first + count; s++)); do
        fmt=
        for ((i = 0; i < 512; i++)); do
            printf -v b '\\%03o' $(((seed + s * 37 + i * 7 + (i >> 8) * 101) & 255))
            fmt+=$b
        done
        printf "$fmt"
    done
}

# put_pattern IMG SEED FIRST COUNT: writes the pattern of sectors FIRST.. into IMG in place.
# Through a file, not a pipe: dd may copy a short read from a pipe as a whole block.
put_pattern() {
    pattern_sectors "$2" "$3" "$4" >"$work/pattern.bin" &&
        [[ $(stat -c %s -- "$work/pattern.bin") == $(($4 * 512)) ]] &&
        dd if="$work/pattern.bin" of="$1" bs=512 seek="$3" conv=notrunc status=none
}

# blk_image FILE: a fresh test image (sector 0 = host pattern, the rest zero).
blk_image() {
    rm -f -- "$1" &&
        truncate -s $((BLK_SECTORS * 512)) -- "$1" &&
        put_pattern "$1" "$BLK_HOST_SEED" 0 1
}

# blk_expect_image IMG EXPECTED WHAT NAME: the image matches the expected bytes exactly.
blk_expect_image() {
    local diff
    if ! diff=$(cmp -- "$2" "$1" 2>&1); then
        fail "$4" "$3: ${diff:-images differ}"
        return 1
    fi
    return 0
}

blk_case() {
    local name=virtio-blk img=$work/blk.img want=$work/blk.want
    if ! blk_image "$img"; then
        fail "$name" "cannot create the test image $img"
        return
    fi
    # What the image must hold afterwards: the same, plus the guest's pattern at its sectors.
    if ! cp -- "$img" "$want" ||
        ! put_pattern "$want" "$BLK_GUEST_SEED" "$BLK_TEST_SECTOR" "$BLK_TEST_SECTORS"; then
        fail "$name" "cannot create the expected image $want"
        return
    fi
    guest_case "$name" 0 "tiny: virtio-blk ok capacity=$BLK_SECTORS serial=$BLK_SERIAL" virtio_blk \
        --disk "path=$img,serial=$BLK_SERIAL" || return
    if ! has_line "$out" 'tiny: virtio-blk: buffer outside RAM gave NEEDS_RESET, status 0x[0-9a-f]{2}'; then
        fail "$name" "the guest did not report the NEEDS_RESET step"
    elif ! grep -aqi 'needs reset' "$err"; then
        fail "$name" "stderr does not mention the device needing a reset"
    elif grep -aqi 'error' "$err"; then
        fail "$name" "error on stderr: $(grep -ai -m1 'error' "$err" | tr -d '\r' | cut -c1-200)"
    else
        # The host's view: exactly sectors 129..136 changed, to the guest's pattern.
        blk_expect_image "$img" "$want" "the image on the host is not what the guest wrote" \
            "$name" && pass "$name"
    fi
}
blk_case

blk_readonly_case() {
    local name=virtio-blk-readonly img=$work/blk-ro.img want=$work/blk-ro.want
    if ! blk_image "$img" || ! cp -- "$img" "$want"; then
        fail "$name" "cannot create the test image $img"
        return
    fi
    guest_case "$name" 0 "tiny: virtio-blk readonly ok capacity=$BLK_SECTORS serial=$BLK_SERIAL" \
        virtio_blk --cmdline tiny.blk=ro --disk "path=$img,readonly=on,serial=$BLK_SERIAL" || return
    if grep -aqi 'error' "$err"; then
        fail "$name" "error on stderr: $(grep -ai -m1 'error' "$err" | tr -d '\r' | cut -c1-200)"
    else
        blk_expect_image "$img" "$want" "the read-only image changed" "$name" && pass "$name"
    fi
}
blk_readonly_case

# --- Snapshot and restore: guests/tiny/counter.c counts in RAM, and the count goes on ------

# The contract with counter.c: it prints "tiny: count N" whenever its count N reaches a
# multiple of COUNTER_STEP, so the counts of one run are STEP, 2*STEP, ... and a restored run
# goes on with the multiple after the count the snapshot holds.
COUNTER_STEP=$((1 << 22))
COUNTER_FIRST_LINES=3   # counts of the first run before the snapshot
COUNTER_MORE_LINES=3    # counts a restored run prints after its first one

# counts FILE [PREFIX]: the counts of the complete "tiny: count N" lines of PREFIX followed by
# FILE, one a line; a last line without its newline yet is still being printed: left out.
counts() {
    local f=$work/counts.tmp
    { printf '%s' "${2-}"; cat -- "$1"; } >"$f"
    if [[ -s $f && $(tail -c 1 -- "$f" | wc -l) == 0 ]]; then
        head -n -1 -- "$f"
    else
        cat -- "$f"
    fi | tr -d '\r' | sed -nE 's/^tiny: count ([0-9]+)$/\1/p'
}

# sequence_problem FIRST COUNTS: empty when COUNTS (one a line) are FIRST, FIRST + STEP, ...;
# otherwise what is wrong.
sequence_problem() {
    local want=$1 c
    for c in $2; do
        if ((c != want)); then
            echo "count $c where $want was due (the first counts: $(printf "%s\n" "$2" | head -n 5 | paste -sd " "))"
            return
        fi
        want=$((want + COUNTER_STEP))
    done
}

# start_vm OUT ERR GODWIT_ARGS...: starts godwit in the background; sets $vm_pid.
start_vm() {
    local o=$1 e=$2
    shift 2
    "$godwit" "$@" </dev/null >"$o" 2>"$e" &
    vm_pid=$!
    bg_pids+=("$vm_pid")
}

# wait_counts FILE PID N [PREFIX]: waits (at most TIMEOUT_S) for N counts in FILE (see counts)
# while godwit PID runs; on failure sets $wait_problem.
wait_counts() {
    local file=$1 pid=$2 want=$3 prefix=${4-} deadline=$((SECONDS + TIMEOUT_S)) n
    while :; do
        n=$(counts "$file" "$prefix" | wc -l)
        ((n >= want)) && return 0
        if ! kill -0 "$pid" 2>/dev/null; then
            wait_problem="godwit exited after $n count lines, $want expected"
            return 1
        elif ((SECONDS >= deadline)); then
            wait_problem="$n count lines after ${TIMEOUT_S}s, $want expected"
            return 1
        fi
        sleep 0.2
    done
}

# wait_exit PID: waits (at most TIMEOUT_S) for godwit PID to exit; sets $status.
wait_exit() {
    local pid=$1 deadline=$((SECONDS + TIMEOUT_S))
    while kill -0 "$pid" 2>/dev/null; do
        ((SECONDS >= deadline)) && return 1
        sleep 0.1
    done
    status=0
    wait "$pid" || status=$?
}

# end_vm PID SOCKET: after a failure, stops godwit PID however it can (API, SIGHUP, SIGKILL).
end_vm() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    timeout 10 "$godwit" stop "$2" >/dev/null 2>&1 || kill -HUP "$pid" 2>/dev/null
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
}

# vm_problem NAME: after godwit exited ($status, $out, $err): a crash, a sanitizer report or an
# error line makes the case fail; returns 1 then.
vm_problem() {
    local problem
    problem=$(common_problem)
    if [[ -n $problem ]]; then
        fail "$1" "$problem"
    elif grep -aq 'tiny: FAIL:' "$out"; then
        fail "$1" "the guest reported: $(tr -d '\r' <"$out" | grep -a -m1 -o 'tiny: FAIL:.*' | cut -c1-200)"
    elif grep -aqi 'error' "$err"; then
        fail "$1" "error on stderr: $(grep -ai -m1 'error' "$err" | tr -d '\r' | cut -c1-200)"
    else
        return 0
    fi
    return 1
}

# restore_case NAME SNAPSHOT FIRST PREFIX: `godwit run --restore SNAPSHOT` must print counts
# FIRST, FIRST + STEP, ... (after PREFIX, the line the source VM was in the middle of, if any)
# and stop with status 6 through the API.
restore_case() {
    local name=$1 snap=$2 first=$3 prefix=$4 sock=$work/$1.sock out=$work/$1.out err=$work/$1.err
    local pid got got_first problem
    start_vm "$out" "$err" run --restore "$snap" --api-socket "$sock"
    pid=$vm_pid
    if ! wait_counts "$out" "$pid" $((1 + COUNTER_MORE_LINES)) "$prefix"; then
        end_vm "$pid" "$sock"
        fail "$name" "the restored VM: $wait_problem"
        return 1
    fi
    got=$(counts "$out" "$prefix")
    got_first=${got%%$'\n'*}
    problem=$(sequence_problem "$first" "$got")
    if [[ -n $problem ]]; then
        end_vm "$pid" "$sock"
        if [[ -n $prefix ]]; then
            problem+="; the source VM stopped in the middle of the line '$prefix', and the restored VM's"
            problem+=" output began with '$(head -n 1 -- "$out" | tr -d '\r' | cut -c1-60)'"
        fi
        if ((got_first < first)); then
            fail "$name" "the count did not go on: the restored VM's first count is $got_first, the source VM's last was $((first - COUNTER_STEP))"
        else
            fail "$name" "the restored VM's counts: $problem (the source VM's last was $((first - COUNTER_STEP)))"
        fi
        return 1
    fi
    local stop_status=0
    timeout -k 5 "$TIMEOUT_S" "$godwit" stop "$sock" >"$work/$name.stop" 2>&1 || stop_status=$?
    if ((stop_status != 0)); then
        end_vm "$pid" "$sock"
        fail "$name" "godwit stop $sock: exit status $stop_status$( ((stop_status != 124)) || echo " (timed out after ${TIMEOUT_S}s)")" \
            "$work/$name.stop" "$out" "$err"
        return 1
    fi
    if ! wait_exit "$pid"; then
        end_vm "$pid" "$sock"
        fail "$name" "the restored VM did not exit within ${TIMEOUT_S}s of godwit stop"
        return 1
    fi
    vm_problem "$name" || return 1
    if ((status != 6)); then
        fail "$name" "exit status $status after godwit stop, expected 6"
        return 1
    fi
    pass "$name"
}

# A counting VM, snapshotted with --stop once it has printed a few counts; restored twice from
# the same snapshot, it counts on from where the snapshot left it each time.
snapshot_case() {
    local name=snapshot guest=$guests/counter.elf snap=$work/snap sock=$work/x.sock
    local out=$work/count.out err=$work/count.err pid last partial
    if [[ ! -f $guest ]]; then
        fail "$name" "$guest is missing (build the tiny_guests target)" /dev/null
        return
    fi
    start_vm "$out" "$err" run --kernel "$guest" --memory 64 --no-reboot --api-socket "$sock"
    pid=$vm_pid
    if ! wait_counts "$out" "$pid" "$COUNTER_FIRST_LINES"; then
        end_vm "$pid" "$sock"
        fail "$name" "the counting VM: $wait_problem"
        return
    fi
    if ! has_line "$out" "tiny: counter started, a line every $COUNTER_STEP iterations"; then
        end_vm "$pid" "$sock"
        fail "$name" "no line 'tiny: counter started, a line every $COUNTER_STEP iterations' (counter.c's COUNTER_STEP changed?)"
        return
    fi
    local snap_status=0
    timeout -k 5 "$TIMEOUT_S" "$godwit" snapshot "$sock" "$snap" --stop >"$work/snapshot.cmd" 2>&1 ||
        snap_status=$?
    if ((snap_status != 0)); then
        end_vm "$pid" "$sock"
        fail "$name" "godwit snapshot $sock $snap --stop: exit status $snap_status$( ((snap_status != 124)) || echo " (timed out after ${TIMEOUT_S}s)")" \
            "$work/snapshot.cmd" "$out" "$err"
        return
    fi
    if ! grep -aq 'MiB written' "$work/snapshot.cmd"; then
        end_vm "$pid" "$sock"
        fail "$name" "godwit snapshot did not report what it wrote" "$work/snapshot.cmd" "$out" "$err"
        return
    fi
    if ! wait_exit "$pid"; then
        end_vm "$pid" "$sock"
        fail "$name" "the counting VM did not exit within ${TIMEOUT_S}s of godwit snapshot --stop" \
            "$work/snapshot.cmd" "$out" "$err"
        return
    fi
    vm_problem "$name" || return
    if ((status != 6)); then
        fail "$name" "exit status $status after godwit snapshot --stop, expected 6"
        return
    fi
    last=$(counts "$out" | tail -n 1)
    local problem
    problem=$(sequence_problem "$COUNTER_STEP" "$(counts "$out")")
    if [[ -n $problem ]]; then
        fail "$name" "the counting VM's counts: $problem"
        return
    fi
    # A line the guest was printing when it was paused: the restored VM prints the rest.
    partial=
    if [[ $(tail -c 1 -- "$out" | wc -l) == 0 ]]; then
        partial=$(tail -n 1 -- "$out")
    fi
    pass "$name"
    restore_case snapshot-restore "$snap" $((last + COUNTER_STEP)) "$partial"
    # A snapshot is not used up by a restore: the same one again gives the same counts.
    restore_case snapshot-restore-again "$snap" $((last + COUNTER_STEP)) "$partial"
}
snapshot_case

# --- Bad input: godwit must refuse it with one error line, without crashing ----------------

# bad_input NAME GODWIT_ARGS...: wants exit status 1 or 2 and exactly one stderr line, which
# says "error".
bad_input() {
    local name=$1 problem lines
    shift
    run "$@"
    problem=$(common_problem)
    lines=$(tr -d '\r' <"$err" | grep -c '')
    if [[ -n $problem ]]; then
        fail "$name" "$problem"
    elif ((status != 1 && status != 2)); then
        fail "$name" "exit status $status, expected 1 or 2"
    elif ((lines != 1)); then
        fail "$name" "$lines lines on stderr, expected exactly one error line"
    elif ! grep -aqi 'error' "$err"; then
        fail "$name" "the stderr line does not say 'error'"
    else
        pass "$name"
    fi
}

: >"$work/empty.elf"
head -c 65536 /dev/urandom >"$work/random.elf"
if [[ -f $guests/hello.elf ]]; then
    head -c 100 "$guests/hello.elf" >"$work/truncated.elf"
else
    # Not the real thing, but still an ELF header that promises more than the file has.
    printf '\177ELF\002\001\001' >"$work/truncated.elf"
    head -c 93 /dev/zero >>"$work/truncated.elf"
fi
good_kernel=$guests/hello.elf
[[ -f $good_kernel ]] || good_kernel=$work/random.elf

bad_input missing-kernel run --kernel "$work/does-not-exist.elf" --memory 64
bad_input empty-kernel run --kernel "$work/empty.elf" --memory 64
bad_input random-kernel run --kernel "$work/random.elf" --memory 64
bad_input truncated-elf run --kernel "$work/truncated.elf" --memory 64
bad_input cpus-0 run --kernel "$good_kernel" --memory 64 --cpus 0
bad_input memory-10 run --kernel "$good_kernel" --memory 10
bad_input unknown-flag run --kernel "$good_kernel" --memory 64 --no-such-flag

echo "$passed passed, $failed failed"
((failed == 0))
