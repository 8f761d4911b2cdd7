#!/usr/bin/env bash
# trace-resets.sh CMD [ARGS...]: runs CMD inside the test host with a light trace of what its
# KVM does to guests (interrupts and exceptions it injects, and only the exits for guest
# exceptions and for a shutdown), stops tracing at the first shutdown exit (a guest's triple
# fault), and keeps the trace's tail in $GODWIT_TESTHOST_RESULTS/trace-tail.txt, printing the
# shutdown exits decoded. Few events: a trace of every exit slows a guest so much that the
# resets it is for stop coming (docs/testing.md, "What one reset was").
#   tools/testhost/testhost.sh --results DIR -- env GODWIT_TESTHOST_ENV= \
#     tools/testhost/trace-resets.sh env GODWIT_DEVICE_CASES=stress GODWIT_STRESS_CPUS=2 \
#     tests/e2e/run-devices.sh build
set -uo pipefail
[ $# -gt 0 ] || { echo "usage: trace-resets.sh CMD [ARGS...]" >&2; exit 2; }
out=${GODWIT_TESTHOST_RESULTS:?trace-resets.sh runs inside the test host (testhost.sh --results DIR)}
t=/sys/kernel/tracing
[ -d $t/events ] || mount -t tracefs nodev $t || { echo "trace-resets: no tracefs" >&2; exit 2; }
[ -d $t/events/kvm/kvm_exit ] || { echo "trace-resets: no KVM tracepoints (kvm not loaded?)" >&2; exit 2; }

echo 0 >$t/tracing_on
echo 32768 >$t/buffer_size_kb
echo >$t/trace
for e in kvm_inj_virq kvm_inj_exception kvm_exit; do echo 1 >$t/events/kvm/$e/enable; done
# SVM exit codes: 0x40-0x5f a guest exception, 0x7f a shutdown.
echo 'exit_reason == 127 || (exit_reason >= 64 && exit_reason < 96)' >$t/events/kvm/kvm_exit/filter
echo 'traceoff if exit_reason == 127' >$t/events/kvm/kvm_exit/trigger
echo 1 >$t/tracing_on

# The trace is kept as soon as tracing stops, not only when CMD ends: a suite that goes on
# (reruns, later cases) may outlast the test host's timeout, which would lose it.
( while [ "$(cat $t/tracing_on)" = 1 ]; do sleep 2; done
  tail -n 200000 $t/trace >"$out/trace-tail.txt"
  echo "trace-resets: a guest shut down; the trace is in trace-tail.txt" ) &
watcher=$!

"$@"
status=$?

stopped=$(( $(cat $t/tracing_on) == 0 ))
if [ $stopped = 1 ]; then
  wait $watcher
else
  kill $watcher 2>/dev/null
  echo 0 >$t/tracing_on
  tail -n 200000 $t/trace >"$out/trace-tail.txt"
fi
echo '!traceoff if exit_reason == 127' >$t/events/kvm/kvm_exit/trigger
echo 0 >$t/events/kvm/kvm_exit/filter
if [ $stopped = 1 ]; then
  # exit_int_info: bits 7:0 the vector, 10:8 the type (0 interrupt, 2 NMI, 3 exception, 4
  # software interrupt), 11 an error code given, 31 valid: the event being delivered.
  grep 'reason shutdown' "$out/trace-tail.txt" | while read -r line; do
    info=$(sed -n 's/.*intr_info 0x\([0-9a-f]*\).*/\1/p' <<<"$line")
    code=$(sed -n 's/.*error_code 0x\([0-9a-f]*\).*/\1/p' <<<"$line")
    echo "trace-resets: $line"
    if [ -n "$info" ] && (( 0x$info >> 31 )); then
      echo "trace-resets: it was delivering vector $(( 0x$info & 0xff )), type $(( (0x$info >> 8) & 7 ))$( (( (0x$info >> 11) & 1 )) && echo ", error code 0x$code")"
    fi
  done
else
  echo "trace-resets: no guest shut down (triple fault) while CMD ran"
fi
exit $status
