//! Which engine serves completions, and the [`Loader`] that makes it: the real one builds
//! the embedded model or connects a remote engine (`copilot-remote`); tests script their
//! own model behind the pipeline's generation seam, with tokio's paused time.

use std::sync::Arc;

use copilot_engine::ModelSpec;
use copilot_pipeline::{BoxFuture, Embedded, LanguageModel, LoadEvent};
use tokio::sync::mpsc::UnboundedSender;

/// The engine the settings ask for. Two specs that compare equal are served by one load.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineSpec {
    /// Our model, in this process.
    Embedded(ModelSpec),
    /// A server's model: llama-server, Ollama, an OpenAI-compatible server.
    Remote(copilot_remote::RemoteSpec),
}

impl EngineSpec {
    /// What to call it in progress messages.
    pub fn name(&self) -> String {
        match self {
            Self::Embedded(m) => m.model.clone(),
            Self::Remote(r) => format!("{} at {}", r.kind.as_str(), r.endpoint),
        }
    }
}

impl std::fmt::Display for EngineSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Embedded(m) => write!(f, "{} ({} {})", m.model, m.device, m.dtype),
            Self::Remote(r) => write!(
                f,
                "{} at {}{}",
                r.kind.as_str(),
                r.endpoint,
                r.model
                    .as_deref()
                    .map_or(String::new(), |m| format!(" ({m})"))
            ),
        }
    }
}

/// Makes a model from a spec, reporting progress on `events`. May take minutes (download);
/// the model host runs it in the background and catches its panics.
pub trait Loader: Send + Sync + 'static {
    fn load(
        &self,
        spec: EngineSpec,
        events: UnboundedSender<LoadEvent>,
    ) -> BoxFuture<Result<Arc<dyn LanguageModel>, String>>;
}

/// The real loader: the embedded model on a blocking thread, with PEFT adapter reading; or a
/// remote engine.
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineLoader;

impl Loader for EngineLoader {
    fn load(
        &self,
        spec: EngineSpec,
        events: UnboundedSender<LoadEvent>,
    ) -> BoxFuture<Result<Arc<dyn LanguageModel>, String>> {
        Box::pin(async move {
            let spec = match spec {
                EngineSpec::Embedded(spec) => spec,
                EngineSpec::Remote(spec) => {
                    let send = move |e| {
                        let _ = events.send(e);
                    };
                    return copilot_remote::Remote::connect(spec, &send)
                        .await
                        .map(|r| Arc::new(r) as Arc<dyn LanguageModel>)
                        .map_err(|e| e.to_string());
                }
            };
            let joined = tokio::task::spawn_blocking(move || {
                Embedded::load(&spec, &|e| {
                    let _ = events.send(e);
                })
            })
            .await;
            match joined {
                Ok(Ok(m)) => {
                    Ok(Arc::new(m.with_adapter_reader(read_peft)) as Arc<dyn LanguageModel>)
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(e) if e.is_panic() => Err(format!(
                    "the model loader panicked: {}",
                    crate::panic_message(e.into_panic().as_ref())
                )),
                Err(e) => Err(format!("the model loader was stopped: {e}")),
            }
        })
    }
}

/// A PEFT adapter directory as the engine's LoRA deltas, in f32.
pub fn read_peft(
    dir: &std::path::Path,
    model: &copilot_engine::Model,
) -> Result<copilot_engine::Lora, String> {
    let cfg = model.config();
    copilot_finetune::peft::Adapter::load(dir, cfg, model.device(), candle_core::DType::F32)
        .map(|a| a.to_lora(cfg.n_layer))
        .map_err(|e| e.to_string())
}
