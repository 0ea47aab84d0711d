//! Fine-tuning StarCoder on a team's own repository: data preparation (walk, filter, split,
//! FIM examples through the server's own prompt code, the completions the user kept from the
//! event log, packing), LoRA training on candle,
//! adapters in Hugging Face PEFT's format, and merging (into the base, or adapters together).
//!
//! Knows `copilot-engine` (the model and its LoRA hook) and `copilot-fim` (the prompt format);
//! knows nothing of LSP, editors or the command line.

pub mod data;
pub mod error;
pub mod events;
pub mod examples;
pub mod job;
pub mod linalg;
pub mod lora;
pub mod memory;
pub mod merge;
pub mod peft;
pub mod progress;
pub mod train;

pub use data::{Corpus, DataOptions, SourceFile};
pub use error::{FinetuneError, Result};
pub use examples::{ExampleOptions, Packed};
pub use lora::{Target, TrainableLora};
pub use peft::{load_adapter, load_adapter_for_engine, Adapter, AdapterConfig};
pub use train::{train, TrainOptions, TrainProgress, TrainSummary};
