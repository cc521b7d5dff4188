#!/usr/bin/env bash
# Benchmark `mayfly scan` on a generated corpus (a folder and a git repository
# holding the same files over several commits), and gitleaks on the same
# corpus when it is available (a `gitleaks` binary on PATH, or
# `go run github.com/zricethezav/gitleaks/v8@v8.30.0`). Prints MB/s and ratios.
#
#   bench/scan/run.sh [SIZE_MB]      # default 200
#   SKIP_GITLEAKS=1 bench/scan/run.sh # mayfly only
#
# Needs go, git and bash. Everything is written under a temporary folder
# that is removed at the end (KEEP=1 keeps it).
set -euo pipefail

size_mb=${1:-200}
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mayfly-scan-bench.XXXXXX")
cleanup() { if [[ "${KEEP:-}" != 1 ]]; then rm -rf "$work"; else echo "kept $work"; fi; }
trap cleanup EXIT

now() { date +%s.%N; }
mbps() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", (b / 1048576) / s }'; }

echo "building mayfly…"
(cd "$root" && go build -o "$work/mayfly" ./cmd/mayfly)

echo "generating a ${size_mb} MB corpus…"
read -r bytes planted < <(cd "$root" && go run ./bench/scan/gen -out "$work/tree" -mb "$size_mb")
echo "  $bytes bytes, $planted planted secrets"

echo "building a git repository from it (10 commits)…"
repo="$work/repo"
mkdir -p "$repo"
export GIT_AUTHOR_NAME=bench GIT_AUTHOR_EMAIL=bench@example.com GIT_COMMITTER_NAME=bench GIT_COMMITTER_EMAIL=bench@example.com
git -C "$repo" init -q -b main
mapfile -t pkgs < <(cd "$work/tree" && ls)
n=${#pkgs[@]}
for c in $(seq 0 9); do
  lo=$(( c * n / 10 )); hi=$(( (c + 1) * n / 10 ))
  for ((i = lo; i < hi; i++)); do cp -r "$work/tree/${pkgs[$i]}" "$repo/"; done
  git -C "$repo" add -A >/dev/null
  git -C "$repo" commit -q -m "commit $c" --allow-empty
done

run() { # name, command… ; sets $elapsed; the exit code 1 (findings) is expected
  local name=$1; shift
  local t0 t1 rc=0
  t0=$(now)
  "$@" >"$work/$name.out" 2>"$work/$name.err" || rc=$?
  t1=$(now)
  elapsed=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
  if (( rc > 1 )); then
    echo "  $name failed (exit $rc):"; sed 's/^/    /' "$work/$name.err" | head -5
    return 1
  fi
}

declare -A secs
echo
echo "mayfly scan ($(nproc) CPUs):"
run mayfly-dir "$work/mayfly" scan --format json "$work/tree"; secs[mayfly-dir]=$elapsed
echo "  folder:      ${elapsed}s  $(mbps "$bytes" "$elapsed") MB/s  $(grep -c '"rule"' "$work/mayfly-dir.out") findings"
run mayfly-git "$work/mayfly" scan --git --format json "$repo"; secs[mayfly-git]=$elapsed
echo "  git history: ${elapsed}s  $(mbps "$bytes" "$elapsed") MB/s  $(grep -c '"rule"' "$work/mayfly-git.out") findings"
run mayfly-tok "$work/mayfly" scan --enable-rule mayfly-job-token,mayfly-admin-token --no-decode --format json "$work/tree"; secs[mayfly-tok]=$elapsed
echo "  folder, mayfly tokens only: ${elapsed}s  $(mbps "$bytes" "$elapsed") MB/s"

gitleaks=()
if [[ "${SKIP_GITLEAKS:-}" == 1 ]]; then
  echo; echo "gitleaks: skipped (SKIP_GITLEAKS=1)"; exit 0
elif command -v gitleaks >/dev/null 2>&1; then
  gitleaks=(gitleaks)
elif timeout 300 go run github.com/zricethezav/gitleaks/v8@v8.30.0 version >/dev/null 2>&1; then
  (cd "$work" && GOBIN="$work/bin" timeout 300 go install github.com/zricethezav/gitleaks/v8@v8.30.0 >/dev/null 2>&1) && gitleaks=("$work/bin/gitleaks")
fi
echo
if (( ${#gitleaks[@]} == 0 )); then
  echo "gitleaks: not available (no binary, and go run …@v8.30.0 failed); skipped"
  exit 0
fi
echo "gitleaks ($("${gitleaks[@]}" version 2>/dev/null)):"
if run gitleaks-dir "${gitleaks[@]}" dir --no-banner --exit-code 0 --report-format json --report-path "$work/gl-dir.json" "$work/tree"; then
  echo "  folder:      ${elapsed}s  $(mbps "$bytes" "$elapsed") MB/s  $(grep -c '"RuleID"' "$work/gl-dir.json" || true) findings"
  echo "  ratio gitleaks/mayfly (folder): $(awk -v a="$elapsed" -v b="${secs[mayfly-dir]}" 'BEGIN { printf "%.2fx", a / b }')"
fi
if run gitleaks-git "${gitleaks[@]}" git --no-banner --exit-code 0 --report-format json --report-path "$work/gl-git.json" "$repo"; then
  echo "  git history: ${elapsed}s  $(mbps "$bytes" "$elapsed") MB/s  $(grep -c '"RuleID"' "$work/gl-git.json" || true) findings"
  echo "  ratio gitleaks/mayfly (git):    $(awk -v a="$elapsed" -v b="${secs[mayfly-git]}" 'BEGIN { printf "%.2fx", a / b }')"
fi
