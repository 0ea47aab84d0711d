//! LoRA as trained here: which linear layers it targets (PEFT's `target_modules` names, per
//! architecture, with defaults per family), and the trainable A/B matrices as candle `Var`s,
//! turned into the engine's [`Lora`] for each forward pass.

use candle_core::{DType, Device, Tensor, Var};
use copilot_engine::model::{BlockLora, LoraPair};
use copilot_engine::{Arch, Config, Lora};
use rand::{Rng, SeedableRng};

use crate::error::{FinetuneError, Result};

/// A linear layer of a block, by its PEFT path (`attn.c_attn`, `self_attn.q_proj`...): the
/// engine's, which knows each architecture's modules.
pub use copilot_engine::Module;

/// The modules `target_modules` names by default for each architecture: every linear layer
/// of a block (GPTBigCode's `c_attn`, `c_proj`, `c_fc`; the rotary families' q/k/v/o and MLP
/// projections, as PEFT's QLoRA recipes adapt them).
pub fn default_targets(arch: Arch) -> Vec<String> {
    match arch {
        Arch::GptBigCode => vec!["c_attn".into(), "c_proj".into(), "c_fc".into()],
        _ => Module::of(arch)
            .iter()
            .map(|m| m.short_name().to_string())
            .collect(),
    }
}

/// The modules that `target_modules` selects in a model of config `cfg`; an entry that
/// selects nothing is an error (as in PEFT). No entries: the architecture's defaults.
pub fn resolve_targets(targets: &[String], cfg: &Config) -> Result<Vec<(usize, Module)>> {
    let arch = cfg.arch();
    let defaults;
    let targets = if targets.is_empty() {
        defaults = default_targets(arch);
        &defaults
    } else {
        targets
    };
    let modules = Module::of(arch);
    for t in targets {
        if !modules.iter().any(|m| m.matches(arch, 0, t)) {
            return Err(FinetuneError::Options(format!(
                "target module `{t}` matches no layer ({} has {})",
                cfg.model_type,
                default_targets(arch).join(", ")
            )));
        }
    }
    Ok((0..cfg.n_layer)
        .flat_map(|l| modules.iter().map(move |m| (l, *m)))
        .filter(|(l, m)| targets.iter().any(|t| m.matches(arch, *l, t)))
        .collect())
}

/// Build an engine [`Lora`] from `(layer, module, A, B, scale)` entries.
pub fn to_engine_lora<'a>(
    n_layer: usize,
    pairs: impl IntoIterator<Item = (usize, Module, &'a Tensor, &'a Tensor, f64)>,
) -> Lora {
    let mut blocks = vec![BlockLora::default(); n_layer];
    for (l, m, a, b, scale) in pairs {
        if let Some(block) = blocks.get_mut(l) {
            block.set(m, Some(LoraPair::new(a.clone(), b.clone(), scale)));
        }
    }
    Lora { blocks }
}

/// What to train: rank, alpha and targets.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    pub rank: usize,
    pub alpha: f64,
    pub use_rslora: bool,
    /// PEFT `target_modules` entries (`c_attn`, `c_proj`, `c_fc`, `q_proj`, or
    /// `attn.c_proj`...); empty: the architecture's defaults ([`default_targets`]).
    pub modules: Vec<String>,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            use_rslora: false,
            modules: Vec::new(),
        }
    }
}

impl Target {
    /// The `target_modules` this target means for `arch` (its defaults when none are given).
    pub fn modules_for(&self, arch: Arch) -> Vec<String> {
        if self.modules.is_empty() {
            default_targets(arch)
        } else {
            self.modules.clone()
        }
    }

    /// `alpha / r`, or `alpha / sqrt(r)` with rank-stabilised LoRA.
    pub fn scale(&self) -> f64 {
        if self.use_rslora {
            self.alpha / (self.rank as f64).sqrt()
        } else {
            self.alpha / self.rank as f64
        }
    }
}

/// One trainable pair.
pub struct TrainablePair {
    pub layer: usize,
    pub module: Module,
    /// `[r, in]`, initialised as PEFT does (Kaiming-uniform with a = sqrt(5): U(±1/sqrt(in))).
    pub a: Var,
    /// `[out, r]`, zeros: training starts from the base model exactly.
    pub b: Var,
}

/// The trainable adapter: f32 `Var`s whatever the model's dtype (the engine casts them).
pub struct TrainableLora {
    /// Its modules resolved for the architecture (never empty).
    pub target: Target,
    pub arch: Arch,
    pub n_layer: usize,
    pub pairs: Vec<TrainablePair>,
}

