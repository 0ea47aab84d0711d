//! Configuration: raw [`Options`] as the client sends them (camelCase JSON, in
//! `initializationOptions` or `workspace/didChangeConfiguration`), resolved into validated
//! [`Settings`] over the command line's defaults ([`ServeOptions`]).
//!
//! Every key is parsed with serde on its own, so one bad value never loses the others: a bad
//! value keeps the default and yields a clear message, an unknown key a warning.

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
    /// Context from the rest of the workspace: `{openFiles, imports, index, maxTokens,
    /// maxIndexFiles}`.
    context: ContextOptions = "context",
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
                Err(e) => problems.errors.push(e),
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
    pub context: copilot_context::ContextSettings,
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
        copilot_service::EngineSpec::Embedded(self.model.clone())
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
        let mut errors = Vec::new();
        let check = |errors: &mut Vec<String>, key: &str, ok: bool, rule: &str, got: String| {
            if !ok {
                errors.push(format!("invalid value for `{key}`: {rule} (got {got})"));
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
                &mut errors,
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
                    Err(e) => errors.push(format!("invalid value for `{key}`: {e}")),
                }
            }
        }
        for (key, given) in [("dtype", &opts.dtype), ("dtype", &cli.dtype)] {
            if let Some(d) = given {
                match d.parse::<DTypeSpec>() {
                    Ok(d) => {
                        model.dtype = d;
                        break;
                    }
                    Err(e) => errors.push(format!("invalid value for `{key}`: {e}")),
                }
            }
        }
        if let Some(t) = opts.threads {
            if check(
                &mut errors,
                "threads",
                (1..=256).contains(&t),
                "must be 1 to 256",
                t.to_string(),
            ) {
                model.threads = Some(t);
            }
        }

        let mut c = CompletionOptions::default();
        if let Some(t) = opts.temperature {
            if check(
                &mut errors,
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
                &mut errors,
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
                &mut errors,
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
                &mut errors,
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
                Err(e) => errors.push(format!("invalid value for `fimMode`: {e}")),
            }
        }
        if let Some(n) = opts.prefix_tokens {
            if check(
                &mut errors,
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
                &mut errors,
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
                &mut errors,
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
                &mut errors,
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
                &mut errors,
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
                    &mut errors,
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
                    &mut errors,
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
                context,
                auto_budget: opts.prefix_tokens.is_none() && opts.suffix_tokens.is_none(),
            },
            Problems {
                errors,
                unknown: Vec::new(),
            },
        )
    }
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
    }

    #[test]
    fn every_documented_key_is_read() {
        let (s, p) = resolve(json!({
            "model": "/models/pico", "revision": "main", "offline": true, "device": "cpu",
            "dtype": "f32", "temperature": 0, "topP": 0.5, "maxTokens": 16, "debounceMs": 0,
            "fimMode": "spm", "prefixTokens": 100, "suffixTokens": 10, "postprocess": false,
            "completionFallback": true, "threads": 2, "topK": 5, "seed": 7, "choices": 2,
            "timeBudgetMs": 250, "cache": false, "pathHeader": true
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
    fn bad_cli_defaults_are_an_error() {
        let cli = ServeOptions {
            dtype: Some("int3".into()),
            ..ServeOptions::default()
        };
        assert!(Settings::from_cli(&cli).unwrap_err().contains("int3"));
    }
}
