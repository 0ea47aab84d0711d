//! What one forward step costs after a long cached prompt, by the number of new tokens:
//! the cost of a keystroke once the KV cache is reused (BENCHMARKS.md, "typing").
//!
//!     cargo run --release -p copilot-engine --example step_cost -- /tmp/tsp [past] [dtype] [k,k,..] [runs]

use std::time::Instant;

use copilot_engine::{load, DTypeSpec, KvCache, Logits, ModelSpec};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let dir = args
        .get(1)
        .ok_or("usage: step_cost CHECKPOINT [past] [dtype] [k,k,..] [runs]")?;
    let past: usize = args.get(2).map_or(Ok(1800), |s| s.parse())?;
    let dtype: DTypeSpec = args.get(3).map_or("f32", |s| s.as_str()).parse()?;
    let spec = ModelSpec {
        model: dir.clone(),
        ..Default::default()
    };
    let files = load::resolve(&spec, &mut |_| {})?;
    let cfg = load::files_config(&files)?;
    let device = candle_core::Device::Cpu;
    let mut model = load::load_model(&files, &cfg, &device, candle_core::DType::F32)?;
    if let Some(q) = dtype.quantized() {
        model.quantize(q)?;
    }
    let ids: Vec<u32> = (0..past + 16)
        .map(|i| (i * 7919 % 8000) as u32 + 100)
        .collect();
    let mut cache = KvCache::new();
    model.forward_cached(&ids[..past], &mut cache, Logits::Last, None)?;
    println!("{dir} after {past} cached positions, {dtype:?}");
    let ks: Vec<usize> = match args.get(4) {
        Some(list) => list
            .split(',')
            .map(|k| k.parse())
            .collect::<Result<_, _>>()?,
        None => vec![1, 2, 3, 4, 6, 8, 16],
    };
    let runs: usize = args.get(5).map_or(Ok(7), |s| s.parse())?;
    for k in ks {
        let mut times = Vec::new();
        for _ in 0..runs {
            cache.truncate(past);
            let t = Instant::now();
            model.forward_cached(&ids[past..past + k], &mut cache, Logits::Last, None)?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{k:>3} new tokens: {:>7.1} ms (median of {runs})",
            times[runs / 2]
        );
    }
    Ok(())
}
