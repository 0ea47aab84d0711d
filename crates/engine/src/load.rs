//! Finding and loading a checkpoint: a local directory or a hub repository (through `hf-hub`
//! and its standard cache, `HF_HOME`; offline mode reads the cache only), safetensors (sharded
//! too) with a fallback to `pytorch_model.bin`; device and dtype resolution.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use hf_hub::{Repo, RepoType};

use crate::config::Config;
use crate::error::{EngineError, Result};
use crate::model::Model;
use crate::spec::{DTypeSpec, DeviceSpec, ModelSpec};
use crate::tokenizer::Tokenizer;

pub const CONFIG_FILE: &str = "config.json";
pub const TOKENIZER_FILE: &str = "tokenizer.json";
pub const SAFETENSORS_FILE: &str = "model.safetensors";
pub const SAFETENSORS_INDEX_FILE: &str = "model.safetensors.index.json";
pub const PTH_FILE: &str = "pytorch_model.bin";

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Weights {
    Safetensors(Vec<PathBuf>),
    Pth(PathBuf),
    /// llama.cpp's GGUF (`starcoder` architecture); the configuration comes from its metadata.
    Gguf(PathBuf),
}

/// The files of one checkpoint, on local disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFiles {
    pub config: PathBuf,
    pub tokenizer: PathBuf,
    pub weights: Weights,
}

/// Progress while resolving files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch<'a> {
    /// About to fetch this file from the hub (a cache hit returns at once).
    Fetching(&'a str),
}

fn env_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE")
        .map(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        })
        .unwrap_or(false)
}

fn looks_like_path(s: &str) -> bool {
    s.starts_with('/')
        || s.starts_with('.')
        || s.starts_with('~')
        || s.contains('\\')
        || s.split('/').count() > 2
}

/// Find the checkpoint's files: a local directory as is, a hub id through the cache (and the
/// network unless offline).
pub fn resolve(spec: &ModelSpec, on_fetch: &mut dyn FnMut(Fetch)) -> Result<ModelFiles> {
    let path = Path::new(&spec.model);
    if path.is_dir() {
        return resolve_dir(path);
    }
    if path.is_file() && path.extension().is_some_and(|e| e == "gguf") {
        // A tokenizer.json beside the file wins; else the one inside it (llama.cpp's files
        // carry theirs).
        let mut tokenizer = path.with_file_name(TOKENIZER_FILE);
        if !tokenizer.is_file() {
            tokenizer = path.to_path_buf();
        }
        return Ok(ModelFiles {
            config: path.to_path_buf(),
            tokenizer,
            weights: Weights::Gguf(path.to_path_buf()),
        });
    }
    if path.exists() {
        return Err(EngineError::NotFound(format!(
            "{} is a file; --model takes a checkpoint directory, a .gguf file or a hub repo id",
            spec.model
        )));
    }
    if looks_like_path(&spec.model) || spec.model.is_empty() {
        return Err(EngineError::NotFound(format!(
            "no such directory: {}",
            spec.model
        )));
    }
    let offline = spec.offline || env_offline();
    let revision = spec.revision.clone().unwrap_or_else(|| "main".into());
    let repo = Repo::with_revision(spec.model.clone(), RepoType::Model, revision);
    let source = HubSource::new(repo, offline)?;
    let mut get = |file: &str, required: bool| -> Result<Option<PathBuf>> {
        on_fetch(Fetch::Fetching(file));
        source.get(file, required)
    };
    let config = get(CONFIG_FILE, true)?.expect("required");
    let tokenizer = get(TOKENIZER_FILE, true)?.expect("required");
    let weights = if let Some(p) = get(SAFETENSORS_FILE, false)? {
        Weights::Safetensors(vec![p])
    } else if let Some(index) = get(SAFETENSORS_INDEX_FILE, false)? {
        let shards = shard_names(&index)?;
        let mut paths = Vec::new();
        for s in shards {
            paths.push(get(&s, true)?.expect("required"));
        }
        Weights::Safetensors(paths)
    } else if let Some(p) = get(PTH_FILE, false)? {
        Weights::Pth(p)
    } else {
        return Err(EngineError::NotFound(format!(
            "{}: no {SAFETENSORS_FILE}, {SAFETENSORS_INDEX_FILE} or {PTH_FILE}{}",
            spec.model,
            if offline {
                " in the hub cache (offline)"
            } else {
                ""
            }
        )));
    };
    Ok(ModelFiles {
        config,
        tokenizer,
        weights,
    })
}

