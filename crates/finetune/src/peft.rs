//! Adapters in Hugging Face PEFT's format, so that adapters trained here load in Python's
//! `peft` and adapters trained with `peft` load here:
//!
//! - `adapter_config.json`: `peft_type: "LORA"`, `task_type: "CAUSAL_LM"`, `r`, `lora_alpha`,
//!   `lora_dropout`, `target_modules`, `fan_in_fan_out: false` (every architecture's layers
//!   are `nn.Linear`), `bias: "none"`, `use_rslora`, `rank_pattern`, `alpha_pattern`, ...
//! - `adapter_model.safetensors` (metadata `{"format": "pt"}`), keys
//!   `base_model.model.transformer.h.{i}.attn.c_attn.lora_A.weight` (GPTBigCode) or
//!   `base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight` (Llama, Qwen2,
//!   StarCoder2) `[r, in]` and `...lora_B.weight` `[out, r]`; the effective delta is
//!   `scaling · B A` with `scaling = lora_alpha / r` (`/ sqrt(r)` with `use_rslora`).
//!
//! [`load_adapter`] is what the server calls to register a workspace's adapter.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use copilot_engine::{Arch, Config, Engine, Lora};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{io_err, FinetuneError, Result};
use crate::lora::{to_engine_lora, Module, Target, TrainableLora};

pub const CONFIG_FILE: &str = "adapter_config.json";
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";
/// Prefix PEFT puts before the base model's module names in saved keys.
pub const KEY_PREFIX: &str = "base_model.model.";

/// `target_modules`: a list of names, or one regular expression (PEFT accepts both).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Regex(String),
}

fn default_peft_type() -> String {
    "LORA".into()
}
fn default_bias() -> String {
    "none".into()
}
fn default_true() -> bool {
    true
}
fn default_alpha() -> f64 {
    8.0
}
fn default_megatron_core() -> Option<String> {
    Some("megatron.core".into())
}

/// Write a float that holds an integer as an integer (`32`, not `32.0`), as Python's json
/// writes PEFT's ints.
fn ser_num<S: serde::Serializer>(v: &f64, s: S) -> std::result::Result<S::Ok, S::Error> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        s.serialize_i64(*v as i64)
    } else {
        s.serialize_f64(*v)
    }
}

fn ser_num_map<S: serde::Serializer>(
    m: &BTreeMap<String, f64>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = s.serialize_map(Some(m.len()))?;
    for (k, v) in m {
        if v.fract() == 0.0 && v.abs() < 1e15 {
            map.serialize_entry(k, &(*v as i64))?;
        } else {
            map.serialize_entry(k, v)?;
        }
    }
    map.end()
}

/// `adapter_config.json` of a LoRA adapter. Unknown fields (newer PEFT versions add some)
/// are ignored on reading; writing emits the fields PEFT has had since 0.10, so that older
/// and newer versions both load it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    #[serde(default, serialize_with = "ser_num_map")]
    pub alpha_pattern: BTreeMap<String, f64>,
    #[serde(default)]
    pub auto_mapping: Option<Value>,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    #[serde(default = "default_bias")]
    pub bias: String,
    #[serde(default)]
    pub fan_in_fan_out: bool,
    #[serde(default = "default_true")]
    pub inference_mode: bool,
    #[serde(default = "default_init")]
    pub init_lora_weights: Value,
    #[serde(default)]
    pub layer_replication: Option<Value>,
    #[serde(default)]
    pub layers_pattern: Option<Value>,
    #[serde(default)]
    pub layers_to_transform: Option<Value>,
    #[serde(default)]
    pub loftq_config: Value,
    #[serde(default = "default_alpha", serialize_with = "ser_num")]
    pub lora_alpha: f64,
    #[serde(default, serialize_with = "ser_num")]
    pub lora_dropout: f64,
    #[serde(default)]
    pub megatron_config: Option<Value>,
    #[serde(default = "default_megatron_core")]
    pub megatron_core: Option<String>,
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    #[serde(default = "default_peft_type")]
    pub peft_type: String,
    pub r: usize,
    #[serde(default)]
    pub rank_pattern: BTreeMap<String, usize>,
    #[serde(default)]
    pub revision: Option<String>,
    pub target_modules: TargetModules,
    #[serde(default)]
    pub task_type: Option<String>,
    #[serde(default)]
    pub use_dora: bool,
    #[serde(default)]
    pub use_rslora: bool,
}

fn default_init() -> Value {
    Value::Bool(true)
}

