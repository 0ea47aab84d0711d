//! `config.json` of a checkpoint, parsed leniently into one [`Config`] for every architecture
//! we run: files written by different transformers versions differ (`torch_dtype` or `dtype`,
//! `n_inner: null`, GPT-2 or "standard" key names, `rope_theta` + `rope_scaling` before
//! transformers 5 and `rope_parameters` after), and unknown keys are ignored.
//!
//! [`Config::arch`] says which implementation runs it; [`Arch::SUPPORTED`] is the list an
//! unsupported `model_type` is told about.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// The architectures the engine implements, by hub `model_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Arch {
    /// StarCoder 1, tiny_starcoder_py, StarCoderBase (`gpt_bigcode`): learned positions, MQA.
    GptBigCode,
    /// DeepSeek-Coder, CodeLlama (`llama`): RoPE (linear scaling), GQA, RMSNorm, SwiGLU.
    Llama,
    /// Qwen2.5-Coder (`qwen2`): Llama with q/k/v biases, usually tied embeddings.
    Qwen2,
    /// StarCoder2 (`starcoder2`): RoPE, GQA, LayerNorm with bias, GELU MLP, sliding window.
    Starcoder2,
}

impl Arch {
    /// Every supported architecture, in the order messages list them.
    pub const SUPPORTED: [Arch; 4] = [Arch::GptBigCode, Arch::Llama, Arch::Qwen2, Arch::Starcoder2];

    /// The hub `model_type`.
    pub fn model_type(self) -> &'static str {
        match self {
            Arch::GptBigCode => "gpt_bigcode",
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Starcoder2 => "starcoder2",
        }
    }

    pub fn from_model_type(s: &str) -> Option<Self> {
        Self::SUPPORTED.into_iter().find(|a| a.model_type() == s)
    }

    /// llama.cpp's `general.architecture` for it.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Arch::GptBigCode => "starcoder",
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Starcoder2 => "starcoder2",
        }
    }

    pub fn from_gguf_name(s: &str) -> Option<Self> {
        Self::SUPPORTED.into_iter().find(|a| a.gguf_name() == s)
    }

    /// `gpt_bigcode, llama, qwen2, starcoder2` (or the GGUF names).
    pub fn supported_list(gguf: bool) -> String {
        Self::SUPPORTED
            .iter()
            .map(|a| if gguf { a.gguf_name() } else { a.model_type() })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The prefix of block `i`'s tensor names: `transformer.h` or `model.layers`.
    pub fn block_prefix(self) -> &'static str {
        match self {
            Arch::GptBigCode => "transformer.h",
            _ => "model.layers",
        }
    }

    /// Whether positions are rotary (every architecture but GPTBigCode).
    pub fn uses_rope(self) -> bool {
        self != Arch::GptBigCode
    }
}

/// Activation of the MLP, from `activation_function` / `hidden_act`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `gelu`: the exact erf form.
    GeluErf,
    Relu,
    /// `silu`: the gate of a SwiGLU MLP (Llama, Qwen2).
    Silu,
}

/// How rotary positions are scaled beyond the trained context.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RopeScaling {
    /// Positions divided by `factor` (DeepSeek-Coder: 4).
    Linear { factor: f64 },
}

/// `rope_scaling` (transformers 4) or `rope_parameters` (transformers 5), as written.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RopeJson {
    #[serde(default, alias = "type", skip_serializing_if = "Option::is_none")]
    pub rope_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub factor: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    #[serde(default = "default_model_type")]
    pub model_type: String,
    #[serde(alias = "hidden_size")]
    pub n_embd: usize,
    #[serde(alias = "num_attention_heads")]
    pub n_head: usize,
    #[serde(alias = "num_hidden_layers")]
    pub n_layer: usize,
    #[serde(alias = "max_position_embeddings")]
    pub n_positions: usize,
    /// `null` or absent means 4 * n_embd.
    #[serde(default, alias = "intermediate_size")]
    pub n_inner: Option<usize>,
    pub vocab_size: usize,
    #[serde(
        default = "default_eps",
        alias = "rms_norm_eps",
        alias = "norm_epsilon"
    )]
    pub layer_norm_epsilon: f64,
    /// GPTBigCode only: one shared K/V head. Other architectures say `num_key_value_heads`.
    #[serde(default = "default_true")]
    pub multi_query: bool,
    #[serde(default = "default_activation", alias = "hidden_act")]
    pub activation_function: String,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
    /// Grouped-query attention: K/V heads (RoPE architectures; absent means `n_head`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub num_key_value_heads: Option<usize>,
    /// Per-head size when it is not `n_embd / n_head` (Llama's `head_dim`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_dim: Option<usize>,
    /// RoPE base (transformers 4's key; transformers 5 writes `rope_parameters`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_theta: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_scaling: Option<RopeJson>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rope_parameters: Option<RopeJson>,
    /// Keys at most this far back (`q - k < window`); StarCoder2 4,096. Qwen2 only with
    /// `use_sliding_window`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sliding_window: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_sliding_window: Option<bool>,
    /// Llama: biases on q/k/v/o (`attention_bias`) and on the MLP (`mlp_bias`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_bias: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlp_bias: Option<bool>,
    /// StarCoder2: biases on every projection and norm (`use_bias`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub use_bias: Option<bool>,
}

