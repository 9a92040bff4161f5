//! `acdc`: Automatic Circuit DisCovery (Conmy et al. 2023) on the patching engine, exact and
//! batched (methods-spec §1).
//!
//! One run at threshold τ starts from the full graph H and tries every edge once, in a fixed order
//! ([`AcdcOrder`]): e is removed iff metric(H ∖ e) − metric(H) < τ (|·| with `abs`), where metric
//! is the discovery metric's loss (KL(full ‖ H) at the answer position by default: always
//! minimised, 0 on the full graph) averaged over every discovery pair in one batch, as ACDC's
//! reference evaluates it; a removal is permanent and the next edge is compared against the smaller
//! H. With `skip_disconnected` (counterfactual ablation only, as the reference's
//! `current_node_connected`), a node none of whose outgoing edges is left has its incoming edges
//! dropped untested when the order first reaches it; the change that makes is measured (ACDC
//! asserts it is below 3e-3) and reported.
//!
//! **One candidate at a time, incrementally** (`replicas_per_pass` = 1, the method's setting).
//! The run keeps the patched run under H up to date ([`patching::IncrementalRun`]): trying e
//! adds `ablated − actual` of its source to its destination's input and recomputes only the
//! nodes that change reaches through H's edges (a head from its three inputs' projections, only
//! the changed one projected again; an MLP; the logits), and a removal commits that trial. The
//! order decides the top layers first, so the nodes above a candidate are already sparse: on the
//! MCQA task model a trial recomputes a few nodes, not the model from the candidate's layer up.
//! Nodes of the last block and the logits are computed at the answer position alone.
//!
//! **Batching, exactly** (`replicas_per_pass` > 1). A pass tries up to `width` consecutive
//! candidates of one destination node (of one destination layer without the skip rule) side by
//! side, one replica of the batch per candidate, each replica's mask being what H would be when
//! the sequential algorithm reached that candidate *if the outcomes before it in the pass were as
//! predicted* ([`Speculation`]). The outcomes are then read in order; at the first one that
//! differs from its prediction (its own replica was still right) the later replicas are discarded
//! and the next pass starts after it. So every decision is taken on exactly the mask the
//! sequential algorithm would use, and a pass costs a re-run only when a prediction fails:
//! predicting "kept" is the plain scheme (every candidate against the current H; after a removal
//! the rest run again), predicting "removed" suits high τ, and a sweep predicts each edge from
//! the nearest τ already run. The width adapts as the predictions do: it doubles after a pass
//! whose predictions all held (up to `replicas_per_pass`) and falls to the number of candidates
//! a pass decided when one failed, so a wrong prediction wastes about as many replicas as the
//! run of right ones before it. The order never tries an edge into a lower layer before the
//! edges into a higher one, so before the lowest destination a pass's masks ablate anything
//! into, each replica is the recorded clean run: the pass resumes there from the clean run's
//! state ([`patching::patched_logits_from`]: a block's attention, its MLP or the final norm),
//! and one that resumes after the last attention runs at each row's answer position alone
//! ([`Batch::read_positions`]).
//!
//! **Budgets.** ACDC gives one circuit per τ. [`acdc_budget_circuits`] sweeps τ over a log grid,
//! then bisects log τ between the grid points bracketing each MIB budget until the circuit is
//! within 5% of the budget's edge count (or keeps the nearest it reached): one independent run
//! per τ, as in both reference implementations (circuits are not nested across τ). The 100%
//! budget is the full graph, as for every method. Each edge's score is its effect size in the run
//! at the grid's smallest τ, the one closest to the full model.

use std::time::Instant;

use burn::module::AutodiffModule;
use burn::tensor::Tensor;
use burn::tensor::backend::{AutodiffBackend, Backend};
use graph::{Dest, EdgeMatrix, Graph};
use patching::{
    Ablation, AblationError, Edit, IncrementalRun, Metric, MetricReference, NonFiniteMetric, PairBatches, Positions, ResumableRun, Trial, at_positions,
    patched_logits_from, record_run,
};
use tasks::{PairBatch, PreparedPair};
use transformer::{Batch, BatchError, Resume, Transformer};

use crate::method::{BudgetCircuits, Discovery, Progress};
use crate::scores::PassCount;

