//! Every method by its benchmark name, run through one entry point: a method is handed all its
//! discovery pairs, a batch size, the metric it optimises and the ablation fitted once on those
//! pairs (the same object the evaluation uses), draws its own batches, reports its progress, and
//! returns either a score per edge or one circuit per budget.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use graph::{EdgeMatrix, Graph};
use patching::{Ablation, AblationError, AblationKind, Metric, Positions};
use tasks::PreparedPair;
use transformer::{GradientRules, Transformer};

use crate::acdc::{AcdcError, acdc_budget_circuits};
use crate::bootstrap::bootstrap_scores;
use crate::edge_pruning::edge_pruning_circuits;
use crate::ensemble::{Combine, ensemble_scores};
use crate::exact::{ExactError, ExactOptions, exact_scores};
use crate::gradient::{GradientError, GradientMethod, gradient_scores};
use crate::ifr::ifr_scores;
use crate::learned::TrainingLog;
use crate::pgbct::{Objective, pgbct_circuits};
use crate::random::random_scores;
use crate::scores::{EdgeScores, PassCount};
use crate::ugs::ugs_scores;

/// An attribution method with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    /// Uniform random scores from a seed: the floor.
    Random {
        /// The seed of the scores.
        seed: u64,
    },
    /// Exact patching of the listed edges, or of every edge (tiny models) when None.
    Exact {
        /// The edges to score; None scores every edge.
        edges: Option<Vec<(usize, usize)>>,
    },
    /// One of the gradient family (EAP, GIM, EAP-IG, clean-corrupted).
    Gradient(GradientMethod),
    /// Information flow routes on the clean run.
    Ifr,
    /// ACDC: a τ sweep to one circuit per budget ([`crate::acdc`]).
    Acdc,
    /// Edge Pruning's learned hard-concrete masks, one circuit per budget ([`crate::edge_pruning`]).
    EdgePruning {
        /// One run per budget instead of one run with a snapshot per budget.
        per_budget: bool,
        /// The seed of the initialisation and the samples.
        seed: u64,
    },
    /// PGB-CT's soft interventions, one circuit per budget ([`crate::pgbct`]).
    PgbCt {
        /// Impact (the paper's necessity objective) or preservation (sufficiency).
        objective: Objective,
        /// The seed of the run.
        seed: u64,
    },
    /// UGS's learned edge probabilities σ(θ) as scores ([`crate::ugs`]).
    Ugs {
        /// The seed of the samples.
        seed: u64,
    },
    /// `bootstrap:<method>`: the method's mean scores over resamples of the discovery pairs, with
    /// the edges whose 95% interval excludes 0 preferred ([`crate::bootstrap`]).
    Bootstrap {
        /// The method resampled (one that scores a mean over pairs: [`Method::is_pair_mean`]).
        method: Box<Method>,
        /// B, the resamples.
        resamples: usize,
        /// The seed the resamples are drawn from.
        seed: u64,
    },
    /// `ensemble-<mean|min|max>:<method>+<method>[+...]`: several methods' normalised scores
    /// combined edge by edge ([`crate::ensemble`]).
    Ensemble {
        /// How the members' scores are combined.
        combine: Combine,
        /// The methods combined, at least two, none itself a bootstrap or an ensemble.
        members: Vec<Method>,
    },
}

/// The forms of the methods built from others, as [`Method::parse`] reads them and errors list them.
pub const COMPOSITE_FORMS: [&str; 4] = ["bootstrap:<method>", "ensemble-mean:<method>+<method>[+...]", "ensemble-min:...", "ensemble-max:..."];

/// The names `Method::parse` accepts.
pub const METHOD_NAMES: [&str; 19] = [
    "random",
    "exact",
    "eap",
    "eap-ig-inputs",
    "eap-ig-activations",
    "clean-corrupted",
    "ifr",
    "gim",
    "grad",
    "grad-freeze",
    "grad-tsg",
    "grad-norm",
    "grad-freeze-norm",
    "acdc",
    "edge-pruning",
    "edge-pruning-per-budget",
    "ugs",
    "pgb-ct",
    "pgb-ct-preserve",
];

