//! Which vector instructions the CPU kernels use: detected once per process, capped by the
//! `COPILOT_LSP_CPU` environment variable (so the AVX2 path can be tested and measured on an
//! AVX-512 machine).
//!
//! Owns the [`Level`] ladder and the list of extensions the CPU reports; knows nothing of
//! tensors, models or any kernel's arithmetic. Kernels take a `Level` and match on it once
//! per product, never per element.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that caps the level: `scalar`, `avx2`, `avx2-vnni`, `avx512`,
/// `avx512-vnni`, `neon`, `neon-dotprod` (or `native`, the default: no cap).
pub const ENV: &str = "COPILOT_LSP_CPU";

/// A rung of instructions a kernel may use. Each rung includes the ones below it on its
/// architecture; a level names exactly what it uses (`avx512` without VNNI even where the CPU
/// has it, so each path can be chosen and compared).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Portable Rust, what the compiler makes of it for the build's baseline target.
    Scalar,
    /// x86-64 AVX2 + FMA + F16C (Haswell and later, Zen 1 to 3, most laptops).
    Avx2,
    /// AVX2 plus AVX-VNNI's 256-bit int8 dot products (Intel Alder Lake and later).
    Avx2Vnni,
    /// AVX-512 F/BW/VL (Skylake-SP, Ice Lake, Zen 4 and later).
    Avx512,
    /// AVX-512 plus AVX512-VNNI's 512-bit int8 dot products.
    Avx512Vnni,
    /// aarch64 Advanced SIMD (every 64-bit ARM CPU).
    Neon,
    /// NEON plus the int8 dot-product instructions (`sdot`: Apple M1 and later, Cortex-A76+).
    NeonDot,
}

impl Level {
    pub const ALL: [Level; 7] = [
        Level::Scalar,
        Level::Avx2,
        Level::Avx2Vnni,
        Level::Avx512,
        Level::Avx512Vnni,
        Level::Neon,
        Level::NeonDot,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx2Vnni => "avx2-vnni",
            Level::Avx512 => "avx512",
            Level::Avx512Vnni => "avx512-vnni",
            Level::Neon => "neon",
            Level::NeonDot => "neon-dotprod",
        }
    }

    pub fn parse(s: &str) -> Option<Level> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Level::ALL.into_iter().find(|l| l.name() == s)
    }

    /// Whether this CPU can run the level.
    pub fn supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                    && std::arch::is_x86_feature_detected!("f16c")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx2Vnni => {
                Level::Avx2.supported() && std::arch::is_x86_feature_detected!("avxvnni")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => {
                Level::Avx2.supported()
                    && std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            #[cfg(target_arch = "x86_64")]
            Level::Avx512Vnni => {
                Level::Avx512.supported() && std::arch::is_x86_feature_detected!("avx512vnni")
            }
            #[cfg(target_arch = "aarch64")]
            Level::Neon => std::arch::is_aarch64_feature_detected!("neon"),
            #[cfg(target_arch = "aarch64")]
            Level::NeonDot => {
                Level::Neon.supported() && std::arch::is_aarch64_feature_detected!("dotprod")
            }
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// Whether the level's int8 products have a dot-product instruction (VNNI, `sdot`).
    pub fn has_int8_dot(self) -> bool {
        matches!(self, Level::Avx2Vnni | Level::Avx512Vnni | Level::NeonDot)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Every level this CPU can run, lowest first (what the tests compare with `Scalar`).
pub fn available() -> Vec<Level> {
    Level::ALL.into_iter().filter(|l| l.supported()).collect()
}

/// The best level this CPU runs.
pub fn detected() -> Level {
    available().into_iter().max().unwrap_or(Level::Scalar)
}

/// The best supported level not above `cap` on the same architecture; a cap for another
/// architecture leaves `Scalar`.
pub fn capped(cap: Level) -> Level {
    available()
        .into_iter()
        .filter(|&l| l <= cap && (l == Level::Scalar || same_family(l, cap)))
        .max()
        .unwrap_or(Level::Scalar)
}

fn same_family(a: Level, b: Level) -> bool {
    let arm = |l: Level| matches!(l, Level::Neon | Level::NeonDot);
    b == Level::Scalar || arm(a) == arm(b)
}

/// How the level was chosen, for logs and `bench`.
#[derive(Clone, Debug)]
pub struct Choice {
    pub level: Level,
    pub detected: Level,
    /// The value of [`ENV`] when set.
    pub cap: Option<String>,
}

/// The level every kernel uses in this process: detected once, capped by [`ENV`].
pub fn level() -> Level {
    choice().level
}

pub fn choice() -> &'static Choice {
    static CHOICE: OnceLock<Choice> = OnceLock::new();
    CHOICE.get_or_init(|| {
        let detected = detected();
        let cap = std::env::var(ENV).ok().filter(|s| !s.trim().is_empty());
        let level = match cap.as_deref() {
            None => detected,
            Some(s) if s.trim().eq_ignore_ascii_case("native") => detected,
            Some(s) => match Level::parse(s) {
                Some(c) => capped(c),
                None => {
                    tracing::warn!(
                        "{ENV}={s:?} is not a level (scalar, avx2, avx2-vnni, avx512, \
                         avx512-vnni, neon, neon-dotprod, native): using {detected}"
                    );
                    detected
                }
            },
        };
        tracing::info!("CPU kernels: {level} (detected {detected})");
        Choice {
            level,
            detected,
            cap,
        }
    })
}

/// The vector extensions the CPU reports, among those that matter to these kernels.
pub fn extensions() -> Vec<&'static str> {
    let mut out = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) {
                    out.push($f);
                }
            )*};
        }
        probe!(
            "sse4.2",
            "avx",
            "avx2",
            "fma",
            "f16c",
            "avxvnni",
            "avx512f",
            "avx512bw",
            "avx512vl",
            "avx512vnni",
            "avx512bf16",
            "avx512fp16"
        );
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! probe {
            ($($f:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($f) {
                    out.push($f);
                }
            )*};
        }
        // (`sme` would need the unstable `stdarch_aarch64_feature_detection`: left out.)
        probe!("neon", "dotprod", "fp16", "i8mm", "sve", "sve2");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_names_are_refused() {
        for l in Level::ALL {
            assert_eq!(Level::parse(l.name()), Some(l));
        }
        assert_eq!(Level::parse(" AVX512_VNNI "), Some(Level::Avx512Vnni));
        assert_eq!(Level::parse("avx3"), None);
        assert_eq!(Level::parse(""), None);
    }

    #[test]
    fn a_cap_never_raises_the_level_and_scalar_is_always_there() {
        let avail = available();
        assert!(avail.contains(&Level::Scalar));
        assert!(avail.iter().all(|l| l.supported()));
        assert_eq!(capped(Level::Scalar), Level::Scalar);
        for cap in Level::ALL {
            let got = capped(cap);
            assert!(got.supported());
            assert!(got == Level::Scalar || got <= cap, "{cap} -> {got}");
            assert!(got <= detected());
        }
        // The detected level capped at itself is itself.
        assert_eq!(capped(detected()), detected());
    }

    #[test]
    fn a_cap_for_another_architecture_leaves_scalar() {
        #[cfg(target_arch = "x86_64")]
        assert_eq!(capped(Level::NeonDot), Level::Scalar);
        #[cfg(target_arch = "aarch64")]
        assert_eq!(capped(Level::Avx512Vnni), Level::Scalar);
    }
}