fn default_model_type() -> String {
    "gpt_bigcode".into()
}
fn default_eps() -> f64 {
    1e-5
}
fn default_true() -> bool {
    true
}
fn default_activation() -> String {
    "gelu_pytorch_tanh".into()
}

impl Config {
    /// Parse and validate the text of a `config.json`; `path` is only used in messages.
    pub fn from_json(text: &str, path: &std::path::Path) -> Result<Self> {
        let err = |message: String| EngineError::Config {
            path: path.to_path_buf(),
            message,
        };
        // The architecture first: a model we do not run says so, whatever else it holds.
        let model_type = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| {
                v.get("model_type")
                    .and_then(|t| t.as_str())
                    .map(String::from)
            });
        if let Some(t) = &model_type {
            if Arch::from_model_type(t).is_none() {
                return Err(err(format!(
                    "model_type `{t}` is not supported (supported: {})",
                    Arch::supported_list(false)
                )));
            }
        }
        let mut cfg: Config = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        if cfg.arch() != Arch::GptBigCode && model_type.is_some() {
            // GPTBigCode's defaults do not apply to the RoPE architectures.
            let raw: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
            if raw.get("activation_function").is_none() && raw.get("hidden_act").is_none() {
                cfg.activation_function = match cfg.arch() {
                    Arch::Starcoder2 => "gelu_pytorch_tanh".into(),
                    _ => "silu".into(),
                };
            }
        }
        cfg.validate().map_err(err)?;
        Ok(cfg)
    }

    /// The checks every source of a configuration (config.json, GGUF metadata) goes through.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if Arch::from_model_type(&self.model_type).is_none() {
            return Err(format!(
                "model_type `{}` is not supported (supported: {})",
                self.model_type,
                Arch::supported_list(false)
            ));
        }
        if self.n_head == 0 || (self.head_dim.is_none() && !self.n_embd.is_multiple_of(self.n_head))
        {
            return Err(format!(
                "n_embd {} is not a multiple of n_head {}",
                self.n_embd, self.n_head
            ));
        }
        if self.n_layer == 0 || self.vocab_size == 0 || self.n_positions == 0 {
            return Err("n_layer, vocab_size and n_positions must be > 0".into());
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.n_head.is_multiple_of(kv) {
            return Err(format!(
                "num_key_value_heads {kv} does not divide num_attention_heads {}",
                self.n_head
            ));
        }
        if self.arch().uses_rope() && !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "head_dim {} is odd: RoPE needs pairs",
                self.head_dim()
            ));
        }
        if self.sliding_window == Some(0) && self.window().is_some() {
            return Err("sliding_window must be > 0".into());
        }
        let act = self.activation()?;
        match self.arch() {
            Arch::Llama | Arch::Qwen2 if act != Activation::Silu => Err(format!(
                "hidden_act `{}`: {} is implemented with a SwiGLU (silu) MLP only",
                self.activation_function, self.model_type
            )),
            Arch::GptBigCode | Arch::Starcoder2 if act == Activation::Silu => Err(format!(
                "hidden_act `silu` is not supported for {}",
                self.model_type
            )),
            _ => Ok(()),
        }?;
        if self.arch() == Arch::Qwen2 && self.use_sliding_window == Some(true) {
            return Err(
                "qwen2 with use_sliding_window: true is not supported (Qwen2.5-Coder does not \
                 use it)"
                    .into(),
            );
        }
        self.rope_scaling_kind()?;
        Ok(())
    }

    /// The architecture (validated: every `Config` from [`Config::from_json`] has one).
    pub fn arch(&self) -> Arch {
        Arch::from_model_type(&self.model_type).unwrap_or(Arch::GptBigCode)
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim.unwrap_or(self.n_embd / self.n_head.max(1))
    }

    pub fn kv_heads(&self) -> usize {
        match self.arch() {
            Arch::GptBigCode if self.multi_query => 1,
            Arch::GptBigCode => self.n_head,
            _ => self.num_key_value_heads.unwrap_or(self.n_head),
        }
    }

    pub fn inner_dim(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }

    pub fn activation(&self) -> std::result::Result<Activation, String> {
        match self.activation_function.as_str() {
            "gelu_pytorch_tanh" | "gelu_new" | "gelu_fast" => Ok(Activation::GeluTanh),
            "gelu" => Ok(Activation::GeluErf),
            "relu" => Ok(Activation::Relu),
            "silu" | "swish" if self.arch().uses_rope() => Ok(Activation::Silu),
            other => Err(format!("unsupported activation_function `{other}`")),
        }
    }

    /// The RoPE base: `rope_parameters.rope_theta`, else `rope_theta`, else 10,000.
    pub fn rope_base(&self) -> f64 {
        self.rope_parameters
            .as_ref()
            .and_then(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(10_000.0)
    }

    /// The RoPE scaling, if any (`rope_parameters` wins over `rope_scaling`).
    pub fn rope_scaling_kind(&self) -> std::result::Result<Option<RopeScaling>, String> {
        let p = self.rope_parameters.as_ref().or(self.rope_scaling.as_ref());
        let Some(p) = p else { return Ok(None) };
        match p.rope_type.as_deref() {
            None | Some("default") => Ok(None),
            Some("linear") => match p.factor {
                Some(f) if f > 0.0 => Ok(Some(RopeScaling::Linear { factor: f })),
                _ => Err("linear rope scaling needs a positive factor".into()),
            },
            Some(other) => Err(format!(
                "rope scaling `{other}` is not supported (supported: linear)"
            )),
        }
    }

    /// The attention window in tokens, if attention is local: StarCoder2's `sliding_window`,
    /// Qwen2's only with `use_sliding_window` (rejected by [`Config::validate`]).
    pub fn window(&self) -> Option<usize> {
        match self.arch() {
            Arch::Starcoder2 => self.sliding_window,
            _ => None,
        }
    }

    /// Whether q/k/v carry biases.
    pub fn qkv_bias(&self) -> bool {
        match self.arch() {
            Arch::GptBigCode | Arch::Qwen2 => true,
            Arch::Llama => self.attention_bias.unwrap_or(false),
            Arch::Starcoder2 => self.use_bias.unwrap_or(true),
        }
    }

    /// Whether the attention output projection carries a bias.
    pub fn o_bias(&self) -> bool {
        match self.arch() {
            Arch::GptBigCode => true,
            Arch::Qwen2 => false,
            Arch::Llama => self.attention_bias.unwrap_or(false),
            Arch::Starcoder2 => self.use_bias.unwrap_or(true),
        }
    }

    /// Whether the MLP projections carry biases.
    pub fn mlp_bias(&self) -> bool {
        match self.arch() {
            Arch::GptBigCode => true,
            Arch::Qwen2 => false,
            Arch::Llama => self.mlp_bias.unwrap_or(false),
            Arch::Starcoder2 => self.use_bias.unwrap_or(true),
        }
    }

    /// bigcode/tiny_starcoder_py's exact shape (for benchmarks with random weights).
    pub fn tiny_starcoder_py() -> Self {
        Self {
            model_type: default_model_type(),
            n_embd: 768,
            n_head: 12,
            n_layer: 20,
            n_positions: 8192,
            n_inner: Some(3072),
            vocab_size: 49152,
            layer_norm_epsilon: 1e-5,
            multi_query: true,
            activation_function: default_activation(),
            scale_attn_weights: true,
            tie_word_embeddings: true,
            num_key_value_heads: None,
            head_dim: None,
            rope_theta: None,
            rope_scaling: None,
            rope_parameters: None,
            sliding_window: None,
            use_sliding_window: None,
            attention_bias: None,
            mlp_bias: None,
            use_bias: None,
        }
    }

    /// Qwen/Qwen2.5-Coder-0.5B's exact shape (24 layers, hidden 896, 14 heads over 2 K/V
    /// heads, SwiGLU 4,864, 32,768 positions, RoPE base 1e6, tied embeddings).
    pub fn qwen2_5_coder_0_5b() -> Self {
        Self {
            model_type: "qwen2".into(),
            n_embd: 896,
            n_head: 14,
            n_layer: 24,
            n_positions: 32768,
            n_inner: Some(4864),
            vocab_size: 151936,
            layer_norm_epsilon: 1e-6,
            multi_query: false,
            activation_function: "silu".into(),
            num_key_value_heads: Some(2),
            rope_theta: Some(1_000_000.0),
            ..Self::tiny_starcoder_py()
        }
    }

    /// Qwen/Qwen2.5-Coder-1.5B's exact shape.
    pub fn qwen2_5_coder_1_5b() -> Self {
        Self {
            n_embd: 1536,
            n_head: 12,
            n_layer: 28,
            n_inner: Some(8960),
            ..Self::qwen2_5_coder_0_5b()
        }
    }

    /// A few-layer model for tests: fast to create and to run.
    pub fn tiny_test(vocab_size: usize) -> Self {
        Self {
            n_embd: 64,
            n_head: 4,
            n_layer: 2,
            n_positions: 512,
            n_inner: None,
            vocab_size,
            ..Self::tiny_starcoder_py()
        }
    }

    /// A tiny RoPE model of `arch` for tests: 2 layers, 4 heads over 2 K/V heads.
    pub fn tiny_rope_test(arch: Arch, vocab_size: usize) -> Self {
        let mut cfg = Self {
            model_type: arch.model_type().into(),
            n_embd: 64,
            n_head: 4,
            n_layer: 2,
            n_positions: 512,
            n_inner: Some(96),
            vocab_size,
            multi_query: false,
            num_key_value_heads: Some(2),
            rope_theta: Some(10_000.0),
            ..Self::tiny_starcoder_py()
        };
        match arch {
            Arch::Starcoder2 => {
                cfg.sliding_window = Some(16);
                cfg.use_bias = Some(true);
            }
            Arch::Llama => {
                cfg.activation_function = "silu".into();
                cfg.tie_word_embeddings = false;
                cfg.rope_scaling = Some(RopeJson {
                    rope_type: Some("linear".into()),
                    factor: Some(2.0),
                    rope_theta: None,
                });
            }
            Arch::Qwen2 => cfg.activation_function = "silu".into(),
            Arch::GptBigCode => return Self::tiny_test(vocab_size),
        }
        cfg
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config> {
        Config::from_json(text, Path::new("config.json"))
    }

    #[test]
    fn parses_hub_config_with_null_n_inner_and_unknown_keys() {
        let cfg = parse(
            r#"{"model_type":"gpt_bigcode","n_embd":768,"n_head":12,"n_layer":20,
            "n_positions":8192,"n_inner":null,"vocab_size":49152,"torch_dtype":"float32",
            "architectures":["GPTBigCodeForCausalLM"],"activation_function":"gelu_pytorch_tanh"}"#,
        )
        .unwrap();
        assert_eq!(cfg.inner_dim(), 3072);
        assert!(cfg.multi_query);
        assert_eq!(cfg.head_dim(), 64);
        assert_eq!(cfg.activation(), Ok(Activation::GeluTanh));
        assert_eq!(cfg.arch(), Arch::GptBigCode);
    }

    #[test]
    fn accepts_standard_key_names() {
        let cfg = parse(
            r#"{"hidden_size":64,"num_attention_heads":4,"num_hidden_layers":2,
            "max_position_embeddings":128,"vocab_size":300,"multi_query":false,"activation_function":"gelu"}"#,
        )
        .unwrap();
        assert_eq!(cfg.kv_heads(), 4);
        assert_eq!(cfg.activation(), Ok(Activation::GeluErf));
    }

    #[test]
    fn qwen2_5_coder_hub_config() {
        // Qwen/Qwen2.5-Coder-1.5B's config.json (transformers 4 keys).
        let cfg = parse(
            r#"{"architectures":["Qwen2ForCausalLM"],"attention_dropout":0.0,
            "bos_token_id":151643,"eos_token_id":151643,"hidden_act":"silu","hidden_size":1536,
            "initializer_range":0.02,"intermediate_size":8960,"max_position_embeddings":32768,
            "max_window_layers":21,"model_type":"qwen2","num_attention_heads":12,
            "num_hidden_layers":28,"num_key_value_heads":2,"rms_norm_eps":1e-06,
            "rope_theta":1000000.0,"sliding_window":131072,"tie_word_embeddings":true,
            "torch_dtype":"bfloat16","transformers_version":"4.44.0","use_cache":true,
            "use_sliding_window":false,"vocab_size":151936}"#,
        )
        .unwrap();
        assert_eq!(cfg.arch(), Arch::Qwen2);
        assert_eq!(
            (cfg.kv_heads(), cfg.head_dim(), cfg.inner_dim()),
            (2, 128, 8960)
        );
        assert_eq!(cfg.layer_norm_epsilon, 1e-6);
        assert_eq!(cfg.rope_base(), 1e6);
        assert_eq!(cfg.rope_scaling_kind(), Ok(None));
        assert_eq!(cfg.window(), None, "use_sliding_window is false");
        assert!(cfg.qkv_bias() && !cfg.o_bias() && !cfg.mlp_bias());
        assert_eq!(cfg.activation(), Ok(Activation::Silu));
        let want = Config::qwen2_5_coder_1_5b();
        assert_eq!(
            (cfg.n_embd, cfg.n_layer, cfg.n_head),
            (want.n_embd, want.n_layer, want.n_head)
        );
    }

    #[test]
    fn deepseek_coder_linear_rope_scaling_both_spellings() {
        // deepseek-ai/deepseek-coder-1.3b-base (transformers 4) and as transformers 5 writes it.
        let v4 = r#"{"model_type":"llama","hidden_size":2048,"intermediate_size":5504,
            "num_attention_heads":16,"num_hidden_layers":24,"num_key_value_heads":16,
            "max_position_embeddings":16384,"rms_norm_eps":1e-06,"vocab_size":32256,
            "rope_scaling":{"factor":4.0,"type":"linear"},"rope_theta":100000,
            "hidden_act":"silu","tie_word_embeddings":false}"#;
        let v5 = r#"{"model_type":"llama","hidden_size":2048,"intermediate_size":5504,
            "num_attention_heads":16,"num_hidden_layers":24,"num_key_value_heads":16,
            "max_position_embeddings":16384,"rms_norm_eps":1e-06,"vocab_size":32256,
            "rope_parameters":{"factor":4.0,"rope_type":"linear","rope_theta":100000.0},
            "tie_word_embeddings":false}"#;
        for text in [v4, v5] {
            let cfg = parse(text).unwrap();
            assert_eq!(cfg.arch(), Arch::Llama);
            assert_eq!(cfg.rope_base(), 100_000.0);
            assert_eq!(
                cfg.rope_scaling_kind(),
                Ok(Some(RopeScaling::Linear { factor: 4.0 }))
            );
            assert!(!cfg.qkv_bias() && !cfg.mlp_bias() && !cfg.tie_word_embeddings);
            assert_eq!(cfg.activation(), Ok(Activation::Silu), "silu by default");
        }
    }

    #[test]
    fn starcoder2_sliding_window_and_biases() {
        let cfg = parse(
            r#"{"model_type":"starcoder2","hidden_size":3072,"intermediate_size":12288,
            "num_attention_heads":24,"num_hidden_layers":30,"num_key_value_heads":2,
            "max_position_embeddings":16384,"norm_epsilon":1e-05,"rope_theta":999999.4420358813,
            "sliding_window":4096,"use_bias":true,"vocab_size":49152,
            "hidden_act":"gelu_pytorch_tanh"}"#,
        )
        .unwrap();
        assert_eq!(cfg.window(), Some(4096));
        assert!(cfg.qkv_bias() && cfg.o_bias() && cfg.mlp_bias());
        assert_eq!(cfg.kv_heads(), 2);
        assert_eq!(cfg.activation(), Ok(Activation::GeluTanh));
    }

    #[test]
    fn unsupported_architectures_name_themselves_and_the_supported_list() {
        let e = parse(r#"{"model_type":"mistral","hidden_size":64,"num_attention_heads":4}"#)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`mistral`") && e.contains("gpt_bigcode, llama, qwen2, starcoder2"),
            "{e}"
        );
        assert_eq!(e.lines().count(), 1, "{e}");
    }

    #[test]
    fn rejects_bad_shapes_and_unsupported_options() {
        let e = parse(r#"{"n_embd":65,"n_head":4,"n_layer":2,"n_positions":8,"vocab_size":3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple"), "{e}");
        let e = parse(r#"{"n_embd":64,"n_head":4,"n_layer":2,"n_positions":8,"vocab_size":3,"activation_function":"swish"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("swish"), "{e}");
        let base = r#""model_type":"llama","hidden_size":64,"num_attention_heads":4,
            "num_hidden_layers":2,"max_position_embeddings":8,"vocab_size":3"#;
        let e = parse(&format!(r#"{{{base},"num_key_value_heads":3}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("num_key_value_heads 3"), "{e}");
        let e = parse(&format!(
            r#"{{{base},"rope_scaling":{{"type":"yarn","factor":4}}}}"#
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("yarn"), "{e}");
        let e = parse(&format!(r#"{{{base},"hidden_act":"gelu"}}"#))
            .unwrap_err()
            .to_string();
        assert!(e.contains("SwiGLU"), "{e}");
    }
}
