//! The model card written beside each trained checkpoint: what it was trained on, how, and how well
//! it does, so a shipped model documents its own reproduction.

use transformer::ModelConfig;

use crate::recipe::Style;
use crate::train::{Report, TrainOptions};

/// The card (README.md) of a trained model.
pub fn card(options: &TrainOptions, config: &ModelConfig, report: &Report) -> String {
    let r = &options.recipe;
    let v = &report.validation;
    let style = match r.style {
        Style::Gpt2 => "GPT-2 style (learned positions, LayerNorm, GELU MLP, biases, tied unembedding)",
        Style::Llama => "Llama style (RoPE, RMSNorm, SwiGLU MLP, grouped-query attention, tied unembedding)",
    };
    format!(
        "# circuitbench task model: {name}\n\n\
         A small transformer trained by circuitbench on its `{task}` task so that circuit localization has a\n\
         model that really does the task. Load it anywhere a model is accepted as `--model task:{name}`.\n\n\
         ## Model\n\n\
         - {style}\n\
         - {layers} layers, d_model {d}, {heads} query heads ({kv} key/value heads), d_mlp {mlp}, vocabulary {vocab}\n\
         - {params} parameters, stored as f32 safetensors\n\
         - word-level tokenizer (`tokenizer.json`, built with the `tokenizers` crate): every word, punctuation run\n  \
           and number 0–198 is one token; `<bos>` is prepended to every prompt (MIB's default)\n\n\
         ## Data\n\n\
         The task's committed train split plus {generated} further examples drawn from the same generator and\n\
         templates (stream seed = training seed XOR 0x7EA10000); every example with a prompt in the validation or\n\
         test split is left out. Each pair gives two supervised prompts: clean → correct answer and\n\
         counterfactual → its own answer. {prompts} prompts in all.\n\n\
         ## Training\n\n\
         - seed {seed}, {steps} AdamW steps of {batch} prompts, peak learning rate {lr}, weight decay {wd}\n\
         - loss: cross-entropy of the answer token at the last position{lm}{planted}\n\
         - mean loss {l0:.3} over the first tenth of the steps, {l1:.3} over the last; batch accuracy {a0:.3} → {a1:.3}\n\
         - wall time {secs:.0} s on the machine that trained it\n\n\
         ## Validation ({pairs} pairs, never trained on)\n\n\
         | top-1 accuracy | pairwise accuracy (logit correct > incorrect) | mean logit difference |\n\
         |---|---|---|\n\
         | {top1:.3} | {pw:.3} | {diff:.2} |\n\n\
         Reproduce with `cargo xtask train --task {task} --seed {seed}{flag}`.\n",
        name = options.out_dir.file_name().map_or_else(|| options.task.to_string(), |n| n.to_string_lossy().into_owned()),
        task = options.task,
        planted = match &r.planted {
            Some(p) => format!(
                ", with every head and MLP outside the planted circuit ({}) reading another prompt's output (the batch rolled by one row) at every step: only the planted components can carry the answer",
                p.names().join(", ")
            ),
            None => String::new(),
        },
        flag = if r.planted.is_some() { " --planted" } else { "" },
        layers = config.n_layers,
        d = config.d_model,
        heads = config.n_heads,
        kv = config.n_kv_heads,
        mlp = config.d_mlp,
        vocab = config.vocab_size,
        params = report.parameters,
        generated = r.generated_examples,
        prompts = report.prompts,
        seed = options.seed,
        steps = r.steps,
        batch = r.batch_size,
        lr = r.learning_rate,
        wd = r.weight_decay,
        lm = if r.lm_weight > 0.0 { format!(", plus {} × the mean next-token cross-entropy inside the prompts", r.lm_weight) } else { String::new() },
        l0 = report.first_loss,
        l1 = report.last_loss,
        a0 = report.first_accuracy,
        a1 = report.last_accuracy,
        secs = report.seconds,
        pairs = v.pairs,
        top1 = v.top1,
        pw = v.pairwise,
        diff = v.mean_logit_diff,
    )
}
