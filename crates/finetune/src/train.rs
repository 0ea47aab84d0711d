//! The training loop: LoRA on a frozen base model, cross-entropy through differentiable ops
//! only (`Pass::Differentiable`: candle's fused softmax and layer norm record no backward
//! pass), gradient accumulation, global-norm clipping, AdamW with linear warmup and cosine
//! decay, seeded shuffling and dropout, periodic checkpoints and exact resumption.
//!
//! AdamW is written here rather than taken from `candle_nn::optim` because a resumable run
//! needs the moment estimates saved and restored, which candle's optimiser keeps private.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use copilot_engine::{Logits, Lora, Model, Pass};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::error::{io_err, FinetuneError, Result};
use crate::examples::Packed;
use crate::lora::{Target, TrainableLora};
use crate::peft::{key, write_safetensors, Adapter, AdapterConfig};

/// Folder (inside the output folder) of the latest checkpoint.
pub const CHECKPOINT_DIR: &str = "checkpoint";
const STATE_FILE: &str = "trainer_state.json";
const OPTIMIZER_FILE: &str = "optimizer.safetensors";

#[derive(Clone, Debug, PartialEq)]
pub struct TrainOptions {
    pub target: Target,
    pub dropout: f64,
    pub lr: f64,
    /// Warmup steps; None: `warmup_ratio` of the total.
    pub warmup_steps: Option<usize>,
    pub warmup_ratio: f64,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
    /// Sequences per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimiser step.
    pub grad_accum: usize,
    /// Sequences per forward and backward pass (None: the whole micro-batch). A micro-batch
    /// is run in passes of this many sequences and their gradients summed with token
    /// weights: the same gradient in less memory ([`crate::memory`]).
    pub forward_batch: Option<usize>,
    pub epochs: usize,
    /// Stop after this many optimiser steps (the schedule is laid out over them).
    pub max_steps: Option<usize>,
    pub seed: u64,
    /// Checkpoint every this many optimiser steps (0: only at the end of each epoch).
    pub save_every: usize,
    /// Continue from `out/checkpoint` if there is one.
    pub resume: bool,
    /// Recorded in the adapter's config.
    pub base_model: Option<String>,
}

impl Default for TrainOptions {
    fn default() -> Self {
        Self {
            target: Target::default(),
            dropout: 0.05,
            lr: 2e-4,
            warmup_steps: None,
            warmup_ratio: 0.03,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            max_grad_norm: 1.0,
            batch_size: 4,
            grad_accum: 4,
            forward_batch: None,
            epochs: 3,
            max_steps: None,
            seed: 42,
            save_every: 50,
            resume: false,
            base_model: None,
        }
    }
}

/// Reported after every optimiser step.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainProgress {
    pub step: usize,
    pub total_steps: usize,
    pub epoch: usize,
    /// Mean loss of this step's micro-batches (nats per token).
    pub loss: f64,
    pub lr: f64,
    /// Target tokens per second since this run (or resumption) started.
    pub tokens_per_s: f64,
    pub elapsed_s: f64,
    pub eta_s: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainSummary {
    pub steps: usize,
    /// Target tokens trained on in this run.
    pub tokens: usize,
    pub elapsed_s: f64,
    pub tokens_per_s: f64,
    /// Loss of every optimiser step, from step 1 (including resumed-over steps).
    pub losses: Vec<f64>,
    pub resumed_from: Option<usize>,
}

/// What a checkpoint records to resume exactly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct TrainerState {
    step: usize,
    total_steps: usize,
    data_fingerprint: u64,
    sequences: usize,
    seq_len: usize,
    batch_size: usize,
    grad_accum: usize,
    epochs: usize,
    seed: u64,
    rank: usize,
    target_modules: Vec<String>,
    losses: Vec<f64>,
}

/// One micro-batch on the device: inputs, targets and the loss mask.
pub struct Batch {
    pub input: Tensor,
    pub target: Tensor,
    pub mask: Tensor,
    pub tokens: usize,
}

