# bench/loopback-rate.sh, sourced: loopback_rate_on PORT prints the MiB/s that iperf3 carries
# over 127.0.0.1 in 3 s (a server on PORT for that one test), or nothing without iperf3.
# bench/migrate.sh and bench/copy-floor.sh compare their transfers with it.
loopback_rate_on() {
  command -v iperf3 >/dev/null || return 0
  local port=$1 srv
  iperf3 -s -1 -B 127.0.0.1 -p "$port" >/dev/null 2>&1 &
  srv=$!
  "$(command -v /usr/bin/python3 || command -v python3)" "$(dirname "${BASH_SOURCE[0]}")/migrate.py" listening "$port" 10 >/dev/null &&
    iperf3 -c 127.0.0.1 -p "$port" -t 3 -f m 2>/dev/null | awk '/receiver/ {
      for (i = 1; i < NF; i++) if ($(i + 1) == "Mbits/sec") r = $i }
      END { if (r) printf "%.1f", r * 1e6 / 8 / 1048576 }'
  kill $srv 2>/dev/null; wait $srv 2>/dev/null
  return 0
}
