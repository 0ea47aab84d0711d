//! LoRA deltas as the model applies them at run time: which linear layers of a block an
//! adapter may touch ([`Module`], by the names PEFT uses for each architecture), and the
//! deltas themselves ([`Lora`], [`BlockLora`]). Reading and writing adapter files is the
//! fine-tuning crate's business.

use crate::config::{Arch, Config};
pub use crate::layers::LoraPair;

/// A linear layer of a block, by its path inside the block as in the checkpoint and in PEFT
/// keys (`attn.c_attn`, `self_attn.q_proj`, `mlp.c_fc`...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Module {
    /// GPTBigCode's fused q/k/v.
    CAttn,
    /// GPTBigCode's attention output.
    AttnCProj,
    /// The first MLP projection of GPTBigCode and StarCoder2.
    CFc,
    /// The second MLP projection of GPTBigCode and StarCoder2.
    MlpCProj,
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl Module {
    pub const ALL: [Module; 11] = [
        Self::CAttn,
        Self::AttnCProj,
        Self::CFc,
        Self::MlpCProj,
        Self::QProj,
        Self::KProj,
        Self::VProj,
        Self::OProj,
        Self::GateProj,
        Self::UpProj,
        Self::DownProj,
    ];

    /// The modules of one block of `arch`, in checkpoint order.
    pub fn of(arch: Arch) -> &'static [Module] {
        match arch {
            Arch::GptBigCode => &[Self::CAttn, Self::AttnCProj, Self::CFc, Self::MlpCProj],
            Arch::Llama | Arch::Qwen2 => &[
                Self::QProj,
                Self::KProj,
                Self::VProj,
                Self::OProj,
                Self::GateProj,
                Self::UpProj,
                Self::DownProj,
            ],
            Arch::Starcoder2 => &[
                Self::QProj,
                Self::KProj,
                Self::VProj,
                Self::OProj,
                Self::CFc,
                Self::MlpCProj,
            ],
        }
    }

    /// The module's path inside a block, as in the checkpoint and in PEFT keys.
    pub fn path(self) -> &'static str {
        match self {
            Self::CAttn => "attn.c_attn",
            Self::AttnCProj => "attn.c_proj",
            Self::CFc => "mlp.c_fc",
            Self::MlpCProj => "mlp.c_proj",
            Self::QProj => "self_attn.q_proj",
            Self::KProj => "self_attn.k_proj",
            Self::VProj => "self_attn.v_proj",
            Self::OProj => "self_attn.o_proj",
            Self::GateProj => "mlp.gate_proj",
            Self::UpProj => "mlp.up_proj",
            Self::DownProj => "mlp.down_proj",
        }
    }

    /// The last part of the path (`c_proj`, `q_proj`): what `target_modules` usually lists.
    pub fn short_name(self) -> &'static str {
        self.path().rsplit('.').next().unwrap_or(self.path())
    }

    pub fn from_path(p: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.path() == p)
    }

    /// `(in, out)` features of the layer in a model of config `cfg`.
    pub fn dims(self, cfg: &Config) -> (usize, usize) {
        let e = cfg.n_embd;
        let q = cfg.n_head * cfg.head_dim();
        let kv = cfg.kv_heads() * cfg.head_dim();
        let inner = cfg.inner_dim();
        match self {
            Self::CAttn => (e, e + 2 * kv),
            Self::AttnCProj => (e, e),
            Self::CFc | Self::GateProj | Self::UpProj => (e, inner),
            Self::MlpCProj | Self::DownProj => (inner, e),
            Self::QProj => (e, q),
            Self::KProj | Self::VProj => (e, kv),
            Self::OProj => (q, e),
        }
    }

    /// Full module name in the model (`transformer.h.3.attn.c_attn`,
    /// `model.layers.3.self_attn.q_proj`).
    pub fn name(self, arch: Arch, layer: usize) -> String {
        format!("{}.{layer}.{}", arch.block_prefix(), self.path())
    }

    /// Whether PEFT's `target_modules` entry `t` selects this module: the name equals it or
    /// ends with `.t` (so `c_proj` selects both `attn.c_proj` and `mlp.c_proj`).
    pub fn matches(self, arch: Arch, layer: usize, t: &str) -> bool {
        let name = self.name(arch, layer);
        name == t || name.ends_with(&format!(".{t}"))
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// LoRA deltas for one block; none where the adapter does not touch that layer.
#[derive(Clone, Debug, Default)]
pub struct BlockLora {
    pairs: [Option<LoraPair>; Module::ALL.len()],
}

impl BlockLora {
    pub fn get(&self, m: Module) -> Option<&LoraPair> {
        self.pairs[m.index()].as_ref()
    }

    pub fn set(&mut self, m: Module, pair: Option<LoraPair>) {
        self.pairs[m.index()] = pair;
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.iter().all(Option::is_none)
    }
}

/// An adapter applied at run time on top of the shared base weights.
#[derive(Clone, Debug, Default)]
pub struct Lora {
    /// One entry per block (may be shorter than the model: missing blocks are untouched).
    pub blocks: Vec<BlockLora>,
}

impl Lora {
    /// The deltas of block `i`, if any.
    pub fn block(&self, i: usize) -> Option<&BlockLora> {
        self.blocks.get(i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_architecture_names_its_modules_as_peft_does() {
        assert_eq!(
            Module::CAttn.name(Arch::GptBigCode, 3),
            "transformer.h.3.attn.c_attn"
        );
        assert_eq!(
            Module::QProj.name(Arch::Qwen2, 0),
            "model.layers.0.self_attn.q_proj"
        );
        assert_eq!(
            Module::MlpCProj.name(Arch::Starcoder2, 1),
            "model.layers.1.mlp.c_proj"
        );
        assert!(Module::MlpCProj.matches(Arch::GptBigCode, 0, "c_proj"));
        assert!(Module::AttnCProj.matches(Arch::GptBigCode, 0, "c_proj"));
        assert!(!Module::OProj.matches(Arch::Starcoder2, 0, "c_proj"));
        assert!(Module::DownProj.matches(Arch::Llama, 2, "layers.2.mlp.down_proj"));
        for arch in Arch::SUPPORTED {
            for m in Module::of(arch) {
                assert_eq!(Module::from_path(m.path()), Some(*m));
            }
        }
        let cfg = Config::qwen2_5_coder_0_5b();
        assert_eq!(Module::KProj.dims(&cfg), (896, 128));
        assert_eq!(Module::QProj.dims(&cfg), (896, 896));
        assert_eq!(Module::DownProj.dims(&cfg), (4864, 896));
    }
}
