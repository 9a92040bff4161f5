//! Training a task model with burn's autodiff and AdamW on the very `Transformer` the harness
//! analyses, then writing it as a Hugging Face directory with its tokenizer and a card.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::{AutodiffModule, Module};
use burn::optim::{AdamWConfig, GradientsParams, Optimizer};
use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Int, Tensor, TensorData};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tasks::{Example, PrepareOptions, PreparedPair, Split, TaskKind};
use transformer::{Batch, Readout, Tokenizer, Transformer};

use crate::TrainError;
use crate::planted::{Planted, Resample};
use crate::recipe::Recipe;
use crate::vocab::{BOS, PAD, build_tokenizer};

/// What to train and where to write it.
#[derive(Debug, Clone)]
pub struct TrainOptions {
    /// The task whose data the model learns.
    pub task: TaskKind,
    /// The model's shape and training schedule.
    pub recipe: Recipe,
    /// Seeds the weights, the generated training examples and the batch draws: one seed, one model.
    pub seed: u64,
    /// The datasets directory (its train split is trained on; validation and test are held out).
    pub tasks_dir: PathBuf,
    /// The model directory to write.
    pub out_dir: PathBuf,
}

/// What a training run reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// Data ready: training prompts and vocabulary size.
    Prepared {
        /// Training prompts (each pair's clean and counterfactual prompt, with its own answer).
        prompts: usize,
        /// Size of the vocabulary built from them.
        vocab: usize,
    },
    /// One optimiser step done: its loss and the accuracy on its batch.
    Step {
        /// Steps done so far.
        step: usize,
        /// Steps in the run.
        steps: usize,
        /// The step's loss.
        loss: f64,
        /// Share of the batch whose answer token is the arg-max.
        accuracy: f64,
    },
}

/// How a model does on a split: MIB's logit difference m = logit(correct) − logit(incorrect).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    /// Pairs scored, after preparation's drops.
    pub pairs: usize,
    /// The correct answer is the arg-max over the whole vocabulary.
    pub top1: f64,
    /// logit(correct) > logit(incorrect).
    pub pairwise: f64,
    /// Mean of m over the pairs.
    pub mean_logit_diff: f64,
}

/// The outcome of a training run.
#[derive(Debug, Clone)]
pub struct Report {
    /// Training prompts (two per prepared pair).
    pub prompts: usize,
    /// Trainable parameters of the model.
    pub parameters: usize,
    /// Mean loss over the first tenth of the steps.
    pub first_loss: f64,
    /// Mean loss over the last tenth of the steps.
    pub last_loss: f64,
    /// Mean batch accuracy (the answer is the arg-max) over the first tenth of the steps.
    pub first_accuracy: f64,
    /// Mean batch accuracy over the last tenth of the steps.
    pub last_accuracy: f64,
    /// Scores on the validation split, after training.
    pub validation: Scores,
    /// Wall-clock time of the whole run, writing the files included.
    pub seconds: f64,
}

/// Salt of the generator seed for training draws, so they are not the committed splits' stream.
const TRAINING_STREAM: u64 = 0x7EA1_0000;

/// The training examples: the train split plus `generated` fresh distinct draws from the task's
/// generator, dropping every example with a prompt that occurs in validation or test.
fn training_examples(task: TaskKind, dir: &Path, seed: u64, generated: usize) -> Result<Vec<Example>, TrainError> {
    let mut held_out = HashSet::new();
    for split in [Split::Validation, Split::Test] {
        for e in tasks::load_split(dir, task, split)? {
            held_out.insert(e.clean);
            held_out.insert(e.counterfactual);
        }
    }
    let unseen = |e: &Example| !held_out.contains(&e.clean) && !held_out.contains(&e.counterfactual);
    let mut seen = HashSet::new();
    let mut examples: Vec<Example> = tasks::load_split(dir, task, Split::Train)?.into_iter().filter(|e| unseen(e) && seen.insert(e.clean.clone())).collect();
    let wanted = examples.len() + generated;
    // The generators' pools are far larger than any recipe asks for; the cap guards against a loop.
    for e in tasks::stream(task, seed ^ TRAINING_STREAM).take(generated.saturating_mul(50).max(1000)) {
        if examples.len() == wanted {
            break;
        }
        if unseen(&e) && seen.insert(e.clean.clone()) {
            examples.push(e);
        }
    }
    Ok(examples)
}

/// Prompts with the token they should be followed by: each pair's clean prompt with the correct
/// answer and its counterfactual prompt with the incorrect one (the counterfactual's own answer).
fn supervised(pairs: &[PreparedPair]) -> Vec<(Vec<u32>, u32)> {
    pairs.iter().flat_map(|p| [(p.clean.clone(), p.correct), (p.counterfactual.clone(), p.incorrect)]).collect()
}

