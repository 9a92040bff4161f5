"""Peer (a) of `cargo xtask perf compare`: MIB's own stack, TransformerLens + EAP-IG-style loops.

MIB's circuit track runs the EAP-IG library (github.com/hannamw/EAP-IG) on a TransformerLens
`HookedTransformer` configured with the EAP-IG flags:

  use_split_qkv_input=True            every head's q, k and v read their own copy of the residual
  use_attn_result=True                every head's output (z @ W_O slice) is a hook point
  ungroup_grouped_query_attention=True  every query head has its own k and v input (GQA ungrouped)
  use_hook_mlp_in=True                the MLP input is a hook point

This script reproduces that stack on the SmolLM2 GGUF weights (transformers' GGUF reader -> TL's own
Llama weight conversion, no folding or centering, so the graph is MIB's) and re-implements the
library's loops the way the library runs them, so its timings stand for "what researchers run":

* an activation-difference buffer [batch, pos, n_fwd, d_model] filled by forward hooks on the node
  outputs (hook_embed, attn.hook_result, hook_mlp_out): the counterfactual run adds, the clean run
  subtracts;
* backward hooks on the destination inputs (hook_q_input / hook_k_input / hook_v_input, hook_mlp_in,
  the last block's hook_resid_post) that contract the buffer with the gradient (einsum) into the
  [n_fwd, n_bwd] score matrix;
* EAP: counterfactual pass, clean pass (the library takes clean logits for its metrics), clean
  forward/backward; EAP-IG-inputs: the token embedding (hook_embed) replaced by the interpolation
  e_corr + (k/m)(e_clean - e_corr), k = 0..m-1;
* GIM (gim-spec.md, all four rules) through TL hook points, in the spec's forward-only forms:
  norm hook_scale detached (every RMSNorm call, including each per-head q/k/v copy and the final
  norm), hook_pattern replaced by sg(p) + (T softmax(a/T) - sg(T softmax(a/T))) with a from
  hook_attn_scores (T = 2), hook_q/hook_k scaled by 1/4 and hook_v by 1/2 in backward, the gated
  MLP's hook_pre (gate) and hook_pre_linear (up) by 1/2;
* evaluation in the library's evaluate_graph style: the counterfactual pass fills the buffer, the
  patched clean pass subtracts each node's actual output as it is produced and input hooks add the
  buffer's rows of the ablated edges (so patching propagates).

Deviations from the library, all deliberate and matching the protocol in README.md:
* Scaling: loss = -sum of m over the batch, scores / N (the protocol's -(1/N) sum), where the library
  backpropagates the batch *mean* and divides by N again; rankings are the same.
* Model weights are frozen (requires_grad False) and the embedding output is made the autograd
  leaf, so no weight gradients are computed; the library leaves weights trainable (more work).
* Evaluation does not prune circuits (graph.prune()): every listed circuit is evaluated as given;
  the counterfactual pass is run once for all circuits, and m_empty is the counterfactual run's
  logit difference (the all-ablated circuit's logits equal it exactly in exact arithmetic).

Usage: python transformerlens_peer.py JOB.json OUT.json  (protocol: README.md in this folder)
"""

import sys
from functools import partial

import torch
from einops import einsum

import peer_common as pc

GIM_T = 2.0
GIM_QK, GIM_V, GIM_GATE = 0.25, 0.5, 0.5


# ----------------------------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------------------------
def build_hooked_transformer(hf_model):
    """A HookedTransformer with the EAP-IG flags holding the HF model's weights (no processing)."""
    from transformer_lens import HookedTransformer
    from transformer_lens.config.hooked_transformer_config import HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.llama import convert_llama_weights

    hc = hf_model.config
    rope = getattr(hc, "rope_parameters", None) or {}
    rope_theta = rope.get("rope_theta", getattr(hc, "rope_theta", 10000.0))
    if rope.get("rope_type", "default") != "default":
        raise SystemExit(f"unsupported RoPE scaling {rope}")
    d_head = hc.hidden_size // hc.num_attention_heads
    # The fields TL's own LlamaForCausalLM config conversion sets, plus the EAP-IG flags.
    cfg = HookedTransformerConfig(
        d_model=hc.hidden_size,
        d_head=d_head,
        n_heads=hc.num_attention_heads,
        d_mlp=hc.intermediate_size,
        n_layers=hc.num_hidden_layers,
        n_ctx=min(hc.max_position_embeddings, 4096),
        eps=hc.rms_norm_eps,
        d_vocab=hc.vocab_size,
        act_fn=hc.hidden_act,
        n_key_value_heads=(
            hc.num_key_value_heads if hc.num_key_value_heads != hc.num_attention_heads else None
        ),
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_adjacent_pairs=False,
        rotary_dim=d_head,
        rotary_base=rope_theta,
        final_rms=True,
        gated_mlp=True,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
        dtype=torch.float32,
        device="cpu",
        use_split_qkv_input=True,
        use_attn_result=True,
        ungroup_grouped_query_attention=True,
        use_hook_mlp_in=True,
    )
    model = HookedTransformer(cfg, tokenizer=None, move_to_device=True)
    state_dict = convert_llama_weights(hf_model, cfg)
    model.load_and_process_state_dict(
        state_dict,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
        refactor_factored_attn_matrices=False,
    )
    model.eval()
    model.requires_grad_(False)
    return model


