# lib.sh: what the Linux-guest suites share: results and checks on a case's log.
# Sourced after setting $work (the suite's temporary directory, where NAME.log files go).

passed=0 failed=0

# GODWIT_E2E_LOGS=DIR: the suite's logs (guests' consoles, VMMs' own lines) are copied there
# when it ends, for a look after the fact (they go with the suite's temporary directory).
keep_logs() {
  [ -n "${GODWIT_E2E_LOGS:-}" ] || return 0
  mkdir -p "$GODWIT_E2E_LOGS" && find "$work" -maxdepth 1 -type f \( -name '*.log' -o -name '*.log.*' \
    -o -name '*.host' -o -name '*.serve' \) -exec cp -t "$GODWIT_E2E_LOGS" {} + 2>/dev/null
  return 0
}
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); [ -f "$work/$1.log" ] && sed 's/^/    | /' "$work/$1.log" | tail -n 40; }

# run_case CASE: runs case_CASE. A case whose guest crashed (godwit's exit status 4: a triple
# fault, a KVM internal error or a failed VM entry) runs once more and the second run decides:
# in the test host (QEMU TCG emulating AMD-V) guests reset now and then under QEMU as under
# godwit (docs/testing.md), and one such crash among a suite's fifteen boots must not cost a
# rerun of the whole suite. Any other failure stands at once. Both runs are printed; "retried"
# lists the cases that needed a second run.
retried=
# How many guest crashes the suite's logs hold now (not file times: a log written in the same
# clock tick as a mark file does not count as newer).
guest_crashes() {
  cat "$work"/*.log 2>/dev/null | grep -cE 'vcpu [0-9]+: (triple fault|KVM internal error|VM entry failed)'
}
run_case() {
  local passed_before=$passed failed_before=$failed crashes_before
  crashes_before=$(guest_crashes)
  echo "-- $1"
  run_case_once "$1"
  [ "$failed" -eq "$failed_before" ] && return 0
  [ "$(guest_crashes)" -gt "$crashes_before" ] || return 0
  retried="$retried $1"
  passed=$passed_before failed=$failed_before
  echo "-- $1 again: its guest crashed above (a test-host failure, docs/testing.md); this run decides"
  case_cleanup
  run_case_once "$1"
}

# run_case_once CASE: case_CASE under the case's own watchdog. The VMs a case starts have the
# progress watchdog (start_watched), but a step in between can wait too (a VM that should have
# been refused and boots instead; a helper script). After $GODWIT_CASE_S seconds (default 900:
# the longest case, migrate, takes about 200 s under ASan) it says so, lists what the case
# still runs, and kills that, so that the case fails with that list instead of the test host's
# timeout ending the whole suite without a word.
run_case_once() {
  local deadline mark=$work/deadline-$1 suite=$BASHPID # (expanded in the & child, it would be the child's)
  rm -f "$mark"
  case_deadline "$1" "${GODWIT_CASE_S:-900}" "$suite" "$mark" &
  deadline=$!
  "case_$1"
  kill "$deadline" 2>/dev/null
  wait "$deadline" 2>/dev/null
  [ -s "$mark" ] && fail "$1" "$(cat "$mark")"
  return 0
}
case_deadline() { # CASE SECS SUITE_PID MARK
  local sleeper pids self=$BASHPID
  sleep "$2" &
  sleeper=$!
  trap 'kill $sleeper 2>/dev/null; exit 0' TERM
  wait $sleeper
  pids=$(case_processes "$3" "$self")
  {
    echo "watchdog: the case still ran after $2 s; what it ran, now killed:"
    [ -n "$pids" ] && ps -o pid=,etime=,args= -p "${pids// /,}" | cut -c1-200
  } >"$4"
  # shellcheck disable=SC2086
  [ -n "$pids" ] && kill -KILL $pids 2>/dev/null
}
# case_processes SUITE_PID SELF: the pids of the suite's descendants, but for SELF (the case's
# watchdog) and its own.
case_processes() {
  ps -eo pid=,ppid= | awk -v root="$1" -v self="$2" '
    { parent[$1] = $2 }
    END { for (p in parent)
            for (q = p; q in parent && q > 1; q = parent[q]) {
              if (q == self) break
              if (parent[q] == root) { print p; break } } }' |
    paste -sd' '
}

# What a failed case may leave behind that would stop its second run: its taps (every suite
# names them gw*), its VMs (run in this suite's directory) and their sockets there (a case
# that waits for a socket to appear would otherwise find the first run's and connect to
# nothing: one CI run's second migrate run failed so).
case_cleanup() {
  local dev
  pkill -KILL -f -- "--api-socket $work/" 2>/dev/null
  sleep 0.5
  find "$work" -maxdepth 1 -type s -delete 2>/dev/null
  for dev in $(ip -o link show 2>/dev/null | awk -F': ' '{sub(/@.*/, "", $2); print $2}' | grep '^gw'); do
    ip link del "$dev" 2>/dev/null
  done
  sleep 1
}