struct HubSource {
    cache: hf_hub::CacheRepo,
    api: Option<hf_hub::api::sync::ApiRepo>,
    repo_id: String,
}

impl HubSource {
    fn new(repo: Repo, offline: bool) -> Result<Self> {
        let cache = hf_hub::Cache::from_env();
        let repo_id = repo.url();
        let api = if offline {
            None
        } else {
            let api = hf_hub::api::sync::ApiBuilder::from_cache(cache.clone())
                .with_progress(false)
                .build()
                .map_err(|e| EngineError::Hub(e.to_string()))?;
            Some(api.repo(repo.clone()))
        };
        Ok(Self {
            cache: cache.repo(repo),
            api,
            repo_id,
        })
    }

    fn get(&self, file: &str, required: bool) -> Result<Option<PathBuf>> {
        if let Some(p) = self.cache.get(file) {
            return Ok(Some(p));
        }
        match &self.api {
            None => {
                if required {
                    Err(EngineError::NotFound(format!(
                        "{file} of {} is not in the hub cache ({}) and offline mode is on",
                        self.repo_id,
                        hf_hub::Cache::from_env().path().display()
                    )))
                } else {
                    Ok(None)
                }
            }
            Some(api) => match api.get(file) {
                Ok(p) => Ok(Some(p)),
                // A file the repository does not have (404): let the caller try the next format.
                Err(e) if !required && e.to_string().contains("404") => Ok(None),
                Err(e) => Err(EngineError::Hub(format!("{file} of {}: {e}", self.repo_id))),
            },
        }
    }
}

fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index).map_err(|e| EngineError::File {
        path: index.to_path_buf(),
        message: e.to_string(),
    })?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| EngineError::File {
        path: index.to_path_buf(),
        message: format!("invalid index: {e}"),
    })?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| EngineError::File {
            path: index.to_path_buf(),
            message: "no weight_map".into(),
        })?;
    let mut names: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    names.sort();
    names.dedup();
    Ok(names)
}

fn resolve_dir(dir: &Path) -> Result<ModelFiles> {
    let need = |name: &str| -> Result<PathBuf> {
        let p = dir.join(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(EngineError::NotFound(format!(
                "{} has no {name}",
                dir.display()
            )))
        }
    };
    let config = need(CONFIG_FILE)?;
    let tokenizer = need(TOKENIZER_FILE)?;
    let weights = if dir.join(SAFETENSORS_FILE).is_file() {
        Weights::Safetensors(vec![dir.join(SAFETENSORS_FILE)])
    } else if dir.join(SAFETENSORS_INDEX_FILE).is_file() {
        let shards = shard_names(&dir.join(SAFETENSORS_INDEX_FILE))?;
        Weights::Safetensors(shards.iter().map(|s| need(s)).collect::<Result<Vec<_>>>()?)
    } else if dir.join(PTH_FILE).is_file() {
        Weights::Pth(dir.join(PTH_FILE))
    } else {
        return Err(EngineError::NotFound(format!(
            "{} has no weights ({SAFETENSORS_FILE}, {SAFETENSORS_INDEX_FILE} or {PTH_FILE})",
            dir.display()
        )));
    };
    Ok(ModelFiles {
        config,
        tokenizer,
        weights,
    })
}

/// Pick the device: CUDA or Metal when built with them and present, else CPU.
pub fn select_device(spec: DeviceSpec) -> Result<Device> {
    let dev = |r: candle_core::Result<Device>| r.map_err(|e| EngineError::Device(e.to_string()));
    match spec {
        DeviceSpec::Cpu => Ok(Device::Cpu),
        DeviceSpec::Cuda(n) => {
            if !candle_core::utils::cuda_is_available() {
                return Err(EngineError::Device(
                    "CUDA requested but this build has no CUDA support (build with --features cuda)"
                        .into(),
                ));
            }
            dev(Device::new_cuda(n))
        }
        DeviceSpec::Metal => {
            if !candle_core::utils::metal_is_available() {
                return Err(EngineError::Device(
                    "Metal requested but this build has no Metal support (build with --features metal)"
                        .into(),
                ));
            }
            dev(Device::new_metal(0))
        }
        DeviceSpec::Auto => {
            if candle_core::utils::cuda_is_available() {
                if let Ok(d) = Device::new_cuda(0) {
                    return Ok(d);
                }
            }
            if candle_core::utils::metal_is_available() {
                if let Ok(d) = Device::new_metal(0) {
                    return Ok(d);
                }
            }
            Ok(Device::Cpu)
        }
    }
}

