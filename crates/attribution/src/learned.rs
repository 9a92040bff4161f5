//! The one mask optimiser behind every method that learns its circuit (Edge Pruning, UGS, PGB-CT;
//! methods-spec §0, §2, §3, §5): a parameter per unit (an edge of the MIB graph, or a node), a
//! sampler that turns the parameters into keep weights, the engine's patched pass with those
//! weights as a soft mask (`patching::PatchHooks` on the autodiff backend, so the weights are
//! differentiated like any tensor), a loss made of the discovery metric and a method's penalties
//! on their schedules, and burn's AdamW on the parameters.
//!
//! The settings the reference implementations differ in are parameters, not special cases
//! (spec §0.1): the sampler ([`Sampler`]: hard-concrete with its constants, UGS's uniform
//! window, or the parameter itself clamped to [0, 1]), the polarity ([`Polarity`]: a value of 1
//! keeps the unit, or intervenes on it), the sampling granularity ([`Granularity`]: one mask per
//! batch replica, or one per row), and whether position 0 (the BOS token) is exempt from patching.
//!
//! Every batch's clean run, ablated outputs and reference logits are computed once and kept (the
//! discovery pairs are few), so a step is one patched forward and one backward. Under
//! counterfactual ablation the batches are suffix-only (`PairBatches`), as every method's are.

use burn::module::{AutodiffModule, Module, Param};
use burn::optim::grad_clipping::GradientClippingConfig;
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::sigmoid;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use graph::{EdgeMatrix, Graph};
use patching::{EdgeMasks, Metric, MetricReference, PairBatches, PatchHooks};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tasks::PairBatch;
use transformer::{Batch, Readout};

use crate::method::{Discovery, MethodError, Progress};
use crate::scores::PassCount;

type Inner<B> = <B as AutodiffBackend>::InnerBackend;

/// Hard-concrete's stretch and temperature (Louizos et al.; Edge Pruning's `l0.py`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HardConcrete {
    /// l: the stretched interval's lower end (below 0, so a mask can be exactly 0).
    pub left: f64,
    /// r: its upper end (above 1, so a mask can be exactly 1).
    pub right: f64,
    /// β, the concrete distribution's temperature.
    pub temperature: f64,
    /// u is drawn from U(eps, 1 − eps).
    pub eps: f64,
}

impl HardConcrete {
    /// Edge Pruning's constants: l = −0.1, r = 1.1, β = 2/3, eps = 1e-6.
    pub const EDGE_PRUNING: Self = Self { left: -0.1, right: 1.1, temperature: 2.0 / 3.0, eps: 1e-6 };
}

/// How a unit's keep (or intervention) weight in [0, 1] is drawn from its parameter θ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampler {
    /// z = clamp(σ((log u − log(1 − u) + θ)/β)·(r − l) + l, 0, 1), u ~ U(eps, 1 − eps).
    HardConcrete(HardConcrete),
    /// UGS's uniform window: p = σ(θ), w = p(1 − p) (no gradient), z = 1 − clamp((u − p̃)/w + ½, 0, 1)
    /// with u ~ U(0, 1) and p̃ = p in value and w·∂p in gradient, so ∂z/∂θ = p(1 − p) inside the
    /// window and 0 outside.
    UniformWindow,
    /// z = θ itself, kept in [0, 1] by clamping after every step (PGB-CT's projected Adam).
    Clamped,
}

impl Sampler {
    /// The deterministic value of each unit: what scores and circuits are read from (σ(θ) for the
    /// two stochastic samplers, monotone in θ; θ clamped for [`Sampler::Clamped`]).
    pub fn expected(self, theta: f32) -> f32 {
        match self {
            Sampler::HardConcrete(_) | Sampler::UniformWindow => 1.0 / (1.0 + (-theta).exp()),
            Sampler::Clamped => theta.clamp(0.0, 1.0),
        }
    }

