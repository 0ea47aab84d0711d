//! Figures for BENCHMARKS.md's "Context" section (not a test; nothing here is asserted):
//!
//! ```text
//! cargo run --release -p copilot-context --example context_bench -- index DIR [FILE_TO_REINDEX]
//! cargo run --release -p copilot-context --example context_bench -- requests REPO FILE OPEN1,OPEN2,OPEN3
//! cargo run --release -p copilot-context --example context_bench -- show REPO FILE 'typed|rest'
//! ```
//!
//! `show` prints the context for one cursor, as `eval` asks it: the line holding `typed|rest`
//! is cut at `|` (what follows on that line removed), every other file indexed.
//!
//! `index`: build time and added RSS of indexing DIR, then 50 re-indexings of one file (a
//! save). `requests`: the context step for a cursor on every line of FILE in turn (each a
//! new line, so the remembered choice never answers), then again on the same lines with a
//! character typed (the remembered choice answers), p50/p95. Tokens are counted as bytes / 3
//! (the server counts with the model's tokenizer, its counts remembered per line).
//! Each step is timed twice: wall clock, and the thread's own CPU time, which a loaded
//! machine's preemption does not inflate.

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

/// Nanoseconds of CPU this thread has used (`CLOCK_THREAD_CPUTIME_ID`: exact, where
/// `/proc/thread-self/schedstat` moves in scheduler ticks).
fn cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// CPU seconds the whole process has used (user + system, all threads; Linux).
fn process_cpu_s() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the `(comm)`: state is field 3, utime 14, stime 15, in ticks of
            // 1/100 s (Linux's USER_HZ).
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f[11].parse::<f64>().ok()? + f[12].parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(0.0)
}

/// Runs `f`, returning its result, wall milliseconds and CPU milliseconds.
fn timed<T>(f: impl FnOnce() -> T) -> (T, f64, f64) {
    let (c, t) = (cpu_ns(), Instant::now());
    let v = f();
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    (v, wall, (cpu_ns() - c) as f64 / 1e6)
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
        Some("show") => show(Path::new(&args[1]), Path::new(&args[2]), &args[3]),
        Some("requests") => requests(Path::new(&args[1]), Path::new(&args[2]), &args[3]),
        _ => eprintln!("usage: context_bench index DIR [FILE] | requests REPO FILE A,B,C | show REPO FILE TYPED|REST"),
    }
}

fn index(dir: &Path, reindex: Option<PathBuf>) {
    let before = rss_kb("VmRSS:");
    let ws = Workspace::new(dir, ContextSettings::default());
    let (cpu0, t) = (process_cpu_s(), Instant::now());
    let stats = ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    let secs = t.elapsed().as_secs_f64();
    let cpu = process_cpu_s() - cpu0;
    let after = rss_kb("VmRSS:");
    println!(
        "indexed {} files, {} chunks in {secs:.2} s (CPU {cpu:.2} s, all threads); RSS +{:.1} MB (peak {:.1} MB); index estimate {:.1} MB; skipped {:?}; capped {}",
        stats.files,
        stats.chunks,
        (after - before) as f64 / 1024.0,
        rss_kb("VmHWM:") as f64 / 1024.0,
        stats.bytes as f64 / 1e6,
        stats.skipped,
        stats.capped
    );
    if let Some(f) = reindex {
        let (wall, cpu): (Vec<f64>, Vec<f64>) = (0..50)
            .map(|_| {
                let ((), w, c) = timed(|| ws.did_save(&f));
                (w, c)
            })
            .unzip();
        let (p50, p95, max) = percentiles(wall);
        let (c50, c95, cmax) = percentiles(cpu);
        println!(
            "re-index {} ({} bytes): wall p50 {p50:.2} ms, p95 {p95:.2} ms, max {max:.2} ms; \
             cpu p50 {c50:.2} ms, p95 {c95:.2} ms, max {cmax:.2} ms",
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
    let mut fresh_cpu = Vec::new();
    let mut sizes = Vec::new();
    for &s in &starts {
        let line_end = text[s..].find('\n').map_or(text.len(), |i| s + i);
        let (got, wall, cpu) = timed(|| ws.snippets(&doc, &text, line_end, budget, &Approx));
        fresh.push(wall);
        fresh_cpu.push(cpu);
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
    let (c50, c95, cmax) = percentiles(fresh_cpu);
    let (s50, _, _) = percentiles(sizes);
    println!(
        "{} indexed files; {} requests on {}: new line wall p50 {p50:.2} ms, p95 {p95:.2} ms, max {max:.2} ms, \
         cpu p50 {c50:.2} ms, p95 {c95:.2} ms, max {cmax:.2} ms; \
         same line p50 {r50:.3} ms, p95 {r95:.3} ms, max {rmax:.3} ms; median context {s50:.0} tokens",
        stats.files,
        starts.len(),
        file.display()
    );
}

fn show(repo: &Path, file: &Path, marked: &str) {
    let ws = Workspace::new(repo, ContextSettings::default());
    ws.build_index(&|_| {}, &AtomicBool::new(false)).unwrap();
    let doc = repo.join(file);
    let whole = std::fs::read_to_string(&doc).unwrap();
    let (typed, rest) = marked.split_once('|').expect("the cursor is marked with |");
    let at = whole
        .find(&format!("{typed}{rest}"))
        .expect("the marked text is in the file")
        + typed.len();
    let line_end = whole[at..].find('\n').map_or(whole.len(), |i| at + i);
    let text = format!("{}{}", &whole[..at], &whole[line_end..]);
    ws.did_open(&doc, &text);
    for s in ws.snippets(&doc, &text, at, PromptBudget::default(), &Approx) {
        println!(
            "--- {:?} {} ({} tokens)\n{}",
            s.source, s.path, s.tokens, s.text
        );
    }
}
