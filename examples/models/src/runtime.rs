//! Loading a TorchScript model and running its batches on an [`Executor`]'s
//! compute threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use example_tensor::{DataType, NamedTensor, Tensor, TensorData};
use tch::{CModule, IValue, Kind};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

use crate::error::{InputError, InputErrorKind, ModelError, ModelErrorKind};
use crate::executor::Executor;
use crate::hooks::{self, Registration};
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
    /// libtorch intra-op threads (`torch.set_num_threads`) of the model's
    /// own compute thread when `executor` is `None`; with an executor, its
    /// threads' setting applies.
    pub intra_op_threads: usize,
    /// The largest batch (rows) the model will see; the warm-up runs at it.
    pub max_batch_size: usize,
    /// On CUDA, run in fp16 (autocast); ignored on the CPU, which runs fp32.
    pub half: bool,
    /// Batches of this model queued or running at once; `forward` waits
    /// for a slot beyond.
    pub queue_capacity: usize,
    /// The compute threads the model's batches (and its loading and
    /// warm-up) run on, shared with the other models of the process; `None`:
    /// a compute thread of its own (one model per process, as `raw-bench`).
    /// Models on a GPU get a thread of their own either way.
    pub executor: Option<Executor>,
    /// Measure a batch at each power-of-two size up to `max_batch_size`
    /// while warming up ([`Model::batch_profile`]), for a batcher's adaptive
    /// cap to start at the fastest size. Loading takes a few passes more.
    pub profile: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            device: Device::Cpu,
            intra_op_threads: 1,
            max_batch_size: 8,
            half: false,
            queue_capacity: 4,
            executor: None,
            profile: false,
        }
    }
}

/// The length a dynamic non-batch dimension takes in the warm-up batch.
const WARMUP_DYNAMIC_LEN: usize = 16;

/// Timed rounds over the profiled sizes (after an untimed one); each
/// size's fastest pass counts.
const PROFILE_RUNS: u32 = 3;

/// Once a size's timed passes took this long, no more are run.
const PROFILE_BUDGET: Duration = Duration::from_millis(300);

type Output = Result<Vec<Vec<NamedTensor>>, ModelError>;

struct Shared {
    manifest: Manifest,
    dir: PathBuf,
    device: Device,
    half: bool,
    loaded: Arc<Loaded>,
    executor: Executor,
    slots: Arc<Semaphore>,
}

/// The module and what runs it. Fields drop in order: the module (and the
/// memory it holds) before the worker's tenant registration.
struct Loaded {
    module: CModule,
    worker: Worker,
    /// The fastest pass at each profiled batch size.
    profile: Vec<(usize, Duration)>,
}