    /// Weights [replicas, rows, cols] drawn for parameters θ [rows, cols].
    fn sample<B: AutodiffBackend>(self, theta: Tensor<B, 2>, replicas: usize, rng: &mut ChaCha8Rng) -> Tensor<B, 3> {
        let [rows, cols] = theta.dims();
        let device = theta.device();
        let mut uniform = |low: f64, high: f64| -> Tensor<B, 3> {
            let values: Vec<f32> = (0..replicas * rows * cols).map(|_| rng.random_range(low..high) as f32).collect();
            Tensor::from_data(TensorData::new(values, [replicas, rows, cols]), &device)
        };
        let theta: Tensor<B, 3> = theta.unsqueeze_dim(0);
        match self {
            Sampler::HardConcrete(hc) => {
                let u = uniform(hc.eps, 1.0 - hc.eps);
                let logistic = u.clone().log() - (u.neg() + 1.0).log();
                let s = sigmoid((logistic + theta.expand([replicas, rows, cols])) / hc.temperature);
                (s * (hc.right - hc.left) + hc.left).clamp(0.0, 1.0)
            }
            Sampler::UniformWindow => {
                let p = sigmoid(theta).expand([replicas, rows, cols]);
                let w = (p.clone() * (p.clone().neg() + 1.0)).detach().clamp_min(1e-6);
                let p_tilde = w.clone() * p.clone() - (w.clone() - 1.0) * p.detach();
                ((uniform(0.0, 1.0) - p_tilde) / w + 0.5).clamp(0.0, 1.0).neg() + 1.0
            }
            Sampler::Clamped => theta.clamp(0.0, 1.0).expand([replicas, rows, cols]),
        }
    }
}

/// What a weight of 1 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Polarity {
    /// 1 keeps the unit (the engine's masks, Edge Pruning, UGS).
    Keep,
    /// 1 intervenes on it: keep = 1 − weight (PGB-CT's z).
    Intervene,
}

/// How many masks a step draws.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// `samples` masks per step, each shared by every pair of the batch (Edge Pruning: one).
    PerBatch {
        /// Masks drawn per step.
        samples: usize,
    },
    /// `samples` masks per pair, one per row (UGS: 12 per example).
    PerExample {
        /// Masks drawn per pair.
        samples: usize,
    },
}

impl Granularity {
    /// (copies of the batch, mask replicas) for a batch of `pairs` pairs.
    fn layout(self, pairs: usize) -> (usize, usize) {
        match self {
            Granularity::PerBatch { samples } => (samples, samples),
            Granularity::PerExample { samples } => (samples, samples * pairs),
        }
    }
}

/// What the parameters are attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// One parameter per edge of the graph ([n_fwd, n_bwd], non-edges ignored).
    Edges,
    /// One parameter per attention head, acting on the edges into its q and k slots (so that at
    /// 0 / 1 it is the head's attention pattern patched, spec §5.4), then one per MLP, acting on
    /// every edge out of it (the MLP's output patched); an edge touched by both is kept by the
    /// product of the two keep weights.
    Nodes,
}

/// The data term of the loss, per pair, averaged over the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLoss {
    /// The discovery metric's loss (KL from the full model for Edge Pruning and UGS).
    Metric,
    /// exp(loss_full − loss_masked): PGB-CT's 1/(1 + e) (for a logit difference,
    /// exp(LD_masked − LD_full)), which falls as the intervention moves the metric: necessity.
    Impact,
    /// exp(loss_masked − loss_full): falls as the masked run keeps the full model's metric:
    /// sufficiency, the preservation objective MIB's CPR measures.
    Preservation,
}

/// How a penalty's weight grows with the epoch t (0-based), PGB-CT's `scheduling`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PenaltySchedule {
    /// λ·(t + 1).
    Linear,
    /// λ·2^t.
    Exponential,
    /// λ·t² (0 in the first epoch).
    Polynomial,
}

impl PenaltySchedule {
    /// λ at epoch `epoch`.
    pub fn at(self, lambda: f64, epoch: usize) -> f64 {
        let t = epoch as f64;
        match self {
            PenaltySchedule::Linear => lambda * (t + 1.0),
            PenaltySchedule::Exponential => lambda * 2f64.powf(t),
            PenaltySchedule::Polynomial => lambda * t * t,
        }
    }

    /// The schedule of a name (`linear`, `exp`, `poly`, as PGB-CT's flag spells them).
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "linear" => Some(Self::Linear),
            "exp" => Some(Self::Exponential),
            "poly" => Some(Self::Polynomial),
            _ => None,
        }
    }
}

/// The target edge sparsity of Edge Pruning's Lagrangian at each step: linear from `start` to
/// `end` over `warmup` steps, then `end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SparsityTarget {
    /// t at step 0.
    pub start: f64,
    /// t from step `warmup` on (may exceed 1, as Edge Pruning's sweeps do, to push harder).
    pub end: f64,
    /// Steps of the linear ramp.
    pub warmup: usize,
}

