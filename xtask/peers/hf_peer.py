"""Peer (b) of `cargo xtask perf compare`: a lean script on plain Hugging Face transformers.

It computes the same numbers as the TransformerLens peer (MIB's graph, mib-spec.md §1-4: EAP,
EAP-IG-inputs, GIM, and the evaluation of circuits by counterfactual edge patching) but is written
for speed, the way a careful researcher would do it by hand on the stock `LlamaForCausalLM`:

* Each decoder layer's `forward` is replaced (per instance, a small monkeypatch) by one that does the
  same computation with explicit per-head tensors, so that the MIB graph can be read off it:
  the residual stream is shared (no per-head copies of it in the forward), q/k/v are projected once,
  and k/v are expanded to the query heads *before* RoPE (`repeat_interleave`, as the GQA repeat),
  so that each query head has its own k and v tensors whose gradients are that head's.
* The gradient at a head's q (k, v) input slot -- MIB's own copy of the residual before the norm --
  is recovered from the gradient at that head's q (k, v) projection output (RoPE is undone by
  autograd, it sits downstream), mapped back through the head's W_Q (W_K, W_V) slice and the
  RMSNorm Jacobian in closed form: g_x = w*g*s - x * s^3 * sum(w*g*x)/d with s = 1/rms (GIM's
  frozen norm keeps only the first term). The MLP and logits inputs get their gradient from a
  clone of the residual fed to the norm.
* Node outputs: the input node is the token embedding, a head's output is its z times its W_O
  slice, an MLP's output is the MLP output; their counterfactual - clean differences are kept in
  one [n_fwd, batch, pos, d_model] buffer, and each destination's scores are one matrix product
  of that buffer with the destination's gradients, done inside the backward pass.
* EAP and GIM take the clean activations from the gradient pass itself (2 passes, not 3);
  EAP-IG-inputs needs a plain clean pass because its gradient passes run on interpolated inputs.
* GIM (gim-spec.md, all four rules) in the forward-only forms: rms detached in every norm (and in
  the closed-form q/k/v Jacobian), the attention pattern sg(p) + (T softmax(a/T) - sg(...)) with
  T = 2, q and k scaled by 1/4 and v by 1/2 in backward, gate and up projections by 1/2.
* Evaluation patches at the destination inputs: the buffer starts as the counterfactual outputs and
  each node's actual output is subtracted as the patched run produces it, so the update of an input
  is (ablated-edge mask)^T @ buffer. Because the norm is nonlinear, a layer with any ablated
  q/k/v edge runs its heads on per-head, per-slot inputs (three [batch, pos, head, d_model]
  tensors); layers without one use the shared path. An input's patch is gathered from the
  ablated edges' rows, or, when most of its edges are ablated, as (sum of all upstream rows) minus
  the kept ones, so its cost follows the smaller of the two sets.

Scores: loss = -sum of m over the batch, scores / N (and / steps for IG), i.e. -(1/N) sum of
delta_u . dm/d input_v -- the protocol in README.md. Weights are frozen; the embedding is the leaf.

Usage: python hf_peer.py JOB.json OUT.json  (protocol: README.md in this folder)
"""

import sys
import types

import torch
import torch.nn.functional as F

import peer_common as pc

GIM_T = 2.0
GIM_QK, GIM_V, GIM_GATE = 0.25, 0.5, 0.5


