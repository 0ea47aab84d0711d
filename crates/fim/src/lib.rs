//! Prompts and post-processing: what goes into the model and what comes out to the editor.
//!
//! A pure library shared by the CLI, the server, evaluation and fine-tuning, so that training
//! and serving can never disagree on the prompt format or on the cleaning rules.
//!
//! - Prompt side ([`build_prompt`]): each family's FIM [`Template`] (StarCoder, StarCoder2,
//!   Qwen2.5-Coder, DeepSeek-Coder, CodeLlama, Codestral: its strings, trained layouts, stop
//!   and repository tokens), FIM layouts (PSM, bigcode's SPM, left-to-right), token
//!   budgets around the cursor counted through a [`TokenCounter`], an optional path header and
//!   snippets from other files, stable parts first. The prompt is a list of [`Piece`]s: text is
//!   tokenized piece by piece by the engine and special ids are spliced in, so user text that
//!   contains `<fim_middle>` can never become a control token.
//! - Output side ([`shape()`], [`should_stop`], [`postprocess`]): single- or multi-line, the
//!   decoder's early-stop rule, and the cleaning rules, each a small named step applied in a
//!   fixed order (see [`post::STEPS`]).
//!
//! **Invariant:** no I/O, no model, no tokenizer, no LSP; never panics on user text.

pub mod budget;
pub mod context;
pub mod fuzzing;
pub mod post;
pub mod prompt;
pub mod shape;
pub mod template;

pub use budget::{Budget, CharCounter, TokenCounter, DEFAULT_PREFIX_TOKENS, DEFAULT_SUFFIX_TOKENS};
pub use context::CursorContext;
pub use post::settled::settled;
pub use post::{postprocess, postprocess_traced, should_stop, PostOptions};
pub use prompt::{
    build_prompt, choose_layout, header_for_path, Layout, LayoutChoice, Piece, Prompt, PromptInput,
    Snippet, Special,
};
pub use shape::{shape, Shape};
pub use template::{
    RepoTokens, SpmOrder, Template, CODELLAMA, CODESTRAL, DEEPSEEK_CODER, QWEN2_5_CODER, STARCODER,
    STARCODER2, TEMPLATES,
};