impl AdapterConfig {
    /// The config of an adapter trained here.
    pub fn for_training(target: &Target, dropout: f64, base: Option<String>) -> Self {
        Self {
            alpha_pattern: BTreeMap::new(),
            auto_mapping: None,
            base_model_name_or_path: base,
            bias: "none".into(),
            fan_in_fan_out: false,
            inference_mode: true,
            init_lora_weights: Value::Bool(true),
            layer_replication: None,
            layers_pattern: None,
            layers_to_transform: None,
            loftq_config: Value::Object(Default::default()),
            lora_alpha: target.alpha,
            lora_dropout: dropout,
            megatron_config: None,
            megatron_core: default_megatron_core(),
            modules_to_save: None,
            peft_type: "LORA".into(),
            r: target.rank,
            rank_pattern: BTreeMap::new(),
            revision: None,
            target_modules: TargetModules::List(target.modules.clone()),
            task_type: Some("CAUSAL_LM".into()),
            use_dora: false,
            use_rslora: target.use_rslora,
        }
    }

    /// The first pattern key that selects module `name` (`key` equal to it or a dotted suffix
    /// of it, as PEFT's `.*\.{key}$` match does for plain names).
    fn pattern<'a, T>(map: &'a BTreeMap<String, T>, name: &str) -> Option<&'a T> {
        map.iter()
            .find(|(k, _)| name == k.as_str() || name.ends_with(&format!(".{k}")))
            .map(|(_, v)| v)
    }

    /// `(r, scaling)` of module `name` (`transformer.h.0.attn.c_attn`,
    /// `model.layers.0.self_attn.q_proj`).
    pub fn rank_and_scale(&self, name: &str) -> (usize, f64) {
        let r = Self::pattern(&self.rank_pattern, name)
            .copied()
            .unwrap_or(self.r);
        let alpha = Self::pattern(&self.alpha_pattern, name)
            .copied()
            .unwrap_or(self.lora_alpha);
        let scale = if self.use_rslora {
            alpha / (r as f64).sqrt()
        } else {
            alpha / r as f64
        };
        (r, scale)
    }
}

/// The weights of one adapted layer.
#[derive(Clone, Debug)]
pub struct Pair {
    /// `[r, in]`
    pub a: Tensor,
    /// `[out, r]`
    pub b: Tensor,
    pub scale: f64,
}

impl Pair {
    /// `scale · B A`, `[out, in]`, f32.
    pub fn delta(&self) -> Result<Tensor> {
        let a = self.a.to_dtype(DType::F32)?;
        let b = self.b.to_dtype(DType::F32)?;
        Ok((b.matmul(&a)? * self.scale)?)
    }
}

/// An adapter in memory: the architecture it is for, its config and its pairs by
/// `(layer, module)`.
#[derive(Clone, Debug)]
pub struct Adapter {
    pub arch: Arch,
    pub config: AdapterConfig,
    pub pairs: BTreeMap<(usize, Module), Pair>,
}

/// PEFT's key of a module's A or B matrix.
pub fn key(arch: Arch, layer: usize, module: Module, which: char) -> String {
    format!(
        "{KEY_PREFIX}{}.lora_{which}.weight",
        module.name(arch, layer)
    )
}

/// Parse a saved key of an adapter for `arch` into `(layer, module, 'A' | 'B')`. Accepts the
/// adapter-name infix that some writers leave (`lora_A.default.weight`) and keys without
/// the `base_model.model.` prefix; a module `arch` does not have is no key of it.
pub fn parse_key(k: &str, arch: Arch) -> Option<(usize, Module, char)> {
    let k = k.strip_prefix(KEY_PREFIX).unwrap_or(k);
    let rest = k
        .strip_prefix(arch.block_prefix())
        .and_then(|r| r.strip_prefix('.'))?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let (module, rest) = rest.split_once(".lora_")?;
    let module = Module::from_path(module).filter(|m| Module::of(arch).contains(m))?;
    let which = rest.chars().next()?;
    let tail = &rest[1..];
    let ok = tail == ".weight"
        || (tail.starts_with('.') && tail.ends_with(".weight") && tail.matches('.').count() == 2);
    (matches!(which, 'A' | 'B') && ok).then_some((layer, module, which))
}

impl Adapter {
    /// Freeze a trainable adapter (copies of the current values).
    pub fn from_trainable(t: &TrainableLora, config: AdapterConfig) -> Result<Self> {
        let scale = t.target.scale();
        let mut pairs = BTreeMap::new();
        for p in &t.pairs {
            pairs.insert(
                (p.layer, p.module),
                Pair {
                    a: p.a.as_tensor().copy()?,
                    b: p.b.as_tensor().copy()?,
                    scale,
                },
            );
        }
        Ok(Self {
            arch: t.arch,
            config,
            pairs,
        })
    }