/// Pick the dtype: f32 on CPU (candle's CPU matmul has no bf16), f16 on GPUs.
pub fn select_dtype(spec: DTypeSpec, device: &Device) -> Result<DType> {
    match (spec, device.is_cpu()) {
        (DTypeSpec::Auto, true) | (DTypeSpec::F32, _) => Ok(DType::F32),
        // Quantized: weights are quantized after loading; activations stay f32.
        (DTypeSpec::Q8_0 | DTypeSpec::Q4_0 | DTypeSpec::Q4K, _) => Ok(DType::F32),
        (DTypeSpec::Auto, false) | (DTypeSpec::F16, _) => Ok(DType::F16),
        (DTypeSpec::Bf16, false) => Ok(DType::BF16),
        (DTypeSpec::Bf16, true) => Err(EngineError::Device(
            "bf16 is not supported on CPU (candle's CPU matmul has no bf16); use f32 or f16".into(),
        )),
    }
}

/// The configuration of a checkpoint: `config.json`, or a GGUF file's metadata.
pub fn files_config(files: &ModelFiles) -> Result<Config> {
    match &files.weights {
        Weights::Gguf(p) => crate::gguf::Gguf::open(p, &Device::Cpu)?.config(),
        _ => load_config(&files.config),
    }
}

/// Read and validate `config.json`.
pub fn load_config(path: &Path) -> Result<Config> {
    let text = std::fs::read_to_string(path).map_err(|e| EngineError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Config::from_json(&text, path)
}

/// Load weights into a [`Model`]. Errors name the file and, for a bad tensor, its name.
pub fn load_model(
    files: &ModelFiles,
    cfg: &Config,
    device: &Device,
    dtype: DType,
) -> Result<Model> {
    let (vb, first) = match &files.weights {
        Weights::Gguf(p) => {
            let g = crate::gguf::Gguf::open(p, device)?;
            return Model::load_from(&g, cfg);
        }
        Weights::Safetensors(paths) => {
            // Read tensor by tensor rather than through a memory map: the mapped pages would
            // count on top of the copies candle makes, doubling the peak memory.
            let src = StreamedSafetensors::open(paths, dtype, device)?;
            return Model::load_from(&src, cfg);
        }
        Weights::Pth(p) => (
            VarBuilder::from_pth(p, dtype, device).map_err(|e| EngineError::File {
                path: p.clone(),
                message: format!("cannot read pytorch checkpoint: {e}"),
            })?,
            p.clone(),
        ),
    };
    Model::load(vb, cfg).map_err(|e| match e {
        EngineError::Candle(c) => EngineError::File {
            path: first,
            message: c.to_string(),
        },
        other => other,
    })
}

/// Safetensors files read one tensor at a time with plain reads (no memory map), converted
/// to the model's dtype and device as they are read.
struct StreamedSafetensors {
    files: Vec<PathBuf>,
    /// name -> (file index, dtype, shape, first and end byte offsets in the file)
    index: std::collections::HashMap<String, (usize, String, Vec<usize>, u64, u64)>,
    dtype: DType,
    device: Device,
}

impl StreamedSafetensors {
    /// Read and validate each file's header: a truncated download or a corrupt header is a
    /// clear error naming the file, not a crash later.
    fn open(paths: &[PathBuf], dtype: DType, device: &Device) -> Result<Self> {
        use std::io::Read;
        let mut index = std::collections::HashMap::new();
        for (i, path) in paths.iter().enumerate() {
            let err = |message: String| EngineError::File {
                path: path.clone(),
                message,
            };
            let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
            let len = f.metadata().map_err(|e| err(e.to_string()))?.len();
            let mut n = [0u8; 8];
            f.read_exact(&mut n)
                .map_err(|_| err("truncated safetensors file (no header)".into()))?;
            let header_len = u64::from_le_bytes(n);
            if header_len > len.saturating_sub(8) || header_len > 100_000_000 {
                return Err(err("corrupt or truncated safetensors header".into()));
            }
            let mut header = vec![0u8; header_len as usize];
            f.read_exact(&mut header)
                .map_err(|_| err("truncated safetensors header".into()))?;
            let v: serde_json::Value = serde_json::from_slice(&header)
                .map_err(|e| err(format!("corrupt safetensors header: {e}")))?;
            // Offsets count from the end of the header.
            let data_start = 8 + header_len;
            let data_len = len - data_start;
            for (name, t) in v.as_object().into_iter().flatten() {
                if name == "__metadata__" {
                    continue;
                }
                let dt = t["dtype"].as_str().unwrap_or_default().to_string();
                let shape: Vec<usize> = t["shape"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_u64().map(|d| d as usize))
                    .collect();
                let off = &t["data_offsets"];
                let (a, b) = (off[0].as_u64().unwrap_or(0), off[1].as_u64().unwrap_or(0));
                if b > data_len {
                    return Err(err(format!(
                        "truncated safetensors file: tensors need {b} bytes of data, the file has {data_len}"
                    )));
                }
                index.insert(name.clone(), (i, dt, shape, data_start + a, data_start + b));
            }
        }
        Ok(Self {
            files: paths.to_vec(),
            index,
            dtype,
            device: device.clone(),
        })
    }
}

impl crate::model::Weights for StreamedSafetensors {
    fn dense(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        use std::io::{Read, Seek, SeekFrom};
        let (i, dt, got, start, end) = self
            .index
            .get(name)
            .ok_or_else(|| EngineError::Other(format!("cannot find tensor {name}")))?;
        let path = &self.files[*i];
        let err = |message: String| EngineError::File {
            path: path.clone(),
            message,
        };
        if got.as_slice() != shape {
            return Err(err(format!(
                "shape mismatch for {name}: expected {shape:?}, got {got:?}"
            )));
        }
        let dtype = match dt.as_str() {
            "F32" => DType::F32,
            "F16" => DType::F16,
            "BF16" => DType::BF16,
            "F64" => DType::F64,
            other => return Err(err(format!("tensor {name} has unsupported dtype {other}"))),
        };
        let mut f = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
        f.seek(SeekFrom::Start(*start))
            .map_err(|e| err(e.to_string()))?;
        // A header whose offsets run backwards (a corrupt or hostile file) is an error,
        // never an overflow (found by the safetensors fuzz target).
        let len = end
            .checked_sub(*start)
            .and_then(|l| usize::try_from(l).ok())
            .ok_or_else(|| err(format!("tensor {name} has data offsets {start}..{end}")))?;
        let n: usize = shape.iter().product();
        let t = if dtype == DType::F32 && len == 4 * n && cfg!(target_endian = "little") {
            // Read straight into the tensor's own buffer: no second copy of a 150 MB
            // embedding table at load time.
            let mut v = vec![0f32; n];
            // SAFETY: any bit pattern is a valid f32, u8 has alignment 1, and the byte view
            // covers exactly the vector's initialised elements. Safetensors is little-endian,
            // as the target is (checked above).
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), 4 * n) };
            f.read_exact(bytes)
                .map_err(|e| err(format!("reading {name}: {e}")))?;
            Tensor::from_vec(v, shape, &Device::Cpu)?
        } else {
            let mut bytes = vec![0u8; len];
            f.read_exact(&mut bytes)
                .map_err(|e| err(format!("reading {name}: {e}")))?;
            Tensor::from_raw_buffer(&bytes, dtype, shape, &Device::Cpu)?
        };
        Ok(t.to_dtype(self.dtype)?.to_device(&self.device)?)
    }

    fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }
}

/// Load the tokenizer and check it has the FIM tokens.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    if path.extension().is_some_and(|e| e == "gguf") {
        return Tokenizer::from_json(&crate::gguf::tokenizer_json(path)?);
    }
    Tokenizer::from_file(path)
}