/// A loaded model: a cheap, cloneable handle to the TorchScript module,
/// whose batches run on an [`Executor`]'s compute threads. The module is
/// freed when the last handle (and the last batch running) is dropped.
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
        Model::load_with(dir, opts, None)
    }

    /// [`Model::load`], with every byte libtorch allocates for the model
    /// (its weights, each forward pass's activations, on the model's thread
    /// and on libtorch's intra-op workers) charged to `tenant` through the
    /// allocator [`hooks`]: a forward pass that would take the tenant past
    /// its quota fails with [`ModelErrorKind::Quota`] (its source is the
    /// [`convoy_gpu_pool::QuotaExceeded`]), and the tenant's bytes in use
    /// and peak are the model's real ones.
    pub fn load_for_tenant(
        dir: &Path,
        opts: &LoadOptions,
        tenant: convoy_gpu_pool::Tenant,
    ) -> Result<Model, ModelError> {
        let registration = hooks::register(tenant)
            .map_err(|e| ModelError::new(ModelErrorKind::Load, e.to_string()))?;
        Model::load_with(dir, opts, Some(registration))
    }

    fn load_with(
        dir: &Path,
        opts: &LoadOptions,
        tenant: Option<Registration>,
    ) -> Result<Model, ModelError> {
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
        let executor = match (&opts.executor, opts.device) {
            (Some(shared), Device::Cpu) => shared.clone(),
            _ => Executor::new(1, opts.intra_op_threads)?,
        };
        let worker = Worker {
            manifest: manifest.clone(),
            path: dir.join(&manifest.file),
            device: opts.device,
            half,
            warmup_rows: opts.max_batch_size,
            profile: opts.profile,
            tenant,
            last_stream: std::sync::atomic::AtomicU64::new(0),
        };
        // Loaded and warmed up on a compute thread, like its batches.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        executor.spawn(move || {
            let _ = ready_tx.send(worker.start());
        })?;
        let loaded = match ready_rx.recv() {
            Ok(loaded) => Arc::new(loaded?),
            Err(_) => {
                return Err(ModelError::new(
                    ModelErrorKind::Load,
                    "the compute thread stopped while loading",
                ))
            }
        };
        Ok(Model {
            shared: Arc::new(Shared {
                manifest,
                dir: dir.to_owned(),
                device: opts.device,
                half,
                loaded,
                executor,
                slots: Arc::new(Semaphore::new(opts.queue_capacity)),
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
        self.forward_on(batch, None).await
    }

    /// [`Model::forward`] with `stream` (a `cudaStream_t` as an integer,
    /// e.g. a gpu-pool lease's stream) as libtorch's current stream for the
    /// pass, on a CUDA device with feature `cuda` (ignored otherwise). The
    /// outputs are copied back to the host before the pass ends, so the
    /// stream has finished the pass's work when it returns.
    pub async fn forward_on(
        &self,
        batch: Vec<Vec<NamedTensor>>,
        stream: Option<u64>,
    ) -> Result<Vec<Vec<NamedTensor>>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let slot = Arc::clone(&self.shared.slots)
            .acquire_owned()
            .await
            .map_err(|_| closed())?;
        self.submit(batch, stream, Some(slot))?
            .await
            .map_err(|_| closed())?
    }

    /// [`Model::forward`] for callers outside an async runtime (benchmarks),
    /// without waiting for a slot (`queue_capacity` does not bound it).
    pub fn forward_blocking(
        &self,
        batch: Vec<Vec<NamedTensor>>,
    ) -> Result<Vec<Vec<NamedTensor>>, ModelError> {
        self.forward_blocking_on(batch, None)
    }

    /// [`Model::forward_blocking`] on `stream`, see [`Model::forward_on`].
    pub fn forward_blocking_on(
        &self,
        batch: Vec<Vec<NamedTensor>>,
        stream: Option<u64>,
    ) -> Result<Vec<Vec<NamedTensor>>, ModelError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.submit(batch, stream, None)?
            .blocking_recv()
            .map_err(|_| closed())?
    }

    /// libtorch's current CUDA stream during the model's last forward pass
    /// (as read from inside the pass; 0 on the CPU, without feature `cuda`
    /// or before the first pass): the stream of [`Model::forward_on`] when
    /// one was given.
    pub fn last_pass_stream(&self) -> u64 {
        self.shared
            .loaded
            .worker
            .last_stream
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs `batch` with [`Model::forward_blocking`] again and again for at
    /// least `budget` (and at least once); the seconds each pass took. For
    /// benchmarks.
    pub fn time_passes(
        &self,
        batch: &[Vec<NamedTensor>],
        budget: Duration,
    ) -> Result<Vec<f64>, ModelError> {
        let start = tokio::time::Instant::now();
        let mut took = Vec::new();
        while start.elapsed() < budget || took.is_empty() {
            let pass = tokio::time::Instant::now();
            self.forward_blocking(batch.to_vec())?;
            took.push(pass.elapsed().as_secs_f64());
        }
        Ok(took)
    }

    /// The fastest forward pass measured at batch sizes 1, 2, 4, … and
    /// `max_batch_size` while the model warmed up, with
    /// [`LoadOptions::profile`]; empty without. Feed it to a batcher's
    /// adaptive cap (`convoy_batcher::BatchConfigBuilder::adaptive_profile`).
    pub fn batch_profile(&self) -> &[(usize, Duration)] {
        &self.shared.loaded.profile
    }

    /// The compute threads the model runs on.
    pub fn executor(&self) -> &Executor {
        &self.shared.executor
    }

    /// Queues the batch on the executor; the slot (if any) is held until the
    /// pass is over.
    fn submit(
        &self,
        batch: Vec<Vec<NamedTensor>>,
        stream: Option<u64>,
        slot: Option<OwnedSemaphorePermit>,
    ) -> Result<oneshot::Receiver<Output>, ModelError> {
        let (reply, rx) = oneshot::channel();
        let loaded = Arc::clone(&self.shared.loaded);
        self.shared.executor.spawn(move || {
            // A caller that gave up (timeout, disconnect) costs no pass.
            if !reply.is_closed() {
                let _ = reply.send(loaded.worker.run_batch(&loaded.module, batch, stream));
            }
            drop(slot);
        })?;
        Ok(rx)
    }
}

fn closed() -> ModelError {
    ModelError::new(
        ModelErrorKind::Closed,
        "the model's compute thread has stopped",
    )
}

struct Worker {
    manifest: Manifest,
    path: PathBuf,
    device: Device,
    half: bool,
    warmup_rows: usize,
    /// Time a pass at each power-of-two size while warming up.
    profile: bool,
    /// The tenant libtorch's allocations are charged to (dropped after the
    /// module: see [`Loaded`]).
    tenant: Option<Registration>,
    /// libtorch's current CUDA stream during the last pass (0: none).
    last_stream: std::sync::atomic::AtomicU64,
}

impl Worker {
    /// Loads the module and warms it up at the largest batch (on a compute
    /// thread, which holds libtorch's per-thread settings); with `profile`,
    /// at every power-of-two size up to it too, timing each.
    fn start(self) -> Result<Loaded, ModelError> {
        let module = self.load()?;
        if !self.profile {
            self.warm_up(&module, self.warmup_rows)?;
            return Ok(Loaded {
                module,
                worker: self,
                profile: Vec::new(),
            });
        }
        let sizes = profile_sizes(self.warmup_rows);
        // The first pass at a shape builds its kernels: untimed.
        for &rows in &sizes {
            self.warm_up(&module, rows)?;
        }
        // Timed rounds over every size, so that a burst of load elsewhere
        // on the machine lands on one round rather than on one size; a
        // size leaves the rounds once its passes took PROFILE_BUDGET.
        let mut best = vec![Duration::MAX; sizes.len()];
        let mut spent = vec![Duration::ZERO; sizes.len()];
        for _ in 0..PROFILE_RUNS {
            for (i, &rows) in sizes.iter().enumerate() {
                if spent[i] < PROFILE_BUDGET {
                    let took = self.warm_up(&module, rows)?;
                    best[i] = best[i].min(took);
                    spent[i] += took;
                }
            }
        }
        let profile = sizes
            .into_iter()
            .zip(best)
            .map(|(rows, took)| (rows, took.max(Duration::from_nanos(1))))
            .collect();
        Ok(Loaded {
            module,
            worker: self,
            profile,
        })
    }

    /// One synthetic pass of `rows` rows; a failure fails the load.
    fn warm_up(&self, module: &CModule, rows: usize) -> Result<Duration, ModelError> {
        let batch = vec![synthetic_input(&self.manifest, rows, WARMUP_DYNAMIC_LEN)];
        let started = tokio::time::Instant::now();
        match self.run_batch(module, batch, None) {
            Ok(_) => Ok(started.elapsed()),
            Err(e) => Err(ModelError::new(
                ModelErrorKind::Load,
                format!("warm-up at batch size {rows} failed: {e}"),
            )),
        }
    }

    fn load(&self) -> Result<CModule, ModelError> {
        // The weights count against the tenant.
        let _scope = self.tenant.as_ref().map(Registration::enter);
        let mut module = CModule::load_on_device(&self.path, self.device.to_tch())
            .map_err(|e| ModelError::load(&self.path, e))?;
        module.set_eval();
        Ok(module)
    }

    /// [`Worker::forward_batch`] with the tenant current: a failure caused
    /// by a quota refusal is [`ModelErrorKind::Quota`].
    fn run_batch(
        &self,
        module: &CModule,
        batch: Vec<Vec<NamedTensor>>,
        stream: Option<u64>,
    ) -> Result<Vec<Vec<NamedTensor>>, ModelError> {
        let _on_stream = self.enter_stream(stream)?;
        let Some(tenant) = &self.tenant else {
            return self.forward_batch(module, batch);
        };
        let scope = tenant.enter();
        let mark = tenant.refusal_mark();
        let result = self.forward_batch(module, batch);
        drop(scope);
        hooks::publish_metrics();
        result.map_err(|e| tenant.refused_since(mark).map_or(e, ModelError::quota))
    }

    /// Makes `stream` libtorch's current one for the pass on a CUDA device
    /// and records the stream current inside the pass.
    #[cfg(feature = "cuda")]
    fn enter_stream(
        &self,
        stream: Option<u64>,
    ) -> Result<Option<hooks::CudaStreamScope>, ModelError> {
        let Device::Cuda(i) = self.device else {
            return Ok(None);
        };
        let index = i32::try_from(i).unwrap_or(i32::MAX);
        let scope = stream
            .map(|s| hooks::CudaStreamScope::enter(s, index))
            .transpose()
            .map_err(|e| ModelError::new(ModelErrorKind::Forward, e.to_string()))?;
        self.last_stream.store(
            hooks::current_cuda_stream(index),
            std::sync::atomic::Ordering::Relaxed,
        );
        Ok(scope)
    }

    /// Without feature `cuda` there is no stream to enter.
    #[cfg(not(feature = "cuda"))]
    fn enter_stream(&self, stream: Option<u64>) -> Result<Option<()>, ModelError> {
        let _ = (stream, &self.last_stream);
        Ok(None)
    }

    fn forward_batch(
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
        };
        let out = match out {
            Ok(out) => out,
            Err(e) => {
                release_inputs(&mut ivalues);
                return Err(ModelError::forward(e));
            }
        };
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

/// After a failed forward pass: tch's `forward_is` keeps (leaks) its copies
/// of the input IValues when libtorch throws, and with them the input
/// tensors' memory (charged to the model's tenant). The copies share each
/// tensor's implementation ([`to_tch`] makes no view), so giving ours empty
/// storage frees the memory.
fn release_inputs(ivalues: &mut [IValue]) {
    for v in ivalues {
        if let IValue::Tensor(t) = v {
            let _ = t.f_set_();
        }
    }
}

fn input_error(message: String) -> ModelError {
    InputError::new(InputErrorKind::Tensor, message).into()
}

/// The batch sizes a profile measures: 1, 2, 4, … below `max`, then `max`.
fn profile_sizes(max: usize) -> Vec<usize> {
    let mut sizes: Vec<usize> = std::iter::successors(Some(1usize), |n| n.checked_mul(2))
        .take_while(|&n| n < max)
        .collect();
    sizes.push(max);
    sizes
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
    // Resized in place rather than viewed: the input owns its storage (see
    // `release_inputs`).
    let mut flat = flat;
    flat.f_resize_(dims.as_slice()).map_err(ModelError::forward)
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
