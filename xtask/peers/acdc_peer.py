"""ACDC peer: auto-circuit 1.0.1's ACDC (`auto_circuit.prune_algos.ACDC.acdc_prune_scores`) on one
of circuitbench's GPT-2-shaped task models, side by side with circuitbench's Rust ACDC.

    PYTHONHASHSEED=0 python xtask/peers/acdc_peer.py JOB.json OUT.json
    python xtask/peers/acdc_peer.py --make-job TASK_JSONL MODEL_DIR N OUT_JOB   (a test job)

JOB.json: {"model_dir": "/abs/models/mcqa",
           "pairs": [{"clean": [ids], "counterfactual": [ids], "correct": id, "incorrect": id}, ...],
           "taus": [{"base": 1.0, "exp": -3}, ...]}
OUT.json: {"system", "threads", "load_seconds", "n_edges", "edge_order": [MIB edge names in the
           order ACDC processes them], "runs": [{"tau", "base", "exp", "seconds", "circuit": [...]}]}

The order in which auto-circuit visits edges is `sorted(model.edges, key=dest.layer, reverse=True)`
over a Python set of frozen dataclasses, so within one destination layer it depends on
PYTHONHASHSEED (required) and, on Python 3.11, on None's address (hash(None) is id-based), so the
script re-executes itself once under `setarch -R` (no ASLR). `edge_order` is computed with the same
expression on the same set in the same process.
"""

import json
import math
import os
import re
import sys
import types
import warnings

# auto-circuit's per-edge progress bars off (tqdm reads TQDM_* when it is imported).
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_common import Stopwatch, read_job, setup_torch, write_result  # noqa: E402


# ----------------------------------------------------------------------------------------------
# TransformerLens 3.x shims auto-circuit 1.0.1 needs (it imports names 3.x renamed)
# ----------------------------------------------------------------------------------------------
def _shim_transformer_lens():
    import transformer_lens
    from transformer_lens.cache.key_value_cache import TransformerLensKeyValueCache

    mod = types.ModuleType("transformer_lens.past_key_value_caching")
    mod.HookedTransformerKeyValueCache = TransformerLensKeyValueCache
    sys.modules["transformer_lens.past_key_value_caching"] = mod
    transformer_lens.past_key_value_caching = mod
    transformer_lens.HookedTransformerKeyValueCache = TransformerLensKeyValueCache


