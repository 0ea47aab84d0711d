#!/usr/bin/env bash
# Type-checks and lints the workspace for aarch64 (the NEON kernels and their dispatch), which
# no machine here can run. Needs the target's standard library (`rustup target add
# aarch64-unknown-linux-gnu`) and a C compiler for it: aarch64-linux-gnu-gcc, or zig from
# PyPI (`pip install ziglang`), for the C parts of dependencies (tree-sitter, ...). Without
# either it prints SKIPPED and succeeds.
set -euo pipefail
cd "$(dirname "$0")/.."
T=aarch64-unknown-linux-gnu
installed=$(rustup target list --installed 2>/dev/null || true)
if ! grep -x "$T" >/dev/null <<<"$installed"; then
  echo "ci: aarch64 check SKIPPED: no $T standard library (rustup target add $T)"
  exit 0
fi
cc_var=CC_aarch64_unknown_linux_gnu
ar_var=AR_aarch64_unknown_linux_gnu
if [ -z "${!cc_var:-}" ] && ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  zig=$(python3 -c 'import ziglang, os; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))' 2>/dev/null || true)
  if [ -z "$zig" ] || [ ! -x "$zig" ]; then
    echo "ci: aarch64 check SKIPPED: no C compiler for $T (aarch64-linux-gnu-gcc, or pip install ziglang)"
    exit 0
  fi
  tools=$(mktemp -d)
  trap 'rm -rf "$tools"' EXIT
  # cc-rs passes its own --target; zig takes the triple as -target.
  printf '#!/bin/sh\nfor a; do shift; case "$a" in --target=*) ;; *) set -- "$@" "$a";; esac; done\nexec "%s" cc -target aarch64-linux-gnu "$@"\n' "$zig" > "$tools/cc"
  printf '#!/bin/sh\nexec "%s" ar "$@"\n' "$zig" > "$tools/ar"
  chmod +x "$tools/cc" "$tools/ar"
  export "$cc_var=$tools/cc" "$ar_var=$tools/ar"
fi
echo "ci: cargo clippy --target $T"
# (The target directory keeps the triple's output apart and shares the host's build scripts.)
cargo clippy --workspace --all-targets --locked --target "$T" -- -D warnings
