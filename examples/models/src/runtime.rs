//! Loading a TorchScript model and running batches on its own thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;

use example_tensor::{DataType, NamedTensor, Tensor, TensorData};
use tch::{CModule, IValue, Kind};
use tokio::sync::{mpsc, oneshot};

use crate::error::{InputError, InputErrorKind, ModelError, ModelErrorKind};
use crate::manifest::{Manifest, Preprocess, TensorSpec};

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Device {
    /// The CPU.
    Cpu,
    /// The CUDA device with this index.
    Cuda(usize),
}

impl Device {
    /// CUDA device 0 when libtorch sees a GPU, else the CPU.
    pub fn auto() -> Device {
        if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }
    }

    fn to_tch(self) -> tch::Device {
        match self {
            Device::Cpu => tch::Device::Cpu,
            Device::Cuda(i) => tch::Device::Cuda(i),
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(i) => write!(f, "cuda:{i}"),
        }
    }
}

/// How to load a model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOptions {
    /// Where the model runs.
    pub device: Device,
    /// libtorch intra-op threads of the model's thread (`torch.set_num_threads`).
    pub intra_op_threads: usize,
    /// The largest batch (rows) the model will see; the warm-up runs at it.
    pub max_batch_size: usize,
    /// On CUDA, run in fp16 (autocast); ignored on the CPU, which runs fp32.
    pub half: bool,
    /// Batches that may wait for the model's thread before `forward` waits.
    pub queue_capacity: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            intra_op_threads: 1,
            max_batch_size: 8,
            half: false,
            queue_capacity: 4,
        }
    }
}

/// The length a dynamic non-batch dimension takes in the warm-up batch.
const WARMUP_DYNAMIC_LEN: usize = 16;

type Reply = oneshot::Sender<Result<Vec<Vec<NamedTensor>>, ModelError>>;

struct Job {
    batch: Vec<Vec<NamedTensor>>,
    reply: Reply,
}

struct Shared {
    manifest: Manifest,
    dir: PathBuf,
    device: Device,
    half: bool,
    jobs: mpsc::Sender<Job>,
}

/// A loaded model: a cheap, cloneable handle to the thread that owns the
/// TorchScript module. The thread ends when the last handle is dropped.
#[derive(Clone)]
pub struct Model {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.shared.manifest.name)
            .field("version", &self.shared.manifest.version)
            .field("device", &self.shared.device)
            .field("half", &self.shared.half)
            .finish()
    }
}

impl Model {
    /// Loads `dir/model.json` and its TorchScript file onto the device, and
    /// warms the model up with a batch of `max_batch_size` rows. Blocking
    /// (seconds): call it from a blocking context.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Model, ModelError> {
        if opts.intra_op_threads == 0 || opts.max_batch_size == 0 || opts.queue_capacity == 0 {
            return Err(ModelError::new(
                ModelErrorKind::Options,
                "intra_op_threads, max_batch_size and queue_capacity must be positive",
            ));
        }
        if let Device::Cuda(i) = opts.device {
            let count = usize::try_from(tch::Cuda::device_count()).unwrap_or(0);
            if i >= count {
                return Err(ModelError::new(
                    ModelErrorKind::Options,
                    format!("device cuda:{i} is not available ({count} CUDA devices)"),
                ));
            }
        }
        let manifest = Manifest::load(dir)?;
        let half = opts.half && opts.device != Device::Cpu;
        let (jobs, rx) = mpsc::channel(opts.queue_capacity);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let worker = Worker {
            manifest: manifest.clone(),
            path: dir.join(&manifest.file),
            device: opts.device,
            half,
            threads: opts.intra_op_threads,
            warmup_rows: opts.max_batch_size,
        };
        thread::Builder::new()
            .name(format!("model-{}-{}", manifest.name, manifest.version))
            .spawn(move || worker.run(rx, ready_tx))
            .map_err(|e| {
                ModelError::new(
                    ModelErrorKind::Load,
                    format!("spawning the model thread: {e}"),
                )
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(ModelError::new(
                    ModelErrorKind::Load,
                    "the model thread ended while loading",
                ))
            }
        }
        Ok(Model {
            shared: Arc::new(Shared {
                manifest,
                dir: dir.to_owned(),
                device: opts.device,
                half,
                jobs,
            }),
        })
    }

    /// The model's manifest.
    pub fn manifest(&self) -> &Manifest {
        &self.shared.manifest
    }

    /// The directory the model was loaded from.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Where the model runs.
    pub fn device(&self) -> Device {
        self.shared.device
    }

    /// Whether the model runs in fp16.
    pub fn is_half(&self) -> bool {
        self.shared.half
    }

    /// Runs one batch: per item its input tensors (named as the manifest's
    /// inputs, leading dimension = the item's rows). The items are joined
    /// along rows (dynamic non-batch dimensions padded: zeros, or the pad id
    /// for token ids), run in ONE forward pass on the model's thread, and
    /// the outputs are split back per item, named as the manifest's outputs.
    pub async fn forward(
        &self,
        batch: Vec<Vec<NamedTensor>>,
    ) -> Result<Vec<Vec<NamedTensor>>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.shared
            .jobs
            .send(Job { batch, reply })
            .await
            .map_err(|_| closed())?;
        rx.await.map_err(|_| closed())?
    }

    /// [`Model::forward`] for callers outside an async runtime (benchmarks).
    pub fn forward_blocking(
        &self,
        batch: Vec<Vec<NamedTensor>>,
    ) -> Result<Vec<Vec<NamedTensor>>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let (reply, rx) = oneshot::channel();
        self.shared
            .jobs
            .blocking_send(Job { batch, reply })
            .map_err(|_| closed())?;
        rx.blocking_recv().map_err(|_| closed())?
    }
}