# ----------------------------------------------------------------------------------------------
# Model: HF GPT2LMHeadModel checkpoint -> raw HookedTransformer (no folding / centring)
# ----------------------------------------------------------------------------------------------
def load_models(model_dir: str):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions.gpt2 import convert_gpt2_weights
    from transformers import GPT2LMHeadModel

    hf = GPT2LMHeadModel.from_pretrained(model_dir, dtype=torch.float32)
    hf.eval()
    hf.requires_grad_(False)
    c = hf.config
    if c.activation_function != "gelu_new":
        raise SystemExit(f"unsupported activation {c.activation_function!r}")
    d_mlp = c.n_inner if c.n_inner is not None else 4 * c.n_embd
    cfg = HookedTransformerConfig(
        n_layers=c.n_layer,
        d_model=c.n_embd,
        n_heads=c.n_head,
        d_head=c.n_embd // c.n_head,
        d_mlp=d_mlp,
        d_vocab=c.vocab_size,
        n_ctx=c.n_positions,
        act_fn="gelu_new",
        normalization_type="LN",
        eps=c.layer_norm_epsilon,
        original_architecture="GPT2LMHeadModel",
        device="cpu",
        dtype=torch.float32,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "use TransformerBridge" (4.x)
        tl = HookedTransformer(cfg)
    sd = convert_gpt2_weights(hf, cfg)
    sd = {k: v.detach().clone().to(torch.float32) for k, v in sd.items()}
    missing, unexpected = tl.load_state_dict(sd, strict=False)
    if unexpected:
        raise SystemExit(f"unexpected weights {unexpected}")
    # GPT-2 has no unembedding bias; everything else missing must be a non-parameter buffer.
    params = dict(tl.named_parameters())
    for k in missing:
        if k == "unembed.b_U":
            with torch.no_grad():
                params[k].zero_()
        elif k in params:
            raise SystemExit(f"weight {k} not loaded")
    # As auto_circuit.experiment_utils.load_tl_model does.
    tl.cfg.use_attn_result = True
    tl.cfg.use_attn_in = True
    tl.cfg.use_split_qkv_input = True
    tl.cfg.use_hook_mlp_in = True
    tl.eval()
    for p in tl.parameters():
        p.requires_grad = False
    return hf, tl


def check_logits(hf, tl, tokens: torch.Tensor) -> float:
    with torch.inference_mode():
        a = hf(tokens).logits
        b = tl(tokens)
    err = (a - b).abs().max().item()
    if not err <= 1e-4:
        raise SystemExit(f"HookedTransformer logits differ from the HF model's by {err:.3e} (> 1e-4)")
    return err


# ----------------------------------------------------------------------------------------------
# auto-circuit names -> circuitbench (MIB) names
# ----------------------------------------------------------------------------------------------
_SRC_HEAD = re.compile(r"^A(\d+)\.(\d+)$")
_DST_HEAD = re.compile(r"^A(\d+)\.(\d+)\.([QKV])$")
_MLP = re.compile(r"^MLP (\d+)$")


def mib_src(name: str) -> str:
    if name == "Resid Start":
        return "input"
    if m := _SRC_HEAD.match(name):
        return f"a{m[1]}.h{m[2]}"
    if m := _MLP.match(name):
        return f"m{m[1]}"
    raise SystemExit(f"cannot map auto-circuit source {name!r}")


def mib_dst(name: str) -> str:
    if name == "Resid End":
        return "logits"
    if m := _DST_HEAD.match(name):
        return f"a{m[1]}.h{m[2]}<{m[3].lower()}>"
    if m := _MLP.match(name):
        return f"m{m[1]}"
    raise SystemExit(f"cannot map auto-circuit destination {name!r}")


def mib_edge(edge) -> str:
    return f"{mib_src(edge.src.name)}->{mib_dst(edge.dest.name)}"


def expected_edges(n_layers: int, n_heads: int) -> int:
    """MIB's edge count with separate q/k/v inputs."""
    total = 0
    for layer in range(n_layers):
        total += 3 * n_heads * (1 + layer * (n_heads + 1))  # q/k/v of each head
        total += 1 + layer * (n_heads + 1) + n_heads  # MLP input
    return total + 1 + n_layers * (n_heads + 1)  # logits


# ----------------------------------------------------------------------------------------------
# Test job builder
# ----------------------------------------------------------------------------------------------
def make_job(task_jsonl: str, model_dir: str, n: int, out_job: str) -> None:
    from collections import defaultdict

    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    bos = json.load(open(os.path.join(model_dir, "config.json")))["bos_token_id"]

    def enc(text):
        ids = tok.encode(text).ids
        return ids if ids[:1] == [bos] else [bos] + ids

    def single(text):
        ids = tok.encode(text, add_special_tokens=False).ids
        if len(ids) != 1:
            raise SystemExit(f"answer {text!r} is {len(ids)} tokens")
        return ids[0]

    by_len = defaultdict(list)
    for line in open(task_jsonl):
        ex = json.loads(line)
        c, f = enc(ex["clean"]), enc(ex["counterfactual"])
        if len(c) == len(f):
            by_len[len(c)].append(
                {"clean": c, "counterfactual": f, "correct": single(ex["correct"]), "incorrect": single(ex["incorrect"])}
            )
    length, pairs = max(by_len.items(), key=lambda kv: len(kv[1]))
    if len(pairs) < n:
        raise SystemExit(f"only {len(pairs)} same-length pairs (length {length})")
    job = {
        "model_dir": os.path.abspath(model_dir),
        "pairs": pairs[:n],
        "taus": [{"base": 1.0, "exp": -3}, {"base": 1.0, "exp": -2}, {"base": 5.0, "exp": -4}],
    }
    write_result(out_job, job)
    print(f"{n} pairs of length {length} -> {out_job}", file=sys.stderr)


# ----------------------------------------------------------------------------------------------
ADDR_NO_RANDOMIZE = 0x0040000


def ensure_reproducible_hashes() -> None:
    """auto-circuit's edge set holds frozen dataclasses with None fields, and on Python 3.11
    hash(None) is None's address, so the set's order also depends on address-space layout
    randomisation: PYTHONHASHSEED alone does not fix it. Re-exec once under `setarch -R` (ASLR
    off for this process), which makes the order a function of PYTHONHASHSEED on a given machine."""
    if sys.version_info >= (3, 12):  # hash(None) is a constant there
        return
    with open("/proc/self/personality") as f:
        if int(f.read(), 16) & ADDR_NO_RANDOMIZE:
            return
    if os.environ.get("ACDC_PEER_REEXEC"):
        raise SystemExit("could not disable ASLR with setarch -R; ACDC's edge order would not be reproducible")
    env = dict(os.environ, ACDC_PEER_REEXEC="1")
    argv = ["setarch", os.uname().machine, "-R", sys.executable, os.path.abspath(__file__), *sys.argv[1:]]
    os.execvpe("setarch", argv, env)


def main(job_path: str, out_path: str) -> None:
    if os.environ.get("PYTHONHASHSEED") in (None, "", "random"):
        raise SystemExit("set PYTHONHASHSEED (e.g. 0): ACDC's edge order depends on it")
    ensure_reproducible_hashes()
    threads = setup_torch()
    torch.set_grad_enabled(False)
    job = read_job(job_path)

    with Stopwatch() as load:
        _shim_transformer_lens()
        from auto_circuit.data import PromptDataLoader, PromptDataset
        from auto_circuit.prune_algos.ACDC import acdc_prune_scores
        from auto_circuit.utils.graph_utils import patchable_model

        hf, tl = load_models(job["model_dir"])
        pairs = job["pairs"]
        clean = torch.tensor([p["clean"] for p in pairs], dtype=torch.long)
        corrupt = torch.tensor([p["counterfactual"] for p in pairs], dtype=torch.long)
        answers = [torch.tensor([p["correct"]], dtype=torch.long) for p in pairs]
        wrong = [torch.tensor([p["incorrect"]], dtype=torch.long) for p in pairs]
        max_err = max(check_logits(hf, tl, clean), check_logits(hf, tl, corrupt))
        del hf

        differ = (clean != corrupt).any(dim=0).nonzero()
        diverge_idx = int(differ[0]) if len(differ) else 0
        loader = PromptDataLoader(
            PromptDataset(clean, corrupt, answers, wrong),
            seq_len=clean.shape[1],
            diverge_idx=diverge_idx,
            batch_size=len(pairs),
            shuffle=False,
        )
        pm = patchable_model(
            tl, factorized=True, slice_output="last_seq", separate_qkv=True, device=torch.device("cpu")
        )
        n_edges = len(pm.edges)
        want = expected_edges(tl.cfg.n_layers, tl.cfg.n_heads)
        if n_edges != want:
            raise SystemExit(f"auto-circuit graph has {n_edges} edges, MIB's has {want}")
        # Exactly the expression in auto_circuit/prune_algos/ACDC.py (same process, same set).
        order = sorted(pm.edges, key=lambda x: x.dest.layer, reverse=True)
        edge_order = [mib_edge(e) for e in order]
        if len(set(edge_order)) != n_edges:
            raise SystemExit("edge names are not unique")
        with torch.inference_mode():
            pm(clean)  # warm-up forward
    print(f"[acdc] load {load.seconds:.2f} s, {n_edges} edges, logit check max |diff| {max_err:.2e}", file=sys.stderr)

    runs = []
    for t in job["taus"]:
        base, exp = t["base"], t["exp"]
        if float(exp) != int(exp):
            raise SystemExit(f"tau exponent must be an integer, got {exp!r}")
        exp = int(exp)
        tau = base * 10**exp  # the expression ACDC.py uses: a * 10**b
        with Stopwatch() as sw:
            ps = acdc_prune_scores(pm, loader, official_edges=None, tao_exps=[exp], tao_bases=[base])
        circuit = [mib_edge(e) for e in order if math.isinf(e.prune_score(ps).item())]
        # Removed edges get min(tau, inf) = tau (stored in float32); nothing else with one tau.
        tau32 = torch.tensor(tau, dtype=torch.float32).item()
        for e in order:
            s = e.prune_score(ps).item()
            if not (math.isinf(s) and s > 0) and s != tau32:
                raise SystemExit(f"unexpected prune score {s} for {e.name}")
        runs.append({"tau": tau, "base": base, "exp": exp, "seconds": sw.seconds, "circuit": circuit})
        print(f"[acdc] tau {tau:g}: {sw.seconds:.2f} s, {len(circuit)} edges kept", file=sys.stderr)

    from importlib.metadata import version

    system = (
        f"auto-circuit {version('auto-circuit')}, transformer-lens {version('transformer-lens')}, "
        f"torch {torch.__version__}, python {sys.version.split()[0]}"
    )
    write_result(
        out_path,
        {
            "system": system,
            "threads": threads,
            "load_seconds": load.seconds,
            "pythonhashseed": os.environ["PYTHONHASHSEED"],
            "n_edges": n_edges,
            "edge_order": edge_order,
            "runs": runs,
        },
    )


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--make-job":
        make_job(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    elif len(sys.argv) == 3:
        main(sys.argv[1], sys.argv[2])
    else:
        raise SystemExit(__doc__)