    /// The engine's view of it.
    pub fn to_lora(&self, n_layer: usize) -> Lora {
        to_engine_lora(
            n_layer,
            self.pairs
                .iter()
                .map(|((l, m), p)| (*l, *m, &p.a, &p.b, p.scale)),
        )
    }

    /// Write `adapter_config.json` and `adapter_model.safetensors` (f32) into `dir`.
    pub fn save(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cfg_path = dir.join(CONFIG_FILE);
        let json = serde_json::to_string_pretty(&self.config).expect("config serialises");
        std::fs::write(&cfg_path, json + "\n").map_err(io_err(&cfg_path))?;
        let mut tensors: Vec<(String, Tensor)> = Vec::new();
        for ((l, m), p) in &self.pairs {
            let k = |w| key(self.arch, *l, *m, w);
            tensors.push((k('A'), p.a.to_dtype(DType::F32)?.contiguous()?));
            tensors.push((k('B'), p.b.to_dtype(DType::F32)?.contiguous()?));
        }
        write_safetensors(&dir.join(WEIGHTS_FILE), tensors)
    }

    /// Read an adapter from `dir`, checking it against the model's config.
    pub fn load(dir: &Path, cfg: &Config, device: &Device, dtype: DType) -> Result<Self> {
        let bad = |message: String| FinetuneError::Adapter {
            path: dir.to_path_buf(),
            message,
        };
        let cfg_path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&cfg_path).map_err(io_err(&cfg_path))?;
        let config: AdapterConfig =
            serde_json::from_str(&text).map_err(|e| bad(format!("{CONFIG_FILE}: {e}")))?;
        if config.peft_type != "LORA" {
            return Err(bad(format!(
                "peft_type is `{}`; only LORA adapters are supported",
                config.peft_type
            )));
        }
        if config.fan_in_fan_out {
            return Err(bad(format!(
                "fan_in_fan_out is true, but {}'s layers are nn.Linear",
                cfg.model_type
            )));
        }
        if config.use_dora {
            return Err(bad("DoRA adapters (use_dora) are not supported".into()));
        }
        if config.bias != "none" {
            return Err(bad(format!(
                "bias `{}` is not supported (only \"none\")",
                config.bias
            )));
        }
        if config
            .modules_to_save
            .as_ref()
            .is_some_and(|m| !m.is_empty())
        {
            return Err(bad("modules_to_save is not supported".into()));
        }
        let w_path = dir.join(WEIGHTS_FILE);
        if !w_path.is_file() {
            return Err(bad(format!(
                "no {WEIGHTS_FILE} (adapter_model.bin is not supported: convert it to safetensors)"
            )));
        }
        let raw = candle_core::safetensors::load(&w_path, &Device::Cpu)
            .map_err(|e| bad(format!("{WEIGHTS_FILE}: {e}")))?;
        // By name, so an error names the same tensor every time (the map's order is random).
        let mut raw: Vec<(String, Tensor)> = raw.into_iter().collect();
        raw.sort_by(|a, b| a.0.cmp(&b.0));
        let mut halves: HashMap<(usize, Module), (Option<Tensor>, Option<Tensor>)> = HashMap::new();
        for (k, t) in raw {
            let (layer, module, which) = parse_key(&k, cfg.arch()).ok_or_else(|| {
                bad(format!(
                    "unexpected tensor `{k}`: not a LoRA matrix of a {} block ({}.N.{{{}}}); \
                     is this adapter for another model?",
                    cfg.model_type,
                    cfg.arch().block_prefix(),
                    Module::of(cfg.arch())
                        .iter()
                        .map(|m| m.path())
                        .collect::<Vec<_>>()
                        .join(",")
                ))
            })?;
            if layer >= cfg.n_layer {
                return Err(bad(format!(
                    "`{k}`: layer {layer} but the model has {} layers",
                    cfg.n_layer
                )));
            }
            let slot = halves.entry((layer, module)).or_default();
            let t = t.to_dtype(dtype)?.to_device(device)?;
            if which == 'A' {
                slot.0 = Some(t);
            } else {
                slot.1 = Some(t);
            }
        }
        let mut pairs = BTreeMap::new();
        for ((layer, module), (a, b)) in halves {
            let name = module.name(cfg.arch(), layer);
            let (a, b) = match (a, b) {
                (Some(a), Some(b)) => (a, b),
                _ => return Err(bad(format!("{name}: lora_A or lora_B is missing"))),
            };
            let (r, scale) = config.rank_and_scale(&name);
            let (inp, out) = module.dims(cfg);
            if a.dims() != [r, inp] || b.dims() != [out, r] {
                return Err(bad(format!(
                    "{name}: lora_A {:?} and lora_B {:?}, expected [{r}, {inp}] and [{out}, {r}] \
                     (r {r} from the config; is this adapter for another model?)",
                    a.dims(),
                    b.dims()
                )));
            }
            pairs.insert((layer, module), Pair { a, b, scale });
        }
        if pairs.is_empty() {
            return Err(bad("the adapter has no LoRA tensors".into()));
        }
        Ok(Self {
            arch: cfg.arch(),
            config,
            pairs,
        })
    }
}