/// Learning rate at `step`: linear warm-up over 5% of the steps, then cosine decay to 10% of peak.
fn learning_rate(recipe: &Recipe, step: usize) -> f64 {
    let warmup = (recipe.steps / 20).max(1);
    if step < warmup {
        return recipe.learning_rate * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (recipe.steps - warmup).max(1) as f64;
    recipe.learning_rate * (0.1 + 0.9 * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
}

/// Last-token logits [rows, vocab] of `sequences`.
fn last_logits<B: Backend>(model: &Transformer<B>, sequences: &[Vec<u32>]) -> Result<Tensor<B, 2>, TrainError> {
    let batch = Batch::new(sequences, &model.config, &model.token_embedding.device())?;
    Ok(model.forward(&batch, &Readout::ReadPosition).squeeze_dim(1))
}

/// The loss of one batch of (prompt, answer) and the accuracy of its answers: cross-entropy of the
/// answer at each prompt's last position, plus `lm_weight` × the mean next-token cross-entropy
/// inside the prompts. The latter is a denser signal that can teach what the answer needs: in MCQA,
/// predicting the next option letter trains heads that carry each letter to its option.
fn step_loss<B: AutodiffBackend>(
    model: &Transformer<B>,
    picks: &[&(Vec<u32>, u32)],
    lm_weight: f64,
    planted: Option<&Planted>,
) -> Result<(Tensor<B, 1>, f64), TrainError> {
    let device = model.token_embedding.device();
    let sequences: Vec<Vec<u32>> = picks.iter().map(|(s, _)| s.clone()).collect();
    if lm_weight == 0.0 {
        let targets: Vec<i64> = picks.iter().map(|&&(_, t)| t as i64).collect();
        let logits = match planted {
            // The answer from the planted components alone: the rest read another prompt.
            Some(planted) => {
                let batch = Batch::new(&sequences, &model.config, &device)?;
                model.forward_with(&batch, &Readout::ReadPosition, &mut Resample::new(planted, sequences.len(), &device)).squeeze_dim(1)
            }
            None => last_logits(model, &sequences)?,
        };
        let predicted: Vec<i64> = logits.clone().inner().argmax(1).into_data().convert::<i64>().to_vec().expect("ids");
        let hits = predicted.iter().zip(&targets).filter(|(p, t)| p == t).count();
        let targets = Tensor::<B, 2, Int>::from_data(TensorData::new(targets, [sequences.len(), 1]), &device);
        let loss = log_softmax(logits, 1).gather(1, targets).mean().neg();
        return Ok((loss, hits as f64 / sequences.len() as f64));
    }
    if planted.is_some() {
        return Err(TrainError::NoExamples("a planted circuit is trained on the answers alone (lm_weight 0)".into()));
    }
    let batch = Batch::new(&sequences, &model.config, &device)?;
    let (rows, len) = (sequences.len(), batch.ids.dims()[1]);
    // Per position: the token to predict there, and whether it is the answer or a prompt token.
    let (mut targets, mut answer, mut next) = (vec![0i64; rows * len], vec![0f32; rows * len], vec![0f32; rows * len]);
    for (r, (seq, target)) in picks.iter().enumerate() {
        let last = seq.len() - 1;
        for t in 0..last {
            targets[r * len + t] = seq[t + 1] as i64;
            next[r * len + t] = 1.0;
        }
        targets[r * len + last] = *target as i64;
        answer[r * len + last] = 1.0;
    }
    let n_next = next.iter().sum::<f32>().max(1.0) as f64;
    let logits = model.forward(&batch, &Readout::All);
    let predicted: Vec<i64> = logits.clone().inner().argmax(2).into_data().convert::<i64>().to_vec().expect("ids");
    let hits = picks.iter().enumerate().filter(|&(r, (seq, t))| predicted[r * len + seq.len() - 1] == *t as i64).count();
    let targets = Tensor::<B, 3, Int>::from_data(TensorData::new(targets, [rows, len, 1]), &device);
    let picked: Tensor<B, 2> = log_softmax(logits, 2).gather(2, targets).squeeze_dim(2);
    let weights = |w: Vec<f32>| Tensor::<B, 2>::from_data(TensorData::new(w, [rows, len]), &device);
    let answer_loss = (picked.clone() * weights(answer)).sum().neg() / rows as f64;
    let next_loss = (picked * weights(next)).sum().neg() / n_next;
    Ok((answer_loss + next_loss * lm_weight, hits as f64 / rows as f64))
}

/// Scores `model` on `examples` (prepared for it with MIB's defaults), in batches of 64 pairs.
pub fn evaluate<B: Backend>(model: &Transformer<B>, tokenizer: &Tokenizer, examples: &[Example]) -> Result<Scores, TrainError> {
    let prepared = tasks::prepare(examples, tokenizer, &model.config, &PrepareOptions::default())?;
    if prepared.pairs.is_empty() {
        return Err(TrainError::NoExamples("every evaluation example was dropped".into()));
    }
    let (mut top1, mut pairwise, mut diff) = (0usize, 0usize, 0.0f64);
    for chunk in prepared.pairs.chunks(64) {
        let clean: Vec<Vec<u32>> = chunk.iter().map(|p| p.clean.clone()).collect();
        let logits: Vec<f32> = last_logits(model, &clean)?.into_data().to_vec().expect("f32 logits");
        let vocab = model.config.vocab_size;
        for (row, pair) in logits.chunks(vocab).zip(chunk) {
            let (c, i) = (row[pair.correct as usize], row[pair.incorrect as usize]);
            top1 += usize::from(row.iter().all(|&x| x <= c));
            pairwise += usize::from(c > i);
            diff += (c - i) as f64;
        }
    }
    let n = prepared.pairs.len();
    Ok(Scores { pairs: n, top1: top1 as f64 / n as f64, pairwise: pairwise as f64 / n as f64, mean_logit_diff: diff / n as f64 })
}

/// Trains the model `options` describe and writes config.json, model.safetensors, tokenizer.json
/// and README.md (the card) to `options.out_dir`.
pub fn train<B: AutodiffBackend>(options: &TrainOptions, device: &B::Device, progress: &mut dyn FnMut(Progress)) -> Result<Report, TrainError> {
    let start = Instant::now();
    let recipe = &options.recipe;
    if recipe.steps == 0 || recipe.batch_size == 0 {
        return Err(TrainError::NoExamples("a recipe needs at least one step and one prompt per batch".into()));
    }
    let examples = training_examples(options.task, &options.tasks_dir, options.seed, recipe.generated_examples)?;
    std::fs::create_dir_all(&options.out_dir).map_err(|source| TrainError::Io { path: options.out_dir.clone(), source })?;
    let tokenizer_path = options.out_dir.join("tokenizer.json");
    build_tokenizer(&examples, &tokenizer_path)?;
    let tokenizer = Tokenizer::from_file(&tokenizer_path)?;
    let special = |t: &str| tokenizer.token_to_id(t).ok_or_else(|| TrainError::Tokenizer(format!("{t} is not in the vocabulary")));
    let config = recipe.model_config(tokenizer.vocab_size(), special(BOS)?, special(PAD)?);
    let prepared = tasks::prepare(&examples, &tokenizer, &config, &PrepareOptions::default())?;
    let data = supervised(&prepared.pairs);
    if data.is_empty() {
        return Err(TrainError::NoExamples(format!("every training example of {} was dropped", options.task)));
    }
    progress(Progress::Prepared { prompts: data.len(), vocab: config.vocab_size });

    let mut model = Transformer::<B>::init(config, options.seed, device)?;
    let parameters = model.num_params();
    let mut optimizer = AdamWConfig::new().with_weight_decay(recipe.weight_decay).init::<B, Transformer<B>>();
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut history = Vec::with_capacity(recipe.steps);
    for step in 0..recipe.steps {
        let picks: Vec<&(Vec<u32>, u32)> = (0..recipe.batch_size).map(|_| &data[rng.random_range(0..data.len())]).collect();
        let (loss, accuracy) = step_loss(&model, &picks, recipe.lm_weight, recipe.planted.as_ref())?;
        let loss_value = loss.clone().into_scalar().elem::<f64>();
        if !loss_value.is_finite() {
            return Err(TrainError::Diverged { step, loss: loss_value });
        }
        let grads = GradientsParams::from_grads(loss.backward(), &model);
        model = optimizer.step(learning_rate(recipe, step), model, grads);
        history.push((loss_value, accuracy));
        progress(Progress::Step { step: step + 1, steps: recipe.steps, loss: loss_value, accuracy });
    }

    let model = model.valid();
    transformer::checkpoint::save_hf_dir(&model, &options.out_dir)?;
    if let Some(planted) = &recipe.planted {
        // What the true circuit is, for the ground truth (`groundtruth::planted_components`).
        let text = serde_json::to_string_pretty(&serde_json::json!({ "components": planted.names() })).expect("names serialise");
        transformer::checkpoint::write_atomic(&options.out_dir.join("planted.json"), text.as_bytes())?;
    }
    let validation = evaluate(&model, &tokenizer, &tasks::load_split(&options.tasks_dir, options.task, Split::Validation)?)?;
    let tenth = (history.len() / 10).max(1);
    let mean = |part: &[(f64, f64)], f: fn(&(f64, f64)) -> f64| part.iter().map(f).sum::<f64>() / part.len() as f64;
    let (head, tail) = (&history[..tenth], &history[history.len() - tenth..]);
    let report = Report {
        prompts: data.len(),
        parameters,
        first_loss: mean(head, |h| h.0),
        last_loss: mean(tail, |h| h.0),
        first_accuracy: mean(head, |h| h.1),
        last_accuracy: mean(tail, |h| h.1),
        validation,
        seconds: start.elapsed().as_secs_f64(),
    };
    let card = crate::card::card(options, &model.config, &report);
    transformer::checkpoint::write_atomic(&options.out_dir.join("README.md"), card.as_bytes())?;
    Ok(report)
}
