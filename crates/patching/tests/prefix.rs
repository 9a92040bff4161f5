//! Suffix-only passes are for counterfactual ablation alone: every other ablation changes the
//! prefix too, so its batches stay whole and a batch skipping its prefix is refused.

use burn::tensor::Tensor;
use patching::{Ablation, AblationError, AblationKind, PairBatches, Positions};
use transformer::{CpuBackend, LocalModel};

type B = CpuBackend;

#[test]
fn only_counterfactual_ablation_skips_the_shared_prefix() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures/gpt2-tiny");
    let model = LocalModel::Dir(dir).load::<B>(&Default::default()).unwrap().model;
    let clean = vec![vec![5, 17, 42, 8, 3], vec![9, 9, 4, 60, 2]];
    let counterfactual = vec![vec![5, 17, 30, 8, 3], vec![9, 9, 4, 61, 2]];
    let n_fwd = 1 + model.config.n_layers * (model.config.n_heads + 1);
    let mean = Ablation::Mean(Tensor::<B, 2>::zeros([n_fwd, model.config.d_model], &Default::default()));
    let reads = vec![4, 4];

    let suffix = PairBatches::new(&model, &clean, &counterfactual, &reads, &Ablation::Counterfactual, Positions::Suffix).unwrap();
    assert_eq!(suffix.starts(), Some(&[2, 3][..]), "each pair from its first difference");
    let early = PairBatches::new(&model, &clean, &counterfactual, &[1, 4], &Ablation::Counterfactual, Positions::Suffix).unwrap();
    assert_eq!(early.starts(), Some(&[1, 3][..]), "a pair read before its first difference starts at its read position");
    let padded = PairBatches::new(&model, &clean, &counterfactual, &reads, &Ablation::Counterfactual, Positions::BatchSuffix).unwrap();
    assert_eq!(padded.starts(), Some(&[2, 2][..]), "every pair from the batch's earliest");
    for ablation in [&mean, &Ablation::Zero] {
        assert_eq!(PairBatches::new(&model, &clean, &counterfactual, &reads, ablation, Positions::Suffix).unwrap().starts(), None, "{:?}", ablation.kind());
        let err = ablation.ablated_run(&model, &suffix.counterfactual).unwrap_err();
        assert!(matches!(err, AblationError::PrefixUnderAblation { kind } if kind == ablation.kind()), "{err:?}");
        assert!(err.to_string().contains("cannot skip a prefix"), "{err}");
    }
    assert_eq!(mean.kind(), AblationKind::Mean);
    let full = PairBatches::new(&model, &clean, &counterfactual, &reads, &Ablation::Counterfactual, Positions::Full).unwrap();
    assert_eq!(full.starts(), None);
}
