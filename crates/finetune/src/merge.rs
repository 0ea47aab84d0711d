//! Merging: an adapter into the base weights (`W += scaling · B A`, PEFT's
//! `merge_and_unload`), written as a full checkpoint that the server and transformers load;
//! and several adapters into one (PEFT's `add_weighted_adapter`): `cat` exactly (ranks add
//! up), `linear` and `ties` on the full delta-W, then factorised back to rank r by a
//! truncated SVD.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::str::FromStr;

use candle_core::{DType, Device, Tensor};
use copilot_engine::load::{ModelFiles, Weights};
use copilot_engine::Arch;

use crate::error::{io_err, FinetuneError, Result};
use crate::linalg::low_rank;
use crate::lora::Module;
use crate::peft::{write_safetensors, Adapter, AdapterConfig, Pair, TargetModules};

/// How to combine adapters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// Concatenate the factors: exact, rank is the sum of the ranks.
    Cat,
    /// Weighted sum of the delta-Ws, factorised to rank r.
    Linear,
    /// TIES: trim each delta-W to its top `density` share by magnitude, elect the sign by
    /// the weighted sum, average the agreeing values; factorised to rank r.
    Ties,
}

impl FromStr for Method {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "cat" => Ok(Self::Cat),
            "linear" | "svd" | "linear_svd" => Ok(Self::Linear),
            "ties" | "ties_svd" => Ok(Self::Ties),
            o => Err(format!("unknown merge method `{o}` (linear, cat or ties)")),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CombineOptions {
    pub method: Method,
    /// One weight per adapter.
    pub weights: Vec<f64>,
    /// TIES: share of each delta-W kept.
    pub density: f64,
    /// Rank of the result for `linear` and `ties` (default: the largest input rank).
    pub rank: Option<usize>,
}

/// PEFT `target_modules` naming the modules present: each module's short name (`c_proj`,
/// `q_proj`) when every module of the architecture with that name is present, its path
/// (`attn.c_proj`) when only some are.
fn target_names(arch: Arch, mods: &BTreeSet<Module>) -> Vec<String> {
    let all = Module::of(arch);
    let mut t: Vec<String> = Vec::new();
    for m in all.iter().filter(|m| mods.contains(m)) {
        let same: Vec<&Module> = all
            .iter()
            .filter(|o| o.short_name() == m.short_name())
            .collect();
        let name = if same.iter().all(|o| mods.contains(o)) {
            m.short_name().to_string()
        } else {
            m.path().to_string()
        };
        if !t.contains(&name) {
            t.push(name);
        }
    }
    t
}

/// Keep the top `density` share of `x` by magnitude (PEFT's magnitude pruning), in place.
fn trim(x: &mut [f32], density: f64) {
    let n = x.len();
    let k = ((density * n as f64) as usize).min(n);
    if k == n {
        return;
    }
    if k == 0 {
        x.iter_mut().for_each(|v| *v = 0.0);
        return;
    }
    let mut mags: Vec<f32> = x.iter().map(|v| v.abs()).collect();
    let (_, kth, _) = mags.select_nth_unstable_by(n - k, |a, b| a.total_cmp(b));
    let threshold = *kth;
    x.iter_mut()
        .filter(|v| v.abs() < threshold)
        .for_each(|v| *v = 0.0);
}

/// TIES over weighted task tensors of equal length.
fn ties(tasks: Vec<Vec<f32>>, weights: &[f64], density: f64) -> Vec<f32> {
    let n = tasks.first().map_or(0, Vec::len);
    let weighted: Vec<Vec<f32>> = tasks
        .into_iter()
        .zip(weights)
        .map(|(mut t, &w)| {
            trim(&mut t, density);
            t.iter_mut().for_each(|v| *v *= w as f32);
            t
        })
        .collect();
    (0..n)
        .map(|i| {
            let total: f32 = weighted.iter().map(|t| t[i]).sum();
            let sign = total.signum() * (total != 0.0) as i32 as f32;
            let (mut sum, mut count) = (0.0f32, 0usize);
            for t in &weighted {
                let s = t[i].signum() * (t[i] != 0.0) as i32 as f32;
                if s == sign {
                    sum += t[i];
                    count += 1;
                }
            }
            sum / count.max(1) as f32
        })
        .collect()
}

/// Combine adapters into one.
pub fn combine(adapters: &[Adapter], o: &CombineOptions) -> Result<Adapter> {
    if adapters.is_empty() {
        return Err(FinetuneError::Options("no adapters to combine".into()));
    }
    if o.weights.len() != adapters.len() {
        return Err(FinetuneError::Options(format!(
            "{} adapters but {} weights",
            adapters.len(),
            o.weights.len()
        )));
    }
    if !(0.0..=1.0).contains(&o.density) {
        return Err(FinetuneError::Options("density must lie in [0, 1]".into()));
    }
    let arch = adapters[0].arch;
    if adapters.iter().any(|a| a.arch != arch) {
        return Err(FinetuneError::Options(
            "the adapters are for different architectures".into(),
        ));
    }
    let bases: BTreeSet<_> = adapters
        .iter()
        .filter_map(|a| a.config.base_model_name_or_path.clone())
        .collect();
    if bases.len() > 1 {
        tracing::warn!(
            ?bases,
            "combining adapters trained on different base models"
        );
    }
    let keys: BTreeSet<(usize, Module)> = adapters
        .iter()
        .flat_map(|a| a.pairs.keys().copied())
        .collect();
    let max_rank = adapters
        .iter()
        .flat_map(|a| a.pairs.values().map(|p| p.a.dim(0).unwrap_or(0)))
        .max()
        .unwrap_or(1);
    let mut pairs = BTreeMap::new();
    let rank = match o.method {
        Method::Cat => {
            // Every adapter's rank, taken from any of its pairs (PEFT adapters have one r
            // unless rank_pattern says otherwise; pad with zeros where a module is missing).
            let mut total = 0;
            for (key, _) in keys.iter().map(|k| (k, ())) {
                let mut a_parts = Vec::new();
                let mut b_parts = Vec::new();
                let (inp, out) = {
                    let p = adapters
                        .iter()
                        .find_map(|a| a.pairs.get(key))
                        .expect("key comes from some adapter");
                    (p.a.dim(1)?, p.b.dim(0)?)
                };
                for (ad, &w) in adapters.iter().zip(&o.weights) {
                    let r = ad
                        .pairs
                        .values()
                        .next()
                        .map_or(0, |p| p.a.dim(0).unwrap_or(0));
                    match ad.pairs.get(key) {
                        Some(p) => {
                            a_parts.push(p.a.to_dtype(DType::F32)?);
                            b_parts.push((p.b.to_dtype(DType::F32)? * (w * p.scale))?);
                        }
                        None => {
                            let dev = &Device::Cpu;
                            a_parts.push(Tensor::zeros((r, inp), DType::F32, dev)?);
                            b_parts.push(Tensor::zeros((out, r), DType::F32, dev)?);
                        }
                    }
                }
                let dev = a_parts[0].device().clone();
                let a_parts: Vec<Tensor> = a_parts
                    .into_iter()
                    .map(|t| t.to_device(&dev))
                    .collect::<candle_core::Result<_>>()?;
                let b_parts: Vec<Tensor> = b_parts
                    .into_iter()
                    .map(|t| t.to_device(&dev))
                    .collect::<candle_core::Result<_>>()?;
                let a = Tensor::cat(&a_parts, 0)?;
                let b = Tensor::cat(&b_parts, 1)?;
                total = a.dim(0)?;
                pairs.insert(*key, Pair { a, b, scale: 1.0 });
            }
            total
        }
        Method::Linear | Method::Ties => {
            let r = o.rank.unwrap_or(max_rank).max(1);
            for (i, key) in keys.iter().enumerate() {
                let mut deltas = Vec::new();
                let mut shape = None;
                for ad in adapters {
                    deltas.push(match ad.pairs.get(key) {
                        Some(p) => {
                            let d = p.delta()?.to_device(&Device::Cpu)?;
                            shape = Some(d.dims2()?);
                            Some(d)
                        }
                        None => None,
                    });
                }
                let (out, inp) = shape.expect("key comes from some adapter");
                let zero = || Tensor::zeros((out, inp), DType::F32, &Device::Cpu);
                let combined = match o.method {
                    Method::Linear => {
                        let mut acc = zero()?;
                        for (d, &w) in deltas.iter().zip(&o.weights) {
                            if let Some(d) = d {
                                acc = (acc + (d * w)?)?;
                            }
                        }
                        acc
                    }
                    _ => {
                        let tasks: Vec<Vec<f32>> = deltas
                            .iter()
                            .map(|d| match d {
                                Some(d) => d.flatten_all()?.to_vec1::<f32>(),
                                None => Ok(vec![0.0; out * inp]),
                            })
                            .collect::<candle_core::Result<_>>()?;
                        let v = ties(tasks, &o.weights, o.density);
                        Tensor::from_vec(v, (out, inp), &Device::Cpu)?
                    }
                };
                let (b, a) = low_rank(&combined, r, 0x5eed ^ i as u64)?;
                pairs.insert(*key, Pair { a, b, scale: 1.0 });
            }
            r
        }
    };
    let modules: BTreeSet<Module> = keys.iter().map(|(_, m)| *m).collect();
    let first = &adapters[0].config;
    // scale 1 everywhere: lora_alpha = r (rsLoRA off).
    let config = AdapterConfig {
        r: rank,
        lora_alpha: rank as f64,
        use_rslora: false,
        rank_pattern: BTreeMap::new(),
        alpha_pattern: BTreeMap::new(),
        target_modules: TargetModules::List(target_names(arch, &modules)),
        ..first.clone()
    };
    Ok(Adapter {
        arch,
        config,
        pairs,
    })
}

/// Load an adapter for merging: on the CPU, in f32.
pub fn load_for_merge(dir: &Path, cfg: &copilot_engine::Config) -> Result<Adapter> {
    Adapter::load(dir, cfg, &Device::Cpu, DType::F32)
}

/// Small files copied beside merged weights so the result is a complete checkpoint.
const CHECKPOINT_SIDE_FILES: &[&str] = &[
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
];

/// Load every tensor of a checkpoint (on the CPU, in its stored dtype).
pub fn load_all(files: &ModelFiles) -> Result<HashMap<String, Tensor>> {
    match &files.weights {
        Weights::Safetensors(paths) => {
            let mut all = HashMap::new();
            for p in paths {
                all.extend(
                    candle_core::safetensors::load(p, &Device::Cpu).map_err(|e| {
                        FinetuneError::File {
                            path: p.clone(),
                            message: e.to_string(),
                        }
                    })?,
                );
            }
            Ok(all)
        }
        Weights::Gguf(p) => Err(FinetuneError::File {
            path: p.clone(),
            message: "merging into a GGUF checkpoint is not supported: merge into the \
                      safetensors checkpoint, then quantize the result"
                .into(),
        }),
        Weights::Pth(p) => Ok(candle_core::pickle::read_all(p)
            .map_err(|e| FinetuneError::File {
                path: p.clone(),
                message: e.to_string(),
            })?
            .into_iter()
            .collect()),
    }
}

/// Add `adapter`'s deltas into the weights (by checkpoint tensor name). Pure.
pub fn merge_weights(weights: &mut HashMap<String, Tensor>, adapter: &Adapter) -> Result<()> {
    for ((layer, module), pair) in &adapter.pairs {
        let name = format!("{}.weight", module.name(adapter.arch, *layer));
        let w = weights.get(&name).ok_or_else(|| {
            FinetuneError::Other(format!("the base checkpoint has no tensor `{name}`"))
        })?;
        let delta = pair.delta()?.to_device(w.device())?;
        if delta.dims() != w.dims() {
            return Err(FinetuneError::Other(format!(
                "`{name}` is {:?} but the adapter's delta is {:?}",
                w.dims(),
                delta.dims()
            )));
        }
        let merged = (w.to_dtype(DType::F32)? + delta)?.to_dtype(w.dtype())?;
        weights.insert(name, merged);
    }
    Ok(())
}

/// Write the base checkpoint with `adapter` merged in as a full checkpoint in `out`
/// (`model.safetensors` plus the base's config and tokenizer files).
pub fn merge_into_base(base: &ModelFiles, adapter: &Adapter, out: &Path) -> Result<()> {
    let mut weights = load_all(base)?;
    merge_weights(&mut weights, adapter)?;
    std::fs::create_dir_all(out).map_err(io_err(out))?;
    let mut tensors: Vec<(String, Tensor)> = weights
        .into_iter()
        .map(|(k, t)| Ok((k, t.contiguous()?)))
        .collect::<Result<_>>()?;
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    write_safetensors(&out.join("model.safetensors"), tensors)?;
    let base_dir = base.config.parent().unwrap_or(Path::new("."));
    for f in CHECKPOINT_SIDE_FILES {
        let src = if *f == "tokenizer.json" {
            base.tokenizer.clone()
        } else {
            base_dir.join(f)
        };
        if src.is_file() {
            std::fs::copy(&src, out.join(f)).map_err(io_err(&src))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_names_use_short_names_where_they_are_unambiguous() {
        let set = |m: &[Module]| m.iter().copied().collect::<BTreeSet<_>>();
        let g = Arch::GptBigCode;
        assert_eq!(
            target_names(g, &set(Module::of(g))),
            ["c_attn", "c_proj", "c_fc"]
        );
        assert_eq!(
            target_names(g, &set(&[Module::AttnCProj, Module::CFc])),
            ["attn.c_proj", "c_fc"]
        );
        let q = Arch::Qwen2;
        assert_eq!(
            target_names(q, &set(&[Module::QProj, Module::VProj, Module::DownProj])),
            ["q_proj", "v_proj", "down_proj"]
        );
        let s = Arch::Starcoder2;
        assert_eq!(
            target_names(s, &set(&[Module::OProj, Module::MlpCProj])),
            ["o_proj", "c_proj"]
        );
    }

    #[test]
    fn ties_trims_elects_and_averages() {
        let a = vec![1.0, -2.0, 0.1, 3.0];
        let b = vec![1.0, 2.0, -0.2, -1.5];
        // density 1: no trimming; element 1: -2 + 2 = 0 -> sign 0 -> no value agrees -> 0.
        let r = ties(vec![a.clone(), b.clone()], &[1.0, 1.0], 1.0);
        assert_eq!(r, vec![1.0, 0.0, -0.2, 3.0]);
        // density 0.5 keeps the two largest of each: a -> [0, -2, 0, 3], b -> [0, 2, 0, -1.5].
        let r = ties(vec![a.clone(), b.clone()], &[1.0, 1.0], 0.5);
        assert_eq!(r, vec![0.0, 0.0, 0.0, 3.0]);
        // Weights scale before the election: b at 3x wins elements 1 and 3.
        let r = ties(vec![a, b], &[1.0, 3.0], 0.5);
        assert_eq!(r, vec![0.0, 6.0, 0.0, -4.5]);
        let mut x = vec![0.5, -3.0, 1.0, 2.0];
        trim(&mut x, 0.5);
        assert_eq!(x, vec![0.0, -3.0, 0.0, 2.0]);
    }
}
