# lib.sh: what the Linux-guest suites share: results and checks on a case's log.
# Sourced after setting $work (the suite's temporary directory, where NAME.log files go).

passed=0 failed=0
pass() { echo "PASS $1"; passed=$((passed + 1)); }
fail() { echo "FAIL $1: $2"; failed=$((failed + 1)); [ -f "$work/$1.log" ] && sed 's/^/    | /' "$work/$1.log" | tail -n 40; }

expect_status() { # NAME WANT: the exit status left in $status
  [ "$status" -eq "$2" ] && return 0
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