def last_logit_diff(logits, correct, incorrect):
    return pc.logit_diff(logits[:, -1], correct, incorrect)


# ----------------------------------------------------------------------------------------------
# The activation-difference buffer and its hooks (EAP-IG's make_hooks_and_matrices)
# ----------------------------------------------------------------------------------------------
def make_hooks_and_matrices(model, g: pc.GraphLayout, batch: int, n_pos: int, scores):
    """(fwd hooks that add (run on counterfactual), fwd hooks that subtract (run on clean),
    bwd hooks that update `scores`), and the [batch, pos, n_fwd, d_model] difference buffer."""
    diff = torch.zeros(batch, n_pos, g.n_fwd, model.cfg.d_model, dtype=torch.float32)

    def activation_hook(index, acts, hook, add=True):
        if add:
            diff[:, :, index] += acts.detach()
        else:
            diff[:, :, index] -= acts.detach()

    def gradient_hook(prev, bwd_index, grads, hook):
        grads = grads.detach()
        if grads.ndim == 3:
            grads = grads.unsqueeze(2)
        s = einsum(diff[:, :, :prev], grads, "batch pos forward hidden, batch pos backward hidden -> forward backward")
        scores[:prev, bwd_index] += s.squeeze(1) if isinstance(bwd_index, int) else s

    fwd_add, fwd_sub, bwd = [], [], []

    def out_hook(name, index):
        fwd_add.append((name, partial(activation_hook, index, add=True)))
        fwd_sub.append((name, partial(activation_hook, index, add=False)))

    out_hook("hook_embed", 0)
    H = g.H
    for layer in range(g.L):
        a = g.fwd_head(layer)
        out_hook(f"blocks.{layer}.attn.hook_result", slice(a, a + H))
        for slot, letter in enumerate("qkv"):
            b = g.bwd_qkv(layer, slot)
            bwd.append((f"blocks.{layer}.hook_{letter}_input", partial(gradient_hook, g.prev_head(layer), slice(b, b + H))))
        out_hook(f"blocks.{layer}.hook_mlp_out", g.fwd_mlp(layer))
        bwd.append((f"blocks.{layer}.hook_mlp_in", partial(gradient_hook, g.prev_mlp(layer), g.bwd_mlp(layer))))
    bwd.append((f"blocks.{g.L - 1}.hook_resid_post", partial(gradient_hook, g.prev_logits, g.bwd_logits)))
    return (fwd_add, fwd_sub, bwd), diff


def grad_leaf_hook(acts, hook):
    """Make the embedding output the autograd leaf (weights are frozen)."""
    return acts.detach().requires_grad_(True)


# ----------------------------------------------------------------------------------------------
# GIM's backward rules as TL hooks (forward-only forms, gim-spec.md)
# ----------------------------------------------------------------------------------------------
def scale_grad(c, x, hook):
    return x.detach() + c * (x - x.detach())


def freeze(x, hook):
    return x.detach()


def gim_hooks(model):
    saved_scores = {}

    def keep_scores(a, hook):
        saved_scores[hook.name] = a
        return a

    def tsg_pattern(p, hook):
        a = saved_scores.pop(hook.name.replace("hook_pattern", "hook_attn_scores"))
        soft = GIM_T * torch.softmax(a / GIM_T, dim=-1)
        return p.detach() + (soft - soft.detach())

    hooks = [("ln_final.hook_scale", freeze)]
    for layer in range(model.cfg.n_layers):
        blk = f"blocks.{layer}"
        hooks += [
            (f"{blk}.ln1.hook_scale", freeze),
            (f"{blk}.ln2.hook_scale", freeze),
            (f"{blk}.attn.hook_attn_scores", keep_scores),
            (f"{blk}.attn.hook_pattern", tsg_pattern),
            (f"{blk}.attn.hook_q", partial(scale_grad, GIM_QK)),
            (f"{blk}.attn.hook_k", partial(scale_grad, GIM_QK)),
            (f"{blk}.attn.hook_v", partial(scale_grad, GIM_V)),
            (f"{blk}.mlp.hook_pre", partial(scale_grad, GIM_GATE)),
            (f"{blk}.mlp.hook_pre_linear", partial(scale_grad, GIM_GATE)),
        ]
    return hooks


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------
def scores_eap(model, g, data, gim=False):
    clean, cf, correct, incorrect = data
    n, n_pos = clean.shape
    scores = torch.zeros(g.n_fwd, g.n_bwd, dtype=torch.float32)
    (fwd_add, fwd_sub, bwd), diff = make_hooks_and_matrices(model, g, n, n_pos, scores)
    with torch.inference_mode():
        with model.hooks(fwd_hooks=fwd_add):
            model(cf)
        model(clean)  # the library's clean logits (for metrics that need them)
    extra = gim_hooks(model) if gim else []
    with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", grad_leaf_hook)] + fwd_sub + extra, bwd_hooks=bwd):
        logits = model(clean)
        loss = -last_logit_diff(logits, correct, incorrect).sum()
        loss.backward()
    return scores / n


