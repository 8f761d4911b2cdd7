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
trap 'rm -rf -- "$work"' EXIT

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

# fail NAME REASON: reports the case with what godwit printed, indented.
fail() {
    echo "FAIL $1: $2"
    failed=$((failed + 1))
    local f
    for f in stdout stderr; do
        [[ -s $work/$f ]] || continue
        echo "  --- $f (last 20 lines):"
        tail -n 20 -- "$work/$f" | tr -d '\r' | cut -c1-300 | sed 's/[^[:print:]\t]/?/g; s/^/  | /'
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
