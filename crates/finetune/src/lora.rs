//! LoRA as trained here: which linear layers it targets (PEFT's `target_modules` names), and
//! the trainable A/B matrices as candle `Var`s, turned into the engine's [`Lora`] for each
//! forward pass.

use candle_core::{DType, Device, Tensor, Var};
use copilot_engine::model::{BlockLora, LoraPair};
use copilot_engine::{Config, Lora};
use rand::{Rng, SeedableRng};

use crate::error::{FinetuneError, Result};

/// One of the four linear layers of a GPTBigCode block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Module {
    CAttn,
    AttnCProj,
    CFc,
    MlpCProj,
}

impl Module {
    pub const ALL: [Module; 4] = [Self::CAttn, Self::AttnCProj, Self::CFc, Self::MlpCProj];

    /// The module's path inside a block, as in the checkpoint and in PEFT keys.
    pub fn path(self) -> &'static str {
        match self {
            Self::CAttn => "attn.c_attn",
            Self::AttnCProj => "attn.c_proj",
            Self::CFc => "mlp.c_fc",
            Self::MlpCProj => "mlp.c_proj",
        }
    }

    pub fn from_path(p: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.path() == p)
    }

    /// `(in, out)` features of the layer.
    pub fn dims(self, cfg: &Config) -> (usize, usize) {
        let e = cfg.n_embd;
        match self {
            Self::CAttn => (e, e + 2 * cfg.kv_heads() * cfg.head_dim()),
            Self::AttnCProj => (e, e),
            Self::CFc => (e, cfg.inner_dim()),
            Self::MlpCProj => (cfg.inner_dim(), e),
        }
    }

    /// Full module name in the model (`transformer.h.3.attn.c_attn`).
    pub fn name(self, layer: usize) -> String {
        format!("transformer.h.{layer}.{}", self.path())
    }

    /// Whether PEFT's `target_modules` entry `t` selects this module: the name equals it or
    /// ends with `.t` (so `c_proj` selects both `attn.c_proj` and `mlp.c_proj`).
    pub fn matches(self, layer: usize, t: &str) -> bool {
        let name = self.name(layer);
        name == t || name.ends_with(&format!(".{t}"))
    }

    fn slot(self, b: &mut BlockLora) -> &mut Option<LoraPair> {
        match self {
            Self::CAttn => &mut b.c_attn,
            Self::AttnCProj => &mut b.attn_c_proj,
            Self::CFc => &mut b.c_fc,
            Self::MlpCProj => &mut b.mlp_c_proj,
        }
    }
}

/// The modules that `target_modules` selects in a model of `n_layer` blocks; an entry that
/// selects nothing is an error (as in PEFT).
pub fn resolve_targets(targets: &[String], n_layer: usize) -> Result<Vec<(usize, Module)>> {
    if targets.is_empty() {
        return Err(FinetuneError::Options("no target modules".into()));
    }
    for t in targets {
        if !Module::ALL.iter().any(|m| m.matches(0, t)) {
            return Err(FinetuneError::Options(format!(
                "target module `{t}` matches no layer (GPTBigCode has c_attn, c_proj, c_fc)"
            )));
        }
    }
    Ok((0..n_layer)
        .flat_map(|l| Module::ALL.into_iter().map(move |m| (l, m)))
        .filter(|(l, m)| targets.iter().any(|t| m.matches(*l, t)))
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
            *m.slot(block) = Some(LoraPair {
                a: a.clone(),
                b: b.clone(),
                scale,
            });
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
    /// PEFT `target_modules` entries (`c_attn`, `c_proj`, `c_fc`, or `attn.c_proj`...).
    pub modules: Vec<String>,
}

impl Default for Target {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            use_rslora: false,
            modules: vec!["c_attn".into(), "c_proj".into(), "c_fc".into()],
        }
    }
}

impl Target {
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
    pub target: Target,
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
        for (layer, module) in resolve_targets(&target.modules, cfg.n_layer)? {
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
        let t = resolve_targets(&["c_proj".into()], 2).unwrap();
        assert_eq!(
            t,
            [
                (0, Module::AttnCProj),
                (0, Module::MlpCProj),
                (1, Module::AttnCProj),
                (1, Module::MlpCProj)
            ]
        );
        let t = resolve_targets(&["attn.c_proj".into(), "c_fc".into()], 1).unwrap();
        assert_eq!(t, [(0, Module::AttnCProj), (0, Module::CFc)]);
        assert!(resolve_targets(&["q_proj".into()], 1).is_err());
    }
}
