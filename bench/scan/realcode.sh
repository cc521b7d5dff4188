#!/usr/bin/env bash
# Benchmark `mayfly scan` against gitleaks on real source code, not a
# generated corpus: Go's own GOROOT/src and modernc.org/sqlite (a mayfly
# dependency, so `go mod download` fetches it; ~150 MB of real, generated-
# from-C Go). Together about 300 MB. Prints MB/s, the speed ratio, and the
# findings of each tool by rule (on code, every generic finding is noise:
# neither tree holds live secrets).
#
#   bash bench/scan/realcode.sh            # both trees, 3 interleaved rounds
#   ROUNDS=5 bash bench/scan/realcode.sh
#   GITLEAKS=/path/to/gitleaks bash bench/scan/realcode.sh
#
# gitleaks: a binary on PATH or $GITLEAKS, else `go install …gitleaks/v8@v8.30.1`.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mayfly-realcode.XXXXXX")
trap 'rm -rf "$work"' EXIT
rounds=${ROUNDS:-3}

(cd "$root" && go build -o "$work/mayfly" ./cmd/mayfly)
sqlite=$(cd "$root" && go list -m -f '{{.Dir}}' modernc.org/sqlite)
trees=("$(go env GOROOT)/src" "$sqlite")
bytes=$(du -sb "${trees[@]}" | awk '{s += $1} END {print s}')
echo "corpus: ${trees[*]} ($(awk -v b="$bytes" 'BEGIN {printf "%.0f", b/1048576}') MB)"

gl=${GITLEAKS:-$(command -v gitleaks || true)}
if [[ -z "$gl" ]]; then
  GOBIN="$work/bin" go install github.com/zricethezav/gitleaks/v8@v8.30.1 >/dev/null 2>&1 && gl="$work/bin/gitleaks"
fi
[[ -x "$gl" ]] || { echo "gitleaks not available"; exit 1; }

now() { date +%s.%N; }
declare -a tm tg
for r in $(seq 1 "$rounds"); do
  t0=$(now)
  for t in "${trees[@]}"; do "$work/mayfly" scan --format json "$t" >"$work/m-$(basename "$t").json" || true; done
  t1=$(now)
  for t in "${trees[@]}"; do "$gl" dir --no-banner --exit-code 0 --log-level error --report-format json --report-path "$work/g-$(basename "$t").json" "$t" || true; done
  t2=$(now)
  tm+=("$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b-a}')"); tg+=("$(awk -v a="$t1" -v b="$t2" 'BEGIN {print b-a}')")
  echo "round $r: mayfly ${tm[-1]}s, gitleaks ${tg[-1]}s"
done
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mm=$(med "${tm[@]}"); mg=$(med "${tg[@]}")
awk -v b="$bytes" -v m="$mm" -v g="$mg" 'BEGIN {
  printf "median: mayfly %.1f MB/s, gitleaks %.1f MB/s, mayfly is %.1fx gitleaks\n", b/1048576/m, b/1048576/g, g/m }'
echo "findings by rule (mayfly):"
cat "$work"/m-*.json | grep -o '"rule": *"[^"]*"' | sed 's/ //' | sort | uniq -c | sort -rn | head -20
echo "findings by rule (gitleaks):"
cat "$work"/g-*.json | grep -o '"RuleID": *"[^"]*"' | sed 's/ //' | sort | uniq -c | sort -rn | head -20
echo "machine load: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) CPUs"