impl SparsityTarget {
    /// t at `step`.
    pub fn at(&self, step: usize) -> f64 {
        if self.warmup == 0 || step >= self.warmup {
            return self.end;
        }
        self.start + (self.end - self.start) * step as f64 / self.warmup as f64
    }
}

/// The penalty added to the data loss.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Penalty {
    /// None.
    None,
    /// Edge Pruning: λ₁(s − t) + λ₂(s − t)², s = 1 − (Σ sampled keep over real units)/units, the
    /// two λ (starting at 0) trained by gradient ascent at `lambda_lr`.
    Lagrangian {
        /// The target sparsity's schedule.
        target: SparsityTarget,
        /// The λ's learning rate.
        lambda_lr: f64,
    },
    /// UGS: λ Σ_e σ(θ_e) + min(λ/2, 2e-4) Σ_nodes tanh(2 m_n / (L·H)) (L·H)/2, m_n the expected
    /// edge mass into and out of node n.
    ExpectedEdges {
        /// λ.
        lambda: f64,
    },
    /// PGB-CT: λ₁(t) Σ|z| + λ₂(t) Σ z(1 − z) over the units' weights, t the epoch.
    L1Binary {
        /// λ₁.
        l1: f64,
        /// λ₂.
        binary: f64,
        /// How both grow with the epoch.
        schedule: PenaltySchedule,
    },
}

/// How the parameters start.
#[derive(Debug, Clone, PartialEq)]
pub enum Init {
    /// Every parameter θ ~ N(mean, std²), from the run's seed (Edge Pruning: N(10, 0.01²)).
    Normal {
        /// The mean.
        mean: f64,
        /// The standard deviation.
        std: f64,
    },
    /// Every parameter the same value (UGS: 1; PGB-CT: 0.5).
    Constant(f64),
}

/// The learning rate over the steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrSchedule {
    /// The same rate at every step.
    Constant,
    /// Linear warmup from 0 over `warmup` steps, then linear decay to 0 at the last step
    /// (Hugging Face's `linear` schedule, Edge Pruning's).
    WarmupLinearDecay {
        /// Warmup steps.
        warmup: usize,
    },
}

impl LrSchedule {
    fn at(self, lr: f64, step: usize, steps: usize) -> f64 {
        match self {
            LrSchedule::Constant => lr,
            LrSchedule::WarmupLinearDecay { warmup } if step < warmup => lr * (step + 1) as f64 / warmup as f64,
            LrSchedule::WarmupLinearDecay { warmup } => lr * (steps.saturating_sub(step)) as f64 / (steps.saturating_sub(warmup)).max(1) as f64,
        }
    }
}

/// Everything a mask-learning run is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskSettings {
    /// What the parameters are attached to.
    pub units: Units,
    /// How weights are drawn from parameters.
    pub sampler: Sampler,
    /// What a weight of 1 means.
    pub polarity: Polarity,
    /// How many masks a step draws.
    pub granularity: Granularity,
    /// The loss's data term.
    pub data_loss: DataLoss,
    /// The loss's penalty.
    pub penalty: Penalty,
    /// The parameters' start.
    pub init: Init,
    /// Optimiser steps (one batch each, cycling through the discovery pairs in order).
    pub steps: usize,
    /// AdamW's learning rate for the parameters.
    pub lr: f64,
    /// How it changes over the steps.
    pub lr_schedule: LrSchedule,
    /// AdamW's β₁ and β₂.
    pub betas: (f32, f32),
    /// AdamW's decoupled weight decay.
    pub weight_decay: f32,
    /// Clip the parameters' gradient to this norm.
    pub clip_norm: Option<f32>,
    /// Never patch position 0 (UGS: the BOS token carries the clean value in every run). Only
    /// passes that compute position 0 are affected: a suffix-only pass never patches it anyway.
    pub exempt_bos: bool,
    /// Evaluate the binarised mask (weights at ≥ 0.5 → 1) on every batch at the end of each
    /// epoch (PGB-CT's per-epoch log).
    pub binarised_epochs: bool,
    /// Steps (counted from 1) after which the parameters are copied out.
    pub snapshots: Vec<usize>,
    /// The seed of the initialisation and of every sample.
    pub seed: u64,
}