impl TrainableLora {
    pub fn new(cfg: &Config, target: Target, seed: u64, device: &Device) -> Result<Self> {
        if target.rank == 0 {
            return Err(FinetuneError::Options("rank must be > 0".into()));
        }
        // candle's CPU generator cannot be seeded: draw from our own, then upload.
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut pairs = Vec::new();
        let target = Target {
            modules: target.modules_for(cfg.arch()),
            ..target
        };
        for (layer, module) in resolve_targets(&target.modules, cfg)? {
            let (inp, out) = module.dims(cfg);
            let bound = 1.0 / (inp as f32).sqrt();
            let a: Vec<f32> = (0..target.rank * inp)
                .map(|_| rng.random_range(-bound..bound))
                .collect();
            let a = Var::from_tensor(&Tensor::from_vec(a, (target.rank, inp), device)?)?;
            let b = Var::zeros((out, target.rank), DType::F32, device)?;
            pairs.push(TrainablePair {
                layer,
                module,
                a,
                b,
            });
        }
        Ok(Self {
            target,
            arch: cfg.arch(),
            n_layer: cfg.n_layer,
            pairs,
        })
    }

    /// All trainable variables, A then B of each pair.
    pub fn vars(&self) -> Vec<&Var> {
        self.pairs.iter().flat_map(|p| [&p.a, &p.b]).collect()
    }

    /// The adapter for one forward pass. With `dropout`, each pair's input features are
    /// dropped (and the rest scaled by `1/(1-p)`) through a mask on A's columns: the engine
    /// applies `(x Aᵀ)Bᵀ` itself, so the mask is shared by the tokens of one micro-batch
    /// instead of drawn per element as PEFT's `nn.Dropout` on `x` does. Same expectation and
    /// regularising intent, coarser noise.
    pub fn lora(&self, dropout: Option<(f64, &mut dyn rand::RngCore)>) -> Result<Lora> {
        let scale = self.target.scale();
        let masked: Vec<(usize, Module, Tensor, Tensor)> = match dropout {
            Some((p, rng)) if p > 0.0 => {
                let keep = 1.0 - p;
                self.pairs
                    .iter()
                    .map(|pair| {
                        let inp = pair.a.dim(1)?;
                        let mask: Vec<f32> = (0..inp)
                            .map(|_| {
                                if rng.random_bool(keep) {
                                    (1.0 / keep) as f32
                                } else {
                                    0.0
                                }
                            })
                            .collect();
                        let mask = Tensor::from_vec(mask, (1, inp), pair.a.device())?;
                        Ok((
                            pair.layer,
                            pair.module,
                            pair.a.as_tensor().broadcast_mul(&mask)?,
                            pair.b.as_tensor().clone(),
                        ))
                    })
                    .collect::<Result<_>>()?
            }
            _ => self
                .pairs
                .iter()
                .map(|p| {
                    (
                        p.layer,
                        p.module,
                        p.a.as_tensor().clone(),
                        p.b.as_tensor().clone(),
                    )
                })
                .collect(),
        };
        Ok(to_engine_lora(
            self.n_layer,
            masked.iter().map(|(l, m, a, b)| (*l, *m, a, b, scale)),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_proj_selects_both_projections() {
        let cfg = Config::tiny_test(300);
        let mut two = cfg.clone();
        two.n_layer = 2;
        let t = resolve_targets(&["c_proj".into()], &two).unwrap();
        assert_eq!(
            t,
            [
                (0, Module::AttnCProj),
                (0, Module::MlpCProj),
                (1, Module::AttnCProj),
                (1, Module::MlpCProj)
            ]
        );
        let mut one = cfg.clone();
        one.n_layer = 1;
        let t = resolve_targets(&["attn.c_proj".into(), "c_fc".into()], &one).unwrap();
        assert_eq!(t, [(0, Module::AttnCProj), (0, Module::CFc)]);
        let e = resolve_targets(&["q_proj".into()], &one)
            .unwrap_err()
            .to_string();
        assert!(e.contains("c_attn, c_proj, c_fc"), "{e}");
    }

    #[test]
    fn each_family_has_its_peft_names_and_defaults() {
        let qwen = Config::tiny_rope_test(Arch::Qwen2, 300);
        let all = resolve_targets(&[], &qwen).unwrap();
        assert_eq!(all.len(), 7 * qwen.n_layer);
        assert_eq!(
            default_targets(Arch::Qwen2),
            [
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj"
            ]
        );
        let sc2 = Config::tiny_rope_test(Arch::Starcoder2, 300);
        // StarCoder2's `c_proj` is its MLP's only (attention's output is `o_proj`).
        let t = resolve_targets(&["c_proj".into()], &sc2).unwrap();
        assert_eq!(t, [(0, Module::MlpCProj), (1, Module::MlpCProj)]);
        let e = resolve_targets(&["c_attn".into()], &sc2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("starcoder2") && e.contains("q_proj"), "{e}");
        assert!(resolve_targets(&["gate_proj".into()], &sc2).is_err());
        let llama = Config::tiny_rope_test(Arch::Llama, 300);
        let t = resolve_targets(&["q_proj".into(), "v_proj".into()], &llama).unwrap();
        assert_eq!(t.len(), 2 * llama.n_layer);
    }
}
