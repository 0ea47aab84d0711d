//! What one unmerged LoRA delta costs on a decode row, per target shape of
//! tiny_starcoder_py (rank 16): the in-place path against the tensor path it replaced.
//! `cargo run --release -p copilot-engine --example lora_cost`

use std::time::Instant;

use candle_core::{Device, Tensor};
use copilot_engine::lora::LoraPair;
use copilot_engine::low_rank;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    println!("kernels {}", copilot_engine::cpu::level());
    for (name, k, n) in [
        ("c_attn", 768, 896),
        ("attn.c_proj", 768, 768),
        ("c_fc", 768, 3072),
        ("mlp.c_proj", 3072, 768),
    ] {
        let pair = LoraPair::new(
            Tensor::randn(0f32, 1.0, (16, k), &dev)?,
            Tensor::randn(0f32, 1.0, (n, 16), &dev)?,
            2.0,
        );
        let prepared = low_rank::prepare_pair(&pair);
        let x = Tensor::randn(0f32, 1.0, (1, 1, k), &dev)?;
        let y = Tensor::randn(0f32, 1.0, (1, 1, n), &dev)?;
        let mut fast = Vec::new();
        let mut old = Vec::new();
        for _ in 0..2000 {
            let t = Instant::now();
            low_rank::add_for_bench(&y, &x, &prepared)?;
            fast.push(t.elapsed().as_secs_f64() * 1e6);
            let t = Instant::now();
            let d = x
                .broadcast_matmul(&pair.a.t()?)?
                .broadcast_matmul(&pair.b.t()?)?;
            let _z = y.add(&d.affine(pair.scale, 0.0)?.to_dtype(y.dtype())?)?;
            old.push(t.elapsed().as_secs_f64() * 1e6);
        }
        println!(
            "{name:<12} in place p50 {:.1} us | tensor path p50 {:.1} us",
            median(fast),
            median(old)
        );
    }
    Ok(())
}