impl Batch {
    pub fn new(data: &Packed, idx: &[usize], device: &Device) -> Result<Self> {
        let t = data.seq_len;
        let mut input = Vec::with_capacity(idx.len() * t);
        let mut target = Vec::with_capacity(idx.len() * t);
        let mut mask = Vec::with_capacity(idx.len() * t);
        let mut tokens = 0;
        for &i in idx {
            let s = &data.sequences[i];
            input.extend_from_slice(&s[..t]);
            target.extend_from_slice(&s[1..]);
            let before = mask.len();
            mask.extend((0..t).map(|j| if data.learns(i, j) { 1f32 } else { 0f32 }));
            tokens += mask[before..].iter().filter(|&&m| m > 0.0).count();
        }
        let b = idx.len();
        Ok(Self {
            input: Tensor::from_vec(input, (b, t), device)?,
            target: Tensor::from_vec(target, (b, t), device)?,
            mask: Tensor::from_vec(mask, (b, t), device)?,
            tokens,
        })
    }
}

/// Mean next-token cross-entropy over the batch's unmasked targets, differentiable (the
/// engine's fused kernel on the CPU, log-softmax and gather elsewhere).
pub fn loss(model: &Model, lora: Option<&Lora>, batch: &Batch, pass: Pass) -> Result<Tensor> {
    let logits = model.forward_batch(&batch.input, Logits::All, lora, pass)?;
    let (b, t, v) = logits.dims3()?;
    let nll = copilot_engine::train_ops::cross_entropy_rows(
        &logits.reshape((b * t, v))?,
        &batch.target.flatten_all()?,
    )?;
    let total = (nll * batch.mask.flatten_all()?)?.sum_all()?;
    Ok((total / batch.tokens.max(1) as f64)?)
}

/// Gradients of [`loss`] for the adapter's variables (one per variable, in `vars()` order;
/// None where the graph gave the variable no gradient at all).
pub fn loss_and_grads(
    model: &Model,
    lora: &TrainableLora,
    batch: &Batch,
    dropout: Option<(f64, &mut dyn rand::RngCore)>,
) -> Result<(f64, Vec<Option<Tensor>>)> {
    let l = loss(
        model,
        Some(&lora.lora(dropout)?),
        batch,
        Pass::Differentiable,
    )?;
    let value = l.to_scalar::<f32>()? as f64;
    let grads: GradStore = l.backward()?;
    let out = lora
        .vars()
        .into_iter()
        .map(|v| grads.get(v.as_tensor()).cloned())
        .collect();
    Ok((value, out))
}

/// Loss and gradients of one micro-batch (`idx`), computed in passes of at most
/// `forward_batch` sequences. The loss is a mean over the micro-batch's learned tokens, so
/// each pass's mean loss and gradients are weighted by its share of those tokens: the sum is
/// the whole micro-batch's. Returns the loss, the gradients and the learned tokens.
pub fn micro_batch_grads(
    model: &Model,
    lora: &TrainableLora,
    data: &Packed,
    idx: &[usize],
    forward_batch: usize,
    mut dropout: Option<(f64, &mut dyn rand::RngCore)>,
) -> Result<(f64, Vec<Option<Tensor>>, usize)> {
    let passes: Vec<Batch> = idx
        .chunks(forward_batch.max(1))
        .map(|c| Batch::new(data, c, model.device()))
        .collect::<Result<_>>()?;
    let tokens: usize = passes.iter().map(|b| b.tokens).sum();
    let mut loss = 0.0;
    let mut acc: Vec<Option<Tensor>> = vec![None; lora.vars().len()];
    for batch in &passes {
        // One pass holding every learned token has weight 1.
        let w = batch.tokens as f64 / tokens.max(1) as f64;
        let d = dropout
            .as_mut()
            .map(|(p, rng)| (*p, &mut **rng as &mut dyn rand::RngCore));
        let (l, grads) = loss_and_grads(model, lora, batch, d)?;
        loss += w * l;
        add_scaled(&mut acc, grads, w)?;
    }
    Ok((loss, acc, tokens))
}

/// `acc += w · grads`, slot by slot (a slot with no gradient stays as it is).
fn add_scaled(acc: &mut [Option<Tensor>], grads: Vec<Option<Tensor>>, w: f64) -> Result<()> {
    for (a, g) in acc.iter_mut().zip(grads) {
        let Some(g) = g else { continue };
        let g = if w == 1.0 { g } else { (g * w)? };
        *a = Some(match a.take() {
            Some(prev) => (prev + g)?,
            None => g,
        });
    }
    Ok(())
}

