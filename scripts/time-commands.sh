#!/usr/bin/env bash
# Times the README's two commands as a new user meets them: a clean clone of HEAD, an empty target
# folder, the commands as written. Then writes docs/results/commands.md and the README's block
# between its "command times" markers, so the times the README states come from a run.
#
#   scripts/time-commands.sh                  # measure (about 40 minutes on 2 cores), then render
#   scripts/time-commands.sh --render DIR     # render again from DIR/times.txt and DIR/test-build.log
#
# NOTE="…" adds a line on the conditions of the measurement (another job sharing the cores, say).
#
# Run it on a quiet machine: anything else compiling at the same time lengthens every number.
# The apt-get part of the first command is not timed (it is a no-op where the packages are in).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

measure() {
  local work=$1
  local commit
  commit=$(git rev-parse HEAD)
  git clone -q "$repo" "$work/clone"
  git -C "$work/clone" checkout -q "$commit"
  export CARGO_TARGET_DIR="$work/target"
  export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
  local times="$work/times.txt"
  : > "$times"
  echo "commit $commit" >> "$times"
  (
    cd "$work/clone"
    local s
    # 1. cargo run --release --bin reproduce, as its build and its run.
    s=$(date +%s); cargo build --release --bin reproduce > "$work/build.log" 2>&1
    echo "build $(( $(date +%s) - s ))" >> "$times"
    s=$(date +%s); "$CARGO_TARGET_DIR/release/reproduce" > "$work/reproduce.log" 2>&1
    echo "reproduce $(( $(date +%s) - s ))" >> "$times"
    # 2. cargo test --release, as its build and its run.
    s=$(date +%s); cargo test --release --no-run > "$work/test-build.log" 2>&1
    echo "test-build $(( $(date +%s) - s ))" >> "$times"
    s=$(date +%s); cargo test --release > "$work/test.log" 2>&1
    echo "test-run $(( $(date +%s) - s ))" >> "$times"
  )
}

# The value of KEY in times.txt.
value() { awk -v k="$1" '$1 == k { print $2 }' "$2/times.txt"; }

render() {
  local dir=$1
  local commit build reproduce test_build test_run minutes compiled crates
  commit=$(value commit "$dir")
  build=$(value build "$dir"); reproduce=$(value reproduce "$dir")
  test_build=$(value test-build "$dir"); test_run=$(value test-run "$dir")
  minutes() { awk -v s="$1" 'BEGIN { printf "%.0f min", s / 60 }'; }
  compiled=$(grep -o 'Compiling [^ ]* v[^ ]*' "$dir/test-build.log" | awk '{ print $2 " " $3 }' | sort -u)
  crates=$(printf '%s\n' "$compiled" | grep -c . || true)
  local cpu threads
  cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || echo unknown)
  threads=$(nproc 2>/dev/null || echo "?")
  mkdir -p docs/results
  {
    echo "# The README's two commands, timed on a clean clone"
    echo
    echo "<!-- Written by scripts/time-commands.sh; regenerate rather than edit. -->"
    echo
    echo "A clean clone of commit \`$commit\` with an empty target folder, on $cpu ($threads threads)."
    echo
    if [ -n "${NOTE:-}" ]; then
      echo "Conditions: $NOTE"
      echo
    fi
    echo "| step | seconds | |"
    echo "|---|---|---|"
    echo "| 1. \`cargo run --release --bin reproduce\`: the build | $build | $(minutes "$build") |"
    echo "| 1. \`cargo run --release --bin reproduce\`: the run | $reproduce | $(minutes "$reproduce") |"
    echo "| 2. \`cargo test --release\`: the build | $test_build | $(minutes "$test_build") |"
    echo "| 2. \`cargo test --release\`: the run | $test_run | $(minutes "$test_run") |"
    echo
    echo "What the second command compiled, $crates crates (no Burn, wgpu or cubecl crate may be"
    echo "among them: \`tests/claims/build_features.rs\` fails if one would be):"
    echo
    printf '%s\n' "$compiled" | sed 's/^/- /'
  } > docs/results/commands.md
  local block
  block=$(cat <<EOF
<!-- command times: begin (written by scripts/time-commands.sh; edit nothing up to the end marker) -->
Measured on a clean clone ([docs/results/commands.md](docs/results/commands.md), $cpu, $threads threads): the first command builds for $(minutes "$build") and runs for $(minutes "$reproduce"); the second builds for $(minutes "$test_build") ($crates crates: this one and the test-only ones, nothing of Burn) and runs for $(minutes "$test_run").
<!-- command times: end -->
EOF
)
  BLOCK="$block" awk '
    /^<!-- command times: begin/ { print ENVIRON["BLOCK"]; skipping = 1; next }
    /^<!-- command times: end/ { skipping = 0; next }
    !skipping { print }
  ' README.md > README.md.tmp
  mv README.md.tmp README.md
  echo "wrote docs/results/commands.md and the README's command-times block"
}

if [ "${1:-}" = "--render" ]; then
  render "$2"
else
  work=$(mktemp -d)
  echo "measuring in $work (logs stay there)"
  measure "$work"
  render "$work"
fi