expect_status() { # NAME WANT: the exit status left in $status
  [ "$status" -eq "$2" ] && return 0
  if grep -q '^watchdog: the guest made no progress' "$work/$1.log" 2>/dev/null; then
    fail "$1" "$(grep -m1 '^watchdog:' "$work/$1.log") (what waited is at the end of the log)"
    return 1
  fi
  fail "$1" "exit status $status, expected $2"
  return 1
}

expect_line() { # NAME PATTERN
  grep -Eq -- "$2" "$work/$1.log" && return 0
  fail "$1" "no line matching '$2'"
  return 1
}

expect_clean() { # NAME: no sanitizer report, no crash of the VMM itself
  grep -Eq 'Sanitizer|runtime error|Segmentation|core dumped' "$work/$1.log" || return 0
  fail "$1" "the VMM reported a memory error or crashed"
  return 1
}

# refused_within NAME SECS COMMAND...: a godwit command that must be refused, in the
# foreground, its output in $work/NAME.log and its exit status in $status. Status 0 when it
# ended non-zero within SECS. One that runs on instead (a VM that booted where it should have
# been refused) is killed at SECS, not waited for, and fails NAME saying so.
refused_within() {
  local name=$1 secs=$2; shift 2
  timeout -k 5 "$secs" "$@" </dev/null >"$work/$name.log" 2>&1
  status=$?
  case $status in
    0) fail "$name" "it was not refused: it ended with status 0"; return 1 ;;
    124 | 137) fail "$name" "it was not refused: it still ran after ${secs} s and was killed"; return 1 ;;
  esac
  return 0
}

# wait_for_line LOG PATTERN PID SECS: until LOG has a line matching PATTERN (status 0), or
# PID has ended or SECS have passed (status 1).
wait_for_line() {
  local _
  for _ in $(seq 1 $(($4 * 10))); do
    grep -Eq -- "$2" "$1" && return 0
    kill -0 "$3" 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

# thread_ticks PID: one line per thread of PID, "TID TICKS" (user and system time, in clock
# ticks: a vCPU thread's time in the guest is in it).
thread_ticks() {
  local t
  for t in /proc/"$1"/task/*; do
    awk -v tid="${t##*/}" '{ sub(/^.*\) /, ""); print tid, $12 + $13 }' "$t/stat" 2>/dev/null
  done
}

# stall_report LOG SOCK PID: what the VM (PID, its API at SOCK) was waiting for, on stdout
# (tests/e2e/stall-report.py: queues, devices and vCPUs; the VMM threads' kernel stacks).
# The vCPUs are read twice, a second apart, and each thread says how much CPU it took in
# that second: a vCPU that spins in the guest (an exception it takes again and again) shows
# at the same place with a busy thread, one that waits shows an idle one. LOG.counters,
# LOG.vcpus and LOG.vcpus2 keep the API's answers.
stall_report() {
  local log=$1 sock=$2 pid=$3 vmm t tid ticks t0 t1 ms hz
  curl -s -m 10 --unix-socket "$sock" http://localhost/vm/counters >"$log.counters" 2>/dev/null ||
    echo "stall: the API at $sock did not answer GET /vm/counters within 10 s"
  vmm=$(pgrep -P "$pid" -x godwit | head -n 1)
  vmm=${vmm:-$pid}
  declare -A before after
  t0=${EPOCHREALTIME/./}
  while read -r tid ticks; do before[$tid]=$ticks; done < <(thread_ticks "$vmm")
  curl -s -m 30 --unix-socket "$sock" http://localhost/vm/vcpus >"$log.vcpus" 2>/dev/null
  sleep 1
  curl -s -m 30 --unix-socket "$sock" http://localhost/vm/vcpus >"$log.vcpus2" 2>/dev/null
  while read -r tid ticks; do after[$tid]=$ticks; done < <(thread_ticks "$vmm")
  t1=${EPOCHREALTIME/./}
  ms=$(( (t1 - t0) / 1000 ))
  ms=$(( ms > 0 ? ms : 1 ))
  hz=$(getconf CLK_TCK)
  python3 "$(dirname "${BASH_SOURCE[0]}")/stall-report.py" "$log.counters" "$log.vcpus" "$log.vcpus2"
  for tid in $(printf "%s\n" "${!after[@]}" | sort -n); do
    t=/proc/$vmm/task/$tid
    echo "stall: thread $(cat "$t/comm" 2>/dev/null): $(( (after[$tid] - ${before[$tid]:-${after[$tid]}}) * 100000 / hz / ms ))% of a CPU over ${ms} ms;" \
      "$(tr '\n' ' ' <"$t/stack" 2>/dev/null | cut -c1-160)"
  done
}

