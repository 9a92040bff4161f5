//! The committed task models: each loads by its `task:` name and does its task on the validation
//! split it never saw, as its card claims; an unknown task model is a clear error.

use std::path::Path;

use tasks::{Split, TaskKind};
use transformer::{CpuBackend, LoadError};

#[test]
fn every_shipped_model_does_its_task() {
    let tasks_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tasks");
    for task in TaskKind::ALL {
        let loaded = transformer::load_model::<CpuBackend>(&format!("task:{task}"), &Default::default()).unwrap();
        let validation = tasks::load_split(&tasks_dir, task, Split::Validation).unwrap();
        let scores = taskmodels::evaluate(&loaded.model, &loaded.tokenizer, &validation).unwrap();
        assert_eq!(scores.pairs, validation.len(), "{task}: no validation pair may be dropped");
        assert!(scores.pairwise >= 0.95, "{task}: pairwise accuracy {}", scores.pairwise);
        assert!(scores.mean_logit_diff > 2.0, "{task}: mean logit difference {}", scores.mean_logit_diff);
        let size = std::fs::metadata(transformer::load::task_models_dir().join(task.name()).join("model.safetensors")).unwrap().len();
        assert!(size <= 5 << 20, "{task}: {size} bytes");
    }
}

#[test]
fn an_unknown_task_model_is_a_clear_error() {
    let Err(err) = transformer::load_model::<CpuBackend>("task:poetry", &Default::default()) else { panic!("loaded a model that does not exist") };
    assert!(matches!(err, LoadError::MissingTaskModel { .. }));
    assert!(err.to_string().contains("cargo xtask train --task poetry"), "{err}");
}
