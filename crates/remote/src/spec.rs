//! What the settings say about a remote engine: which API, where, which model, which key,
//! which FIM template, which tokenizer. Parsed from the raw strings of the LSP settings and
//! the CLI flags alike, so the two cannot disagree. Knows no LSP and no HTTP.

use std::time::Duration;

use crate::template::Family;

/// Which server API to speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineKind {
    /// llama.cpp's `llama-server`: `/infill`, `/tokenize`, `/props`.
    LlamaCpp,
    /// Ollama: `/api/generate`, `/api/show`.
    Ollama,
    /// OpenAI-compatible `/v1/completions`: vLLM, TGI, LM Studio, llama-server, Ollama's `/v1`.
    OpenAi,
}

impl EngineKind {
    /// The name the settings use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LlamaCpp => "llama.cpp",
            Self::Ollama => "ollama",
            Self::OpenAi => "openai",
        }
    }
}

/// The `engine` setting: ours, or a remote one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EngineChoice {
    Embedded,
    Remote(EngineKind),
}

impl std::str::FromStr for EngineChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "embedded" | "local" => Ok(Self::Embedded),
            "llama.cpp" | "llamacpp" | "llama-cpp" | "llama-server" => {
                Ok(Self::Remote(EngineKind::LlamaCpp))
            }
            "ollama" => Ok(Self::Remote(EngineKind::Ollama)),
            "openai" | "openai-compatible" => Ok(Self::Remote(EngineKind::OpenAi)),
            other => Err(format!(
                "unknown engine `{other}` (expected embedded, llama.cpp, ollama or openai)"
            )),
        }
    }
}

/// The `template` setting: which FIM format to render prompts in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum TemplateChoice {
    /// From the model's name (`remoteModel`, or what the server reports); StarCoder's when
    /// the name says nothing. For Ollama, `auto` leaves the format to the model's own
    /// template (`suffix`, not `raw`).
    #[default]
    Auto,
    Family(Family),
}

impl std::str::FromStr for TemplateChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        if s == "auto" {
            return Ok(Self::Auto);
        }
        Family::from_name(&s).map(Self::Family).ok_or_else(|| {
            format!(
                "unknown template `{s}` (expected auto, {})",
                Family::ALL
                    .iter()
                    .map(|f| f.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    }
}

/// How long to wait for a remote engine. Typing must never wait on a dead one: connecting is
/// given little time, and while an engine is failing requests answer at once (`backoff.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// TCP (and TLS) connection, DNS included.
    pub connect: Duration,
    /// From sending a request to the response's headers (streaming servers answer them at
    /// once, before the prompt is computed).
    pub response: Duration,
    /// Between two pieces of a streamed answer (the first one waits for the prompt's
    /// computation).
    pub idle: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(2),
            response: Duration::from_secs(5),
            idle: Duration::from_secs(20),
        }
    }
}

/// A remote engine, as the settings describe it. Holds the *name* of the API key's
/// environment variable, never the key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemoteSpec {
    pub kind: EngineKind,
    /// Base URL (`http://127.0.0.1:8080`); the API paths are appended.
    pub endpoint: String,
    /// The model name the server expects (`remoteModel`); required by Ollama, asked of the
    /// server (`/v1/models`) for OpenAI-compatible ones when not given.
    pub model: Option<String>,
    /// The environment variable holding a bearer token (`apiKeyEnv`).
    pub api_key_env: Option<String>,
    pub template: TemplateChoice,
    /// `tokenizer.json` (file or its directory), a `.gguf` file, or a hub repository id.
    pub tokenizer: Option<String>,
    pub timeouts: Timeouts,
}

/// The default endpoint of each server, as it starts without flags.
pub fn default_endpoint(kind: EngineKind) -> &'static str {
    match kind {
        EngineKind::LlamaCpp => "http://127.0.0.1:8080",
        EngineKind::Ollama => "http://127.0.0.1:11434",
        EngineKind::OpenAi => "http://127.0.0.1:8000",
    }
}

/// The raw strings a remote engine is configured with (settings keys or CLI flags).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteArgs<'a> {
    pub engine: Option<&'a str>,
    pub endpoint: Option<&'a str>,
    pub model: Option<&'a str>,
    pub api_key_env: Option<&'a str>,
    pub template: Option<&'a str>,
    pub tokenizer: Option<&'a str>,
}

/// Which key a problem is about, and what is wrong (for the front-end's message).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecProblem {
    pub key: &'static str,
    pub message: String,
}

