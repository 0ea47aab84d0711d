#!/usr/bin/env python3
"""Checks editors/helix/languages.toml and client-capabilities.json without Helix itself.

languages.toml must parse as TOML, define the copilot-lsp server with the completion
fallback on, and reference it from every [[language]] with valid Helix feature names.
client-capabilities.json must be what Helix sends: no inline completion, utf-8 first.

    python3 editors/helix/test/check_config.py            # checks, exit 0 or 1
    python3 editors/helix/test/check_config.py --print-init-options   # the config as JSON
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    print("SKIP helix config: Python 3.11+ (tomllib) is needed to parse TOML")
    sys.exit(77)

HERE = Path(__file__).resolve().parent.parent
SERVER = "copilot-lsp"

# helix-core LanguageServerFeature, as written in languages.toml (kebab-case).
HELIX_FEATURES = {
    "format", "goto-declaration", "goto-definition", "goto-type-definition", "goto-reference",
    "goto-implementation", "signature-help", "hover", "document-highlight", "completion",
    "code-action", "workspace-command", "document-symbols", "workspace-symbols", "diagnostics",
    "rename-symbol", "inlay-hints", "document-colors",
}
# Keys Helix accepts in a [language-server.NAME] table.
HELIX_SERVER_KEYS = {"command", "args", "config", "timeout", "environment", "required-root-patterns"}
# initializationOptions the server reads (camelCase).
SERVER_OPTIONS = {
    "model", "revision", "offline", "device", "dtype", "temperature", "topP", "maxTokens",
    "debounceMs", "fimMode", "prefixTokens", "suffixTokens", "postprocess", "completionFallback",
    "threads",
}


def check_languages(problems: list[str]) -> dict:
    data = tomllib.loads((HERE / "languages.toml").read_text(encoding="utf-8"))
    server = data.get("language-server", {}).get(SERVER)
    if not isinstance(server, dict):
        problems.append(f"no [language-server.{SERVER}] table")
        return {}
    unknown = set(server) - HELIX_SERVER_KEYS
    if unknown:
        problems.append(f"[language-server.{SERVER}] has keys Helix does not know: {sorted(unknown)}")
    if server.get("command") != "copilot-lsp":
        problems.append(f"command is {server.get('command')!r}, expected 'copilot-lsp'")
    if "--stdio" not in server.get("args", []):
        problems.append("args lack --stdio")
    config = server.get("config", {})
    if config.get("completionFallback") is not True:
        problems.append("config.completionFallback must be true: Helix shows only textDocument/completion")
    unknown = set(config) - SERVER_OPTIONS
    if unknown:
        problems.append(f"config has keys the server does not read: {sorted(unknown)}")
    languages = data.get("language", [])
    if not languages:
        problems.append("no [[language]] entries")
    for lang in languages:
        name = lang.get("name", "?")
        entries = lang.get("language-servers", [])
        ours = [e for e in entries if e == SERVER or (isinstance(e, dict) and e.get("name") == SERVER)]
        if len(ours) != 1:
            problems.append(f"language {name}: copilot-lsp listed {len(ours)} times in language-servers")
            continue
        for e in entries:
            if isinstance(e, dict):
                for key in ("only-features", "except-features"):
                    bad = set(e.get(key, [])) - HELIX_FEATURES
                    if bad:
                        problems.append(f"language {name}: {key} has unknown features {sorted(bad)}")
                if "completion" in e.get("except-features", []) or (
                    "only-features" in e and "completion" not in e["only-features"]
                ):
                    if e.get("name") == SERVER:
                        problems.append(f"language {name}: copilot-lsp must keep the completion feature")
    return config


def check_capabilities(problems: list[str]) -> None:
    caps = json.loads((HERE / "client-capabilities.json").read_text(encoding="utf-8"))
    td = caps.get("textDocument", {})
    if "inlineCompletion" in td:
        problems.append("client-capabilities.json: Helix has no textDocument.inlineCompletion")
    if "completion" not in td:
        problems.append("client-capabilities.json: Helix sends textDocument.completion")
    encodings = caps.get("general", {}).get("positionEncodings", [])
    if not encodings or encodings[0] != "utf-8":
        problems.append(f"client-capabilities.json: positionEncodings must start with utf-8, got {encodings}")
    if caps.get("window", {}).get("workDoneProgress") is not True:
        problems.append("client-capabilities.json: Helix supports window.workDoneProgress")


def main() -> int:
    problems: list[str] = []
    config = check_languages(problems)
    if "--print-init-options" in sys.argv:
        print(json.dumps(config))
        return 0 if not problems else 1
    check_capabilities(problems)
    for p in problems:
        print(f"  FAIL {p}")
    if not problems:
        print("  ok   languages.toml parses; copilot-lsp defined with the completion fallback; "
              "referenced from every language with valid features")
        print("  ok   client-capabilities.json: completion, no inlineCompletion, utf-8 first")
    print(f"helix config: {'PASS' if not problems else 'FAIL'}")
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