/// Mean loss over (up to `max_seqs` of) `data`, no gradients: held-out loss.
pub fn eval_loss(
    model: &Model,
    lora: Option<&Lora>,
    data: &Packed,
    batch_size: usize,
    max_seqs: usize,
) -> Result<f64> {
    let n = data.sequences.len().min(max_seqs);
    let (mut sum, mut tokens) = (0.0, 0usize);
    let idx: Vec<usize> = (0..n).collect();
    for chunk in idx.chunks(batch_size.max(1)) {
        let b = Batch::new(data, chunk, model.device())?;
        let l = loss(model, lora, &b, Pass::Inference)?.to_scalar::<f32>()? as f64;
        sum += l * b.tokens as f64;
        tokens += b.tokens;
    }
    Ok(if tokens == 0 {
        f64::NAN
    } else {
        sum / tokens as f64
    })
}

/// Learning rate at optimiser step `step` (0-based): linear warmup to `lr` over `warmup`
/// steps (the first step already moves), then cosine decay to 0 at `total`.
pub fn lr_at(step: usize, total: usize, warmup: usize, lr: f64) -> f64 {
    if step < warmup {
        return lr * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1) as f64;
    let progress = ((step - warmup) as f64 / span).min(1.0);
    lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// AdamW (decoupled weight decay) over a list of variables.
struct AdamW {
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: usize,
}

impl AdamW {
    fn new(vars: &[&Var]) -> Result<Self> {
        let zeros = |v: &&Var| v.as_tensor().zeros_like();
        Ok(Self {
            m: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            v: vars.iter().map(zeros).collect::<candle_core::Result<_>>()?,
            t: 0,
        })
    }

    fn step(&mut self, vars: &[&Var], grads: &[Tensor], lr: f64, o: &TrainOptions) -> Result<()> {
        self.t += 1;
        let bc1 = 1.0 - o.beta1.powi(self.t as i32);
        let bc2 = 1.0 - o.beta2.powi(self.t as i32);
        for (i, (var, g)) in vars.iter().zip(grads).enumerate() {
            self.m[i] = ((&self.m[i] * o.beta1)? + (g * (1.0 - o.beta1))?)?;
            self.v[i] = ((&self.v[i] * o.beta2)? + (g.sqr()? * (1.0 - o.beta2))?)?;
            let m_hat = (&self.m[i] / bc1)?;
            let v_hat = (&self.v[i] / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + o.eps)?)?;
            let theta = var.as_tensor();
            let decayed = if o.weight_decay > 0.0 {
                (theta * (1.0 - lr * o.weight_decay))?
            } else {
                theta.clone()
            };
            var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Optimiser steps per epoch.
pub fn steps_per_epoch(sequences: usize, batch_size: usize, grad_accum: usize) -> usize {
    sequences
        .div_ceil(batch_size.max(1))
        .div_ceil(grad_accum.max(1))
}

fn write_checkpoint(
    dir: &Path,
    lora: &TrainableLora,
    adam: &AdamW,
    state: &TrainerState,
    config: &AdapterConfig,
) -> Result<()> {
    // Write beside, then swap: a crash mid-write never leaves a half checkpoint.
    let tmp = dir.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    Adapter::from_trainable(lora, config.clone())?.save(&tmp)?;
    let mut moments = Vec::new();
    for (i, p) in lora.pairs.iter().enumerate() {
        for (j, which) in ['A', 'B'].into_iter().enumerate() {
            let k = key(lora.arch, p.layer, p.module, which);
            moments.push((format!("{k}.exp_avg"), adam.m[2 * i + j].clone()));
            moments.push((format!("{k}.exp_avg_sq"), adam.v[2 * i + j].clone()));
        }
    }
    write_safetensors(&tmp.join(OPTIMIZER_FILE), moments)?;
    let state_path = tmp.join(STATE_FILE);
    std::fs::write(
        &state_path,
        serde_json::to_string_pretty(state).expect("state serialises"),
    )
    .map_err(io_err(&state_path))?;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::rename(&tmp, dir).map_err(io_err(dir))?;
    Ok(())
}

fn read_checkpoint(
    dir: &Path,
    lora: &TrainableLora,
    adam: &mut AdamW,
    expected: &TrainerState,
) -> Result<TrainerState> {
    let bad = |message: String| FinetuneError::File {
        path: dir.to_path_buf(),
        message,
    };
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path).map_err(io_err(&state_path))?;
    let state: TrainerState =
        serde_json::from_str(&text).map_err(|e| bad(format!("{STATE_FILE}: {e}")))?;
    let same = TrainerState {
        step: state.step,
        losses: state.losses.clone(),
        ..expected.clone()
    };
    if same != state {
        return Err(bad(
            "the checkpoint was made with other data or options (repository, sequence length, \
             batch, accumulation, epochs, seed, rank or targets differ); start afresh without \
             --resume or with another --out"
                .into(),
        ));
    }
    let device = lora
        .pairs
        .first()
        .map_or(Device::Cpu, |p| p.a.device().clone());
    let weights = candle_core::safetensors::load(dir.join(crate::peft::WEIGHTS_FILE), &device)?;
    let moments = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), &device)?;
    let get = |m: &std::collections::HashMap<String, Tensor>, k: &str| {
        m.get(k)
            .cloned()
            .ok_or_else(|| bad(format!("checkpoint lacks `{k}`")))
    };
    for (i, p) in lora.pairs.iter().enumerate() {
        for (j, (which, var)) in [('A', &p.a), ('B', &p.b)].into_iter().enumerate() {
            let k = key(lora.arch, p.layer, p.module, which);
            var.set(&get(&weights, &k)?.to_dtype(DType::F32)?)?;
            adam.m[2 * i + j] = get(&moments, &format!("{k}.exp_avg"))?;
            adam.v[2 * i + j] = get(&moments, &format!("{k}.exp_avg_sq"))?;
        }
    }
    adam.t = state.step;
    Ok(state)
}