impl RemoteArgs<'_> {
    /// The remote engine asked for (`None`: the embedded one), and the problems found. A bad
    /// `engine` keeps the embedded engine; a bad `template` keeps `auto`.
    pub fn resolve(&self) -> (Option<RemoteSpec>, Vec<SpecProblem>) {
        let mut problems = Vec::new();
        fn given(v: Option<&str>) -> Option<&str> {
            v.map(str::trim).filter(|v| !v.is_empty())
        }
        let kind = match given(self.engine).map(str::parse::<EngineChoice>) {
            None | Some(Ok(EngineChoice::Embedded)) => None,
            Some(Ok(EngineChoice::Remote(k))) => Some(k),
            Some(Err(message)) => {
                problems.push(SpecProblem {
                    key: "engine",
                    message,
                });
                None
            }
        };
        let template = match given(self.template).map(str::parse::<TemplateChoice>) {
            None => TemplateChoice::Auto,
            Some(Ok(t)) => t,
            Some(Err(message)) => {
                problems.push(SpecProblem {
                    key: "template",
                    message,
                });
                TemplateChoice::Auto
            }
        };
        let Some(kind) = kind else {
            return (None, problems);
        };
        let endpoint = match given(self.endpoint) {
            None => default_endpoint(kind).to_string(),
            Some(e) => match check_endpoint(e) {
                Ok(e) => e,
                Err(message) => {
                    problems.push(SpecProblem {
                        key: "endpoint",
                        message,
                    });
                    default_endpoint(kind).to_string()
                }
            },
        };
        let api_key_env = given(self.api_key_env).map(str::to_string);
        if let Some(name) = &api_key_env {
            if name.contains('=') || name.contains('\0') {
                problems.push(SpecProblem {
                    key: "apiKeyEnv",
                    message: "must name an environment variable (not hold the key)".into(),
                });
            }
        }
        let model = given(self.model).map(str::to_string);
        if kind == EngineKind::Ollama && model.is_none() {
            problems.push(SpecProblem {
                key: "remoteModel",
                message: "Ollama needs the model's name (e.g. `qwen2.5-coder:1.5b`)".into(),
            });
        }
        let spec = RemoteSpec {
            kind,
            endpoint,
            model,
            api_key_env,
            template,
            tokenizer: given(self.tokenizer).map(str::to_string),
            timeouts: Timeouts::default(),
        };
        (Some(spec), problems)
    }
}

/// `http(s)://host[:port][/base]`, trailing slashes dropped, or why not.
pub fn check_endpoint(e: &str) -> Result<String, String> {
    let url = reqwest::Url::parse(e).map_err(|err| format!("`{e}` is not a URL: {err}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!(
            "`{e}`: only http and https endpoints are supported"
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(format!("`{e}` has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Not quoted: the message must not repeat a secret.
        return Err(
            "the URL holds credentials: put the key in an environment variable and \
                    name the variable in `apiKeyEnv`"
                .to_string(),
        );
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("`{e}` must not have a query or fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args<'a>(engine: &'a str, endpoint: Option<&'a str>) -> RemoteArgs<'a> {
        RemoteArgs {
            engine: Some(engine),
            endpoint,
            ..RemoteArgs::default()
        }
    }

    #[test]
    fn engines_by_name() {
        for (name, want) in [
            ("embedded", EngineChoice::Embedded),
            ("llama.cpp", EngineChoice::Remote(EngineKind::LlamaCpp)),
            ("Llama-Server", EngineChoice::Remote(EngineKind::LlamaCpp)),
            (" ollama ", EngineChoice::Remote(EngineKind::Ollama)),
            ("openai", EngineChoice::Remote(EngineKind::OpenAi)),
        ] {
            assert_eq!(name.parse::<EngineChoice>().unwrap(), want, "{name}");
        }
        assert!("tgi-ish"
            .parse::<EngineChoice>()
            .unwrap_err()
            .contains("tgi-ish"));
    }

    #[test]
    fn resolving_fills_defaults_and_names_bad_keys() {
        let (spec, p) = args("llama.cpp", None).resolve();
        assert!(p.is_empty(), "{p:?}");
        let spec = spec.unwrap();
        assert_eq!(spec.endpoint, "http://127.0.0.1:8080");
        assert_eq!(spec.template, TemplateChoice::Auto);

        let (spec, p) = args("openai", Some("http://gpu-box:8000/")).resolve();
        assert!(p.is_empty());
        assert_eq!(spec.unwrap().endpoint, "http://gpu-box:8000");

        let (spec, p) = args("embedded", Some("http://x")).resolve();
        assert!(spec.is_none() && p.is_empty());

        for (bad, why) in [
            ("ftp://x", "only http"),
            ("not a url", "not a URL"),
            ("http://user:secret@host", "credentials"),
            ("http://h/?k=1", "query"),
        ] {
            let (spec, p) = args("llama.cpp", Some(bad)).resolve();
            assert_eq!(spec.unwrap().endpoint, "http://127.0.0.1:8080", "{bad}");
            assert_eq!(p.len(), 1, "{bad}: {p:?}");
            assert_eq!(p[0].key, "endpoint");
            assert!(p[0].message.contains(why), "{bad}: {}", p[0].message);
        }
        // The credential is not repeated in the message.
        let (_, p) = args("llama.cpp", Some("http://user:secret@host")).resolve();
        assert!(!p[0].message.contains("secret"), "{}", p[0].message);

        let (spec, p) = RemoteArgs {
            engine: Some("ollama"),
            template: Some("starcoder3"),
            ..RemoteArgs::default()
        }
        .resolve();
        assert_eq!(spec.unwrap().template, TemplateChoice::Auto);
        let keys: Vec<_> = p.iter().map(|p| p.key).collect();
        assert_eq!(keys, ["template", "remoteModel"]);

        let (spec, p) = args("vllm?", None).resolve();
        assert!(spec.is_none());
        assert_eq!(p[0].key, "engine");
    }

    #[test]
    fn templates_by_name() {
        assert_eq!("auto".parse::<TemplateChoice>(), Ok(TemplateChoice::Auto));
        for f in Family::ALL {
            assert_eq!(
                f.name().parse::<TemplateChoice>(),
                Ok(TemplateChoice::Family(f))
            );
        }
        assert!("gpt"
            .parse::<TemplateChoice>()
            .unwrap_err()
            .contains("starcoder2"));
    }
}
