//! Throughput of the matrix-product kernels on tiny_starcoder_py's layer shapes, at every
//! CPU level this machine runs, against candle's products (BENCHMARKS.md, "Kernels").
//!
//!     cargo run --release -p copilot-engine --example kernels -- [q8_0|q4_0|f32] [rows,..] [runs]
//!     cargo run --release -p copilot-engine --example kernels -- attention [past,..] [runs]
//!
//! Prints GFLOP per CPU-second (2·rows·n·k per product, over the process's CPU time, so a
//! machine shared with other jobs still gives comparable figures; with one thread it is the
//! single core's rate) and, for one row, GB of weights read per CPU-second: medians.

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Tensor};
use copilot_engine::cpu;
use copilot_engine::qmatmul::{PackedQ, QFormat};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// CPU seconds this process has used (every thread).
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn time(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..runs)
            .map(|_| {
                let t = cpu_seconds();
                f();
                cpu_seconds() - t
            })
            .collect(),
    )
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let kind = args.get(1).map_or("q8_0", |s| s.as_str());
    let rows: Vec<usize> = args
        .get(2)
        .map_or("1,4,256", |s| s.as_str())
        .split(',')
        .map(|s| s.parse())
        .collect::<Result<_, _>>()?;
    let runs: usize = args.get(3).map_or(Ok(9), |s| s.parse())?;
    if kind == "attention" {
        return attention(&rows, runs);
    }
    let format = match kind {
        "q8_0" => Some(QFormat::Q8_0),
        "q4_0" => Some(QFormat::Q4_0),
        _ => None,
    };
    let shapes = [(896, 768), (768, 768), (3072, 768), (768, 3072)];
    println!(
        "{kind}, {} threads, CPU extensions: {}",
        rayon::current_num_threads(),
        cpu::extensions().join(" ")
    );
    let dev = Device::Cpu;
    for &m in &rows {
        for &(n, k) in &shapes {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7919) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i * 104_729) % 1999) as f32 / 999.0 - 1.0)
                .collect();
            let flop = 2.0 * (m * n * k) as f64;
            let mut line = format!("rows {m:>4} {n:>4}x{k:<4}");
            let wt = Tensor::from_slice(&w, (n, k), &dev)?;
            let xt = Tensor::from_slice(&x, (m, k), &dev)?;
            let candle = match kind {
                "f32" => {
                    let wtt = wt.t()?;
                    time(runs, || {
                        xt.matmul(&wtt).unwrap();
                    })
                }
                _ => {
                    let q = QMatMul::from_qtensor(QTensor::quantize(
                        &wt,
                        format.ok_or("q8_0, q4_0 or f32")?.ggml(),
                    )?)?;
                    time(runs, || {
                        xt.apply(&q).unwrap();
                    })
                }
            };
            line += &format!(" | candle {:>6.1}", flop / candle / 1e9);
            for level in cpu::available() {
                let t = match kind {
                    "f32" => time(runs, || {
                        let y = if m <= copilot_engine::skinny::MAX_ROWS {
                            copilot_engine::skinny::matmul_t_slices_at(level, &x, m, &w, n, k)
                        } else {
                            copilot_engine::sgemm::matmul_t(&x, m, &w, n, k, level)
                        };
                        std::hint::black_box(y);
                    }),
                    _ => {
                        let f = format.ok_or("q8_0, q4_0 or f32")?;
                        let p = PackedQ::quantize(f, &w, n, k, level)?;
                        let t = time(runs, || {
                            std::hint::black_box(p.matmul_t(&x, m));
                        });
                        if m == 1 {
                            line += &format!(
                                " | {level} {:>6.1} ({:.1} GB/s)",
                                flop / t / 1e9,
                                p.bytes() as f64 / t / 1e9
                            );
                            continue;
                        }
                        t
                    }
                };
                line += &format!(" | {level} {:>6.1}", flop / t / 1e9);
            }
            println!("{line}");
        }
    }
    Ok(())
}

/// Causal attention of a 256-token prefill chunk (and of one decode token) after `past`
/// cached positions, tiny_starcoder_py's heads (12 queries, one shared key/value head of 64).
fn attention(pasts: &[usize], runs: usize) -> Result<(), Box<dyn std::error::Error>> {
    let dev = Device::Cpu;
    let (heads, d) = (12, 64);
    for &past in pasts {
        for t in [1usize, 256] {
            let len = past + t;
            let q = Tensor::randn(0f32, 1.0, (1, t, heads, d), &dev)?;
            let k = Tensor::randn(0f32, 1.0, (1, 1, len, d), &dev)?;
            let v = Tensor::randn(0f32, 1.0, (1, 1, len, d), &dev)?;
            // Useful flops: the causal triangle only.
            let keys: usize = (0..t).map(|i| past + i + 1).sum();
            let flop = 4.0 * (keys * heads * d) as f64;
            // candle's composed ops, as the model ran them before.
            let mask: Vec<f32> = (0..t)
                .flat_map(|i| {
                    (0..len).map(move |j| {
                        if j <= past + i {
                            0.0
                        } else {
                            f32::NEG_INFINITY
                        }
                    })
                })
                .collect();
            let mask = Tensor::from_vec(mask, (t, len), &dev)?;
            let composed = || -> candle_core::Result<Tensor> {
                let qs = (q.clone() * 0.125)?.reshape((1, 1, t * heads, d))?;
                let s = qs.matmul(&k.t()?)?.reshape((1, t, heads, len))?;
                let s = s.broadcast_add(&mask.reshape((1, t, 1, len))?)?;
                let w = candle_nn::ops::softmax_last_dim(&s)?.reshape((1, 1, t * heads, len))?;
                w.matmul(&v)
            };
            let c = time(runs, || {
                composed().unwrap();
            });
            let mut line = format!(
                "attention t {t:>3} after {past:>5} | candle {:>6.1}",
                flop / c / 1e9
            );
            for level in cpu::available() {
                let t = time(runs, || {
                    copilot_engine::attention::causal_at(level, &q, &k, &v, 0.125).unwrap();
                });
                line += &format!(" | {level} {:>6.1}", flop / t / 1e9);
            }
            println!("{line}");
        }
    }
    Ok(())
}
