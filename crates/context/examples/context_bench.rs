//! Figures for BENCHMARKS.md's "Context" section (not a test; nothing here is asserted):
//!
//! ```text
//! cargo run --release -p copilot-context --example context_bench -- index DIR [FILE_TO_REINDEX]
//! cargo run --release -p copilot-context --example context_bench -- requests REPO FILE OPEN1,OPEN2,OPEN3
//! ```
//!
//! `index`: build time and added RSS of indexing DIR, then 50 re-indexings of one file (a
//! save). `requests`: the context step for a cursor on every line of FILE in turn (each a
//! new line, so the remembered choice never answers), then again on the same lines with a
//! character typed (the remembered choice answers), p50/p95. Tokens are counted as bytes / 3
//! (the server counts with the model's tokenizer, its counts remembered per line).

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use copilot_context::{ContextSettings, PromptBudget, Workspace};
use copilot_fim::TokenCounter;

struct Approx;
impl TokenCounter for Approx {
    fn count(&self, text: &str) -> usize {
        text.len().div_ceil(3)
    }
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((q * (v.len() - 1) as f64).round()) as usize];
    (at(0.5), at(0.95), *v.last().unwrap())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("index") => index(Path::new(&args[1]), args.get(2).map(PathBuf::from)),
        Some("requests") => requests(Path::new(&args[1]), Path::new(&args[2]), &args[3]),
        _ => eprintln!("usage: context_bench index DIR [FILE] | requests REPO FILE A,B,C"),
    }
}

fn index(dir: &Path, reindex: Option<PathBuf>) {
    let before = rss_kb("VmRSS:");
    let ws = Workspace::new(dir, ContextSettings::default());
    let t = Instant::now();
    let stats = ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let after = rss_kb("VmRSS:");
    println!(
        "indexed {} files, {} chunks in {secs:.2} s; RSS +{:.1} MB (peak {:.1} MB); index estimate {:.1} MB; skipped {:?}; capped {}",
        stats.files,
        stats.chunks,
        (after - before) as f64 / 1024.0,
        rss_kb("VmHWM:") as f64 / 1024.0,
        stats.bytes as f64 / 1e6,
        stats.skipped,
        stats.capped
    );
    if let Some(f) = reindex {
        let times: Vec<f64> = (0..50)
            .map(|_| {
                let t = Instant::now();
                ws.did_save(&f);
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        let (p50, p95, max) = percentiles(times);
        println!(
            "re-index {} ({} bytes): p50 {p50:.2} ms, p95 {p95:.2} ms, max {max:.2} ms",
            f.display(),
            std::fs::metadata(&f).map_or(0, |m| m.len())
        );
    }
}

fn requests(repo: &Path, file: &Path, open: &str) {
    let ws = Workspace::new(repo, ContextSettings::default());
    let stats = ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    for o in open.split(',') {
        let p = repo.join(o);
        ws.did_open(&p, &std::fs::read_to_string(&p).unwrap());
    }
    let doc = repo.join(file);
    let text = std::fs::read_to_string(&doc).unwrap();
    ws.did_open(&doc, &text);
    let starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .filter(|&i| i < text.len())
        .collect();
    let budget = PromptBudget::default();
    let (mut fresh, mut remembered) = (Vec::new(), Vec::new());
    let mut sizes = Vec::new();
    for &s in &starts {
        let line_end = text[s..].find('\n').map_or(text.len(), |i| s + i);
        let t = Instant::now();
        let got = ws.snippets(&doc, &text, line_end, budget, &Approx);
        fresh.push(t.elapsed().as_secs_f64() * 1000.0);
        sizes.push(got.iter().map(|x| x.tokens).sum::<usize>() as f64);
        let mut typed = text.clone();
        typed.insert(line_end, 'x');
        let t = Instant::now();
        let again = ws.snippets(&doc, &typed, line_end + 1, budget, &Approx);
        remembered.push(t.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(again, got, "stable while typing on the line");
    }
    let (p50, p95, max) = percentiles(fresh);
    let (r50, r95, rmax) = percentiles(remembered);
    let (s50, _, _) = percentiles(sizes);
    println!(
        "{} indexed files; {} requests on {}: new line p50 {p50:.2} ms, p95 {p95:.2} ms, max {max:.2} ms; \
         same line p50 {r50:.3} ms, p95 {r95:.3} ms, max {rmax:.3} ms; median context {s50:.0} tokens",
        stats.files,
        starts.len(),
        file.display()
    );
}