fn closed() -> ModelError {
    ModelError::new(ModelErrorKind::Closed, "the model's thread has stopped")
}

struct Worker {
    manifest: Manifest,
    path: PathBuf,
    device: Device,
    half: bool,
    threads: usize,
    warmup_rows: usize,
}

impl Worker {
    fn run(
        self,
        mut jobs: mpsc::Receiver<Job>,
        ready: std::sync::mpsc::Sender<Result<(), ModelError>>,
    ) {
        // Both are per thread in libtorch: this thread's intra-op pool size
        // and grad mode.
        tch::set_num_threads(i32::try_from(self.threads).unwrap_or(i32::MAX));
        let _no_grad = tch::no_grad_guard();
        // The exported modules are frozen (already optimised). The JIT's
        // profiling executor would otherwise re-profile and re-specialise the
        // graph for every new input shape (each batch size, each sequence
        // length), making the first passes at each shape many times slower.
        let _ = tch::jit::f_set_graph_executor_optimize(false);
        let module = match self.load() {
            Ok(m) => m,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let warmup = vec![synthetic_input(
            &self.manifest,
            self.warmup_rows,
            WARMUP_DYNAMIC_LEN,
        )];
        if let Err(e) = self.run_batch(&module, warmup) {
            let _ = ready.send(Err(ModelError::new(
                ModelErrorKind::Load,
                format!("warm-up at batch size {} failed: {e}", self.warmup_rows),
            )));
            return;
        }
        let _ = ready.send(Ok(()));
        drop(ready);
        while let Some(job) = jobs.blocking_recv() {
            if job.reply.is_closed() {
                continue;
            }
            let result = self.run_batch(&module, job.batch);
            let _ = job.reply.send(result);
        }
    }

    fn load(&self) -> Result<CModule, ModelError> {
        let mut module = CModule::load_on_device(&self.path, self.device.to_tch())
            .map_err(|e| ModelError::load(&self.path, e))?;
        module.set_eval();
        Ok(module)
    }

    fn run_batch(
        &self,
        module: &CModule,
        batch: Vec<Vec<NamedTensor>>,
    ) -> Result<Vec<Vec<NamedTensor>>, ModelError> {
        let (inputs, rows) = join_batch(&self.manifest, batch)?;
        let device = self.device.to_tch();
        let mut ivalues = Vec::with_capacity(inputs.len());
        for t in &inputs {
            let t = to_tch(t)?
                .f_to_device(device)
                .map_err(ModelError::forward)?;
            ivalues.push(IValue::Tensor(t));
        }
        let out = if self.half {
            tch::autocast(true, || module.forward_is(&ivalues))
        } else {
            module.forward_is(&ivalues)
        }
        .map_err(ModelError::forward)?;
        let outputs = output_tensors(out, self.manifest.outputs.len())?;
        let total: usize = rows.iter().sum();
        let mut per_output = Vec::with_capacity(outputs.len());
        for (t, spec) in outputs.iter().zip(&self.manifest.outputs) {
            let host = from_tch(t, spec)?;
            if host.rows() != total {
                return Err(ModelError::forward(format!(
                    "output {:?} has {} rows for a batch of {total}",
                    spec.name,
                    host.rows()
                )));
            }
            let parts = host
                .split_rows(&rows)
                .map_err(|e| ModelError::forward(format!("output {:?}: {e}", spec.name)))?;
            per_output.push(parts);
        }
        let mut items: Vec<Vec<NamedTensor>> = (0..rows.len()).map(|_| Vec::new()).collect();
        for (parts, spec) in per_output.into_iter().zip(&self.manifest.outputs) {
            for (item, part) in items.iter_mut().zip(parts) {
                item.push(NamedTensor::new(spec.name.clone(), part));
            }
        }
        Ok(items)
    }
}

fn input_error(message: String) -> ModelError {
    InputError::new(InputErrorKind::Tensor, message).into()
}

/// The pad value of an input: the pad id for token ids, else zero.
fn pad_value(manifest: &Manifest, spec: &TensorSpec) -> i64 {
    match &manifest.preprocess {
        Preprocess::Text { pad_id, .. } if spec.name == "input_ids" => *pad_id,
        _ => 0,
    }
}

/// Joins the items' inputs along rows, one tensor per manifest input, and
/// returns each item's row count.
pub(crate) fn join_batch(
    manifest: &Manifest,
    mut batch: Vec<Vec<NamedTensor>>,
) -> Result<(Vec<Tensor>, Vec<usize>), ModelError> {
    let mut rows = vec![None; batch.len()];
    let mut joined = Vec::with_capacity(manifest.inputs.len());
    for spec in &manifest.inputs {
        let mut parts = Vec::with_capacity(batch.len());
        for (i, item) in batch.iter_mut().enumerate() {
            let pos = item
                .iter()
                .position(|t| t.name == spec.name)
                .ok_or_else(|| input_error(format!("item {i}: missing input {:?}", spec.name)))?;
            let t = item.swap_remove(pos).tensor;
            check_spec(spec, &t).map_err(|m| input_error(format!("item {i}: {m}")))?;
            match rows[i] {
                None => rows[i] = Some(t.rows()),
                Some(r) if r != t.rows() => {
                    return Err(input_error(format!(
                        "item {i}: input {:?} has {} rows, another input has {r}",
                        spec.name,
                        t.rows()
                    )))
                }
                Some(_) => {}
            }
            parts.push(t);
        }
        joined.push(pad_and_concat(spec, parts, pad_value(manifest, spec))?);
    }
    for (i, item) in batch.iter().enumerate() {
        if let Some(extra) = item.first() {
            return Err(input_error(format!(
                "item {i}: unknown input {:?} (inputs: {})",
                extra.name,
                manifest
                    .inputs
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok((joined, rows.into_iter().map(|r| r.unwrap_or(0)).collect()))
}

fn check_spec(spec: &TensorSpec, t: &Tensor) -> Result<(), String> {
    if t.datatype() != spec.datatype {
        return Err(format!(
            "input {:?} must be {}, got {}",
            spec.name,
            spec.datatype,
            t.datatype()
        ));
    }
    let fits = t.shape.len() == spec.shape.len()
        && t.shape
            .iter()
            .zip(&spec.shape)
            .enumerate()
            .all(|(d, (&got, &want))| {
                if d == 0 || want == -1 {
                    d == 0 || got > 0
                } else {
                    i64::try_from(got) == Ok(want)
                }
            });
    if !fits {
        return Err(format!(
            "input {:?} must have shape {:?} (-1: any), got {:?}",
            spec.name, spec.shape, t.shape
        ));
    }
    Ok(())
}

/// Concatenates along rows, padding each part's non-batch dimensions up to
/// the largest in the batch.
fn pad_and_concat(spec: &TensorSpec, parts: Vec<Tensor>, pad: i64) -> Result<Tensor, ModelError> {
    let rank = spec.shape.len();
    let mut target = vec![0usize; rank];
    for p in &parts {
        for (t, &d) in target.iter_mut().zip(&p.shape).skip(1) {
            *t = (*t).max(d);
        }
    }
    let parts = parts
        .into_iter()
        .map(|p| {
            if p.shape[1..] == target[1..] {
                Ok(p)
            } else {
                pad_tensor(p, &target[1..], pad)
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Tensor::concat_rows(&parts).map_err(|e| input_error(format!("input {:?}: {e}", spec.name)))
}

fn pad_tensor(t: Tensor, inner: &[usize], pad: i64) -> Result<Tensor, ModelError> {
    let rows = t.rows();
    let mut shape = vec![rows];
    shape.extend_from_slice(inner);
    let n = example_tensor::element_count(&shape)
        .ok_or_else(|| input_error(format!("padded shape {shape:?} is too large")))?;
    let data = match t.data {
        TensorData::Fp32(v) => TensorData::Fp32(pad_copy(&v, &t.shape, &shape, n, pad as f32)),
        TensorData::Fp16(v) => TensorData::Fp16(pad_copy(
            &v,
            &t.shape,
            &shape,
            n,
            half::f16::from_f32(pad as f32),
        )),
        TensorData::Int64(v) => TensorData::Int64(pad_copy(&v, &t.shape, &shape, n, pad)),
        TensorData::Int32(v) => TensorData::Int32(pad_copy(
            &v,
            &t.shape,
            &shape,
            n,
            i32::try_from(pad).unwrap_or(0),
        )),
        other => {
            return Err(input_error(format!(
                "cannot pad {} tensors to a common shape",
                other.datatype()
            )))
        }
    };
    Tensor::new(shape, data).map_err(|e| input_error(e.to_string()))
}

/// Copies `src` (shape `from`) into a new buffer of shape `to` (each
/// dimension at least as large), filling the rest with `pad`.
fn pad_copy<T: Copy>(src: &[T], from: &[usize], to: &[usize], n: usize, pad: T) -> Vec<T> {
    let mut dst = vec![pad; n];
    fn rec<T: Copy>(src: &[T], from: &[usize], dst: &mut [T], to: &[usize]) {
        if from.len() == 1 {
            dst[..from[0]].copy_from_slice(&src[..from[0]]);
            return;
        }
        let src_stride: usize = from[1..].iter().product();
        let dst_stride: usize = to[1..].iter().product();
        for i in 0..from[0] {
            rec(
                &src[i * src_stride..(i + 1) * src_stride],
                &from[1..],
                &mut dst[i * dst_stride..(i + 1) * dst_stride],
                &to[1..],
            );
        }
    }
    if n > 0 {
        rec(src, from, &mut dst, to);
    }
    dst
}

/// One item of `rows` rows of deterministic synthetic inputs for the
/// manifest: dynamic non-batch dimensions at `dynamic_len`, floats
/// `((i * 7919) % 1000) / 1000`, token ids in the vocabulary's common range,
/// attention masks all ones. For warm-up and benchmarks.
pub fn synthetic_input(manifest: &Manifest, rows: usize, dynamic_len: usize) -> Vec<NamedTensor> {
    manifest
        .inputs
        .iter()
        .map(|spec| {
            let shape: Vec<usize> = std::iter::once(rows)
                .chain(
                    spec.shape[1..]
                        .iter()
                        .map(|&d| usize::try_from(d).unwrap_or(dynamic_len)),
                )
                .collect();
            let n = example_tensor::element_count(&shape).unwrap_or(0);
            let pattern = |i: usize| ((i % 1000) * 7919 % 1000) as f32 / 1000.0;
            let data = match (spec.datatype, spec.name.as_str()) {
                (DataType::Int64, "attention_mask") => TensorData::Int64(vec![1; n]),
                (DataType::Int64, _) => TensorData::Int64(
                    (0..n)
                        .map(|i| 1000 + ((i % 20000) * 7919 % 20000) as i64)
                        .collect(),
                ),
                (DataType::Int32, _) => TensorData::Int32(vec![1; n]),
                (DataType::Fp16, _) => {
                    TensorData::Fp16((0..n).map(|i| half::f16::from_f32(pattern(i))).collect())
                }
                (DataType::Fp64, _) => {
                    TensorData::Fp64((0..n).map(|i| f64::from(pattern(i))).collect())
                }
                (DataType::Fp32, _) => TensorData::Fp32((0..n).map(pattern).collect()),
                (other, _) => {
                    let mut d = TensorData::with_capacity(other, n);
                    zero_fill(&mut d, n);
                    d
                }
            };
            let tensor = Tensor::new(shape, data).expect("element count matches the shape");
            NamedTensor::new(spec.name.clone(), tensor)
        })
        .collect()
}

fn zero_fill(d: &mut TensorData, n: usize) {
    match d {
        TensorData::Bool(v) => v.resize(n, false),
        TensorData::Uint8(v) => v.resize(n, 0),
        TensorData::Int8(v) => v.resize(n, 0),
        TensorData::Int16(v) => v.resize(n, 0),
        _ => {}
    }
}

fn dims_i64(shape: &[usize]) -> Result<Vec<i64>, ModelError> {
    shape
        .iter()
        .map(|&d| i64::try_from(d).map_err(|_| input_error(format!("dimension {d} is too large"))))
        .collect()
}

/// A host tensor as a libtorch tensor (on the CPU).
pub(crate) fn to_tch(t: &Tensor) -> Result<tch::Tensor, ModelError> {
    let dims = dims_i64(&t.shape)?;
    let flat = match &t.data {
        TensorData::Fp32(v) => tch::Tensor::f_from_slice(v),
        TensorData::Fp16(v) => tch::Tensor::f_from_slice(v),
        TensorData::Fp64(v) => tch::Tensor::f_from_slice(v),
        TensorData::Int64(v) => tch::Tensor::f_from_slice(v),
        TensorData::Int32(v) => tch::Tensor::f_from_slice(v),
        TensorData::Int16(v) => tch::Tensor::f_from_slice(v),
        TensorData::Int8(v) => tch::Tensor::f_from_slice(v),
        TensorData::Uint8(v) => tch::Tensor::f_from_slice(v),
        TensorData::Bool(v) => tch::Tensor::f_from_slice(v),
        other => {
            return Err(input_error(format!(
                "{} tensors are not supported by the model runtime",
                other.datatype()
            )))
        }
    }
    .map_err(ModelError::forward)?;
    flat.f_view(dims.as_slice()).map_err(ModelError::forward)
}

/// A libtorch output as a host tensor of the spec's datatype.
pub(crate) fn from_tch(t: &tch::Tensor, spec: &TensorSpec) -> Result<Tensor, ModelError> {
    let kind = match spec.datatype {
        DataType::Fp32 => Kind::Float,
        DataType::Fp16 => Kind::Half,
        DataType::Fp64 => Kind::Double,
        DataType::Int64 => Kind::Int64,
        DataType::Int32 => Kind::Int,
        DataType::Int16 => Kind::Int16,
        DataType::Int8 => Kind::Int8,
        DataType::Uint8 => Kind::Uint8,
        DataType::Bool => Kind::Bool,
        other => {
            return Err(ModelError::forward(format!(
                "output {:?}: {other} outputs are not supported",
                spec.name
            )))
        }
    };
    let host = t
        .f_to_device(tch::Device::Cpu)
        .and_then(|t| t.f_to_kind(kind))
        .and_then(|t| t.f_contiguous())
        .map_err(ModelError::forward)?;
    let shape: Vec<usize> = host
        .size()
        .iter()
        .map(|&d| usize::try_from(d).unwrap_or(0))
        .collect();
    let n = host.numel();
    macro_rules! copy {
        ($variant:ident, $ty:ty) => {{
            let mut v = vec![<$ty>::default(); n];
            host.f_copy_data(&mut v, n).map_err(ModelError::forward)?;
            TensorData::$variant(v)
        }};
    }
    let data = match spec.datatype {
        DataType::Fp32 => copy!(Fp32, f32),
        DataType::Fp16 => copy!(Fp16, half::f16),
        DataType::Fp64 => copy!(Fp64, f64),
        DataType::Int64 => copy!(Int64, i64),
        DataType::Int32 => copy!(Int32, i32),
        DataType::Int16 => copy!(Int16, i16),
        DataType::Int8 => copy!(Int8, i8),
        DataType::Uint8 => copy!(Uint8, u8),
        _ => copy!(Bool, bool),
    };
    Tensor::new(shape, data)
        .map_err(|e| ModelError::forward(format!("output {:?}: {e}", spec.name)))
}

/// The forward pass's result as `n` tensors.
fn output_tensors(out: IValue, n: usize) -> Result<Vec<tch::Tensor>, ModelError> {
    let list = match out {
        IValue::Tensor(t) => vec![t],
        IValue::Tuple(v) | IValue::GenericList(v) => v
            .into_iter()
            .map(|v| match v {
                IValue::Tensor(t) => Ok(t),
                other => Err(ModelError::forward(format!(
                    "the model returned a non-tensor output: {other:?}"
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        IValue::TensorList(v) => v,
        other => {
            return Err(ModelError::forward(format!(
                "the model returned {other:?}, not tensors"
            )))
        }
    };
    if list.len() != n {
        return Err(ModelError::forward(format!(
            "the model returned {} outputs, the manifest names {n}",
            list.len()
        )));
    }
    Ok(list)
}