# watch_progress LOG SOCK PID: the progress watchdog of a guest case. Every 5 s it reads the
# VM's counters (the guest's exits, kicks, disk requests and sent traffic) through the API at
# SOCK and the size of LOG; when none has moved for $GODWIT_STALL_S seconds (default 60) it
# appends to LOG what was waiting (stall_report) and kills the VMM, so that a hang fails at
# once and says why instead of running into the case's timeout. An API that does not answer is no progress (a
# VMM whose API thread hangs is stalled too); one not made yet is a VM still starting.
watch_progress() {
  local log=$1 sock=$2 pid=$3 limit=${GODWIT_STALL_S:-60}
  local last= still=0 sig counters
  while kill -0 "$pid" 2>/dev/null; do
    sleep 5
    counters=$(curl -s -m 10 --unix-socket "$sock" http://localhost/vm/counters 2>/dev/null)
    # No API socket yet: the VM is starting, or waiting for a migration to come in (a
    # destination makes its API once the guest is there). Not a stall.
    if [ -z "$counters" ] && [ ! -S "$sock" ]; then
      last=
      still=0
      continue
    fi
    # Only what the guest does is progress: its exits, kicks, disk requests, what it sends,
    # and its console. What the host sends it (rx, the interrupts that announce it) moves by
    # itself: the agent monitor's ping every second would make a stuck guest look alive.
    # Ages (last_kick_ms, ...) change by themselves too.
    sig="$(stat -c %s "$log" 2>/dev/null) $(grep -oE '"(pio|mmio|kicks|reads|writes|tx_packets|tx_bytes)":[0-9]+' <<<"$counters" | tr '\n' ' ')"
    if [ "$sig" != "$last" ]; then
      last=$sig
      still=0
      continue
    fi
    still=$((still + 5))
    [ "$still" -ge "$limit" ] || continue
    {
      echo "watchdog: the guest made no progress for ${still}s$([ -n "$counters" ] || echo " (its API did not answer)")"
      stall_report "$log" "$sock" "$pid"
    } >>"$log" 2>&1
    pkill -KILL -P "$pid" 2>/dev/null
    kill -KILL "$pid" 2>/dev/null
    return
  done
}

# start_watched NAME TIMEOUT COMMAND...: a godwit command (which must end with its own
# --api-socket, added here) in the background under the progress watchdog, its output in
# $work/NAME.log and its pid (its `timeout`'s) in $vm_pid. Its stdin is $watch_input (default
# /dev/null); its API socket is NAME.log.api in $watch_socket_dir (default $work: a jailed VMM
# makes its socket as its own user, so its suite names a directory that user may write).
# finish_watched NAME waits for it and leaves its exit status in $status.
declare -A watchdogs
start_watched() {
  local name=$1 secs=$2; shift 2
  local log=$work/$name.log sock=${watch_socket_dir:-$work}/$name.log.api
  timeout -k 5 "$secs" "$@" --api-socket "$sock" <"${watch_input:-/dev/null}" >"$log" 2>&1 &
  vm_pid=$!
  watch_progress "$log" "$sock" "$vm_pid" &
  watchdogs[$name]="$vm_pid $!"
}
finish_watched() {
  local pids
  read -ra pids <<<"${watchdogs[$1]}"
  wait "${pids[0]}"
  status=$?
  kill "${pids[1]}" 2>/dev/null
  wait "${pids[1]}" 2>/dev/null
}

# run_watched NAME TIMEOUT COMMAND...: start_watched, waited for.
run_watched() {
  start_watched "$@"
  finish_watched "$1"
}