def scale_grad(x, c):
    """Forward value x, gradient times c (gim-spec.md's forward-only form)."""
    return x.detach() + c * (x - x.detach())


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Peer:
    """The patched model and the state of the current pass (what to record, watch or patch)."""

    def __init__(self, model, g: pc.GraphLayout):
        self.model, self.g = model, g
        cfg = model.config
        self.H, self.KV = cfg.num_attention_heads, cfg.num_key_value_heads
        self.E = cfg.hidden_size // cfg.num_attention_heads
        self.d = cfg.hidden_size
        self.eps = cfg.rms_norm_eps
        layers = model.model.layers
        if (len(layers), self.H) != (g.L, g.H):
            raise SystemExit(f"job says {g.L} layers x {g.H} heads, model has {len(layers)} x {self.H}")
        rep = self.H // self.KV
        self.w = []  # per layer: per-query-head projection slices [H, E, d] (q, k, v) and W_O [H, d, E]
        for i, layer in enumerate(layers):
            at = layer.self_attn
            self.w.append(
                dict(
                    qkv=torch.stack(
                        [
                            at.q_proj.weight.view(self.H, self.E, self.d),
                            at.k_proj.weight.view(self.KV, self.E, self.d).repeat_interleave(rep, 0),
                            at.v_proj.weight.view(self.KV, self.E, self.d).repeat_interleave(rep, 0),
                        ]
                    ),  # [3, H, E, d]
                    o=at.o_proj.weight.view(self.d, self.H, self.E).permute(1, 0, 2).contiguous(),
                )
            )
            layer.forward = types.MethodType(self._layer_forward_fn(i), layer)
        model.model.norm.forward = self._final_norm
        self.reset()

    # -- pass state ---------------------------------------------------------------------------
    def reset(self, gim=False, record=0, buffer=None, scores=None, ablate=None):
        self.gim = gim          # GIM backward rules on
        self.record = record    # +1: add node outputs to the buffer, -1: subtract, 0: no
        self.buffer = buffer    # [n_fwd, batch, pos, d_model]
        self.scores = scores    # when set: backward updates scores[:prev, dst] (gradient pass)
        self.ablate = ablate    # [n_fwd, n_bwd] float: 1 on patched edges (evaluation pass)
        # evaluation: running sum of the buffer rows finished so far (= every source upstream)
        self.upstream = None if ablate is None else torch.zeros(buffer[0].numel(), dtype=torch.float32)

    def norm(self, x, w):
        s = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        if self.gim:
            s = s.detach()
        return w * (x * s)

    def _put(self, index, out):
        if self.record:
            with torch.no_grad():
                rows = self.buffer[index]
                rows.add_(out.detach(), alpha=float(self.record))
                if self.upstream is not None:
                    self.upstream += (rows.sum(0) if rows.dim() == 4 else rows).reshape(-1)

    def _flat(self, prev):
        return self.buffer[:prev].reshape(prev, -1)

    def _update(self, prev, cols):
        """Patch for the inputs whose ablated-edge columns are `cols` [prev, k]: [k, batch*pos*d].

        sum over ablated u of buffer_u, computed from whichever side is smaller: the ablated rows,
        or (for mostly ablated inputs) the sum of all upstream rows minus the kept ones. Only the
        rows some column needs are gathered, so sparse and nearly full circuits are cheap."""
        complement = cols.sum(0) > prev / 2
        sel = torch.where(complement, cols - 1.0, cols)  # -1 on kept rows where complemented
        rows = sel.abs().sum(1).nonzero().squeeze(1)
        flat = self._flat(prev)
        upd = sel[rows].t() @ flat[rows] if rows.numel() else flat.new_zeros(cols.shape[1], flat.shape[1])
        upd[complement] += self.upstream
        return upd

    def _watch(self, x, prev, dst):
        """A copy of x whose gradient (a [batch, pos, d] input slot's) is scored into column dst."""
        x = x.clone()
        flat = lambda: self._flat(prev)
        scores = self.scores

        def hook(grad):
            scores[:prev, dst] += flat() @ grad.reshape(-1)

        x.register_hook(hook)
        return x

    def _watch_heads(self, layer, x, s, ln_w, qkv):
        """Hooks on q, k, v [batch, pos, H, E]: per-head input-slot gradients, scored in backward."""
        g, prev = self.g, self.g.prev_head(layer)
        W = self.w[layer]["qkv"]
        frozen, scores, flat = self.gim, self.scores, lambda: self._flat(prev)
        xd, sd = x.detach(), s.detach()
        for slot, t in enumerate(qkv):
            col = g.bwd_qkv(layer, slot)

            def hook(grad, slot=slot, col=col):
                gy = torch.einsum("bphe,hed->bphd", grad, W[slot]) * ln_w  # grad at the normed input, times w
                gx = gy * sd.unsqueeze(2)
                if not frozen:
                    dot = (gy * xd.unsqueeze(2)).sum(-1, keepdim=True)  # [b, p, H, 1]
                    gx = gx - xd.unsqueeze(2) * (sd.pow(3).unsqueeze(2) * dot / self.d)
                b, p, H, d = gx.shape
                scores[:prev, col : col + H] += flat() @ gx.permute(0, 1, 3, 2).reshape(b * p * d, H)

            t.register_hook(hook)

    # -- the patched forward ----------------------------------------------------------------------
    def _layer_forward_fn(self, i):
        peer = self

        def forward(layer, hidden_states, position_embeddings=None, **kwargs):
            return peer._layer(i, layer, hidden_states, position_embeddings)

        return forward

    def _layer(self, l, layer, x, position_embeddings):
        g, H, KV, E = self.g, self.H, self.KV, self.E
        at, mlp = layer.self_attn, layer.mlp
        b, p, d = x.shape
        ln1 = layer.input_layernorm.weight

        # attention: q/k/v per query head, from the shared residual or per-head patched inputs
        cols = None
        if self.ablate is not None:
            a = g.bwd_qkv(l, 0)
            cols = self.ablate[: g.prev_head(l), a : a + 3 * H]
            if not cols.any():
                cols = None
        if cols is None:
            s = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
            xn = ln1 * (x * (s.detach() if self.gim else s))
            q = at.q_proj(xn).view(b, p, H, E)
            k = at.k_proj(xn).view(b, p, KV, E).repeat_interleave(H // KV, dim=2)
            v = at.v_proj(xn).view(b, p, KV, E).repeat_interleave(H // KV, dim=2)
            if self.scores is not None:
                self._watch_heads(l, x, s, ln1, (q, k, v))
        else:
            upd = self._update(g.prev_head(l), cols).view(3, H, b, p, d).permute(0, 2, 3, 1, 4)
            xn = self.norm(x[None, :, :, None, :] + upd, ln1)  # [3, b, p, H, d]
            q, k, v = torch.einsum("sbphd,shed->sbphe", xn, self.w[l]["qkv"]).unbind(0)
        if self.gim:
            q, k, v = scale_grad(q, GIM_QK), scale_grad(k, GIM_QK), scale_grad(v, GIM_V)
        cos, sin = position_embeddings
        cos, sin = cos[:, :, None, :], sin[:, :, None, :]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        scores = torch.einsum("bqhe,bkhe->bhqk", q, k) * (E**-0.5)
        causal = torch.ones(p, p, dtype=torch.bool).triu(1)
        scores = scores.masked_fill(causal, float("-inf"))
        pattern = torch.softmax(scores, dim=-1)
        if self.gim:
            soft = GIM_T * torch.softmax(scores / GIM_T, dim=-1)
            pattern = pattern.detach() + (soft - soft.detach())
        z = torch.einsum("bhqk,bkhe->bqhe", pattern, v)
        if self.record:
            with torch.no_grad():
                heads = torch.einsum("bqhe,hde->hbqd", z, self.w[l]["o"])
            self._put(slice(g.fwd_head(l), g.fwd_head(l) + H), heads)
        mid = x + at.o_proj(z.reshape(b, p, H * E))

        # MLP
        mlp_in = mid
        if self.ablate is not None:
            col = self.ablate[: g.prev_mlp(l), g.bwd_mlp(l)]
            if col.any():
                mlp_in = mid + self._update(g.prev_mlp(l), col[:, None]).view(b, p, d)
        if self.scores is not None:
            mlp_in = self._watch(mlp_in, g.prev_mlp(l), g.bwd_mlp(l))
        h = self.norm(mlp_in, layer.post_attention_layernorm.weight)
        gate, up = mlp.gate_proj(h), mlp.up_proj(h)
        if self.gim:
            gate, up = scale_grad(gate, GIM_GATE), scale_grad(up, GIM_GATE)
        out = mlp.down_proj(mlp.act_fn(gate) * up)
        self._put(g.fwd_mlp(l), out)
        return mid + out

    def _final_norm(self, x):
        g = self.g
        if self.ablate is not None:
            col = self.ablate[:, g.bwd_logits]
            if col.any():
                x = x + self._update(g.prev_logits, col[:, None]).view(x.shape)
        if self.scores is not None:
            x = self._watch(x, g.prev_logits, g.bwd_logits)
        return self.norm(x, self.model.model.norm.weight)

    # -- passes -------------------------------------------------------------------------------------
    def embed(self, ids):
        return self.model.model.embed_tokens(ids)

    def run(self, embeds, correct, incorrect):
        """m per pair for the given input embeddings (recording the input node first)."""
        self._put(0, embeds)
        logits = self.model(inputs_embeds=embeds, logits_to_keep=1, use_cache=False).logits
        return pc.logit_diff(logits[:, -1], correct, incorrect)

    def new_buffer(self, ids):
        return torch.zeros(self.g.n_fwd, *ids.shape, self.d, dtype=torch.float32)


# ----------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------
def scores_eap(peer: Peer, data, gim=False):
    """EAP (or GIM): counterfactual pass recording +, then one clean forward/backward recording -."""
    clean, cf, correct, incorrect = data
    g, n = peer.g, clean.shape[0]
    buf = peer.new_buffer(clean)
    scores = torch.zeros(g.n_fwd, g.n_bwd, dtype=torch.float32)
    peer.reset(record=+1, buffer=buf)
    peer.run(peer.embed(cf), correct, incorrect)
    with torch.enable_grad():
        peer.reset(gim=gim, record=-1, buffer=buf, scores=scores)
        e = peer.embed(clean).requires_grad_(True)
        (-peer.run(e, correct, incorrect).sum()).backward()
    peer.reset()
    return scores / n


def scores_eap_ig_inputs(peer: Peer, data, steps):
    clean, cf, correct, incorrect = data
    g, n = peer.g, clean.shape[0]
    buf = peer.new_buffer(clean)
    scores = torch.zeros(g.n_fwd, g.n_bwd, dtype=torch.float32)
    e_corr, e_clean = peer.embed(cf), peer.embed(clean)
    peer.reset(record=+1, buffer=buf)
    peer.run(e_corr, correct, incorrect)
    peer.reset(record=-1, buffer=buf)
    peer.run(e_clean, correct, incorrect)
    with torch.enable_grad():
        for k in range(steps):
            peer.reset(buffer=buf, scores=scores)
            e = (e_corr + (k / steps) * (e_clean - e_corr)).requires_grad_(True)
            (-peer.run(e, correct, incorrect).sum()).backward()
    peer.reset()
    return scores / n / steps


def evaluate(peer: Peer, data, circuits):
    clean, cf, correct, incorrect = data
    g = peer.g
    buf_cf = peer.new_buffer(clean)
    peer.reset(record=+1, buffer=buf_cf)
    m_empty = peer.run(peer.embed(cf), correct, incorrect)
    peer.reset()
    e_clean = peer.embed(clean)
    m_clean = peer.run(e_clean, correct, incorrect)
    buf = torch.empty_like(buf_cf)
    ms = []
    for edges in circuits:
        buf.copy_(buf_cf)
        peer.reset(record=-1, buffer=buf, ablate=g.ablation_mask(edges))
        ms.append(peer.run(e_clean, correct, incorrect).tolist())
    peer.reset()
    return {"m_clean": m_clean.tolist(), "m_empty": m_empty.tolist(), "m": ms}


# ----------------------------------------------------------------------------------------------
def main(job_path, out_path):
    threads, job, g, data = pc.open_job(job_path)

    with pc.Stopwatch() as load:
        peer = Peer(pc.load_hf_from_gguf(job["gguf"]), g)
    peer.run(peer.embed(data[0]), data[2], data[3])  # warm-up

    real = g.real_edges()
    system = "Hugging Face transformers + hooks (" + pc.versions("transformers") + ")"
    steps = job.get("ig_steps", 5)
    handlers = {
        "eap": lambda: {"scores": scores_eap(peer, data)},
        "eap-ig-inputs": lambda: {"scores": scores_eap_ig_inputs(peer, data, steps)},
        "gim": lambda: {"scores": scores_eap(peer, data, gim=True)},
        "evaluation": lambda: evaluate(peer, data, job.get("circuits", [])),
    }
    pc.run_stages("hf", system, threads, load.seconds, job, handlers, real, out_path)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: hf_peer.py JOB.json OUT.json")
    main(sys.argv[1], sys.argv[2])
