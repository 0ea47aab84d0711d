//! The seam between the scheduler and the model: [`Loader`] makes a [`Backend`], a
//! [`Backend`] completes. The real ones wrap `copilot_pipeline::Completer`; tests script
//! their own (slow, failing, panicking) with tokio's paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use copilot_engine::{CancelToken, ModelSpec};
use copilot_pipeline::{Completer, Completion, CompletionRequest, LoadEvent, PipelineError};
use tokio::sync::mpsc::UnboundedSender;

pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// A loaded model, as the scheduler uses it.
pub trait Backend: Send + Sync + 'static {
    /// Complete at the request's cursor. Must stop within one token once `cancel` is set or
    /// the future is dropped, and answer `PipelineError::Cancelled` if it is still awaited.
    fn complete(
        &self,
        req: CompletionRequest,
        cancel: CancelToken,
    ) -> BoxFuture<Result<Completion, PipelineError>>;

    /// One line naming the model, for progress and logs.
    fn description(&self) -> String;

    /// Register the PEFT adapter in `dir` under `name` (once; later calls return at once).
    fn load_adapter(&self, name: String, dir: std::path::PathBuf) -> BoxFuture<Result<(), String>> {
        let _ = (name, dir);
        Box::pin(async { Err("this model backend does not support adapters".to_string()) })
    }
}

/// Makes a [`Backend`] from settings, reporting progress on `events`. May take minutes
/// (download); the lifecycle runs it in the background and catches its panics.
pub trait Loader: Send + Sync + 'static {
    fn load(
        &self,
        spec: ModelSpec,
        events: UnboundedSender<LoadEvent>,
    ) -> BoxFuture<Result<Arc<dyn Backend>, String>>;
}

impl Backend for Completer {
    fn complete(
        &self,
        req: CompletionRequest,
        cancel: CancelToken,
    ) -> BoxFuture<Result<Completion, PipelineError>> {
        let this = self.clone();
        Box::pin(async move { this.complete(req, cancel).await })
    }

    fn description(&self) -> String {
        self.engine().description().to_string()
    }

    fn load_adapter(&self, name: String, dir: std::path::PathBuf) -> BoxFuture<Result<(), String>> {
        let this = self.clone();
        Box::pin(async move {
            this.ensure_adapter(&name, move |model| {
                let cfg = model.config();
                copilot_finetune::peft::Adapter::load(
                    &dir,
                    cfg,
                    model.device(),
                    candle_core::DType::F32,
                )
                .map(|a| a.to_lora(cfg.n_layer))
                .map_err(|e| e.to_string())
            })
            .await
            .map_err(|e| e.to_string())
        })
    }
}

/// Loads the real model through the pipeline, on a blocking thread.
#[derive(Clone, Copy, Debug, Default)]
pub struct PipelineLoader;

impl Loader for PipelineLoader {
    fn load(
        &self,
        spec: ModelSpec,
        events: UnboundedSender<LoadEvent>,
    ) -> BoxFuture<Result<Arc<dyn Backend>, String>> {
        Box::pin(async move {
            let joined = tokio::task::spawn_blocking(move || {
                Completer::load(&spec, &|e| {
                    let _ = events.send(e);
                })
            })
            .await;
            match joined {
                Ok(Ok(c)) => Ok(Arc::new(c) as Arc<dyn Backend>),
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
