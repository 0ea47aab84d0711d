//! Headless LSP harness: spawns the built `copilot-lsp` over stdio, exactly as an editor
//! does, with the tiny random checkpoint (made by `copilot-lsp gen-checkpoint`) or, when
//! `COPILOT_LSP_SHARED` is set, also the pico model.
//!
//! - `handshake`: capabilities, position-encoding negotiation, progress, the fallback.
//! - `documents`: incremental edits (emoji, astral characters, CRLF, full replacement) and
//!   1,000 random edits, checked against the server's copy (`copilot/debugDocument`).
//! - `completion`: parity with `copilot-lsp complete`, rapid edits, `$/cancelRequest`.
//! - `robustness`: malformed JSON, unknown methods, unopened documents, far positions.
//! - `lifecycle`: exit codes, a model that cannot load, no process left behind.
//! - `remote`: remote engines against scripted servers: a completion, every class of fault.
//! - `llama_server`: against a real llama-server (`COPILOT_LSP_LLAMA_SERVER`): parity, ids,
//!   cancellation.
//! - `hostile`: what an adversarial client sent (odd ids, broken frames, lone surrogates,
//!   floods of requests, invalid settings) and the bounds on documents and messages.
//! - `adapters`: one LoRA adapter per workspace, never another's; hostile repositories.
//! - `context`: snippets from other open files in the prompt, and gone once closed.
//! - `events`: an accepted item counted by `copilot-lsp stats`; corrupt lines; `--clear`.
//!
//! Latency through the server is measured by `copilot-lsp bench` (crates/bench), not here.

mod adapters;
mod client;
mod completion;
mod context;
mod documents;
mod events;
mod fixtures;
mod handshake;
mod hostile;
mod http_loop;
mod lifecycle;
mod llama_server;
mod remote;
mod robustness;