/// Train a LoRA adapter on `data`, checkpointing into `out/checkpoint`. Returns the trained
/// adapter (not yet saved as the final output) and a summary. `on_progress` runs after every
/// optimiser step; returning false stops the run there (a checkpoint is written, and
/// `resume` continues from it exactly).
pub fn train(
    model: &Model,
    data: &Packed,
    opts: &TrainOptions,
    out: &Path,
    on_progress: &mut dyn FnMut(&TrainProgress) -> bool,
) -> Result<(Adapter, TrainSummary)> {
    if data.sequences.is_empty() {
        return Err(FinetuneError::NoData("no training sequences".into()));
    }
    if opts.batch_size == 0 || opts.grad_accum == 0 || opts.epochs == 0 {
        return Err(FinetuneError::Options(
            "batch size, accumulation and epochs must be > 0".into(),
        ));
    }
    if !(0.0..1.0).contains(&opts.dropout) {
        return Err(FinetuneError::Options("dropout must lie in [0, 1)".into()));
    }
    let device = model.device().clone();
    let cfg = model.config();
    let lora = TrainableLora::new(cfg, opts.target.clone(), opts.seed, &device)?;
    let vars = lora.vars();
    let mut adam = AdamW::new(&vars)?;
    // The targets as resolved for the architecture (its defaults when none were given).
    let config = AdapterConfig::for_training(&lora.target, opts.dropout, opts.base_model.clone());

    let n = data.sequences.len();
    let per_epoch = steps_per_epoch(n, opts.batch_size, opts.grad_accum);
    let total = (per_epoch * opts.epochs).min(opts.max_steps.unwrap_or(usize::MAX));
    let warmup = opts
        .warmup_steps
        .unwrap_or_else(|| (opts.warmup_ratio * total as f64).ceil() as usize)
        .min(total);
    let mut state = TrainerState {
        step: 0,
        total_steps: total,
        data_fingerprint: data.fingerprint(),
        sequences: n,
        seq_len: data.seq_len,
        batch_size: opts.batch_size,
        grad_accum: opts.grad_accum,
        epochs: opts.epochs,
        seed: opts.seed,
        rank: opts.target.rank,
        target_modules: lora.target.modules.clone(),
        losses: Vec::new(),
    };
    let ckpt: PathBuf = out.join(CHECKPOINT_DIR);
    let mut resumed_from = None;
    if opts.resume && ckpt.join(STATE_FILE).is_file() {
        state = read_checkpoint(&ckpt, &lora, &mut adam, &state)?;
        resumed_from = Some(state.step);
        tracing::info!(step = state.step, total, "resuming from checkpoint");
    }
    let forward_batch = opts.forward_batch.unwrap_or(opts.batch_size).max(1);
    tracing::info!(
        sequences = n,
        seq_len = data.seq_len,
        batch = opts.batch_size,
        forward_batch,
        steps = total,
        per_epoch,
        warmup,
        trainable = vars.iter().map(|v| v.elem_count()).sum::<usize>(),
        "training"
    );

    let started = Instant::now();
    let mut tokens = 0usize;
    let micro_per_epoch = n.div_ceil(opts.batch_size);
    while state.step < total {
        let epoch = state.step / per_epoch;
        let mut order: Vec<usize> = (0..n).collect();
        order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(
            opts.seed ^ (epoch as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        ));
        let micro: Vec<&[usize]> = order.chunks(opts.batch_size).collect();
        let first = (state.step % per_epoch) * opts.grad_accum;
        let last = (first + opts.grad_accum).min(micro_per_epoch);
        // Dropout masks depend only on the step, so a resumed run draws the same ones.
        let mut rng = rand::rngs::StdRng::seed_from_u64(
            opts.seed
                .wrapping_add(0x5851_F42D_4C95_7F2D_u64.wrapping_mul(state.step as u64 + 1)),
        );
        let mut acc: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut step_loss = 0.0;
        let k = (last - first) as f64;
        for idx in &micro[first..last] {
            let dropout =
                (opts.dropout > 0.0).then_some((opts.dropout, &mut rng as &mut dyn rand::RngCore));
            let (l, grads, n) = micro_batch_grads(model, &lora, data, idx, forward_batch, dropout)?;
            if !l.is_finite() {
                return Err(FinetuneError::Other(format!(
                    "loss is {l} at step {}: lower the learning rate",
                    state.step + 1
                )));
            }
            step_loss += l / k;
            tokens += n;
            add_scaled(&mut acc, grads, 1.0 / k)?;
        }
        let mut grads: Vec<Tensor> = acc
            .into_iter()
            .zip(&vars)
            .map(|(g, v)| g.map_or_else(|| v.as_tensor().zeros_like(), Ok))
            .collect::<candle_core::Result<_>>()?;
        if opts.max_grad_norm > 0.0 {
            let mut sq = 0.0f64;
            for g in &grads {
                sq += g.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
            }
            let norm = sq.sqrt();
            if norm > opts.max_grad_norm {
                let f = opts.max_grad_norm / (norm + 1e-6);
                grads = grads
                    .iter()
                    .map(|g| g * f)
                    .collect::<candle_core::Result<_>>()?;
            }
        }
        let lr = lr_at(state.step, total, warmup, opts.lr);
        adam.step(&vars, &grads, lr, opts)?;
        state.step += 1;
        state.losses.push(step_loss);

        let elapsed = started.elapsed().as_secs_f64();
        let done_here = state.step - resumed_from.unwrap_or(0);
        let go_on = on_progress(&TrainProgress {
            step: state.step,
            total_steps: total,
            epoch: epoch + 1,
            loss: step_loss,
            lr,
            tokens_per_s: tokens as f64 / elapsed.max(1e-9),
            elapsed_s: elapsed,
            eta_s: elapsed / done_here as f64 * (total - state.step) as f64,
        });
        if !go_on {
            tracing::info!(step = state.step, "stopped early");
            break;
        }
        let epoch_end = state.step.is_multiple_of(per_epoch);
        let periodic = opts.save_every > 0 && state.step.is_multiple_of(opts.save_every);
        if (epoch_end || periodic) && state.step < total {
            write_checkpoint(&ckpt, &lora, &adam, &state, &config)?;
            tracing::debug!(step = state.step, "checkpoint written");
        }
    }
    // The final state too, so `--resume` after a finished run is a no-op.
    write_checkpoint(&ckpt, &lora, &adam, &state, &config)?;
    let elapsed = started.elapsed().as_secs_f64();
    let summary = TrainSummary {
        steps: state.step,
        tokens,
        elapsed_s: elapsed,
        tokens_per_s: tokens as f64 / elapsed.max(1e-9),
        losses: state.losses.clone(),
        resumed_from,
    };
    Ok((Adapter::from_trainable(&lora, config)?, summary))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_warms_up_then_decays_to_zero() {
        assert!((lr_at(0, 100, 10, 1.0) - 0.1).abs() < 1e-12);
        assert!((lr_at(9, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(10, 100, 10, 1.0) - 1.0).abs() < 1e-12);
        assert!((lr_at(55, 100, 10, 1.0) - 0.5).abs() < 1e-12);
        assert!(lr_at(99, 100, 10, 1.0) < 0.001);
        assert!((lr_at(0, 1, 0, 2e-4) - 2e-4).abs() < 1e-12);
        assert_eq!(steps_per_epoch(33, 4, 4), 3);
        assert_eq!(steps_per_epoch(16, 4, 4), 1);
    }
}