def scores_eap_ig_inputs(model, g, data, steps):
    clean, cf, correct, incorrect = data
    n, n_pos = clean.shape
    scores = torch.zeros(g.n_fwd, g.n_bwd, dtype=torch.float32)
    (fwd_add, fwd_sub, bwd), diff = make_hooks_and_matrices(model, g, n, n_pos, scores)
    with torch.inference_mode():
        with model.hooks(fwd_hooks=fwd_add):
            model(cf)
        e_corr = diff[:, :, 0].clone()
        with model.hooks(fwd_hooks=fwd_sub):
            model(clean)
        e_clean = e_corr - diff[:, :, 0]

    def interpolation_hook(k, acts, hook):
        new = e_corr + (k / steps) * (e_clean - e_corr)
        return new.clone().requires_grad_(True)

    for k in range(steps):
        with torch.enable_grad(), model.hooks(fwd_hooks=[("hook_embed", partial(interpolation_hook, k))], bwd_hooks=bwd):
            logits = model(clean)
            loss = -last_logit_diff(logits, correct, incorrect).sum()
            loss.backward()
    return scores / n / steps


def evaluate(model, g, data, circuits):
    """m per pair on the clean model, with every edge ablated, and for each circuit."""
    clean, cf, correct, incorrect = data
    n, n_pos = clean.shape
    (fwd_add, fwd_sub, _), diff = make_hooks_and_matrices(model, g, n, n_pos, None)
    H = g.H

    def input_construction_hook(ablate, acts, hook):
        # ablate: [prev] or [prev, H] rows of the ablated-edge mask for this input
        prev = ablate.shape[0]
        if ablate.ndim == 1:
            update = einsum(diff[:, :, :prev], ablate, "batch pos previous hidden, previous -> batch pos hidden")
        else:
            update = einsum(diff[:, :, :prev], ablate, "batch pos previous hidden, previous head -> batch pos head hidden")
        return acts + update

    def construction_hooks(ablate):
        hooks = []
        for layer in range(g.L):
            prev = g.prev_head(layer)
            for slot, letter in enumerate("qkv"):
                b = g.bwd_qkv(layer, slot)
                cols = ablate[:prev, b : b + H]
                if cols.any():  # the library skips inputs whose parent edges are all in the circuit
                    hooks.append((f"blocks.{layer}.hook_{letter}_input", partial(input_construction_hook, cols)))
            col = ablate[: g.prev_mlp(layer), g.bwd_mlp(layer)]
            if col.any():
                hooks.append((f"blocks.{layer}.hook_mlp_in", partial(input_construction_hook, col)))
        col = ablate[:, g.bwd_logits]
        if col.any():
            hooks.append((f"blocks.{g.L - 1}.hook_resid_post", partial(input_construction_hook, col)))
        return hooks

    with torch.inference_mode():
        with model.hooks(fwd_hooks=fwd_add):
            cf_logits = model(cf)
        diff_cf = diff.clone()
        m_empty = last_logit_diff(cf_logits, correct, incorrect)
        m_clean = last_logit_diff(model(clean), correct, incorrect)
        ms = []
        for edges in circuits:
            ablate = g.ablation_mask(edges)
            diff.copy_(diff_cf)
            with model.hooks(fwd_hooks=fwd_sub + construction_hooks(ablate)):
                logits = model(clean)
            ms.append(last_logit_diff(logits, correct, incorrect).tolist())
    return {"m_clean": m_clean.tolist(), "m_empty": m_empty.tolist(), "m": ms}


# ----------------------------------------------------------------------------------------------
def main(job_path, out_path):
    threads, job, g, data = pc.open_job(job_path)

    with pc.Stopwatch() as load:
        hf_model = pc.load_hf_from_gguf(job["gguf"])
        model = build_hooked_transformer(hf_model)
        del hf_model
    if (model.cfg.n_layers, model.cfg.n_heads) != (g.L, g.H):
        raise SystemExit(f"job says {g.L} layers x {g.H} heads, model has {model.cfg.n_layers} x {model.cfg.n_heads}")
    with torch.inference_mode():
        model(data[0])  # warm-up

    real = g.real_edges()
    system = "TransformerLens HookedTransformer + EAP-IG-style loops (" + pc.versions("transformer-lens", "transformers") + ")"
    steps = job.get("ig_steps", 5)
    handlers = {
        "eap": lambda: {"scores": scores_eap(model, g, data)},
        "eap-ig-inputs": lambda: {"scores": scores_eap_ig_inputs(model, g, data, steps)},
        "gim": lambda: {"scores": scores_eap(model, g, data, gim=True)},
        "evaluation": lambda: evaluate(model, g, data, job.get("circuits", [])),
    }
    pc.run_stages("transformerlens", system, threads, load.seconds, job, handlers, real, out_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: transformerlens_peer.py JOB.json OUT.json")
    main(sys.argv[1], sys.argv[2])
