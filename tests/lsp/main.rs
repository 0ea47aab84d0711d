//! Headless LSP harness: spawns the built binary over stdio, as an editor does.
