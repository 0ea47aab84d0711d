//! What the user asked for: which model, where it runs, in which precision.
//!
//! Parsed from CLI flags and server settings alike; validation errors are plain strings
//! the caller shows as is.

use std::fmt;
use std::str::FromStr;

/// Default checkpoint: the one the product is built around.
pub const DEFAULT_MODEL: &str = "bigcode/tiny_starcoder_py";

/// Where to find the model: a local directory or a hub repository id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// A local directory (if it exists) or a hub repo id such as `bigcode/tiny_starcoder_py`.
    pub model: String,
    pub revision: Option<String>,
    /// Use the hub cache only; never touch the network. `HF_HUB_OFFLINE=1` implies it.
    pub offline: bool,
    pub device: DeviceSpec,
    pub dtype: DTypeSpec,
    /// Cap on compute threads (None: a default that leaves room for the editor).
    pub threads: Option<usize>,
    /// Bytes for merged copies of LoRA adapters (None: [`crate::merged::DEFAULT_MERGE_BUDGET`];
    /// 0: every adapter unmerged). See [`crate::merged`].
    pub adapter_memory: Option<usize>,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self {
            model: DEFAULT_MODEL.to_string(),
            revision: None,
            offline: false,
            device: DeviceSpec::Auto,
            dtype: DTypeSpec::Auto,
            threads: None,
            adapter_memory: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceSpec {
    /// CUDA if built with it and present, else Metal likewise, else CPU.
    #[default]
    Auto,
    Cpu,
    Cuda(usize),
    Metal,
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim().to_ascii_lowercase();
        match s.as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            "metal" | "mps" => Ok(Self::Metal),
            _ => match s.strip_prefix("cuda:") {
                Some(n) => n
                    .parse()
                    .map(Self::Cuda)
                    .map_err(|_| format!("invalid CUDA ordinal in device `{s}`")),
                None => Err(format!(
                    "unknown device `{s}` (expected auto, cpu, cuda, cuda:N or metal)"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
            Self::Metal => f.write_str("metal"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DTypeSpec {
    /// f32 on CPU, f16 on CUDA/Metal.
    #[default]
    Auto,
    F32,
    F16,
    Bf16,
    /// 8-bit GGML blocks (candle's quantized matmul), f32 activations.
    Q8_0,
    /// 4-bit GGML blocks.
    Q4_0,
    /// 4-bit K-quants (blocks of 256; smaller layers stay at their dense dtype).
    Q4K,
}

impl DTypeSpec {
    /// The GGML block format, for the quantized choices.
    pub fn quantized(self) -> Option<candle_core::quantized::GgmlDType> {
        use candle_core::quantized::GgmlDType;
        match self {
            Self::Q8_0 => Some(GgmlDType::Q8_0),
            Self::Q4_0 => Some(GgmlDType::Q4_0),
            Self::Q4K => Some(GgmlDType::Q4K),
            _ => None,
        }
    }
}

impl FromStr for DTypeSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "float32" => Ok(Self::F32),
            "f16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "q8_0" | "q8" => Ok(Self::Q8_0),
            "q4_0" => Ok(Self::Q4_0),
            "q4k" | "q4_k" | "q4_k_m" => Ok(Self::Q4K),
            other => Err(format!(
                "unknown dtype `{other}` (expected auto, f32, f16, bf16, q8_0, q4_0 or q4k)"
            )),
        }
    }
}

impl fmt::Display for DTypeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Q8_0 => "q8_0",
            Self::Q4_0 => "q4_0",
            Self::Q4K => "q4k",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse() {
        assert_eq!("cpu".parse::<DeviceSpec>(), Ok(DeviceSpec::Cpu));
        assert_eq!("CUDA:1".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(1)));
        assert_eq!("cuda".parse::<DeviceSpec>(), Ok(DeviceSpec::Cuda(0)));
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert_eq!(DeviceSpec::Cuda(2).to_string(), "cuda:2");
    }

    #[test]
    fn dtypes_parse() {
        assert_eq!("bf16".parse::<DTypeSpec>(), Ok(DTypeSpec::Bf16));
        assert_eq!("float32".parse::<DTypeSpec>(), Ok(DTypeSpec::F32));
        assert!("int3".parse::<DTypeSpec>().is_err());
        assert_eq!("Q8_0".parse::<DTypeSpec>(), Ok(DTypeSpec::Q8_0));
        assert!(DTypeSpec::Q4K.quantized().is_some());
        assert!(DTypeSpec::F32.quantized().is_none());
    }
}
