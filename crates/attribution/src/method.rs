//! Every method by its benchmark name, run through one entry point: a method is handed all its
//! discovery pairs, a batch size, the metric it optimises and the ablation fitted once on those
//! pairs (the same object the evaluation uses), draws its own batches, reports its progress, and
//! returns either a score per edge or one circuit per budget.

use burn::module::AutodiffModule;
use burn::tensor::backend::{AutodiffBackend, Backend};
use graph::{EdgeMatrix, Graph};
use patching::{Ablation, AblationError, AblationKind, Metric};
use tasks::PreparedPair;
use transformer::{GradientRules, Transformer};

use crate::exact::{ExactError, ExactOptions, exact_scores};
use crate::gradient::{GradientError, GradientMethod, gradient_scores};
use crate::ifr::ifr_scores;
use crate::random::random_scores;
use crate::scores::{EdgeScores, PassCount};

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
}

/// The names `Method::parse` accepts.
pub const METHOD_NAMES: [&str; 13] = [
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
];

/// Why a method cannot run.
#[derive(Debug, thiserror::Error)]
pub enum MethodError {
    /// A name outside [`METHOD_NAMES`].
    #[error("unknown method `{0}` (known: {names})", names = METHOD_NAMES.join(", "))]
    Unknown(String),
    /// Exact patching failed.
    #[error(transparent)]
    Exact(#[from] ExactError),
    /// A gradient method failed.
    #[error(transparent)]
    Gradient(#[from] GradientError),
    /// The ablation could not be fitted or applied.
    #[error(transparent)]
    Ablation(#[from] AblationError),
    /// A batch of prompts does not fit the model.
    #[error(transparent)]
    Batch(#[from] transformer::BatchError),
    /// The method's scores hold NaN or infinity (a check every method's scores pass before they are returned).
    #[error("{0}: the model's forward or backward passes on the discovery pairs are not finite (NaN or infinity in its weights or activations)")]
    NonFiniteScores(crate::scores::ScoresError),
}

impl Method {
    /// A method from its benchmark name; `ig_steps` is m for the EAP-IG methods, `seed` for random.
    pub fn parse(name: &str, ig_steps: usize, seed: u64) -> Result<Self, MethodError> {
        Ok(match name {
            "random" => Method::Random { seed },
            "exact" => Method::Exact { edges: None },
            "eap" => Method::Gradient(GradientMethod::Eap(GradientRules::IDENTITY)),
            "eap-ig-inputs" => Method::Gradient(GradientMethod::IgInputs { steps: ig_steps }),
            "eap-ig-activations" => Method::Gradient(GradientMethod::IgActivations { steps: ig_steps }),
            "clean-corrupted" => Method::Gradient(GradientMethod::CleanCorrupted),
            "ifr" => Method::Ifr,
            other => match GradientRules::named(other) {
                Some(rules) => Method::Gradient(GradientMethod::Eap(rules)),
                None => return Err(MethodError::Unknown(other.into())),
            },
        })
    }

    /// The metric the method optimises unless a config or flag says otherwise: MIB's logit
    /// difference for every method here (random and IFR read no metric at all).
    pub fn default_metric(&self) -> Metric {
        Metric::LogitDifference
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
    /// What finding them cost.
    pub passes: PassCount,
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

/// Fits `kind` once on the clean prompts of `pairs` (means need them; counterfactual and zero do
/// not): the ablation a method and the evaluation of its circuits share.
pub fn fit_ablation<B: Backend>(kind: AblationKind, model: &Transformer<B>, pairs: &[PreparedPair], batch_size: usize) -> Result<Ablation<B>, AblationError> {
    let reference: Vec<Vec<u32>> = match kind {
        AblationKind::Mean | AblationKind::MeanPositional => pairs.iter().map(|p| p.clean.clone()).collect(),
        AblationKind::Counterfactual | AblationKind::Zero => Vec::new(),
    };
    Ablation::fit(kind, model, &reference, batch_size, &model.token_embedding.device())
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
            let options = ExactOptions { batch_size: discovery.batch_size, edges_per_pass: discovery.edges_per_pass };
            let inner = discovery.model.valid();
            exact_scores(&inner, discovery.graph, discovery.pairs, edges.as_deref(), discovery.ablation, discovery.metric, options, progress)?
        }
        Method::Gradient(g) => gradient_scores(discovery, *g, progress)?,
        Method::Ifr => ifr_scores(&discovery.model.valid(), discovery.graph, discovery.pairs, discovery.batch_size, progress)?,
    };
    scores.validate().map_err(MethodError::NonFiniteScores)?;
    Ok(MethodOutput::Scores(scores))
}