/// Write tensors as safetensors with PEFT's and transformers' `{"format": "pt"}` metadata.
pub fn write_safetensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let meta = HashMap::from([("format".to_string(), "pt".to_string())]);
    safetensors::serialize_to_file(tensors, Some(meta), path).map_err(|e| FinetuneError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Load a PEFT LoRA adapter from `dir` for a model of config `cfg`, its tensors on `device`
/// in `dtype`, as the engine's [`Lora`]: what the server registers per workspace with
/// `Engine::add_adapter`.
pub fn load_adapter(dir: &Path, cfg: &Config, device: &Device, dtype: DType) -> Result<Lora> {
    Ok(Adapter::load(dir, cfg, device, dtype)?.to_lora(cfg.n_layer))
}

/// [`load_adapter`] for a running engine: asks the model thread for its device and dtype.
pub fn load_adapter_for_engine(engine: &Engine, dir: &Path) -> Result<Lora> {
    let (device, dtype) = engine.run_blocking(|g| (g.model.device().clone(), g.model.dtype()))?;
    load_adapter(dir, engine.config(), &device, dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_tolerate_adapter_names() {
        let g = Arch::GptBigCode;
        let k = key(g, 3, Module::MlpCProj, 'B');
        assert_eq!(
            k,
            "base_model.model.transformer.h.3.mlp.c_proj.lora_B.weight"
        );
        assert_eq!(parse_key(&k, g), Some((3, Module::MlpCProj, 'B')));
        assert_eq!(
            parse_key(
                "base_model.model.transformer.h.0.attn.c_attn.lora_A.default.weight",
                g
            ),
            Some((0, Module::CAttn, 'A'))
        );
        assert_eq!(
            parse_key("transformer.h.1.mlp.c_fc.lora_A.weight", g),
            Some((1, Module::CFc, 'A'))
        );
        assert_eq!(
            parse_key("base_model.model.transformer.h.0.attn.c_attn.weight", g),
            None
        );
        assert_eq!(parse_key("base_model.model.lm_head.lora_A.weight", g), None);
        assert_eq!(
            parse_key(
                "base_model.model.transformer.h.0.attn.c_attn.lora_magnitude_vector",
                g
            ),
            None
        );
        // The rotary families: `model.layers`, and only their own modules.
        let q = Arch::Qwen2;
        let k = key(q, 2, Module::GateProj, 'A');
        assert_eq!(
            k,
            "base_model.model.model.layers.2.mlp.gate_proj.lora_A.weight"
        );
        assert_eq!(parse_key(&k, q), Some((2, Module::GateProj, 'A')));
        assert_eq!(
            parse_key(&k, Arch::Starcoder2),
            None,
            "StarCoder2 has no gate"
        );
        assert_eq!(parse_key(&k, g), None);
        assert_eq!(
            parse_key(
                "base_model.model.model.layers.0.mlp.c_fc.lora_B.weight",
                Arch::Starcoder2
            ),
            Some((0, Module::CFc, 'B'))
        );
    }

    #[test]
    fn patterns_override_rank_and_alpha() {
        let mut c = AdapterConfig::for_training(&Target::default(), 0.05, None);
        c.rank_pattern.insert("h.1.attn.c_attn".into(), 4);
        c.alpha_pattern.insert("c_fc".into(), 8.0);
        assert_eq!(c.rank_and_scale("transformer.h.0.attn.c_attn"), (16, 2.0));
        assert_eq!(c.rank_and_scale("transformer.h.1.attn.c_attn"), (4, 8.0));
        assert_eq!(c.rank_and_scale("transformer.h.11.attn.c_attn"), (16, 2.0));
        assert_eq!(c.rank_and_scale("transformer.h.0.mlp.c_fc"), (16, 0.5));
        c.use_rslora = true;
        assert_eq!(c.rank_and_scale("transformer.h.0.attn.c_proj"), (16, 8.0));
    }
}
