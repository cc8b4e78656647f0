#!/usr/bin/env bash
# Runs every fuzz target of the module (func FuzzX(f *testing.F) in a _test.go file), one after
# another: go test fuzzes one target of one package per run. Each runs for $FUZZTIME (default
# 4s) with $FUZZPARALLEL workers (default 1), minimizing each new input for at most
# $FUZZMINIMIZETIME (default 10s: go test's 60s let the large inputs of FuzzInspect, a WAL and
# a db, take most of a run), and a summary line per target follows: the
# executions, the new interesting inputs and the result. A failing input is written by go
# test to the package's testdata/fuzz/FuzzX/; the script goes on with the other targets and
# exits 1 at the end when one failed.
#
# One failure is not counted: Go before 1.27 can end a run that found nothing with
# "context deadline exceeded" when -fuzztime runs out while a worker is mid-call (a race in
# its fuzzing coordinator, go.dev/issue/75804, fixed in Go 1.27). A run counts as that, and as
# passed, only when its one error line is exactly that message and it wrote no failing input
# (every failure of a fuzz target writes one to testdata/fuzz/FuzzX/); its summary says so.
#
#   scripts/fuzz.sh                 # every target, 4s each (make test runs it with 3s)
#   FUZZTIME=10m scripts/fuzz.sh    # every target, 10 minutes each (make fuzz FUZZTIME=10m)
#   scripts/fuzz.sh Inspect Delta   # the targets whose name contains Inspect or Delta
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-4s}
parallel=${FUZZPARALLEL:-1}
minimize=${FUZZMINIMIZETIME:-10s}
go=${GO:-go}

# deadline_race <log> <corpus dir> <files before>: the run failed only by go.dev/issue/75804.
goversion=$($go env GOVERSION)
deadline_race() {
  case "$goversion" in go1.2[0-6] | go1.2[0-6].* | go1.1[0-9]*) ;; *) return 1 ;; esac
  [ "$(ls "$2" 2>/dev/null | wc -l)" -eq "$3" ] || return 1
  # The lines go test prints for a failed target: "--- FAIL", the error, "FAIL", "exit
  # status", "FAIL <pkg>" (and a warning when a target has no seeds); the race's error is
  # the bare message.
  errors=$(grep -vE '^(fuzz: |warning: starting with empty corpus$|--- FAIL: |FAIL$|FAIL[[:space:]]|exit status )' "$1")
  [ "$errors" = "    context deadline exceeded" ]
}

# "<package dir> <target>" for every fuzz target, testsuite/kube (a module of its own) aside.
targets=$(git ls-files '*_test.go' | grep -v '^testsuite/kube/' | xargs grep -HE '^func Fuzz[A-Za-z0-9_]*\(f \*testing\.F\)' |
  sed -E 's#^(.*)/[^/]*_test\.go:func (Fuzz[A-Za-z0-9_]*)\(.*#./\1 \2#' | sort)
if [ $# -gt 0 ]; then
  targets=$(echo "$targets" | grep -E "$(IFS='|'; echo "$*")" || true)
fi
if [ -z "$targets" ]; then
  echo "no fuzz targets found" >&2
  exit 1
fi

failed=0
summary=""
while read -r pkg target; do
  echo "== $target ($pkg, $fuzztime)"
  log=$(mktemp)
  corpus="$pkg/testdata/fuzz/$target"
  before=$(ls "$corpus" 2>/dev/null | wc -l)
  # -timeout 0: the run ends at -fuzztime; go test's default of 10 minutes would cut a long one.
  if $go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -parallel "$parallel" -fuzzminimizetime "$minimize" -timeout 0 "$pkg" >"$log" 2>&1; then
    result=ok
  elif deadline_race "$log" "$corpus" "$before"; then
    result="ok (stopped by go.dev/issue/75804 at the deadline, no failing input)"
    cat "$log"
  else
    result=FAILED
    failed=1
    cat "$log"
  fi
  last=$(grep -E '^fuzz: elapsed' "$log" | tail -n1 | sed -E 's/^fuzz: //')
  summary+=$(printf '%-20s %-22s %-7s %s' "$target" "$pkg" "$result" "$last")$'\n'
  rm -f "$log"
done <<<"$targets"

echo
echo "$summary"
exit $failed