/// One optimiser step, as the run's log records it (and `training.csv` lists it).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct StepLog {
    /// 0-based epoch (a pass over the discovery pairs).
    pub epoch: usize,
    /// 1-based step.
    pub step: usize,
    /// The data term (PGB-CT: the mean oriented odds 1/(1 + e)).
    pub data_loss: f64,
    /// The whole loss, penalty included.
    pub loss: f64,
    /// 1 − the mean sampled keep weight over the real units.
    pub sparsity: f64,
    /// Units whose deterministic weight (in the method's polarity) is not 0.
    pub nonzero: usize,
    /// The Lagrangian's target sparsity at this step, when there is one.
    pub target: Option<f64>,
}

/// The binarised mask at the end of an epoch, evaluated on every discovery batch.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EpochLog {
    /// 0-based epoch.
    pub epoch: usize,
    /// The data loss of the binarised mask, mean over the discovery pairs.
    pub data_loss: f64,
    /// Units whose binarised weight is 1.
    pub on: usize,
    /// Fraction of the real units whose binarised weight is 0.
    pub sparsity: f64,
    /// Σ z(1 − z) over the units (how far from binary the weights are).
    pub violation: f64,
}

/// What a run learned.
#[derive(Debug, Clone, PartialEq)]
pub struct Learned {
    /// The final parameters, one per real unit ([`Units::Edges`]: the graph's layout; [`Units::Nodes`]:
    /// heads layer-major, then MLPs).
    pub theta: Vec<f32>,
    /// (step, parameters) at each asked-for snapshot.
    pub snapshots: Vec<(usize, Vec<f32>)>,
    /// What each step and epoch reached.
    pub log: TrainingLog,
    /// Passes spent.
    pub passes: PassCount,
}

/// A mask-learning run's record, step by step and epoch by epoch (the bench writes it per cell).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TrainingLog {
    /// One entry per step.
    pub steps: Vec<StepLog>,
    /// One entry per epoch when [`MaskSettings::binarised_epochs`].
    pub epochs: Vec<EpochLog>,
}

/// A discovery batch prepared once: the autodiff clean batch, the ablated outputs, the metric's
/// reference and the full model's loss per pair.
struct PreparedBatch<B: AutodiffBackend> {
    clean: Batch<B>,
    ablated: Tensor<B, 4>,
    answers: Vec<(u32, u32)>,
    reference: MetricReference<B>,
    full_loss: Tensor<B, 1>,
}

/// The units' layout: how many there are and which are real.
struct Layout {
    shape: [usize; 2],
    real: Vec<bool>,
    /// Units::Nodes: [heads, n_bwd] (1 at each head's q and k slots) and [mlps, n_fwd] (1 at each MLP).
    node_maps: Option<(Vec<f32>, Vec<f32>)>,
}

impl Layout {
    fn new(graph: &Graph, units: Units) -> Self {
        match units {
            Units::Edges => Layout { shape: [graph.n_fwd(), graph.n_bwd()], real: graph.real_edge_mask().as_slice().to_vec(), node_maps: None },
            Units::Nodes => {
                let (l, h) = (graph.shape().n_layers, graph.shape().n_heads);
                let mut heads = vec![0.0f32; l * h * graph.n_bwd()];
                let mut mlps = vec![0.0f32; l * graph.n_fwd()];
                for layer in graph.layers() {
                    for head in 0..h {
                        let row = layer.layer * h + head;
                        heads[row * graph.n_bwd() + layer.q_bwd.start + head] = 1.0;
                        heads[row * graph.n_bwd() + layer.k_bwd.start + head] = 1.0;
                    }
                    mlps[layer.layer * graph.n_fwd() + layer.mlp_fwd] = 1.0;
                }
                Layout { shape: [1, l * h + l], real: vec![true; l * h + l], node_maps: Some((heads, mlps)) }
            }
        }
    }

    fn n_real(&self) -> usize {
        self.real.iter().filter(|&&r| r).count()
    }

    /// The 0/1 tensor [1, rows, cols] of real units.
    fn real_tensor<B: AutodiffBackend>(&self, device: &B::Device) -> Tensor<B, 3> {
        let values: Vec<f32> = self.real.iter().map(|&r| f32::from(u8::from(r))).collect();
        Tensor::from_data(TensorData::new(values, [1, self.shape[0], self.shape[1]]), device)
    }

