//! `config.json` of a GPTBigCode checkpoint, parsed leniently: files written by different
//! transformers versions differ (`torch_dtype` or `dtype`, `n_inner: null`, GPT-2 or
//! "standard" key names), and unknown keys are ignored.

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Activation of the MLP, from `activation_function`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_pytorch_tanh`, `gelu_new`, `gelu_fast`: the tanh approximation.
    GeluTanh,
    /// `gelu`: the exact erf form.
    GeluErf,
    Relu,
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
    #[serde(default)]
    pub n_inner: Option<usize>,
    pub vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    #[serde(default = "default_true")]
    pub multi_query: bool,
    #[serde(default = "default_activation")]
    pub activation_function: String,
    #[serde(default = "default_true")]
    pub scale_attn_weights: bool,
    #[serde(default = "default_true")]
    pub tie_word_embeddings: bool,
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
        let cfg: Config = serde_json::from_str(text).map_err(|e| err(e.to_string()))?;
        if cfg.model_type != "gpt_bigcode" {
            return Err(err(format!(
                "model_type is `{}`, expected `gpt_bigcode` (StarCoder architecture)",
                cfg.model_type
            )));
        }
        if cfg.n_head == 0 || !cfg.n_embd.is_multiple_of(cfg.n_head) {
            return Err(err(format!(
                "n_embd {} is not a multiple of n_head {}",
                cfg.n_embd, cfg.n_head
            )));
        }
        if cfg.n_layer == 0 || cfg.vocab_size == 0 || cfg.n_positions == 0 {
            return Err(err("n_layer, vocab_size and n_positions must be > 0".into()));
        }
        cfg.activation().map_err(err)?;
        Ok(cfg)
    }

    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    pub fn kv_heads(&self) -> usize {
        if self.multi_query {
            1
        } else {
            self.n_head
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
            other => Err(format!("unsupported activation_function `{other}`")),
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
    fn rejects_other_architectures_and_bad_shapes() {
        let e = parse(r#"{"model_type":"llama","n_embd":64,"n_head":4,"n_layer":2,"n_positions":8,"vocab_size":3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("llama"), "{e}");
        let e = parse(r#"{"n_embd":65,"n_head":4,"n_layer":2,"n_positions":8,"vocab_size":3}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("multiple"), "{e}");
        let e = parse(r#"{"n_embd":64,"n_head":4,"n_layer":2,"n_positions":8,"vocab_size":3,"activation_function":"swish"}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("swish"), "{e}");
    }
}
