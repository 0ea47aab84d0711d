//! One OS thread owns the model (as text-generation-inference does): requests arrive over a
//! channel, answers go back on one-shot channels. A requester that drops its answer stops the
//! decoding within one token; a panic inside the model is caught, reported as an error, and
//! the thread goes on serving.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use std::sync::Arc;

use tokio::sync::oneshot;

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::generate::{GenerateRequest, Generation, Generator};
use crate::model::{Lora, Model};
use crate::tokenizer::Tokenizer;

type Task = Box<dyn FnOnce(&mut Generator) + Send>;

enum Job {
    Generate(Box<GenerateRequest>, oneshot::Sender<Result<Generation>>),
    Run(Task),
}

/// Handle to the model thread. Cheap to clone; the thread ends when the last handle is
/// dropped, and that drop waits for it.
#[derive(Clone)]
pub struct Engine {
    worker: Arc<Worker>,
    tokenizer: Arc<Tokenizer>,
    config: Arc<Config>,
    description: Arc<str>,
}

/// The channel to the model thread and the thread itself. Dropping it closes the channel and
/// joins the thread, so the model is freed before the program can exit: with CUDA, a process
/// that exits while the model thread still frees its device buffers crashes in the driver's
/// teardown.
struct Worker {
    tx: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Worker {
    fn send(&self, job: Job) -> Result<()> {
        self.tx
            .as_ref()
            .and_then(|tx| tx.send(job).ok())
            .ok_or(EngineError::WorkerGone)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            // The last handle may be dropped by a task on the model thread itself.
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("description", &self.description)
            .finish()
    }
}

impl Engine {
    /// Move the model onto its own thread.
    pub fn start(model: Model, tokenizer: Arc<Tokenizer>, description: String) -> Self {
        let config = Arc::new(model.config().clone());
        let (tx, rx) = mpsc::channel::<Job>();
        let mut generator = Generator::new(model, tokenizer.clone());
        let thread = std::thread::Builder::new()
            .name("copilot-model".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    match job {
                        Job::Generate(mut req, reply) => {
                            // Nobody waits for it any more: skip. (A cancelled request still
                            // runs `generate`, which answers "cancelled" before any work.)
                            if reply.is_closed() {
                                continue;
                            }
                            let abandoned = || reply.is_closed();
                            let out = catch_unwind(AssertUnwindSafe(|| {
                                generator.generate(&mut req, &abandoned)
                            }));
                            let out = out.unwrap_or_else(|panic| {
                                generator.reset_caches();
                                Err(EngineError::Panicked(panic_message(&panic)))
                            });
                            let _ = reply.send(out);
                        }
                        Job::Run(task) => {
                            if catch_unwind(AssertUnwindSafe(|| task(&mut generator))).is_err() {
                                generator.reset_caches();
                                tracing::error!("a task on the model thread panicked");
                            }
                        }
                    }
                }
                tracing::debug!("model thread exits");
            })
            .expect("spawn model thread");
        Self {
            worker: Arc::new(Worker {
                tx: Some(tx),
                thread: Some(thread),
            }),
            tokenizer,
            config,
            description: description.into(),
        }
    }

    pub fn tokenizer(&self) -> &Arc<Tokenizer> {
        &self.tokenizer
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A one-line description of the loaded model (name, device, dtype).
    pub fn description(&self) -> &str {
        &self.description
    }

    fn submit(&self, req: GenerateRequest) -> Result<oneshot::Receiver<Result<Generation>>> {
        let (tx, rx) = oneshot::channel();
        self.worker.send(Job::Generate(Box::new(req), tx))?;
        Ok(rx)
    }

    /// Generate. Dropping the future abandons the request: the model thread notices within
    /// one token and moves on.
    pub async fn generate(&self, req: GenerateRequest) -> Result<Generation> {
        self.submit(req)?
            .await
            .map_err(|_| EngineError::WorkerGone)?
    }

    /// Generate, blocking the calling thread (CLI, benchmarks; not from async code).
    pub fn generate_blocking(&self, req: GenerateRequest) -> Result<Generation> {
        self.submit(req)?
            .blocking_recv()
            .map_err(|_| EngineError::WorkerGone)?
    }

    fn submit_task<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Generator) -> R + Send + 'static,
    ) -> Result<oneshot::Receiver<R>> {
        let (tx, rx) = oneshot::channel();
        self.worker.send(Job::Run(Box::new(move |g| {
            let _ = tx.send(f(g));
        })))?;
        Ok(rx)
    }

    /// Run any computation on the model thread (evaluation, scoring) and wait for it.
    pub fn run_blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Generator) -> R + Send + 'static,
    ) -> Result<R> {
        self.submit_task(f)?
            .blocking_recv()
            .map_err(|_| EngineError::WorkerGone)
    }

    /// Async version of [`Engine::run_blocking`].
    pub async fn run<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Generator) -> R + Send + 'static,
    ) -> Result<R> {
        self.submit_task(f)?
            .await
            .map_err(|_| EngineError::WorkerGone)
    }

    /// Register (or replace) an adapter under `name`.
    pub fn add_adapter(&self, name: String, lora: Lora) -> Result<()> {
        self.run_blocking(move |g| g.add_adapter(name, lora))
    }

    /// Memory for merged copies of adapters ([`Generator::set_merge_budget`]).
    pub fn set_merge_budget(&self, bytes: usize) -> Result<()> {
        self.run_blocking(move |g| g.set_merge_budget(bytes))
    }

    /// Merge adapter `name` now and wait ([`Generator::merge_now`]): whether it is served
    /// merged.
    pub fn merge_now(&self, name: String) -> Result<bool> {
        self.run_blocking(move |g| g.merge_now(&name))?
    }
}

fn panic_message(p: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".into()
    }
}
