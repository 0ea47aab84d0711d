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
//! - `adapters`: one LoRA adapter per workspace, never another's; hostile repositories.
//! - `context`: snippets from other open files in the prompt, and gone once closed.
//!
//! Latency through the server is measured by `copilot-lsp bench` (crates/bench), not here.

mod adapters;
mod client;
mod completion;
mod context;
mod documents;
mod fixtures;
mod handshake;
mod lifecycle;
mod robustness;
