//! Every attribution method by its benchmark name, run through one entry point.

use burn::module::AutodiffModule;
use burn::tensor::backend::AutodiffBackend;
use graph::Graph;
use patching::{Ablation, AblationError, AblationKind};
use tasks::PreparedPair;
use transformer::{GradientRules, Transformer};

use crate::exact::{ExactError, ExactOptions, exact_scores};
use crate::gradient::{GradientError, GradientMethod, GradientOptions, gradient_scores};
use crate::ifr::ifr_scores;
use crate::random::random_scores;
use crate::scores::EdgeScores;

/// An attribution method with its parameters.
#[derive(Debug, Clone, PartialEq)]
pub enum Method {
    Random {
        seed: u64,
    },
    /// Exact patching of the listed edges, or of every edge (tiny models) when None.
    Exact {
        edges: Option<Vec<(usize, usize)>>,
    },
    Gradient(GradientMethod),
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
    #[error("unknown method `{0}` (known: {names})", names = METHOD_NAMES.join(", "))]
    Unknown(String),
    #[error(transparent)]
    Exact(#[from] ExactError),
    #[error(transparent)]
    Gradient(#[from] GradientError),
    #[error(transparent)]
    Ablation(#[from] AblationError),
    #[error(transparent)]
    Batch(#[from] transformer::BatchError),
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
}

/// Batch sizes shared by all methods.
#[derive(Debug, Clone, Copy)]
pub struct RunOptions {
    pub batch_size: usize,
    /// Exact patching: edges side by side in one pass.
    pub edges_per_pass: usize,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self { batch_size: 8, edges_per_pass: 16 }
    }
}

/// Scores every edge of `graph` with `method` on `pairs`. Ablation-based methods use `ablation`,
/// fitted (for means) on the clean prompts of `pairs`.
pub fn run_method<B: AutodiffBackend>(
    model: &Transformer<B>,
    graph: &Graph,
    pairs: &[PreparedPair],
    method: &Method,
    ablation: AblationKind,
    options: RunOptions,
) -> Result<EdgeScores, MethodError> {
    let inner = model.valid();
    let fit = || {
        let reference: Vec<Vec<u32>> = pairs.iter().map(|p| p.clean.clone()).collect();
        Ablation::fit(ablation, &inner, &reference, options.batch_size, &inner.token_embedding.device())
    };
    Ok(match method {
        Method::Random { seed } => random_scores(graph, *seed),
        Method::Exact { edges } => {
            let opts = ExactOptions { batch_size: options.batch_size, edges_per_pass: options.edges_per_pass };
            exact_scores(&inner, graph, pairs, edges.as_deref(), &fit()?, opts)?
        }
        Method::Gradient(g) => gradient_scores(model, graph, pairs, *g, &fit()?, GradientOptions { batch_size: options.batch_size })?,
        Method::Ifr => ifr_scores(&inner, graph, pairs, options.batch_size)?,
    })
}
