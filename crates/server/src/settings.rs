//! Configuration: raw [`Options`] as the client sends them (camelCase JSON, in
//! `initializationOptions` or `workspace/didChangeConfiguration`), resolved into validated
//! [`Settings`] over the command line's defaults ([`ServeOptions`]).
//!
//! Every key is parsed with serde on its own, so one bad value never loses the others: a bad
//! value yields a clear message and keeps the value in force ([`load_over`]: the one the
//! server was using, not the default, so an invalid setting never reloads the model), an
//! unknown key a warning.

use std::time::Duration;

use copilot_engine::{DTypeSpec, DeviceSpec, ModelSpec, DEFAULT_MODEL};
use copilot_pipeline::{CompletionOptions, FimChoice};
use serde_json::{Map, Value};

use crate::ServeOptions;

/// Section names under which clients nest our settings (`{"copilot-lsp": {...}}`).
pub const SECTIONS: &[&str] = &["copilot-lsp", "copilotLsp", "copilot_lsp"];

macro_rules! options {
    ($( $(#[$doc:meta])* $field:ident : $ty:ty = $key:literal ),* $(,)?) => {
        /// Settings as the client sends them; `None` means "not given".
        #[derive(Clone, Debug, Default, PartialEq)]
        pub struct Options {
            $( $(#[$doc])* pub $field: Option<$ty>, )*
        }

        /// Every key we know, as the client spells it.
        pub const KNOWN_KEYS: &[&str] = &[$($key),*];

        impl Options {
            fn set(&mut self, key: &str, value: Value) -> Result<bool, String> {
                match key {
                    $( $key => {
                        self.$field = if value.is_null() {
                            None
                        } else {
                            Some(serde_json::from_value::<$ty>(value)
                                .map_err(|e| format!("invalid value for `{}`: {e}", $key))?)
                        };
                        Ok(true)
                    } )*
                    _ => Ok(false),
                }
            }

            /// `self`, with every key `newer` gives taking precedence.
            pub fn merged(&self, newer: &Options) -> Options {
                Options {
                    $( $field: newer.$field.clone().or_else(|| self.$field.clone()), )*
                }
            }
        }
    };
}

options! {
    /// Local checkpoint directory or hub repository id.
    model: String = "model",
    revision: String = "revision",
    offline: bool = "offline",
    /// auto, cpu, cuda, cuda:N, metal.
    device: String = "device",
    /// auto, f32, f16, bf16.
    dtype: String = "dtype",
    temperature: f64 = "temperature",
    top_p: f64 = "topP",
    top_k: usize = "topK",
    max_tokens: usize = "maxTokens",
    seed: u64 = "seed",
    debounce_ms: u64 = "debounceMs",
    /// psm, spm, auto (or off: left-to-right).
    fim_mode: String = "fimMode",
    prefix_tokens: usize = "prefixTokens",
    suffix_tokens: usize = "suffixTokens",
    postprocess: bool = "postprocess",
    /// Serve `textDocument/completion` items too (None: only to clients without inline
    /// completion).
    completion_fallback: bool = "completionFallback",
    threads: usize = "threads",
    /// MiB for merged copies of LoRA adapters (the most recently used adapters run as fast
    /// as the base within it; 0 serves every adapter unmerged). Default 1024.
    adapter_memory_mb: u64 = "adapterMemoryMb",
    /// How many choices an explicitly invoked inline completion may return.
    choices: usize = "choices",
    /// Soft decoding budget: once spent, the model stops at the next newline.
    time_budget_ms: u64 = "timeBudgetMs",
    /// Serve repeated and typed-through requests from the pipeline's completion cache.
    cache: bool = "cache",
    /// Show the model the file's path (relative to the workspace root). Off by default, as
    /// in `copilot-lsp complete`, so that both prompt alike.
    path_header: bool = "pathHeader",
    /// LoRA adapters: workspace folder or git remote URL -> adapter directory.
    adapters: std::collections::BTreeMap<String, String> = "adapters",
    /// embedded (the default), llama.cpp, ollama or openai.
    engine: String = "engine",
    /// A remote engine's base URL (each engine's usual local port by default).
    endpoint: String = "endpoint",
    /// The model name the remote server expects.
    remote_model: String = "remoteModel",
    /// The environment variable holding the remote server's bearer token (never the key).
    api_key_env: String = "apiKeyEnv",
    /// The FIM format of remote prompts: auto, or a family (starcoder, qwen...).
    template: String = "template",
    /// The remote model's tokenizer: tokenizer.json, a .gguf, or a hub id.
    tokenizer: String = "tokenizer",
    /// Context from the rest of the workspace: `{openFiles, imports, index, maxTokens,
    /// maxIndexFiles}`.
    context: ContextOptions = "context",
    /// Log what became of each suggestion (shown, accepted, kept) to the local event log.
    events: bool = "events",
}

/// The `context` setting as the client sends it (each field optional).
#[derive(Clone, Debug, Default, PartialEq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ContextOptions {
    pub open_files: Option<bool>,
    pub imports: Option<bool>,
    pub index: Option<bool>,
    pub max_tokens: Option<usize>,
    pub max_index_files: Option<usize>,
}

/// What parsing found besides the values.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Problems {
    pub errors: Vec<String>,
    pub unknown: Vec<String>,
    /// The keys whose values were invalid (each also has an error).
    pub invalid: Vec<String>,
}

impl Problems {
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty() && self.unknown.is_empty()
    }

    /// One message for the user, or None.
    pub fn message(&self) -> Option<String> {
        let mut parts = self.errors.clone();
        if !self.unknown.is_empty() {
            parts.push(format!(
                "unknown setting{} ignored: {}",
                if self.unknown.len() == 1 { "" } else { "s" },
                self.unknown
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        (!parts.is_empty()).then(|| format!("copilot-lsp settings: {}", parts.join("; ")))
    }

    fn extend(&mut self, other: Problems) {
        self.errors.extend(other.errors);
        self.unknown.extend(other.unknown);
        self.invalid.extend(other.invalid);
    }
}

impl Options {
    /// Parse a JSON value. `null` is "nothing given"; our keys may sit at the top level or
    /// under one of [`SECTIONS`].
    pub fn parse(value: &Value) -> (Options, Problems) {
        let mut opts = Options::default();
        let mut problems = Problems::default();
        let obj = match value {
            Value::Null => return (opts, problems),
            Value::Object(o) => o,
            other => {
                problems
                    .errors
                    .push(format!("expected an object of settings, got `{other}`"));
                return (opts, problems);
            }
        };
        let (obj, nested): (&Map<String, Value>, bool) = match SECTIONS
            .iter()
            .find_map(|s| obj.get(*s).and_then(Value::as_object))
        {
            Some(inner) => (inner, true),
            None => (obj, false),
        };
        for (key, v) in obj {
            match opts.set(key, v.clone()) {
                Ok(true) => {}
                Ok(false) => problems.unknown.push(key.clone()),
                Err(e) => {
                    problems.errors.push(e);
                    problems.invalid.push(key.clone());
                }
            }
        }
        if nested {
            // Other sections belong to other tools: not ours to warn about.
            problems.unknown.clear();
        }
        (opts, problems)
    }
}

/// Resolved, validated settings.
#[derive(Clone, Debug, PartialEq)]
pub struct Settings {
    pub model: ModelSpec,
    pub completion: CompletionOptions,
    /// A fixed debounce (`debounceMs`); `None`: adaptive.
    pub debounce: Option<Duration>,
    /// None: serve `textDocument/completion` only to clients without inline completion.
    pub completion_fallback: Option<bool>,
    pub choices: usize,
    pub path_header: bool,
    /// Workspace folder or git remote URL -> adapter directory.
    pub adapters: std::collections::BTreeMap<String, String>,
    /// The remote engine, when `engine` names one (`None`: the embedded model).
    pub remote: Option<copilot_remote::RemoteSpec>,
    pub context: copilot_context::ContextSettings,
    /// Write outcome events to the local log (`$XDG_DATA_HOME/copilot-lsp/events/`).
    pub events: bool,
    /// Neither `prefixTokens` nor `suffixTokens` was given: the budgets fit the machine.
    pub auto_budget: bool,
}

impl Settings {
    /// What one completion request runs with.
    pub fn request(&self) -> copilot_service::RequestSettings {
        copilot_service::RequestSettings {
            completion: self.completion.clone(),
            debounce: self.debounce,
            choices: self.choices,
            path_header: self.path_header,
            auto_budget: self.auto_budget,
        }
    }

    /// The engine these settings ask for.
    pub fn engine(&self) -> copilot_service::EngineSpec {
        match &self.remote {
            Some(r) => copilot_service::EngineSpec::Remote(r.clone()),
            None => copilot_service::EngineSpec::Embedded(self.model.clone()),
        }
    }
}

pub const DEFAULT_CHOICES: usize = 3;

impl Settings {
    /// The command line's defaults alone.
    pub fn from_cli(cli: &ServeOptions) -> Result<Settings, String> {
        let (s, problems) = Settings::resolve(cli, &Options::default());
        match problems.errors.is_empty() {
            true => Ok(s),
            false => Err(problems.errors.join("; ")),
        }
    }

    /// Resolve `opts` over the command line's defaults. Bad values keep the default.
    pub fn resolve(cli: &ServeOptions, opts: &Options) -> (Settings, Problems) {
        // (errors, the keys they are about)
        let mut found: (Vec<String>, Vec<String>) = (Vec::new(), Vec::new());
        let check = |found: &mut (Vec<String>, Vec<String>),
                     key: &str,
                     ok: bool,
                     rule: &str,
                     got: String| {
            if !ok {
                found
                    .0
                    .push(format!("invalid value for `{key}`: {rule} (got {got})"));
                found.1.push(key.to_string());
            }
            ok
        };

        let mut model = ModelSpec {
            model: DEFAULT_MODEL.to_string(),
            threads: cli.threads,
            offline: cli.offline,
            revision: cli.revision.clone(),
            ..ModelSpec::default()
        };
        if let Some(m) = opts.model.as_ref().or(cli.model.as_ref()) {
            if check(
                &mut found,
                "model",
                !m.trim().is_empty(),
                "must not be empty",
                format!("{m:?}"),
            ) {
                model.model = m.trim().to_string();
            }
        }
        if let Some(r) = &opts.revision {
            model.revision = (!r.trim().is_empty()).then(|| r.trim().to_string());
        }
        if let Some(o) = opts.offline {
            model.offline = o;
        }
        for (key, given) in [("device", &opts.device), ("device", &cli.device)] {
            if let Some(d) = given {
                match d.parse::<DeviceSpec>() {
                    Ok(d) => {
                        model.device = d;
                        break;
                    }
                    Err(e) => found.0.push(format!("invalid value for `{key}`: {e}")),
                }
            }
        }
        if opts
            .device
            .as_ref()
            .is_some_and(|d| d.parse::<DeviceSpec>().is_err())
        {
            found.1.push("device".into());
        }
        for (key, given) in [("dtype", &opts.dtype), ("dtype", &cli.dtype)] {
            if let Some(d) = given {
                match d.parse::<DTypeSpec>() {
                    Ok(d) => {
                        model.dtype = d;
                        break;
                    }
                    Err(e) => found.0.push(format!("invalid value for `{key}`: {e}")),
                }
            }
        }
        if opts
            .dtype
            .as_ref()
            .is_some_and(|d| d.parse::<DTypeSpec>().is_err())
        {
            found.1.push("dtype".into());
        }
        if let Some(t) = opts.threads {
            if check(
                &mut found,
                "threads",
                (1..=256).contains(&t),
                "must be 1 to 256",
                t.to_string(),
            ) {
                model.threads = Some(t);
            }
        }
        if let Some(mb) = opts.adapter_memory_mb {
            if check(
                &mut found,
                "adapterMemoryMb",
                mb <= 1 << 20,
                "must be 0 to 1048576 (MiB)",
                mb.to_string(),
            ) {
                model.adapter_memory = usize::try_from(mb << 20).ok();
            }
        }

        let mut c = CompletionOptions::default();
        if let Some(t) = opts.temperature {
            if check(
                &mut found,
                "temperature",
                t.is_finite() && (0.0..=2.0).contains(&t),
                "must be between 0 and 2",
                t.to_string(),
            ) {
                c.temperature = t;
            }
        }
        if let Some(p) = opts.top_p {
            if check(
                &mut found,
                "topP",
                p.is_finite() && p > 0.0 && p <= 1.0,
                "must be above 0 and at most 1",
                p.to_string(),
            ) {
                c.top_p = p;
            }
        }
        if let Some(k) = opts.top_k {
            if check(
                &mut found,
                "topK",
                k >= 1,
                "must be at least 1",
                k.to_string(),
            ) {
                c.top_k = Some(k);
            }
        }
        if let Some(m) = opts.max_tokens {
            if check(
                &mut found,
                "maxTokens",
                (1..=2048).contains(&m),
                "must be 1 to 2048",
                m.to_string(),
            ) {
                c.max_tokens = m;
            }
        }
        if let Some(s) = opts.seed {
            c.seed = s;
        }
        if let Some(f) = &opts.fim_mode {
            match f.parse::<FimChoice>() {
                Ok(f) => c.fim = f,
                Err(e) => {
                    found.0.push(format!("invalid value for `fimMode`: {e}"));
                    found.1.push("fimMode".into());
                }
            }
        }
        if let Some(n) = opts.prefix_tokens {
            if check(
                &mut found,
                "prefixTokens",
                n <= 16384,
                "must be at most 16384",
                n.to_string(),
            ) {
                c.prefix_tokens = n;
            }
        }
        if let Some(n) = opts.suffix_tokens {
            if check(
                &mut found,
                "suffixTokens",
                n <= 16384,
                "must be at most 16384",
                n.to_string(),
            ) {
                c.suffix_tokens = n;
            }
        }
        if let Some(p) = opts.postprocess {
            c.postprocess = p;
        }
        if let Some(on) = opts.cache {
            c.cache = on;
        }
        if let Some(ms) = opts.time_budget_ms {
            if check(
                &mut found,
                "timeBudgetMs",
                (1..=60_000).contains(&ms),
                "must be 1 to 60000",
                ms.to_string(),
            ) {
                c.time_budget = Some(Duration::from_millis(ms));
            }
        }
        let mut debounce = None;
        if let Some(ms) = opts.debounce_ms {
            if check(
                &mut found,
                "debounceMs",
                ms <= 10_000,
                "must be at most 10000",
                ms.to_string(),
            ) {
                debounce = Some(Duration::from_millis(ms));
            }
        }
        let mut choices = DEFAULT_CHOICES;
        if let Some(n) = opts.choices {
            if check(
                &mut found,
                "choices",
                (1..=8).contains(&n),
                "must be 1 to 8",
                n.to_string(),
            ) {
                choices = n;
            }
        }
        let mut context = copilot_context::ContextSettings::default();
        if let Some(o) = &opts.context {
            context.open_files = o.open_files.unwrap_or(context.open_files);
            context.imports = o.imports.unwrap_or(context.imports);
            context.index = o.index.unwrap_or(context.index);
            if let Some(n) = o.max_tokens {
                if check(
                    &mut found,
                    "context.maxTokens",
                    n <= 8192,
                    "must be at most 8192",
                    n.to_string(),
                ) {
                    context.max_tokens = n;
                }
            }
            if let Some(n) = o.max_index_files {
                if check(
                    &mut found,
                    "context.maxIndexFiles",
                    n <= 1_000_000,
                    "must be at most 1000000",
                    n.to_string(),
                ) {
                    context.max_index_files = n;
                }
            }
        }
        (
            Settings {
                model,
                completion: c,
                debounce,
                completion_fallback: opts.completion_fallback,
                choices,
                path_header: opts.path_header.unwrap_or(false),
                adapters: opts.adapters.clone().unwrap_or_default(),
                remote: resolve_remote(opts, &mut found),
                context,
                events: opts.events.unwrap_or(true),
                auto_budget: opts.prefix_tokens.is_none() && opts.suffix_tokens.is_none(),
            },
            Problems {
                errors: found.0,
                unknown: Vec::new(),
                invalid: found.1,
            },
        )
    }

    /// Take the value of `key` (as the client spells it) from `from`. False for an unknown key.
    pub fn keep(&mut self, key: &str, from: &Settings) -> bool {
        let (m, fm) = (&mut self.model, &from.model);
        let (c, fc) = (&mut self.completion, &from.completion);
        match key {
            "model" => m.model.clone_from(&fm.model),
            "revision" => m.revision.clone_from(&fm.revision),
            "offline" => m.offline = fm.offline,
            "device" => m.device = fm.device,
            "dtype" => m.dtype = fm.dtype,
            "threads" => m.threads = fm.threads,
            "adapterMemoryMb" => m.adapter_memory = fm.adapter_memory,
            "temperature" => c.temperature = fc.temperature,
            "topP" => c.top_p = fc.top_p,
            "topK" => c.top_k = fc.top_k,
            "maxTokens" => c.max_tokens = fc.max_tokens,
            "seed" => c.seed = fc.seed,
            "fimMode" => c.fim = fc.fim,
            "prefixTokens" => c.prefix_tokens = fc.prefix_tokens,
            "suffixTokens" => c.suffix_tokens = fc.suffix_tokens,
            "postprocess" => c.postprocess = fc.postprocess,
            "cache" => c.cache = fc.cache,
            "timeBudgetMs" => c.time_budget = fc.time_budget,
            "debounceMs" => self.debounce = from.debounce,
            "completionFallback" => self.completion_fallback = from.completion_fallback,
            "choices" => self.choices = from.choices,
            "pathHeader" => self.path_header = from.path_header,
            "adapters" => self.adapters.clone_from(&from.adapters),
            "context" => self.context.clone_from(&from.context),
            "events" => self.events = from.events,
            // The remote engine is one choice made of these keys: all kept together.
            "engine" | "endpoint" | "remoteModel" | "apiKeyEnv" | "template" | "tokenizer" => {
                self.remote.clone_from(&from.remote)
            }
            "context.maxTokens" => self.context.max_tokens = from.context.max_tokens,
            "context.maxIndexFiles" => self.context.max_index_files = from.context.max_index_files,
            _ => return false,
        }
        true
    }
}

/// The remote engine `engine`, `endpoint`, `remoteModel`, `apiKeyEnv`, `template` and
/// `tokenizer` ask for (parsed by the remote crate, as the CLI's flags are).
fn resolve_remote(
    opts: &Options,
    found: &mut (Vec<String>, Vec<String>),
) -> Option<copilot_remote::RemoteSpec> {
    let (spec, problems) = copilot_remote::RemoteArgs {
        engine: opts.engine.as_deref(),
        endpoint: opts.endpoint.as_deref(),
        model: opts.remote_model.as_deref(),
        api_key_env: opts.api_key_env.as_deref(),
        template: opts.template.as_deref(),
        tokenizer: opts.tokenizer.as_deref(),
    }
    .resolve();
    for p in problems {
        found
            .0
            .push(format!("invalid value for `{}`: {}", p.key, p.message));
        found.1.push(p.key.to_string());
    }
    spec
}

/// Parse and resolve in one go: the settings, and every problem found on the way.
pub fn load(cli: &ServeOptions, layers: &[&Value]) -> (Settings, Options, Problems) {
    let mut merged = Options::default();
    let mut problems = Problems::default();
    for layer in layers {
        let (o, p) = Options::parse(layer);
        merged = merged.merged(&o);
        problems.extend(p);
    }
    let (settings, p) = Settings::resolve(cli, &merged);
    problems.extend(p);
    (settings, merged, problems)
}

/// [`load`], with every invalid value replaced by its value in `in_force` (what the server
/// uses now) rather than the default.
pub fn load_over(
    cli: &ServeOptions,
    layers: &[&Value],
    in_force: &Settings,
) -> (Settings, Options, Problems) {
    let (mut settings, merged, problems) = load(cli, layers);
    for key in &problems.invalid {
        settings.keep(key, in_force);
    }
    (settings, merged, problems)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn resolve(v: Value) -> (Settings, Problems) {
        let (s, _, p) = load(&ServeOptions::default(), &[&v]);
        (s, p)
    }

    #[test]
    fn defaults_match_the_pipeline_and_the_cli() {
        let (s, p) = resolve(Value::Null);
        assert!(p.is_empty());
        assert_eq!(s.model.model, DEFAULT_MODEL);
        assert_eq!(s.completion, CompletionOptions::default());
        assert_eq!(s.debounce, None, "adaptive unless debounceMs says");
        assert_eq!(s.completion_fallback, None);
        assert!(s.events);
    }

    #[test]
    fn every_documented_key_is_read() {
        let (s, p) = resolve(json!({
            "model": "/models/pico", "revision": "main", "offline": true, "device": "cpu",
            "dtype": "f32", "temperature": 0, "topP": 0.5, "maxTokens": 16, "debounceMs": 0,
            "fimMode": "spm", "prefixTokens": 100, "suffixTokens": 10, "postprocess": false,
            "completionFallback": true, "threads": 2, "topK": 5, "seed": 7, "choices": 2,
            "timeBudgetMs": 250, "cache": false, "pathHeader": true, "events": false
        }));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.model.model, "/models/pico");
        assert_eq!(s.model.revision.as_deref(), Some("main"));
        assert!(s.model.offline);
        assert_eq!(s.model.device, DeviceSpec::Cpu);
        assert_eq!(s.model.dtype, DTypeSpec::F32);
        assert_eq!(s.model.threads, Some(2));
        let c = &s.completion;
        assert_eq!(c.temperature, 0.0);
        assert_eq!(c.top_p, 0.5);
        assert_eq!(c.top_k, Some(5));
        assert_eq!(c.max_tokens, 16);
        assert_eq!(c.seed, 7);
        assert_eq!(c.fim, FimChoice::Spm);
        assert_eq!((c.prefix_tokens, c.suffix_tokens), (100, 10));
        assert!(!c.postprocess);
        assert!(!c.cache);
        assert_eq!(c.time_budget, Some(Duration::from_millis(250)));
        assert_eq!(s.debounce, Some(Duration::ZERO));
        assert_eq!(s.completion_fallback, Some(true));
        assert_eq!(s.choices, 2);
        assert!(s.path_header);
        assert!(!s.events);
    }

    #[test]
    fn bad_values_keep_the_default_and_say_why() {
        let (s, p) = resolve(json!({
            "temperature": "hot", "topP": 1.5, "fimMode": "mps", "device": "tpu",
            "maxTokens": -3, "debounceMs": 50, "model": ""
        }));
        assert_eq!(
            s.completion.temperature,
            CompletionOptions::default().temperature
        );
        assert_eq!(s.completion.top_p, 0.95);
        assert_eq!(s.completion.fim, FimChoice::Auto);
        assert_eq!(s.model.device, DeviceSpec::Auto);
        assert_eq!(s.model.model, DEFAULT_MODEL);
        assert_eq!(s.debounce, Some(Duration::from_millis(50)));
        let all = p.errors.join("\n");
        for key in [
            "temperature",
            "topP",
            "fimMode",
            "device",
            "maxTokens",
            "model",
        ] {
            assert!(
                all.contains(&format!("`{key}`")),
                "{key} missing from {all}"
            );
        }
        assert_eq!(p.errors.len(), 6, "{all}");
        assert!(all.contains("expected f64"), "{all}");
        assert!(
            all.contains("must be above 0 and at most 1 (got 1.5)"),
            "{all}"
        );
    }

    #[test]
    fn an_invalid_value_keeps_the_value_in_force_for_every_key() {
        // (key, a valid value unlike the default, an invalid value)
        let table = [
            ("model", json!("/models/a"), json!("")),
            ("revision", json!("v2"), json!(5)),
            ("offline", json!(true), json!("yes")),
            ("device", json!("cpu"), json!("tpu")),
            ("dtype", json!("f16"), json!("int3")),
            ("temperature", json!(0.7), json!(9)),
            ("topP", json!(0.5), json!(0)),
            ("topK", json!(7), json!(0)),
            ("maxTokens", json!(12), json!(-3)),
            ("seed", json!(9), json!(-1)),
            ("debounceMs", json!(5), json!(20_000)),
            ("fimMode", json!("psm"), json!("mps")),
            ("prefixTokens", json!(100), json!(1_000_000)),
            ("suffixTokens", json!(10), json!(1_000_000)),
            ("postprocess", json!(false), json!("no")),
            ("completionFallback", json!(true), json!(1)),
            ("threads", json!(3), json!(0)),
            ("adapterMemoryMb", json!(64), json!(-1)),
            ("choices", json!(2), json!(99)),
            ("timeBudgetMs", json!(100), json!(0)),
            ("cache", json!(false), json!([])),
            ("pathHeader", json!(true), json!({})),
            ("adapters", json!({"/w": "/a"}), json!(5)),
            ("context", json!({"index": false}), json!({"index": "no"})),
            ("events", json!(false), json!("no")),
            ("engine", json!("llama.cpp"), json!("gpt5")),
            ("endpoint", json!("http://127.0.0.1:9"), json!("ftp://x")),
            ("remoteModel", json!("m"), json!(5)),
            ("apiKeyEnv", json!("KEY_VAR"), json!("A=b")),
            ("template", json!("qwen"), json!("nope")),
            ("tokenizer", json!("tok.json"), json!(5)),
        ];
        // A remote engine's other keys mean something only with an engine named: both
        // layers name one.
        let with_engine = [
            "endpoint",
            "remoteModel",
            "apiKeyEnv",
            "template",
            "tokenizer",
        ];
        let one = |k: &str, v: &Value| {
            let mut m = Map::from_iter([(k.to_string(), v.clone())]);
            if with_engine.contains(&k) {
                m.insert("engine".into(), json!("llama.cpp"));
            }
            Value::Object(m)
        };
        let cli = ServeOptions::default();
        let defaults = Settings::from_cli(&cli).unwrap();
        for key in KNOWN_KEYS {
            let (_, good, bad) = table
                .iter()
                .find(|(k, _, _)| k == key)
                .unwrap_or_else(|| panic!("`{key}` has no row in this table"));
            let (in_force, _, p) = load_over(&cli, &[&one(key, good)], &defaults);
            assert!(p.is_empty(), "{key}: {p:?}");
            assert_ne!(in_force, defaults, "{key}: the valid value must differ");
            // Given first in initializationOptions, then changed to an invalid value...
            let (s, _, p) = load_over(&cli, &[&Value::Null, &one(key, bad)], &in_force);
            assert_eq!(p.invalid, [key.to_string()], "{key}: {p:?}");
            assert_eq!(
                s, in_force,
                "{key}: the invalid value replaced the one in force"
            );
            // ...and over the layer that set it (the editor's init options).
            let (s, _, _) = load_over(&cli, &[&one(key, good), &one(key, bad)], &in_force);
            assert_eq!(s, in_force, "{key}");
        }
    }

    #[test]
    fn unknown_keys_are_reported_but_not_fatal() {
        let (s, p) = resolve(json!({"temprature": 0.1, "maxTokens": 8}));
        assert_eq!(p.unknown, vec!["temprature".to_string()]);
        assert!(p.errors.is_empty());
        assert_eq!(s.completion.max_tokens, 8);
        let msg = p.message().unwrap();
        assert!(
            msg.contains("unknown setting ignored: `temprature`"),
            "{msg}"
        );
    }

    #[test]
    fn nested_sections_and_non_objects() {
        let (s, p) = resolve(json!({"copilot-lsp": {"maxTokens": 9}, "editor": {"x": 1}}));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(s.completion.max_tokens, 9);
        let (_, p) = resolve(json!([1, 2]));
        assert_eq!(p.errors.len(), 1);
    }

    #[test]
    fn later_layers_win_and_cli_defaults_apply() {
        let cli = ServeOptions {
            model: Some("/cli/model".into()),
            device: Some("cpu".into()),
            ..ServeOptions::default()
        };
        let init = json!({"maxTokens": 10, "temperature": 0.5});
        let change = json!({"maxTokens": 20});
        let (s, merged, p) = load(&cli, &[&init, &change]);
        assert!(p.is_empty());
        assert_eq!(s.model.model, "/cli/model");
        assert_eq!(s.model.device, DeviceSpec::Cpu);
        assert_eq!(s.completion.max_tokens, 20);
        assert_eq!(s.completion.temperature, 0.5);
        assert_eq!(merged.max_tokens, Some(20));
        let (s, _, _) = load(&cli, &[&json!({"model": "/client/model"})]);
        assert_eq!(s.model.model, "/client/model");
    }

    #[test]
    fn remote_engine_keys() {
        let (s, p) = resolve(json!({
            "engine": "openai", "endpoint": "http://gpu-box:8000/", "remoteModel": "bigcode/starcoder2-3b",
            "apiKeyEnv": "VLLM_KEY", "template": "starcoder2", "tokenizer": "bigcode/starcoder2-3b"
        }));
        assert!(p.is_empty(), "{p:?}");
        let r = s.remote.clone().expect("a remote engine");
        assert_eq!(r.kind, copilot_remote::EngineKind::OpenAi);
        assert_eq!(r.endpoint, "http://gpu-box:8000");
        assert_eq!(r.model.as_deref(), Some("bigcode/starcoder2-3b"));
        assert_eq!(r.api_key_env.as_deref(), Some("VLLM_KEY"));
        assert_eq!(
            r.template,
            copilot_remote::TemplateChoice::Family(copilot_remote::Family::StarCoder2)
        );
        assert_eq!(s.engine(), copilot_service::EngineSpec::Remote(r));

        let (s, p) = resolve(json!({"engine": "embedded", "endpoint": "http://x:1"}));
        assert!(p.is_empty() && s.remote.is_none());
        assert!(matches!(
            s.engine(),
            copilot_service::EngineSpec::Embedded(_)
        ));

        // Bad values name their key and keep the embedded engine or the default.
        let (s, p) = resolve(json!({"engine": "tgi2", "template": "gpt"}));
        assert!(s.remote.is_none());
        let all = p.errors.join("\n");
        assert!(
            all.contains("`engine`") && all.contains("`template`"),
            "{all}"
        );
        let (s, p) = resolve(json!({"engine": "llama.cpp", "endpoint": "ftp://x"}));
        assert_eq!(s.remote.unwrap().endpoint, "http://127.0.0.1:8080");
        assert!(p.errors[0].contains("`endpoint`"), "{p:?}");
    }

    #[test]
    fn bad_cli_defaults_are_an_error() {
        let cli = ServeOptions {
            dtype: Some("int3".into()),
            ..ServeOptions::default()
        };
        assert!(Settings::from_cli(&cli).unwrap_err().contains("int3"));
    }
}
