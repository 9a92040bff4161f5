//! The patching engine: edge masks over the MIB graph applied inside the model's forward pass.
//!
//! A destination v reads `resid_v + Σ_u (1 − mask[u,v]) · (ablated_u − actual_u)` over its upstream
//! sources u (mib-spec §2). The mask is a dense tensor of the (possibly autodiff) backend, one per
//! replica of the batch, so the same engine serves circuit evaluation (0/1 masks, one per budget),
//! exact patching (one ablated edge per replica), gradient attribution (the mask's gradient at 1 is
//! every edge's score at once; [`MaskGradientHooks`] computes it without forming the zero patch
//! term) and, later, learned soft masks.
#![warn(missing_docs)]

pub mod ablation;
pub mod activations;
pub mod incremental;
pub mod mask_gradient;
pub mod metric;
pub mod patch;
pub mod prefix;
pub mod resume;

pub use ablation::{Ablation, AblationError, AblationKind};
pub use activations::{NodeRecorder, RecordedRun, at_positions, record_nodes, record_run};
pub use incremental::{Edit, IncrementalRun, Trial};
pub use mask_gradient::{DestinationGradients, MaskGradientHooks};
pub use metric::{Metric, MetricReference, NonFiniteMetric, UnknownMetric};
pub use patch::{EdgeMasks, PatchHooks, patched_logits, patched_logits_from};
pub use prefix::{PairBatches, Positions, first_differences, shared_prefix};
pub use resume::{ResumableRun, ResumeState, sources_before};