/// The largest change in the metric ACDC's reference allows a drop of a disconnected node's
/// incoming edges (`TLACDCExperiment`'s sanity assertion).
pub const INVARIANT_TOLERANCE: f64 = 3e-3;

/// The order in which edges are tried.
#[derive(Debug, Clone, PartialEq)]
pub enum AcdcOrder {
    /// ACDC's own (methods-spec §1.2): destination slots in reverse topological order — logits,
    /// then per layer from the top its MLP, its heads' v slots, k slots and q slots (heads H−1…0
    /// in each) — and into each slot its sources from the latest layer down to `input`, a layer's
    /// MLP before its heads (heads 0…H−1).
    Reference,
    /// These edges in this order, every real edge exactly once, destination layers never
    /// increasing: another implementation's order replayed (auto-circuit's, dumped from it).
    Replay(Vec<(usize, usize)>),
}

/// What a batched pass assumes about the outcomes of the candidates before each one in the pass
/// (see the module docs; the result is the same under every choice, only the passes differ).
#[derive(Debug, Clone, PartialEq)]
pub enum Speculation {
    /// Every earlier candidate kept: each replica is H with its own edge removed.
    Kept,
    /// Every earlier candidate removed.
    Removed,
    /// Per edge, true = removed, as another run decided (a sweep's nearest τ).
    Decisions(EdgeMatrix<bool>),
}

/// The settings of one ACDC run.
#[derive(Debug, Clone, PartialEq)]
pub struct AcdcOptions {
    /// τ, finite and ≥ 0.
    pub tau: f64,
    /// Compare |metric(H ∖ e) − metric(H)| with τ rather than the signed change.
    pub abs: bool,
    /// Drop a disconnected node's incoming edges untested (counterfactual ablation only).
    pub skip_disconnected: bool,
    /// The edge order.
    pub order: AcdcOrder,
    /// How passes speculate.
    pub speculation: Speculation,
    /// The most candidates tried side by side in one pass (replicas of the batch), at least 1.
    pub replicas_per_pass: usize,
}

impl AcdcOptions {
    /// ACDC's defaults at threshold `tau`: signed changes, the reference order, the skip rule
    /// under counterfactual ablation, passes predicting removals.
    pub fn new(tau: f64, counterfactual: bool, replicas_per_pass: usize) -> Self {
        Self { tau, abs: false, skip_disconnected: counterfactual, order: AcdcOrder::Reference, speculation: Speculation::Removed, replicas_per_pass }
    }
}

/// What one run found and what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct AcdcRun {
    /// The threshold.
    pub tau: f64,
    /// The edges left: the circuit.
    pub circuit: EdgeMatrix<bool>,
    /// Each tested edge's metric(H ∖ e) − metric(H) in loss units when it was tried (positive:
    /// removing it hurts); 0 for an edge dropped untested.
    pub effects: EdgeMatrix<f32>,
    /// Edges tested.
    pub tested: usize,
    /// Disconnected nodes whose incoming edges were dropped untested.
    pub skipped_nodes: usize,
    /// Edges so dropped.
    pub dropped_untested: usize,
    /// The largest |change in the metric| one such drop made (ACDC expects < 3e-3; 0 when none).
    pub invariant_max: f64,
    /// Drops that changed the metric by [`INVARIANT_TOLERANCE`] or more.
    pub invariant_failures: usize,
    /// Patched passes run over every pair (batched passes from the block they resume at, or
    /// incremental trials).
    pub passes: usize,
    /// Replicas summed over those passes (replicas / passes: the mean batching).
    pub replicas: usize,
    /// The metric (loss) of the circuit found.
    pub metric: f64,
    /// Wall time of the run, the shared clean and counterfactual passes excluded.
    pub seconds: f64,
}

