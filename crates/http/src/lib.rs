//! The HTTP front-end (`copilot-lsp serve --http ADDR`): our engine behind the APIs that
//! HTTP clients already speak, sharing the serving core with the LSP server.
//!
//! - `POST /v1/completions` (`openai.rs`): OpenAI's completions API, `prompt` the code before
//!   the cursor and `suffix` the code after, streaming as server-sent events ending
//!   `data: [DONE]`; extensions `postprocess` and `adapter`.
//! - `POST /infill` (`infill.rs`): llama-server's FIM endpoint as llama.vim and llama.vscode
//!   call it (`input_prefix`, `prompt`, `input_suffix`, `input_extra`, `response_fields`...).
//! - `GET /props`, `POST /tokenize` (`llama_extras.rs`): llama-server's window and
//!   tokenizer, which its clients (copilot-lsp's own `llama.cpp` engine among them) size
//!   their prompts with.
//! - `GET /health`, `GET /v1/models`, `GET /stats` (`status.rs`): load progress (503 while
//!   loading, as llama-server), the model, the service's request counters.
//!
//! A request becomes one [`copilot_service::Service::complete`] call (`ask.rs`): the core
//! queues it on the one model thread in arrival order (fair between clients), reuses the KV
//! cache across a client's consecutive requests, and a client that hangs up drops the
//! request's future, which stops the decoding within one token (`stream.rs` for streams).
//! Bodies are read within a size limit and field by field (`fields.rs`: a 400 names the
//! field); a non-loopback address needs an API key (`auth.rs`).
//!
//! **Invariant:** the only crate besides the LSP server that knows a protocol (HTTP, JSON);
//! no model, prompt or post-processing logic of its own: all of that is the core's.

mod ask;
mod auth;
pub mod error;
mod fields;
mod infill;
mod llama_extras;
mod openai;
mod status;
mod stream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use axum::extract::{Request, State as AxState};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use copilot_pipeline::{CompletionOptions, LoadEvent};
use copilot_service::{EngineSpec, LoadReport, Loader, Service};

pub use error::{ApiError, HttpError};

/// Request bodies above this many bytes get a 413 (a whole file of prefix and suffix plus
/// llama.vim's ring of extra chunks is well under it).
pub const DEFAULT_BODY_LIMIT: usize = 4 << 20;

/// How the server runs, resolved from the command line.
#[derive(Clone, Debug)]
pub struct Config {
    pub addr: SocketAddr,
    /// Bearer token every endpoint but `/health` wants; required off loopback.
    pub api_key: Option<String>,
    pub body_limit: usize,
    /// The model's name in `/v1/models` and in answers.
    pub model_id: String,
    /// What a request that does not say runs with.
    pub defaults: CompletionOptions,
    /// Adapters a request may name (`"adapter": NAME`): name -> PEFT directory.
    pub adapters: BTreeMap<String, PathBuf>,
}

impl Config {
    /// Refuse to serve other machines without a key.
    pub fn check(&self) -> Result<(), HttpError> {
        match &self.api_key {
            Some(k) if k.trim().is_empty() => Err(HttpError::EmptyKey),
            None if !self.addr.ip().is_loopback() => {
                Err(HttpError::KeyRequired { addr: self.addr })
            }
            _ => Ok(()),
        }
    }
}

/// What the handlers share.
pub(crate) struct State {
    pub service: Arc<Service>,
    pub config: Config,
    /// The latest load event, for `/health`.
    pub progress: Mutex<Option<String>>,
    /// Request numbers: the core's arrival order and the key of each request.
    pub seq: AtomicU64,
    pub started: SystemTime,
}

/// The HTTP API over a serving core.
#[derive(Clone)]
pub struct Api {
    state: Arc<State>,
}

impl Api {
    pub fn new(service: Arc<Service>, config: Config) -> Self {
        Self {
            state: Arc::new(State {
                service,
                config,
                progress: Mutex::new(None),
                seq: AtomicU64::new(0),
                started: SystemTime::now(),
            }),
        }
    }

    pub fn service(&self) -> &Arc<Service> {
        &self.state.service
    }

    /// Load `engine` in the background, its progress shown by `/health`. Needs a runtime.
    pub fn load(&self, engine: EngineSpec) {
        if let Some(report) = self.state.service.host.ensure(engine) {
            self.track(report);
        }
    }

    fn track(&self, mut report: LoadReport) {
        let state = self.state.clone();
        tokio::spawn(async move {
            while let Some(event) = report.events.recv().await {
                let line = match event {
                    LoadEvent::Downloading { file } => format!("downloading {file}"),
                    LoadEvent::Loading { what } => format!("loading {what}"),
                    LoadEvent::Ready { description } => format!("ready: {description}"),
                };
                *state.progress.lock().unwrap_or_else(|e| e.into_inner()) = Some(line);
            }
            match report.done.await {
                Ok(Ok(desc)) => tracing::info!("model ready: {desc}"),
                Ok(Err(e)) => tracing::error!("model not loaded: {e}"),
                Err(_) => {}
            }
        });
    }

    /// The routes, behind the key check when there is a key.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/v1/completions", post(openai::completions))
            .route("/completions", post(openai::completions))
            .route("/infill", post(infill::infill))
            .route("/props", get(llama_extras::props))
            .route("/tokenize", post(llama_extras::tokenize))
            .route("/v1/models", get(status::models))
            .route("/models", get(status::models))
            .route("/stats", get(status::stats))
            .route_layer(axum::middleware::from_fn_with_state(
                self.state.clone(),
                require_key,
            ));
        Router::new()
            .route("/health", get(status::health))
            .route("/v1/health", get(status::health))
            .merge(api)
            .fallback(not_found)
            .with_state(self.state.clone())
    }

    /// Serve on `listener` until `shutdown` resolves; live requests are cancelled then.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), HttpError> {
        let result = axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(HttpError::Serve);
        self.state.service.tasks.cancel_all();
        result
    }
}

async fn require_key(AxState(state): AxState<Arc<State>>, req: Request, next: Next) -> Response {
    match &state.config.api_key {
        Some(key) if !auth::authorized(req.headers(), key) => auth::unauthorized().into_response(),
        _ => next.run(req).await,
    }
}

async fn not_found(req: Request) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        format!(
            "no endpoint {} {} (POST /v1/completions, POST /infill, GET /health, GET /v1/models, GET /stats)",
            req.method(),
            req.uri().path()
        ),
    )
}

/// Serve `config` with the model `engine` made by `loader`, until Ctrl-C: what
/// `copilot-lsp serve --http` runs.
pub fn run(config: Config, engine: EngineSpec, loader: Arc<dyn Loader>) -> Result<(), HttpError> {
    config.check()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("copilot-http")
        .enable_all()
        .build()
        .map_err(HttpError::Runtime)?;
    let result = rt.block_on(async move {
        let (service, mut notices) = Service::new(loader);
        // The core logs each notice once; nobody else shows them over HTTP.
        tokio::spawn(async move { while notices.recv().await.is_some() {} });
        let addr = config.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| HttpError::Bind { addr, source })?;
        let bound = listener.local_addr().map_err(HttpError::Serve)?;
        let api = Api::new(service, config);
        api.load(engine);
        tracing::info!("listening on http://{bound}");
        api.serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("interrupted: stopping");
        })
        .await
    });
    rt.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}