/// Why a method cannot run.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    /// A name outside [`METHOD_NAMES`].
    #[error("unknown method `{0}` (known: {names}, and {forms})", names = METHOD_NAMES.join(", "), forms = COMPOSITE_FORMS.join(", "))]
    Unknown(String),
    /// A `bootstrap:` or `ensemble-` name that does not describe a method.
    #[error("`{name}`: {reason}")]
    Composite {
        /// The whole name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A bootstrap asked of a method whose scores are not a mean over pairs.
    #[error("only a method whose scores are a mean over pairs (exact or a gradient method) can be bootstrapped")]
    NotResamplable,
    /// A bootstrap with fewer than two resamples has no standard deviation.
    #[error("a bootstrap needs at least two resamples for a standard deviation, {0} given")]
    TooFewResamples(usize),
    /// Resample counts that do not give one count per discovery pair.
    #[error("resample {resample} gives counts for {found} pairs, not the {pairs} discovery pairs")]
    ResampleSize {
        /// The resample at fault.
        resample: usize,
        /// Counts it gives.
        found: usize,
        /// Discovery pairs.
        pairs: usize,
    },
    /// A bootstrap given no pairs to resample.
    #[error("no pairs to score on")]
    NoPairs,
    /// An ensemble of no scores.
    #[error("an ensemble needs members to combine")]
    EmptyEnsemble,
    /// Ensemble members of different graphs.
    #[error("ensemble member {member}'s scores are of another graph than member 0's")]
    EnsembleGraphs {
        /// The member at fault.
        member: usize,
    },
    /// An ensemble member that gave circuits without a score per edge.
    #[error("ensemble member {member} gave circuits without scores: an ensemble combines scores")]
    MemberWithoutScores {
        /// The member at fault.
        member: usize,
    },
    /// Exact patching failed.
    #[error(transparent)]
    Exact(#[from] ExactError),
    /// ACDC failed.
    #[error(transparent)]
    Acdc(#[from] AcdcError),
    /// A gradient method failed.
    #[error(transparent)]
    Gradient(#[from] GradientError),
    /// The ablation could not be fitted or applied.
    #[error(transparent)]
    Ablation(#[from] AblationError),
    /// A batch of prompts does not fit the model.
    #[error(transparent)]
    Batch(#[from] transformer::BatchError),
    /// A mask-learning run whose loss stopped being a finite number.
    #[error("the mask-learning loss is {value} at step {step}: the patched passes (or the penalty) are not finite")]
    NonFiniteLoss {
        /// The 1-based step.
        step: usize,
        /// The loss found.
        value: f64,
    },
    /// The method's scores hold NaN or infinity (a check every method's scores pass before they are returned).
    #[error("{0}: the model's forward or backward passes on the discovery pairs are not finite (NaN or infinity in its weights or activations)")]
    NonFiniteScores(crate::scores::ScoresError),
}

impl Method {
    /// A method from its benchmark name; `ig_steps` is m for the EAP-IG methods, `seed` for random
    /// and for a bootstrap's resamples. Besides [`METHOD_NAMES`] it reads [`COMPOSITE_FORMS`]:
    /// `bootstrap:<method>` ([`crate::bootstrap::RESAMPLES`] resamples) and
    /// `ensemble-<mean|min|max>:<a>+<b>[+...]`, whose members are methods of [`METHOD_NAMES`].
    pub fn parse(name: &str, ig_steps: usize, seed: u64) -> Result<Self, MethodError> {
        let composite = |reason: String| MethodError::Composite { name: name.into(), reason };
        let member = |part: &str| -> Result<Self, MethodError> {
            if part.starts_with("bootstrap:") || part.starts_with("ensemble-") {
                return Err(composite(format!("`{part}` is itself built from other methods: members are plain methods ({})", METHOD_NAMES.join(", "))));
            }
            Self::parse(part, ig_steps, seed).map_err(|e| composite(e.to_string()))
        };
        if let Some(inner) = name.strip_prefix("bootstrap:") {
            let method = member(inner)?;
            if !method.is_pair_mean() {
                return Err(composite(format!("`{inner}` cannot be bootstrapped: {}", MethodError::NotResamplable)));
            }
            return Ok(Method::Bootstrap { method: Box::new(method), resamples: crate::bootstrap::RESAMPLES, seed });
        }
        if let Some(rest) = name.strip_prefix("ensemble-") {
            let (how, list) = rest.split_once(':').ok_or_else(|| composite("an ensemble is `ensemble-<mean|min|max>:<method>+<method>[+...]`".into()))?;
            let combine = Combine::ALL.into_iter().find(|c| c.name() == how).ok_or_else(|| composite(format!("`{how}` is not a combiner (mean, min, max)")))?;
            if list.is_empty() {
                return Err(composite("the ensemble lists no methods".into()));
            }
            let parts: Vec<&str> = list.split('+').collect();
            if let Some(dup) = parts.iter().enumerate().find_map(|(i, p)| parts[..i].contains(p).then_some(p)) {
                return Err(composite(format!("`{dup}` is listed twice")));
            }
            if parts.len() < 2 {
                return Err(composite(format!("an ensemble combines at least two methods, `{list}` is one")));
            }
            let members = parts.into_iter().map(member).collect::<Result<Vec<_>, _>>()?;
            return Ok(Method::Ensemble { combine, members });
        }
        Ok(match name {
            "random" => Method::Random { seed },
            "exact" => Method::Exact { edges: None },
            "eap" => Method::Gradient(GradientMethod::Eap(GradientRules::IDENTITY)),
            "eap-ig-inputs" => Method::Gradient(GradientMethod::IgInputs { steps: ig_steps }),
            "eap-ig-activations" => Method::Gradient(GradientMethod::IgActivations { steps: ig_steps }),
            "clean-corrupted" => Method::Gradient(GradientMethod::CleanCorrupted),
            "ifr" => Method::Ifr,
            "acdc" => Method::Acdc,
            "edge-pruning" => Method::EdgePruning { per_budget: false, seed },
            "edge-pruning-per-budget" => Method::EdgePruning { per_budget: true, seed },
            "ugs" => Method::Ugs { seed },
            "pgb-ct" => Method::PgbCt { objective: Objective::Impact, seed },
            "pgb-ct-preserve" => Method::PgbCt { objective: Objective::Preservation, seed },
            other => match GradientRules::named(other) {
                Some(rules) => Method::Gradient(GradientMethod::Eap(rules)),
                None => return Err(MethodError::Unknown(other.into())),
            },
        })
    }

    /// The metric the method optimises unless a config or flag says otherwise: KL from the full
    /// model for ACDC, Edge Pruning and UGS (their references' loss), MIB's logit difference for
    /// every other method (random and IFR read no metric at all).
    pub fn default_metric(&self) -> Metric {
        match self {
            Method::Acdc | Method::EdgePruning { .. } | Method::Ugs { .. } => Metric::Kl,
            _ => Metric::LogitDifference,
        }
    }

    /// Whether the method's scores are a mean over the discovery pairs (exact patching and the
    /// gradient family), so that a resample's scores are a weighted mean of per-pair scores and
    /// the method can be bootstrapped.
    pub fn is_pair_mean(&self) -> bool {
        matches!(self, Method::Exact { .. } | Method::Gradient(_))
    }

    /// The plain methods this one runs: itself, a bootstrap's method, or an ensemble's members.
    pub fn plain_methods(&self) -> Vec<&Method> {
        match self {
            Method::Bootstrap { method, .. } => vec![method.as_ref()],
            Method::Ensemble { members, .. } => members.iter().collect(),
            plain => vec![plain],
        }
    }
}

/// Everything a method is given.
pub struct Discovery<'a, B: AutodiffBackend> {
    /// The model (gradients are taken at activations, never at weights).
    pub model: &'a Transformer<B>,
    /// The model's MIB graph.
    pub graph: &'a Graph,
    /// Every discovery pair; the method batches them itself.
    pub pairs: &'a [PreparedPair],
    /// Fitted once on `pairs` ([`fit_ablation`]): what an ablated edge carries, here and in evaluation.
    pub ablation: &'a Ablation<B::InnerBackend>,
    /// The metric the method's loss is made of.
    pub metric: Metric,
    /// Pairs per batch.
    pub batch_size: usize,
    /// Exact patching: edges ablated side by side in one pass.
    pub edges_per_pass: usize,
    /// The budgets (fractions of all edges) at which a circuit-producing method yields circuits.
    pub fractions: &'a [f64],
    /// Which positions each pass computes: under counterfactual ablation, [`Positions::Suffix`]
    /// (the default) skips the prefix clean and counterfactual prompts share, with the same results.
    pub positions: Positions,
}

/// How far a method is through its own batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// Batches finished.
    pub done: usize,
    /// Batches in all.
    pub total: usize,
}

/// One binary circuit per budget, as a circuit-producing method returns them.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetCircuits {
    /// One keep-mask per fraction of [`Discovery::fractions`], in that order.
    pub circuits: Vec<EdgeMatrix<bool>>,
    /// Each edge's score where the method measures one (written as a score file beside them).
    pub scores: Option<EdgeMatrix<f32>>,
    /// Per circuit, the threshold that produced it when the method has one (ACDC's τ; None for
    /// a circuit no threshold made, such as the full graph at 100%).
    pub taus: Vec<Option<f64>>,
    /// What finding them cost.
    pub passes: PassCount,
    /// A mask-learning method's record of its run (None for the others).
    pub log: Option<TrainingLog>,
}

/// What a method produces: MIB accepts both importance scores and binary circuits at its budgets.
#[derive(Debug, Clone, PartialEq)]
pub enum MethodOutput {
    /// A signed score per edge (positive = the edge helps the task); circuits are selected from them.
    Scores(EdgeScores),
    /// Circuits chosen by the method itself, evaluated as given.
    Circuits(BudgetCircuits),
}

impl MethodOutput {
    /// Passes the method spent.
    pub fn passes(&self) -> PassCount {
        match self {
            MethodOutput::Scores(s) => s.passes,
            MethodOutput::Circuits(c) => c.passes,
        }
    }

    /// `scores` or `circuits`, as summary.csv's `output` column says.
    pub fn kind(&self) -> &'static str {
        match self {
            MethodOutput::Scores(_) => "scores",
            MethodOutput::Circuits(_) => "circuits",
        }
    }

    /// The per-edge scores, if the method gave any (a score output, or circuits with scores).
    pub fn scores(&self) -> Option<&EdgeMatrix<f32>> {
        match self {
            MethodOutput::Scores(s) => Some(&s.values),
            MethodOutput::Circuits(c) => c.scores.as_ref(),
        }
    }
}

/// Fits `kind` once on the clean prompts of `pairs` (means need them, and the learned optimal
/// constants, trained under `metric` through the autodiff `model` ([`crate::optimal`]);
/// counterfactual and zero need nothing): the ablation a method and the evaluation of its
/// circuits share.
pub fn fit_ablation<B: AutodiffBackend>(
    kind: AblationKind,
    model: &Transformer<B>,
    pairs: &[PreparedPair],
    batch_size: usize,
    metric: Metric,
) -> Result<Ablation<B::InnerBackend>, MethodError> {
    if kind.is_learned() {
        return crate::optimal::fit_optimal(kind, model, pairs, batch_size, metric);
    }
    let reference: Vec<Vec<u32>> = match kind {
        AblationKind::Mean | AblationKind::MeanPositional => pairs.iter().map(|p| p.clean.clone()).collect(),
        _ => Vec::new(),
    };
    let inner = model.valid();
    Ok(Ablation::fit(kind, &inner, &reference, batch_size, &inner.token_embedding.device())?)
}

/// Runs `method` on `discovery`, telling `progress` after every batch.
pub fn run_method<B: AutodiffBackend>(method: &Method, discovery: &Discovery<B>, progress: &mut dyn FnMut(Progress)) -> Result<MethodOutput, MethodError> {
    let scores = match method {
        Method::Random { seed } => {
            let scores = random_scores(discovery.graph, *seed);
            progress(Progress { done: 1, total: 1 });
            scores
        }
        Method::Exact { edges } => {
            let options = ExactOptions { batch_size: discovery.batch_size, edges_per_pass: discovery.edges_per_pass, positions: discovery.positions };
            let inner = discovery.model.valid();
            exact_scores(&inner, discovery.graph, discovery.pairs, edges.as_deref(), discovery.ablation, discovery.metric, options, progress)?
        }
        Method::Gradient(g) => gradient_scores(discovery, *g, progress)?,
        Method::Ifr => ifr_scores(&discovery.model.valid(), discovery.graph, discovery.pairs, discovery.batch_size, progress)?,
        Method::Bootstrap { method, resamples, seed } => bootstrap_scores(discovery, method, *resamples, *seed, progress)?,
        Method::Ensemble { combine, members } => ensemble_scores(discovery, members, *combine, progress)?,
        Method::Acdc => return Ok(MethodOutput::Circuits(acdc_budget_circuits(discovery, progress)?)),
        Method::EdgePruning { per_budget, seed } => return Ok(MethodOutput::Circuits(edge_pruning_circuits(discovery, *per_budget, *seed, progress)?)),
        Method::Ugs { seed } => ugs_scores(discovery, *seed, progress)?,
        Method::PgbCt { objective, seed } => return Ok(MethodOutput::Circuits(pgbct_circuits(discovery, *objective, *seed, progress)?.0)),
    };
    scores.validate().map_err(MethodError::NonFiniteScores)?;
    Ok(MethodOutput::Scores(scores))
}
