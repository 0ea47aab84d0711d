#!/usr/bin/env python3
"""The HTTP API through clients nobody here wrote: the official `openai` package against
`copilot-lsp serve --http`, compared with what `copilot-lsp complete` prints for the same
file and cursor; llama-server's `/infill` shape; a client hanging up mid-stream.

    COPILOT_LSP_BIN=target/debug/copilot-lsp COPILOT_LSP_TEST_MODEL=DIR python3 tests/http/openai_client.py

Exit 0 passes, 77 skips (no `openai` package), anything else fails. `.ci/editors.sh` runs it.
"""

import http.client
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

try:
    import openai
except ImportError as e:
    print(f"SKIP http: the openai package is not importable ({e})")
    sys.exit(77)

BIN = os.environ["COPILOT_LSP_BIN"]
MODEL = os.environ["COPILOT_LSP_TEST_MODEL"]

# The cursor is after `return ` on line 5 (1-based column 12).
SOURCE = (
    "def fibonacci(n):\n"
    '    """Return the n-th Fibonacci number."""\n'
    "    if n < 2:\n"
    "        return n\n"
    "    return \n"
    "\n"
    "\n"
    "print(fibonacci(10))\n"
)
LINE, COL = 5, 12
CUT = sum(len(line) for line in SOURCE.splitlines(keepends=True)[: LINE - 1]) + COL - 1
PREFIX, SUFFIX = SOURCE[:CUT], SOURCE[CUT:]
assert PREFIX.endswith("    return "), PREFIX


def check(cond, what):
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)
    print(f"ok: {what}")


def cli_complete(path, *extra):
    out = subprocess.run(
        [BIN, "complete", f"{path}:{LINE}:{COL}", "--model", MODEL, "--temperature", "0",
         "--max-tokens", "16", *extra],
        check=True, capture_output=True, text=True, timeout=300,
    )
    return out.stdout


def start_server(log):
    env = dict(os.environ, NO_COLOR="1")
    proc = subprocess.Popen(
        [BIN, "serve", "--http", "127.0.0.1:0", "--model", MODEL, "--log-file", log],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    deadline = time.time() + 120
    addr = None
    while time.time() < deadline and addr is None:
        if proc.poll() is not None:
            print(proc.stderr.read().decode(errors="replace"))
            check(False, f"the server exited with {proc.returncode}")
        if os.path.exists(log):
            with open(log, errors="replace") as f:
                m = re.search(r"listening on http://(\S+)", f.read())
            addr = m and m.group(1)
        time.sleep(0.05)
    check(addr is not None, "the server says where it listens")
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://{addr}/health") as r:
                if r.status == 200:
                    return proc, addr
        except urllib.error.HTTPError as e:
            check(e.code == 503, "/health is 503 while loading")
            body = json.loads(e.read())
            check(body["error"]["message"] == "Loading model", "llama-server's loading message")
        except OSError:
            pass
        time.sleep(0.1)
    check(False, "the model loaded within 120 s")


def post(addr, path, body):
    req = urllib.request.Request(
        f"http://{addr}{path}", data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=300) as r:
        return json.loads(r.read())


def stats(addr):
    with urllib.request.urlopen(f"http://{addr}/stats") as r:
        return json.loads(r.read())["requests"]


def main():
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "fib.py")
        with open(path, "w") as f:
            f.write(SOURCE)
        want = cli_complete(path)
        want_raw = cli_complete(path, "--raw")
        print(f"copilot-lsp complete: {want!r}; --raw: {want_raw!r}")
        check(want_raw != "", "the model's raw text is not empty")

        proc, addr = start_server(os.path.join(tmp, "server.log"))
        try:
            client = openai.OpenAI(base_url=f"http://{addr}/v1", api_key="unused", max_retries=0)
            models = client.models.list()
            check(len(models.data) == 1, "/v1/models lists the model")

            c = client.completions.create(
                model=models.data[0].id, prompt=PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0,
            )
            check(c.object == "text_completion", "OpenAI's object")
            check(c.choices[0].text == want, f"the same text as copilot-lsp complete ({c.choices[0].text!r})")
            check(c.choices[0].finish_reason in ("stop", "length"), "a finish reason")
            check(c.usage.completion_tokens > 0 and c.usage.prompt_tokens > 0, "usage counts tokens")

            raw = client.completions.create(
                model="any", prompt=PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0,
                extra_body={"postprocess": False},
            )
            check(raw.choices[0].text == want_raw, f"postprocess false is --raw ({raw.choices[0].text!r})")

            pieces, finishes = [], []
            for chunk in client.completions.create(
                model="any", prompt=PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0,
                extra_body={"postprocess": False}, stream=True, seed=1,  # seed: not a cache hit
            ):
                for choice in chunk.choices:
                    pieces.append(choice.text)
                    if choice.finish_reason:
                        finishes.append(choice.finish_reason)
            check("".join(pieces) == want_raw, f"the raw stream adds up ({len(pieces)} pieces)")
            check(len(pieces) > 2, "the raw stream comes in pieces")
            check(len(finishes) == 1, "one finish reason")

            streamed = "".join(
                ch.choices[0].text
                for ch in client.completions.create(
                    model="any", prompt=PREFIX, suffix=SUFFIX, max_tokens=16, temperature=0, stream=True,
                )
                if ch.choices
            )
            check(streamed == want, "the post-processed stream adds up")

            try:
                client.completions.create(model="any", prompt=PREFIX, max_tokens=0)
                check(False, "max_tokens 0 is refused")
            except openai.BadRequestError as e:
                check("max_tokens" in str(e), "a 400 naming max_tokens")

            v = post(addr, "/infill", {
                "input_prefix": PREFIX, "input_suffix": SUFFIX, "input_extra": [],
                "prompt": "", "n_predict": 16, "temperature": 0, "cache_prompt": True,
            })
            check(v["content"] == want, "/infill gives the same text")
            for key in ("stop", "tokens_predicted", "tokens_evaluated", "tokens_cached", "timings", "stop_type"):
                check(key in v, f"/infill answers `{key}` as llama-server")

            # Hang up mid-stream: the generation is cancelled, counted in /stats.
            before = stats(addr)
            conn = http.client.HTTPConnection(addr, timeout=60)
            conn.request("POST", "/v1/completions", json.dumps({
                "prompt": PREFIX, "suffix": SUFFIX, "max_tokens": 2000, "temperature": 0,
                "postprocess": False, "stream": True, "stop": [],
            }), {"content-type": "application/json"})
            r = conn.getresponse()
            check(r.status == 200, "the stream starts")
            first = r.readline()
            check(first.startswith(b"data: "), "a first event")
            conn.sock.close()
            conn.close()
            deadline = time.time() + 60
            while time.time() < deadline and stats(addr)["disconnected"] == before["disconnected"]:
                time.sleep(0.05)
            after = stats(addr)
            check(after["disconnected"] == before["disconnected"] + 1, "/stats counts the disconnect")
        finally:
            proc.terminate()
            proc.wait(timeout=30)


main()
print("PASS http: openai client")