/// Why ACDC cannot run.
#[derive(Debug, thiserror::Error)]
pub enum AcdcError {
    /// Nothing to run on.
    #[error("no pairs to run ACDC on")]
    NoPairs,
    /// τ negative, NaN or infinite.
    #[error("ACDC's threshold τ must be a finite number ≥ 0, not {0}")]
    BadTau(f64),
    /// No replicas per pass.
    #[error("ACDC needs at least one replica per pass")]
    NoReplicas,
    /// The skip rule asked for under an ablation it is not valid for.
    #[error("dropping a disconnected node's incoming edges untested is exact only under counterfactual ablation, not {0}")]
    SkipNeedsCounterfactual(patching::AblationKind),
    /// A replayed order that is not every real edge once with non-increasing destination layers.
    #[error("the replayed ACDC order: {0}")]
    BadOrder(String),
    /// A metric value that is not finite.
    #[error("ACDC, {run}: {source}")]
    NonFinite {
        /// The clean run or the pass that produced it.
        run: String,
        /// The value found.
        source: NonFiniteMetric,
    },
    /// A batch of prompts does not fit the model.
    #[error(transparent)]
    Batch(#[from] BatchError),
    /// The ablation could not be applied.
    #[error(transparent)]
    Ablation(#[from] AblationError),
}

/// The block a destination slot's pass starts at: its own layer (the last block for `logits`).
fn dest_layer(graph: &Graph, bwd: usize) -> usize {
    match graph.dest_at(bwd).expect("a slot of the graph") {
        Dest::Head { layer, .. } | Dest::Mlp { layer } => layer,
        Dest::Logits => graph.shape().n_layers - 1,
    }
}

/// Where a pass must resume to see a change to slot `bwd`'s input: its block's attention, its
/// MLP, or the final norm.
fn dest_point(graph: &Graph, bwd: usize) -> Resume {
    match graph.dest_at(bwd).expect("a slot of the graph") {
        Dest::Head { layer, .. } => Resume::Attention(layer),
        Dest::Mlp { layer } => Resume::Mlp(layer),
        Dest::Logits => Resume::Final,
    }
}

/// How a run evaluates its candidates (the same losses either way, up to rounding).
enum Passes<B: Backend> {
    /// Several candidates side by side, one replica of the batch each, each pass resumed where
    /// its masks first differ from the clean run.
    Batched,
    /// One candidate at a time on a run kept up to date with the hypothesis: a trial recomputes
    /// only the nodes the candidate's removal reaches ([`IncrementalRun`]).
    Incremental {
        run: Box<IncrementalRun<B>>,
        /// The latest trial and the mask it tried.
        pending: Option<(EdgeMatrix<bool>, Trial<B>)>,
    },
}

impl<B: Backend> Passes<B> {
    /// Makes `mask` the hypothesis the next candidates are tried against.
    fn accept(&mut self, model: &Transformer<B>, mask: &EdgeMatrix<bool>) {
        if let Passes::Incremental { run, pending } = self {
            let trial = match pending.take() {
                Some((tried, trial)) if tried == *mask => trial,
                _ => run.trial(model, &edits_to(run.mask(), mask)),
            };
            run.commit(trial);
        }
    }
}

/// The edits that turn mask `from` into `to` (one pass over the row-major cells: on SmolLM2 the
/// per-edge iterator made this a tenth of a trial).
fn edits_to(from: &EdgeMatrix<bool>, to: &EdgeMatrix<bool>) -> Vec<Edit> {
    let n_bwd = from.graph().n_bwd();
    from.as_slice().iter().zip(to.as_slice()).enumerate().filter(|(_, (a, b))| a != b).map(|(i, (_, &keep))| ((i / n_bwd, i % n_bwd), keep)).collect()
}

/// [`AcdcOrder::Reference`]'s edges.
pub fn reference_order(graph: &Graph) -> Vec<(usize, usize)> {
    let layers: Vec<_> = graph.layers().collect();
    // Sources below `prev`: the latest layer first, its MLP before its heads (0..H−1), `input` last.
    let sources = |prev: usize| -> Vec<usize> {
        let mut out: Vec<usize> = Vec::new();
        for li in layers.iter().rev() {
            out.extend(std::iter::once(li.mlp_fwd).chain(li.heads_fwd.clone()).filter(|&u| u < prev));
        }
        out.push(0);
        out
    };
    let mut slots = vec![graph.n_bwd() - 1];
    for li in layers.iter().rev() {
        slots.push(li.mlp_bwd);
        for range in [&li.v_bwd, &li.k_bwd, &li.q_bwd] {
            slots.extend(range.clone().rev());
        }
    }
    slots
        .into_iter()
        .flat_map(|bwd| {
            let prev = graph.prev(graph.dest_at(bwd).expect("a slot of the graph")).expect("a slot of the graph");
            sources(prev).into_iter().map(move |u| (u, bwd))
        })
        .collect()
}

/// Checks a replayed order: every real edge once, destination layers non-increasing.
fn check_order(graph: &Graph, order: &[(usize, usize)]) -> Result<(), AcdcError> {
    let mut seen = EdgeMatrix::filled(*graph, false);
    let mut layer = usize::MAX;
    for (i, &(f, b)) in order.iter().enumerate() {
        if !graph.is_edge(f, b) {
            return Err(AcdcError::BadOrder(format!("entry {i}, ({f}, {b}), is not an edge of the graph")));
        }
        if std::mem::replace(&mut seen[(f, b)], true) {
            return Err(AcdcError::BadOrder(format!("entry {i}, {}, is listed twice", graph.edge_name(f, b).unwrap_or_default())));
        }
        let l = dest_layer(graph, b);
        if l > layer {
            return Err(AcdcError::BadOrder(format!("entry {i}, {}, goes back up to layer {l}", graph.edge_name(f, b).unwrap_or_default())));
        }
        layer = l;
    }
    match graph.edges().find(|&e| !seen[e]) {
        Some((f, b)) => Err(AcdcError::BadOrder(format!("{} is missing", graph.edge_name(f, b).unwrap_or_default()))),
        None => Ok(()),
    }
}

/// The answer tokens of a batch, and each pair's answers as indices into them.
struct AnswerColumns {
    tokens: Vec<u32>,
    answers: Vec<(u32, u32)>,
}

/// The clean run as one kind of batched pass reads it: its batch, its recorded run and δ, the
/// ablated outputs, at every computed position or at each row's answer position alone.
struct View<B: Backend> {
    batch: Batch<B>,
    run: ResumableRun<B>,
    ablated: Tensor<B, 4>,
}

/// What every run on the same pairs shares: the clean run (recorded whole, so passes can start
/// part-way up), the ablated node outputs and the full model's metric.
pub struct AcdcSetup<B: Backend> {
    graph: Graph,
    /// The passes over every computed position.
    every: View<B>,
    /// The passes resumed after the last attention: each row's last position alone.
    last: View<B>,
    answers: Vec<(u32, u32)>,
    metric: Metric,
    reference: MetricReference<B>,
    /// For a metric that reads the answers alone: incremental trials unembed only those columns.
    answer_columns: Option<AnswerColumns>,
    ablation: patching::AblationKind,
    /// The full model's mean loss (0 for KL).
    full: f64,
    /// Forward passes the setup ran.
    pub passes: usize,
}

impl<B: Backend> AcdcSetup<B> {
    /// Runs the clean and ablated passes of `pairs` (one batch) once for every run that follows.
    pub fn new(
        model: &Transformer<B>,
        graph: &Graph,
        pairs: &[PreparedPair],
        ablation: &Ablation<B>,
        metric: Metric,
        positions: Positions,
    ) -> Result<Self, AcdcError> {
        if pairs.is_empty() {
            return Err(AcdcError::NoPairs);
        }
        let PairBatch { clean, counterfactual, answers, reads } = PairBatch::of(pairs);
        let batches = PairBatches::new(model, &clean, &counterfactual, &reads, ablation, positions)?;
        let ablated = ablation.ablated_nodes(model, &batches.counterfactual)?;
        let run = record_run(model, &batches.clean);
        let readout = batches.clean.read_computed();
        let ablated_read = at_positions(ablated.clone(), &readout);
        let last =
            View { batch: batches.clean.read_positions(), run: ResumableRun::new(graph, run.at_positions(&readout), &ablated_read), ablated: ablated_read };
        let every = View { batch: batches.clean, run: ResumableRun::new(graph, run, &ablated), ablated };
        let reference = metric.reference(&every.run.run.logits);
        let answer_columns = metric.reads_answers_only().then(|| {
            let mut tokens: Vec<u32> = answers.iter().flat_map(|&(c, i)| [c, i]).collect();
            tokens.sort_unstable();
            tokens.dedup();
            let column = |t: u32| tokens.binary_search(&t).expect("an answer token") as u32;
            let remapped = answers.iter().map(|&(c, i)| (column(c), column(i))).collect();
            AnswerColumns { tokens, answers: remapped }
        });
        let mut setup = Self {
            graph: *graph,
            every,
            last,
            answers,
            metric,
            reference,
            answer_columns,
            ablation: ablation.kind(),
            full: 0.0,
            passes: 1 + ablation.forward_passes(),
        };
        let logits = setup.every.run.run.logits.clone();
        setup.full = setup.mean_losses(logits, 1, &setup.answers).map_err(|source| AcdcError::NonFinite { run: "the clean run".into(), source })?[0];
        Ok(setup)
    }

    /// The mean loss over the pairs of each of `replicas` copies of them, from last-token logits.
    /// `answers` are the pairs' answer columns of `logits`: token ids, or indices into the
    /// answer tokens alone.
    fn mean_losses(&self, logits: Tensor<B, 2>, replicas: usize, answers: &[(u32, u32)]) -> Result<Vec<f64>, NonFiniteMetric> {
        let values = self.metric.finite_values_against(logits, answers, replicas, &self.reference)?;
        let pairs = self.answers.len();
        Ok(values.chunks(pairs).map(|row| row.iter().map(|&v| self.metric.loss_of(v as f64)).sum::<f64>() / pairs as f64).collect())
    }

    /// The mean loss of each mask, by `passes`.
    fn losses(&self, model: &Transformer<B>, masks: &[&EdgeMatrix<bool>], passes: &mut Passes<B>) -> Result<Vec<f64>, AcdcError> {
        match passes {
            Passes::Batched => self.batched_losses(model, masks),
            Passes::Incremental { run, pending } => {
                let [mask] = masks else { unreachable!("one candidate at a time on an incremental run") };
                let trial = run.trial(model, &edits_to(run.mask(), mask));
                let answers = self.answer_columns.as_ref().map_or(&self.answers, |columns| &columns.answers);
                let losses =
                    self.mean_losses(trial.logits.clone(), 1, answers).map_err(|source| AcdcError::NonFinite { run: "an incremental trial".into(), source })?;
                *pending = Some(((*mask).clone(), trial));
                Ok(losses)
            }
        }
    }

    /// The mean loss of each mask, by one pass resumed where the masks first differ from the
    /// full graph (the lowest destination of an ablated edge: a block's attention, its MLP, or
    /// the final norm), over each row's answer position alone when that is after the last
    /// attention. Exact for masks that ablate nothing below that point, which is all ACDC's
    /// order produces.
    fn batched_losses(&self, model: &Transformer<B>, masks: &[&EdgeMatrix<bool>]) -> Result<Vec<f64>, AcdcError> {
        let graph = &self.graph;
        let point =
            masks.iter().flat_map(|m| m.edge_values().filter(|(_, keep)| !**keep).map(|((_, bwd), _)| dest_point(graph, bwd))).min().unwrap_or(Resume::Final);
        let view = if point > Resume::Attention(graph.shape().n_layers - 1) { &self.last } else { &self.every };
        let state = view.run.state(point, masks.len());
        let logits = patched_logits_from(model, graph, &view.batch, state, view.ablated.clone(), masks);
        self.mean_losses(logits, masks.len(), &self.answers).map_err(|source| AcdcError::NonFinite { run: format!("a pass resumed at {point:?}"), source })
    }

    /// One ACDC run under `options`.
    pub fn run(&self, model: &Transformer<B>, options: &AcdcOptions) -> Result<AcdcRun, AcdcError> {
        let graph = &self.graph;
        if !options.tau.is_finite() || options.tau < 0.0 {
            return Err(AcdcError::BadTau(options.tau));
        }
        if options.replicas_per_pass == 0 {
            return Err(AcdcError::NoReplicas);
        }
        if options.skip_disconnected && self.ablation != patching::AblationKind::Counterfactual {
            return Err(AcdcError::SkipNeedsCounterfactual(self.ablation));
        }
        let order = match &options.order {
            AcdcOrder::Reference => reference_order(graph),
            AcdcOrder::Replay(order) => {
                check_order(graph, order)?;
                order.clone()
            }
        };
        let start = Instant::now();
        let n_fwd = graph.n_fwd();
        let mut present = graph.real_edge_mask();
        let mut decided = EdgeMatrix::filled(*graph, false);
        let mut effects = EdgeMatrix::filled(*graph, 0.0f32);
        let mut visited = vec![false; n_fwd + 1];
        let mut current = self.full;
        let mut passes = if options.replicas_per_pass == 1 {
            // ACDC only ever removes edges.
            let run = IncrementalRun::new(graph, &self.every.batch, &self.every.run.run, self.every.ablated.clone()).shrinking();
            let run = match &self.answer_columns {
                Some(columns) => run.reading(columns.tokens.clone()),
                None => run,
            };
            Passes::Incremental { run: Box::new(run), pending: None }
        } else {
            Passes::Batched
        };
        let mut out = AcdcRun {
            tau: options.tau,
            circuit: present.clone(),
            effects: effects.clone(),
            tested: 0,
            skipped_nodes: 0,
            dropped_untested: 0,
            invariant_max: 0.0,
            invariant_failures: 0,
            passes: 0,
            replicas: 0,
            metric: 0.0,
            seconds: 0.0,
        };
        let node_of = |bwd: usize| graph.dest_node(bwd).expect("a slot of the graph");
        let mut i = 0;
        let mut width = options.replicas_per_pass.min(2);
        while i < order.len() {
            let (_, bwd) = order[i];
            if decided[order[i]] {
                i += 1;
                continue;
            }
            let node = node_of(bwd);
            if options.skip_disconnected && node < n_fwd && !std::mem::replace(&mut visited[node], true) {
                let connected = (0..graph.n_bwd()).any(|v| graph.is_edge(node, v) && present[(node, v)]);
                if !connected {
                    let incoming: Vec<(usize, usize)> = graph.edges().filter(|&(f, b)| node_of(b) == node && present[(f, b)]).collect();
                    for &e in &incoming {
                        present[e] = false;
                        decided[e] = true;
                    }
                    out.skipped_nodes += 1;
                    out.dropped_untested += incoming.len();
                    if !incoming.is_empty() {
                        let loss = self.losses(model, &[&present], &mut passes)?[0];
                        passes.accept(model, &present);
                        out.passes += 1;
                        out.replicas += 1;
                        let change = (loss - current).abs();
                        out.invariant_max = out.invariant_max.max(change);
                        out.invariant_failures += usize::from(change >= INVARIANT_TOLERANCE);
                        current = loss;
                    }
                    continue;
                }
            }
            // The pass's candidates: the next undecided edges into the same node (the same layer
            // without the skip rule), as many as a pass holds.
            let same_group = |b: usize| if options.skip_disconnected { node_of(b) == node } else { dest_layer(graph, b) == dest_layer(graph, bwd) };
            let chunk: Vec<usize> = (i..order.len()).take_while(|&j| same_group(order[j].1)).filter(|&j| !decided[order[j]]).take(width).collect();
            let predicted: Vec<bool> = chunk
                .iter()
                .map(|&j| match &options.speculation {
                    Speculation::Kept => false,
                    Speculation::Removed => true,
                    Speculation::Decisions(removed) => removed[order[j]],
                })
                .collect();
            let mut hypothesis = present.clone();
            let masks: Vec<EdgeMatrix<bool>> = chunk
                .iter()
                .zip(&predicted)
                .map(|(&j, &removed)| {
                    let mut mask = hypothesis.clone();
                    mask[order[j]] = false;
                    if removed {
                        hypothesis[order[j]] = false;
                    }
                    mask
                })
                .collect();
            let losses = self.losses(model, &masks.iter().collect::<Vec<_>>(), &mut passes)?;
            out.passes += 1;
            out.replicas += masks.len();
            // Predictions that held double the next pass's width; at a wrong one it shrinks to the
            // candidates this pass decided.
            width = (2 * chunk.len()).min(options.replicas_per_pass);
            for (k, ((&j, &removed_as_predicted), &loss)) in chunk.iter().zip(&predicted).zip(&losses).enumerate() {
                let edge = order[j];
                let change = loss - current;
                let remove = if options.abs { change.abs() } else { change } < options.tau;
                effects[edge] = change as f32;
                decided[edge] = true;
                out.tested += 1;
                if remove {
                    present[edge] = false;
                    current = loss;
                    passes.accept(model, &present);
                }
                i = j + 1;
                if remove != removed_as_predicted {
                    width = k + 1;
                    break;
                }
            }
        }
        out.circuit = present;
        out.effects = effects;
        out.metric = current;
        out.seconds = start.elapsed().as_secs_f64();
        Ok(out)
    }
}

/// The τ grid a sweep starts from: 10^k for k = −6..=1, ACDC's KL range (its IOI sweep spans
/// 1e-6 to 1) and a decade beyond.
pub fn default_tau_grid() -> Vec<f64> {
    (-6..=1).map(|k| 10f64.powi(k)).collect()
}

/// Bisection steps per budget after the grid, at most.
pub const BISECTIONS: usize = 8;

/// How close a sweep's circuit must come to a budget's edge count: within 5%.
pub const BUDGET_TOLERANCE: f64 = 0.05;

/// One circuit per budget of a τ sweep, and the runs behind them.
#[derive(Debug, Clone, PartialEq)]
pub struct AcdcSweep {
    /// Per fraction: the run chosen (index into `runs`), None for the full graph at 100%.
    pub chosen: Vec<Option<usize>>,
    /// Every run, in the order they ran.
    pub runs: Vec<AcdcRun>,
    /// The setup's passes.
    pub setup_passes: usize,
}

/// Whether `edges` is within [`BUDGET_TOLERANCE`] of `target`.
fn close_enough(edges: usize, target: usize) -> bool {
    (edges as f64 - target as f64).abs() <= BUDGET_TOLERANCE * target as f64
}

/// Sweeps τ (the grid, then bisection per budget) for a circuit at each of `fractions`; `base`
/// gives every setting but τ and the speculation (each run predicts from the nearest τ run).
pub fn acdc_sweep<B: Backend>(
    model: &Transformer<B>,
    setup: &AcdcSetup<B>,
    fractions: &[f64],
    base: &AcdcOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<AcdcSweep, AcdcError> {
    let graph = setup.graph;
    let mut runs: Vec<AcdcRun> = Vec::new();
    let grid = default_tau_grid();
    let targets: Vec<Option<usize>> = fractions.iter().map(|&x| (x < 1.0).then(|| graph.edge_budget(x))).collect();
    let total = grid.len() + targets.iter().flatten().count() * BISECTIONS;
    let mut run_at = |tau: f64, runs: &mut Vec<AcdcRun>| -> Result<usize, AcdcError> {
        if let Some(found) = runs.iter().position(|r| r.tau == tau) {
            return Ok(found);
        }
        let speculation = match runs.iter().min_by(|a, b| (a.tau.ln() - tau.ln()).abs().total_cmp(&(b.tau.ln() - tau.ln()).abs())) {
            Some(nearest) => Speculation::Decisions(nearest.circuit.map(|&kept| !kept)),
            None => base.speculation.clone(),
        };
        runs.push(setup.run(model, &AcdcOptions { tau, speculation, ..base.clone() })?);
        progress(Progress { done: runs.len().min(total), total });
        Ok(runs.len() - 1)
    };
    for &tau in &grid {
        run_at(tau, &mut runs)?;
    }
    let count = |r: &AcdcRun| r.circuit.edge_values().filter(|(_, k)| **k).count();
    let mut chosen = Vec::with_capacity(targets.len());
    for target in targets {
        let Some(target) = target else {
            chosen.push(None);
            continue;
        };
        let nearest = |runs: &[AcdcRun]| (0..runs.len()).min_by_key(|&i| (count(&runs[i]).abs_diff(target), i)).expect("the grid ran");
        // Bracket: the largest τ still at or above the target, the smallest below it (edges fall
        // as τ rises, though not strictly).
        for _ in 0..BISECTIONS {
            let best = nearest(&runs);
            if close_enough(count(&runs[best]), target) {
                break;
            }
            let above = runs.iter().filter(|r| count(r) > target).map(|r| r.tau).fold(f64::NEG_INFINITY, f64::max);
            let below = runs.iter().filter(|r| count(r) < target && r.tau > above).map(|r| r.tau).fold(f64::INFINITY, f64::min);
            if !above.is_finite() || !below.is_finite() || above <= 0.0 {
                break;
            }
            let mid = (above.ln() + below.ln()) / 2.0;
            let tau = mid.exp();
            if tau <= above || tau >= below {
                break;
            }
            run_at(tau, &mut runs)?;
        }
        chosen.push(Some(nearest(&runs)));
    }
    Ok(AcdcSweep { chosen, runs, setup_passes: setup.passes })
}

/// The `acdc` method: a τ sweep to a circuit at each budget of `discovery.fractions`, each edge
/// scored by its effect size in the smallest-τ run, and the τ of each budget.
pub fn acdc_budget_circuits<B: AutodiffBackend>(discovery: &Discovery<B>, progress: &mut dyn FnMut(Progress)) -> Result<BudgetCircuits, AcdcError> {
    let inner = discovery.model.valid();
    let setup = AcdcSetup::new(&inner, discovery.graph, discovery.pairs, discovery.ablation, discovery.metric, discovery.positions)?;
    let counterfactual = matches!(discovery.ablation, Ablation::Counterfactual);
    let base = AcdcOptions::new(0.0, counterfactual, REPLICAS_PER_PASS);
    let sweep = acdc_sweep(&inner, &setup, discovery.fractions, &base, progress)?;
    let full = discovery.graph.real_edge_mask();
    let circuits = sweep.chosen.iter().map(|c| c.map_or_else(|| full.clone(), |i| sweep.runs[i].circuit.clone())).collect();
    let taus = sweep.chosen.iter().map(|c| c.map(|i| sweep.runs[i].tau)).collect();
    let smallest = sweep.runs.iter().min_by(|a, b| a.tau.total_cmp(&b.tau)).expect("the grid ran");
    let forward = sweep.setup_passes + sweep.runs.iter().map(|r| r.passes).sum::<usize>();
    Ok(BudgetCircuits { circuits, scores: Some(smallest.effects.clone()), taus, passes: PassCount { forward, backward: 0 }, log: None })
}

/// Replicas per pass of the `acdc` method: one, on the incremental run. Measured on the MCQA task
/// model, 24 pairs, ACDC's order, τ 1e-3 (`cargo xtask perf acdc --peer none --replicas R`):
/// incremental 0.44 s; batched passes of up to 4 replicas 0.96 s (129 passes), up to 32 1.8 s
/// (87 passes); [`AcdcOptions::replicas_per_pass`] batches where a backend rewards it.
pub const REPLICAS_PER_PASS: usize = 1;

#[cfg(test)]
mod tests {
    use graph::{GraphShape, Qkv};

    use super::*;

    #[test]
    fn the_reference_order_is_every_edge_once_top_down() {
        let graph = Graph::new(GraphShape { n_layers: 3, n_heads: 2 }).unwrap();
        let order = reference_order(&graph);
        check_order(&graph, &order).unwrap();
        // Logits first, from the last MLP down to input.
        let names: Vec<String> = order.iter().take(8).map(|&(f, b)| graph.edge_name(f, b).unwrap()).collect();
        assert_eq!(names[..4], ["m2->logits", "a2.h0->logits", "a2.h1->logits", "m1->logits"]);
        // After logits: m2's input, then the v slots of heads 1, 0, then k, then q.
        let slots: Vec<usize> = order.iter().map(|&(_, b)| b).fold(Vec::new(), |mut v, b| {
            if v.last() != Some(&b) {
                v.push(b);
            }
            v
        });
        let l2 = graph.layer(2).unwrap();
        assert_eq!(
            slots[..8],
            [graph.n_bwd() - 1, l2.mlp_bwd, l2.v_bwd.start + 1, l2.v_bwd.start, l2.k_bwd.start + 1, l2.k_bwd.start, l2.q_bwd.start + 1, l2.q_bwd.start]
        );
        assert!(matches!(graph.dest_at(slots[2]), Some(Dest::Head { layer: 2, head: 1, qkv: Qkv::V })));
    }

    #[test]
    fn bad_orders_are_refused_naming_the_entry() {
        let graph = Graph::new(GraphShape { n_layers: 2, n_heads: 2 }).unwrap();
        let mut order = reference_order(&graph);
        let last = order.pop().unwrap();
        assert!(check_order(&graph, &order).unwrap_err().to_string().contains("missing"));
        order.push(order[0]);
        assert!(check_order(&graph, &order).unwrap_err().to_string().contains("twice"));
        order.pop();
        order.push(last);
        let n = order.len();
        order.swap(0, n - 1);
        assert!(check_order(&graph, &order).unwrap_err().to_string().contains("goes back up"));
    }
}
