#!/usr/bin/env bash
# Builds every fuzz target in fuzz/ and runs each for a while; fails on any crash, panic,
# sanitizer report or timeout.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 15)
#
# Environment:
#   FUZZ_SANITIZER   address (default) or none. With `address`, the script falls back to
#                    `none` when this toolchain cannot link the AddressSanitizer runtime.
#   FUZZ_TARGETS     space-separated subset of targets (default: all, from `cargo fuzz list`).
#
# cargo-fuzz needs unstable compiler flags. On a stable toolchain they are unlocked with
# RUSTC_BOOTSTRAP=1, which this script sets for its own cargo calls only. Cargo caches the
# compiler's answers per target directory without keying on RUSTC_BOOTSTRAP, so the cache is
# disabled here: one earlier run without the variable would otherwise poison it.
#
# Corpora grow in fuzz/corpus/<target> (git-ignored) and start from the checked-in seeds in
# fuzz/seeds/<target>; crashing inputs land in fuzz/artifacts/<target> (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-15}"
case "$seconds" in
  '' | *[!0-9]*)
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
    ;;
esac

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

export RUSTC_BOOTSTRAP=1
export CARGO_CACHE_RUSTC_INFO=0

sanitizer="${FUZZ_SANITIZER:-address}"
if [ "$sanitizer" = address ]; then
  probe="$(mktemp -d)"
  trap 'rm -rf "$probe"' EXIT
  echo 'fn main() {}' >"$probe/main.rs"
  if ! rustc -Zsanitizer=address --target "$(rustc -vV | sed -n 's/^host: //p')" \
    -o "$probe/main" "$probe/main.rs" >"$probe/log" 2>&1; then
    echo "warning: AddressSanitizer is not available here; fuzzing without it" >&2
    sed 's/^/  /' "$probe/log" >&2
    sanitizer=none
  fi
fi

if [ -n "${FUZZ_TARGETS:-}" ]; then
  read -r -a targets <<<"$FUZZ_TARGETS"
else
  mapfile -t targets < <(cargo fuzz list)
fi
if [ "${#targets[@]}" -eq 0 ]; then
  echo "error: no fuzz targets found" >&2
  exit 2
fi

echo "building ${#targets[@]} fuzz targets (sanitizer: $sanitizer)" >&2
cargo fuzz build --sanitizer "$sanitizer"

failed=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t"
  corpora=("fuzz/corpus/$t")
  if [ -d "fuzz/seeds/$t" ]; then
    corpora+=("fuzz/seeds/$t")
  fi
  echo "fuzzing $t for ${seconds}s" >&2
  if ! cargo fuzz run --sanitizer "$sanitizer" "$t" "${corpora[@]}" -- \
    -max_total_time="$seconds" -timeout=20 -print_final_stats=1; then
    failed+=("$t")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
echo "fuzzing: ${#targets[@]} targets, ${seconds}s each, no crashes" >&2