    /// Engine keep weights [replicas, n_fwd, n_bwd] from unit keep weights [replicas, rows, cols].
    fn edge_keep<B: Backend>(&self, graph: &Graph, keep: Tensor<B, 3>) -> Tensor<B, 3> {
        let Some((heads, mlps)) = &self.node_maps else { return keep };
        let device = keep.device();
        let r = keep.dims()[0];
        let (l, h) = (graph.shape().n_layers, graph.shape().n_heads);
        let intervene: Tensor<B, 2> = keep.neg().add_scalar(1.0).reshape([r, l * h + l]);
        let head_map = Tensor::<B, 2>::from_data(TensorData::new(heads.clone(), [l * h, graph.n_bwd()]), &device);
        let mlp_map = Tensor::<B, 2>::from_data(TensorData::new(mlps.clone(), [l, graph.n_fwd()]), &device);
        let on_dest = intervene.clone().slice([0..r, 0..l * h]).matmul(head_map).neg() + 1.0; // [r, n_bwd]
        let on_source = intervene.slice([0..r, l * h..l * h + l]).matmul(mlp_map).neg() + 1.0; // [r, n_fwd]
        on_source.unsqueeze_dim::<3>(2) * on_dest.unsqueeze_dim::<3>(1)
    }
}

/// Each edge's keep weight under one keep weight per unit of `units` (what the patched pass
/// applies), 0 where there is no edge: [`Units::Nodes`] mapped onto the edges they act on.
pub fn unit_edge_keep<B: Backend>(graph: &Graph, units: Units, keep: &[f32], device: &B::Device) -> EdgeMatrix<f32> {
    let layout = Layout::new(graph, units);
    let [rows, cols] = layout.shape;
    let keep = Tensor::<B, 3>::from_data(TensorData::new(keep.to_vec(), [1, rows, cols]), device);
    let values: Vec<f32> = layout.edge_keep(graph, keep).into_data().convert::<f32>().to_vec().expect("keep weights are f32");
    let real = graph.real_edge_mask();
    EdgeMatrix::from_fn(*graph, |u, v| if real[(u, v)] { values[u * graph.n_bwd() + v] } else { 0.0 })
}

/// Runs the optimiser on `discovery`'s pairs: the parameters it learned, snapshots and logs.
pub fn learn_masks<B: AutodiffBackend>(discovery: &Discovery<B>, settings: &MaskSettings, progress: &mut dyn FnMut(Progress)) -> Result<Learned, MethodError> {
    let Discovery { model, graph, pairs, ablation, metric, batch_size, positions, .. } = *discovery;
    if pairs.is_empty() {
        return Err(MethodError::NoPairs);
    }
    let model = model.clone().no_grad();
    let inner = model.valid();
    let device = model.token_embedding.device();
    let layout = Layout::new(graph, settings.units);
    let mut passes = PassCount::default();

    let mut batches: Vec<PreparedBatch<B>> = Vec::new();
    for chunk in pairs.chunks(batch_size.max(1)) {
        let PairBatch { clean, counterfactual, answers, reads } = PairBatch::of(chunk);
        let prepared = PairBatches::new(&inner, &clean, &counterfactual, &reads, ablation, positions)?;
        let mut ablated = ablation.ablated_nodes(&inner, &prepared.counterfactual)?;
        passes.forward += ablation.forward_passes() + 1;
        let (full, clean_nodes) = patching::record_nodes(&inner, &prepared.clean);
        if settings.exempt_bos && prepared.starts().is_none() && model.config.bos_token_id.is_some() {
            let [n, p, _, d] = ablated.dims();
            ablated = ablated.slice_assign([0..n, 0..p, 0..1, 0..d], clean_nodes.slice([0..n, 0..p, 0..1, 0..d]));
        }
        let full_loss = metric_loss(metric, full.clone(), &answers, 1, &metric.reference(&full));
        let PairBatches { clean: clean_batch, .. } = prepared.into_autodiff::<B>();
        batches.push(PreparedBatch {
            clean: clean_batch,
            ablated: Tensor::from_inner(ablated),
            reference: metric.reference(&Tensor::from_inner(full)),
            full_loss: Tensor::from_inner(full_loss),
            answers,
        });
    }

    let mut rng = ChaCha8Rng::seed_from_u64(settings.seed);
    let [rows, cols] = layout.shape;
    let init: Vec<f32> = match settings.init {
        Init::Normal { mean, std } => (0..rows * cols)
            .map(|_| {
                // Box–Muller from two uniforms of the run's stream.
                let (u1, u2): (f64, f64) = (rng.random_range(f64::EPSILON..1.0), rng.random_range(0.0..1.0));
                (mean + std * (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
            })
            .collect(),
        Init::Constant(value) => vec![value as f32; rows * cols],
    };
    let mut theta = Param::from_tensor(Tensor::<B, 2>::from_data(TensorData::new(init, [rows, cols]), &device));
    let mut optimiser = AdamWConfig::new()
        .with_beta_1(settings.betas.0)
        .with_beta_2(settings.betas.1)
        .with_epsilon(1e-8)
        .with_weight_decay(settings.weight_decay)
        .with_grad_clipping(settings.clip_norm.map(GradientClippingConfig::Norm))
        .init::<B, Param<Tensor<B, 2>>>();
    // Edge Pruning's λ₁, λ₂, trained by ascent (their gradients negated) with the same optimiser kind.
    let mut lambdas = Param::from_tensor(Tensor::<B, 1>::zeros([2], &device));
    let mut lambda_optimiser = AdamWConfig::new().with_epsilon(1e-8).with_weight_decay(settings.weight_decay).init::<B, Param<Tensor<B, 1>>>();

    let real = layout.real_tensor::<B>(&device);
    let n_real = layout.n_real() as f64;
    let node_mass = matches!(settings.penalty, Penalty::ExpectedEdges { .. }).then(|| NodeMass::<B>::new(graph, &layout, &device));
    let per_epoch = batches.len();
    let mut learned = Learned { theta: Vec::new(), snapshots: Vec::new(), log: TrainingLog::default(), passes };
    for step in 0..settings.steps {
        let epoch = step / per_epoch;
        let batch = &batches[step % per_epoch];
        let pairs_here = batch.answers.len();
        let (copies, replicas) = settings.granularity.layout(pairs_here);
        let weights = settings.sampler.sample(theta.val(), replicas, &mut rng);
        let keep = match settings.polarity {
            Polarity::Keep => weights.clone(),
            Polarity::Intervene => weights.clone().neg() + 1.0,
        };
        let data = data_loss(&model, graph, &layout, batch, keep.clone(), copies, metric, settings.data_loss);
        learned.passes.forward += 1;
        learned.passes.backward += 1;
        let mut target = None;
        let penalty: Tensor<B, 1> = match settings.penalty {
            Penalty::None => Tensor::zeros([1], &device),
            Penalty::Lagrangian { target: schedule, .. } => {
                let t = schedule.at(step);
                target = Some(t);
                let kept: Tensor<B, 1> = (keep.clone() * real.clone()).sum() / (n_real * replicas as f64);
                let gap = kept.neg() + (1.0 - t);
                let l = lambdas.val();
                l.clone().slice(0..1) * gap.clone() + l.slice(1..2) * gap.square()
            }
            Penalty::ExpectedEdges { lambda } => expected_edge_penalty(graph, node_mass.as_ref().expect("built for UGS's penalty"), theta.val(), lambda),
            Penalty::L1Binary { l1, binary, schedule } => {
                let z = weights.clone().slice([0..1, 0..rows, 0..cols]) * real.clone();
                let l1_term = z.clone().abs().sum() * schedule.at(l1, epoch);
                let binary_term = (z.clone() * (z.neg() + 1.0)).sum() * schedule.at(binary, epoch);
                l1_term + binary_term
            }
        };
        let loss = data.clone() + penalty;
        let sparsity = 1.0 - scalar((keep * real.clone()).sum()) / (n_real * replicas as f64);
        let (data_value, loss_value) = (scalar(data), scalar(loss.clone()));
        if !loss_value.is_finite() {
            return Err(MethodError::NonFiniteLoss { step: step + 1, value: loss_value });
        }
        let mut grads = loss.backward();
        let theta_grads = GradientsParams::from_module(&mut grads, &theta);
        let lr = settings.lr_schedule.at(settings.lr, step, settings.steps);
        theta = optimiser.step(lr, theta, theta_grads);
        if let Penalty::Lagrangian { lambda_lr, .. } = settings.penalty {
            let mut lambda_grads = GradientsParams::from_module(&mut grads, &lambdas);
            if let Some(g) = lambda_grads.remove::<Inner<B>, 1>(lambdas.id) {
                lambda_grads.register(lambdas.id, g.neg());
            }
            lambdas = lambda_optimiser.step(lambda_lr, lambdas, lambda_grads);
        }
        if settings.sampler == Sampler::Clamped {
            theta = theta.map(|t| t.clamp(0.0, 1.0).detach().require_grad());
        }
        let values = host(theta.val());
        let nonzero = values.iter().zip(&layout.real).filter(|&(&v, &r)| r && settings.sampler.expected(v) != 0.0).count();
        learned.log.steps.push(StepLog { epoch, step: step + 1, data_loss: data_value, loss: loss_value, sparsity, nonzero, target });
        if settings.snapshots.contains(&(step + 1)) {
            learned.snapshots.push((step + 1, values.clone()));
        }
        let epoch_ends = (step + 1) % per_epoch == 0 || step + 1 == settings.steps;
        if settings.binarised_epochs && epoch_ends {
            learned.log.epochs.push(binarised_epoch(&model, graph, &layout, &batches, &values, settings, metric, epoch, &device));
            learned.passes.forward += batches.len();
        }
        progress(Progress { done: step + 1, total: settings.steps });
    }
    learned.theta = host(theta.val());
    Ok(learned)
}

/// The metric's loss per row (the value where lower is better, its negation otherwise).
fn metric_loss<X: burn::tensor::backend::Backend>(
    metric: Metric,
    logits: Tensor<X, 2>,
    answers: &[(u32, u32)],
    replicas: usize,
    reference: &MetricReference<X>,
) -> Tensor<X, 1> {
    let values = metric.per_row_against(logits, answers, replicas, reference);
    if metric.higher_is_better() { values.neg() } else { values }
}

/// The data term, mean over the rows of `copies` copies of the batch under `keep` (unit keep
/// weights [replicas, rows, cols]).
#[allow(clippy::too_many_arguments)]
fn data_loss<B: AutodiffBackend>(
    model: &transformer::Transformer<B>,
    graph: &Graph,
    layout: &Layout,
    batch: &PreparedBatch<B>,
    keep: Tensor<B, 3>,
    copies: usize,
    metric: Metric,
    kind: DataLoss,
) -> Tensor<B, 1> {
    let keep = layout.edge_keep(graph, keep);
    let rows = batch.clean.repeat(copies);
    let mut hooks = PatchHooks::new(*graph, &EdgeMasks::from_tensor(keep), batch.ablated.clone());
    let logits = model.forward_with(&rows, &Readout::ReadPosition, &mut hooks).squeeze_dim::<2>(1);
    let loss = metric_loss(metric, logits, &batch.answers, copies, &batch.reference);
    let full = || {
        let pairs = batch.answers.len();
        batch.full_loss.clone().unsqueeze_dim::<2>(0).expand([copies, pairs]).reshape([copies * pairs])
    };
    match kind {
        DataLoss::Metric => loss.mean(),
        DataLoss::Impact => (full() - loss).exp().mean(),
        DataLoss::Preservation => (loss - full()).exp().mean(),
    }
}

/// What UGS's penalty reads besides θ, built once per run: the real edges [n_fwd, n_bwd] and the
/// maps of sources [n_fwd, nodes] and destination slots [n_bwd, nodes] onto their nodes.
struct NodeMass<B: AutodiffBackend> {
    real: Tensor<B, 2>,
    source_node: Tensor<B, 2>,
    dest_node: Tensor<B, 2>,
}

impl<B: AutodiffBackend> NodeMass<B> {
    fn new(graph: &Graph, layout: &Layout, device: &B::Device) -> Self {
        let (n_fwd, n_bwd, n_nodes) = (graph.n_fwd(), graph.n_bwd(), graph.n_nodes());
        let mut source_node = vec![0.0f32; n_fwd * n_nodes];
        for f in 0..n_fwd {
            let node = graph.source_at(f).and_then(|s| graph.node_index(s.into()).ok()).expect("every source is a node");
            source_node[f * n_nodes + node] = 1.0;
        }
        let mut dest_node = vec![0.0f32; n_bwd * n_nodes];
        for b in 0..n_bwd {
            let node = graph.dest_node(b).expect("every destination slot belongs to a node");
            dest_node[b * n_nodes + node] = 1.0;
        }
        Self {
            real: layout.real_tensor::<B>(device).squeeze_dim::<2>(0),
            source_node: Tensor::from_data(TensorData::new(source_node, [n_fwd, n_nodes]), device),
            dest_node: Tensor::from_data(TensorData::new(dest_node, [n_bwd, n_nodes]), device),
        }
    }
}

/// UGS's penalty from the probabilities σ(θ) over [`Units::Edges`].
fn expected_edge_penalty<B: AutodiffBackend>(graph: &Graph, maps: &NodeMass<B>, theta: Tensor<B, 2>, lambda: f64) -> Tensor<B, 1> {
    let p = sigmoid(theta) * maps.real.clone();
    let edges = p.clone().sum() * lambda;
    // Node mass: out of each source (row sums), into each destination slot (column sums) mapped onto its node.
    let (n_fwd, n_bwd) = (graph.n_fwd(), graph.n_bwd());
    let out_mass = p.clone().sum_dim(1).reshape([1, n_fwd]).matmul(maps.source_node.clone());
    let in_mass = p.sum_dim(0).reshape([1, n_bwd]).matmul(maps.dest_node.clone());
    let lh = (graph.shape().n_layers * graph.shape().n_heads) as f64;
    let node_reg = (0.5 * lambda).min(2e-4);
    let nodes = ((out_mass + in_mass) * (2.0 / lh)).tanh().sum() * (node_reg * lh / 2.0);
    edges + nodes
}

/// The binarised weights (≥ 0.5 → 1) evaluated on every batch: PGB-CT's per-epoch record.
#[allow(clippy::too_many_arguments)]
fn binarised_epoch<B: AutodiffBackend>(
    model: &transformer::Transformer<B>,
    graph: &Graph,
    layout: &Layout,
    batches: &[PreparedBatch<B>],
    values: &[f32],
    settings: &MaskSettings,
    metric: Metric,
    epoch: usize,
    device: &B::Device,
) -> EpochLog {
    let weights: Vec<f32> = values.iter().map(|&v| if settings.sampler.expected(v) >= 0.5 { 1.0 } else { 0.0 }).collect();
    let on = weights.iter().zip(&layout.real).filter(|&(&w, &r)| r && w == 1.0).count();
    let violation = values
        .iter()
        .zip(&layout.real)
        .filter(|&(_, &r)| r)
        .map(|(&v, _)| f64::from(settings.sampler.expected(v) * (1.0 - settings.sampler.expected(v))))
        .sum();
    let unit = Tensor::<B, 3>::from_data(TensorData::new(weights, [1, layout.shape[0], layout.shape[1]]), device);
    let keep = match settings.polarity {
        Polarity::Keep => unit,
        Polarity::Intervene => unit.neg() + 1.0,
    };
    let (mut total, mut count) = (0.0, 0usize);
    for batch in batches {
        let n = batch.answers.len();
        total += scalar(data_loss(model, graph, layout, batch, keep.clone(), 1, metric, settings.data_loss)) * n as f64;
        count += n;
    }
    let n_real = layout.n_real();
    EpochLog { epoch, data_loss: total / count as f64, on, sparsity: 1.0 - on as f64 / n_real as f64, violation }
}

fn scalar<B: AutodiffBackend>(x: Tensor<B, 1>) -> f64 {
    f64::from(x.into_data().convert::<f32>().to_vec::<f32>().expect("a scalar is f32")[0])
}

fn host<B: AutodiffBackend>(x: Tensor<B, 2>) -> Vec<f32> {
    x.into_data().convert::<f32>().to_vec().expect("parameters are f32")
}

/// The parameters of [`Units::Edges`] as an edge matrix.
pub fn edge_matrix(graph: &Graph, theta: &[f32]) -> EdgeMatrix<f32> {
    EdgeMatrix::from_vec(*graph, theta.to_vec()).expect("edge parameters are of the graph's layout")
}

/// Each real edge's deterministic weight under `sampler` (0 where there is no edge): a method's scores.
pub fn edge_scores(graph: &Graph, theta: &[f32], sampler: Sampler) -> EdgeMatrix<f32> {
    let mut values = edge_matrix(graph, theta).map(|&t| sampler.expected(t));
    for (value, &is_edge) in values.as_mut_slice().iter_mut().zip(graph.real_edge_mask().as_slice()) {
        if !is_edge {
            *value = 0.0;
        }
    }
    values
}
