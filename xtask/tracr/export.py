#!/usr/bin/env python3
"""Compile RASP programs with tracr and export them for circuitbench's Rust side.

For every program in PROGRAMS this writes `<out-dir>/tracr-<name>/`:

  model.safetensors  f32 weights, GPT-2-like names, every weight [in, out] (x @ W + b)
  config.json        shapes, vocabulary, output kind and labels, residual labels, components
  samples.json       32 seeded inputs with tracr's own outputs at every position
  dataset.jsonl      clean/corrupt pairs with tracr's outputs at every position
  task.json          read positions, metric, seed and how the pairs were built

Before writing anything for a program the script re-runs the exported weights with a plain
numpy forward pass (non-causal attention, ReLU MLPs, no LayerNorm) and stops with an error
if it does not reproduce tracr's outputs, if argmax decoding disagrees with tracr's decoded
outputs, or if the compiled model disagrees with the RASP interpreter.

Usage (from the repository root):
    python xtask/tracr/export.py --out-dir models [--programs reverse,hist]

Needs only tracr-pypi==1.0.0, safetensors and numpy (tracr pulls in jax and haiku).
"""

import argparse
import dataclasses
import itertools
import json
import os
import random
import sys
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# Determinism: tracr builds some spaces from Python sets; pin string hashing so their
# iteration order cannot vary between runs (re-exec once with PYTHONHASHSEED=0).
if os.environ.get("PYTHONHASHSEED") != "0":
  os.environ["PYTHONHASHSEED"] = "0"
  os.execv(sys.executable, [sys.executable] + sys.argv)

warnings.filterwarnings("ignore")  # haiku/jax deprecation chatter
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import numpy as np  # noqa: E402
from safetensors.numpy import load_file, save_file  # noqa: E402
from tracr.compiler import assemble  # noqa: E402
from tracr.compiler import basis_inference  # noqa: E402
from tracr.compiler import compiling  # noqa: E402
from tracr.compiler import craft_graph_to_model  # noqa: E402
from tracr.compiler import expr_to_craft_graph  # noqa: E402
from tracr.compiler import lib  # noqa: E402
from tracr.compiler import nodes  # noqa: E402
from tracr.compiler import rasp_to_graph  # noqa: E402
from tracr.craft import bases  # noqa: E402
from tracr.craft import transformers  # noqa: E402
from tracr.rasp import rasp  # noqa: E402

BOS = "BOS"
PAD = "PAD"
SEED = 1234          # one seed for everything; each program derives its own generators from it
N_SAMPLES = 32       # rows of samples.json
MAX_PAIRS = 512      # cap on clean sequences in dataset.jsonl
ATOL = 1e-5          # numpy forward vs tracr, on the unembedded outputs
RASP_ATOL = 1e-4     # compiled numerical outputs vs the RASP interpreter


# --------------------------------------------------------------------------------------------
# Programs
# --------------------------------------------------------------------------------------------

def reverse_program() -> rasp.SOp:
  # AutoCircuit/ACDC's definition, which is also tracr's lib.make_reverse:
  #   length = make_length(); opp_idx = (length - indices).named("opp_idx");
  #   opp_idx = (opp_idx - 1).named("opp_idx-1");
  #   Aggregate(Select(indices, opp_idx, EQ), tokens).named("reverse")
  length = lib.make_length()
  opp_idx = (length - rasp.indices).named("opp_idx")
  opp_idx = (opp_idx - 1).named("opp_idx-1")
  reverse_selector = rasp.Select(rasp.indices, opp_idx, rasp.Comparison.EQ).named(
      "reverse_selector")
  return rasp.Aggregate(reverse_selector, rasp.tokens).named("reverse")


@dataclasses.dataclass
class Program:
  name: str
  build: Callable[[], rasp.SOp]
  vocab: Sequence[Any]
  max_seq_len: int
  description: str
  # "product": every sequence over the vocabulary; "distinct": sequences without repeats.
  inputs: str = "product"
  # "random": corrupt = a random other sequence of the same set (AutoCircuit's recipe);
  # "flip": corrupt = a random sequence of the set whose output at the last position differs
  #         (for programs whose answer is one bit that random pairs would rarely flip).
  pairing: str = "random"
  # Positions fixed by the task definition rather than by the data (1-based, BOS = 0).
  fixed_read_positions: Optional[List[int]] = None
  fixed_excluded: Optional[List[Dict[str, Any]]] = None
  built_as: str = ""
  default: bool = True


PROGRAMS: List[Program] = [
    Program(
        name="reverse",
        build=reverse_program,
        vocab=[1, 2, 3],
        max_seq_len=5,
        description="Reverse the input sequence (AutoCircuit/ACDC tracr 'reverse').",
        fixed_read_positions=[1, 2, 4, 5],
        fixed_excluded=[{
            "position": 3,
            "why": "AutoCircuit reads [1,2,4,5]: the middle position of a length-5 reversal "
                   "maps to itself, so its output is its own input token and needs no "
                   "movement between positions"}],
        built_as="AutoCircuit (auto_circuit/datasets/tracr) uses all |V|^5 sequences of "
                 "length 5 with corrupt = a random other sequence of the same set; we do the "
                 "same (243 pairs).",
    ),
    Program(
        name="xproportion",
        build=lambda: lib.make_frac_prevs(rasp.tokens == "x"),
        vocab=["w", "x", "y", "z"],
        max_seq_len=5,
        description="Fraction of tokens so far (inclusive) that are 'x' (AutoCircuit/ACDC "
                    "tracr 'xproportion'); numerical output.",
        fixed_read_positions=[1, 2, 3, 4, 5],
        fixed_excluded=[],
        built_as="AutoCircuit uses all |V|^5 = 1024 sequences with corrupt = a random other "
                 "sequence; we take a seeded sample of 512 clean sequences of that set, each "
                 "with a random other sequence of the full set as corrupt.",
    ),
    Program(
        name="hist",
        build=lib.make_hist,
        vocab=["a", "b", "c"],
        max_seq_len=5,
        description="Histogram: at each position, how many tokens of the sequence equal this "
                    "one (tracr lib.make_hist).",
        built_as="No peer dataset; built like AutoCircuit's tracr tasks: all |V|^5 = 243 "
                 "sequences, corrupt = a random other sequence of the same set.",
    ),
    Program(
        name="sort",
        build=lambda: lib.make_sort(rasp.tokens, rasp.tokens, max_seq_len=5, min_key=1),
        vocab=[1, 2, 3, 4, 5],
        max_seq_len=5,
        description="Sort the tokens ascending, duplicates allowed (tracr lib.make_sort with "
                    "keys = tokens, min_key 1).",
        built_as="No peer dataset; built like AutoCircuit's tracr tasks: a seeded sample of "
                 "512 of the |V|^5 = 3125 sequences, corrupt = a random other sequence of "
                 "the full set.",
    ),
    Program(
        name="sort-unique",
        build=lambda: lib.make_sort_unique(rasp.tokens, rasp.tokens),
        vocab=[1, 2, 3, 4, 5, 6],
        max_seq_len=5,
        inputs="distinct",
        description="Sort distinct tokens ascending (tracr lib.make_sort_unique, keys = "
                    "tokens); inputs never repeat a token.",
        built_as="No peer dataset; make_sort_unique needs distinct keys, so the set is all "
                 "720 length-5 sequences without repeats over {1..6} (over {1..5} every "
                 "output would be 1,2,3,4,5); a seeded sample of 512 clean sequences, corrupt "
                 "= a random other sequence of that set.",
    ),
    Program(
        name="pair-balance",
        build=lambda: lib.make_pair_balance(rasp.tokens, "(", ")"),
        vocab=["(", ")"],
        max_seq_len=8,
        description="Running bracket balance: (#'(' - #')') / (position+1) over the prefix "
                    "(tracr lib.make_pair_balance); numerical output.",
        built_as="No peer dataset; vocabulary {'(', ')'} and length 8 (length 5 would give "
                 "only 32 sequences): all 2^8 = 256 sequences, corrupt = a random other "
                 "sequence of the same set.",
    ),
    Program(
        name="shuffle-dyck",
        build=lambda: lib.make_shuffle_dyck(pairs=["()"]),
        vocab=["(", ")"],
        max_seq_len=6,
        pairing="flip",
        description="Is the whole sequence a balanced bracket string? (tracr "
                    "lib.make_shuffle_dyck with one pair type); the same answer at every "
                    "position.",
        built_as="No peer dataset; length 6 (odd lengths are never balanced): all 2^6 = 64 "
                 "sequences, corrupt = a random sequence with the opposite answer (only 5 of "
                 "64 are balanced, so random pairs would almost never change the answer).",
        default=False,  # ~360 KB of weights: above the size wanted for models/; on request
    ),
]


# --------------------------------------------------------------------------------------------
# Compilation
# --------------------------------------------------------------------------------------------

def build_program(spec: Program) -> rasp.SOp:
  """Builds a fresh RASP program with reproducible labels.

  tracr labels every expression `<name>_<id>` where the id is drawn lazily from a
  process-wide counter (RASPExpr._ids) the first time the label is read. Residual
  directions are sorted by label, so without a reset the labels (and possibly the order
  of residual dimensions) would depend on which programs were compiled before. Resetting
  the counter makes each program's labels independent of the others.
  """
  rasp.RASPExpr._ids = itertools.count(1)
  return spec.build()


def compile_program(spec: Program, program: rasp.SOp):
  """Compiles with tracr's one-call API (non-causal, BOS/PAD named as our vocabulary)."""
  return compiling.compile_rasp_to_model(
      program, set(spec.vocab), spec.max_seq_len, causal=False,
      compiler_bos=BOS, compiler_pad=PAD)


def craft_pipeline(spec: Program, program: rasp.SOp):
  """Re-runs the first steps of compile_rasp_to_model to see the graph and craft model.

  These are the same calls compiling.compile_rasp_to_model makes (rasp_to_graph ->
  basis_inference -> expr_to_craft_graph -> craft_graph_to_model); the one-call API does not
  return the graph, which we need for the output basis and for naming components.
  """
  extracted = rasp_to_graph.extract_rasp_graph(program)
  graph, sources, sink = extracted.graph, extracted.sources, extracted.sink
  basis_inference.infer_bases(graph, sink, set(spec.vocab), spec.max_seq_len)
  expr_to_craft_graph.add_craft_components_to_rasp_graph(
      graph, bos_dir=bases.BasisDirection(rasp.tokens.label, BOS), mlp_exactness=100)
  # Private helper, deterministic: the node -> craft layer allocation that
  # craft_graph_to_model computes internally (even = attention, odd = MLP).
  allocation = craft_graph_to_model._allocate_modules_to_layers(graph, sources)
  craft_model = craft_graph_to_model.craft_graph_to_model(graph, sources)
  return graph, sink, allocation, craft_model


def components_of(graph, allocation, craft_model, residual_labels) -> Dict[str, Any]:
  """Names what each attention head and MLP of the assembled model computes.

  craft_graph_to_model groups the graph's blocks by allocated layer (iterating `allocation`
  in order), makes one MultiAttentionHead per attention layer (heads in that order) and one
  parallel MLP per MLP layer, skipping empty layers. assemble then places the k-th craft
  block at the k-th matching `layer_i/attn` or `layer_i/mlp` slot (module_names). We repeat
  the grouping with node labels and zip it with module_names.
  """
  by_layer: Dict[int, List[Tuple[str, Any]]] = {}
  for node_id, layer_no in allocation.items():
    node = graph.nodes[node_id]
    block = node.get(nodes.MODEL_BLOCK)
    if block is None:
      continue
    label = node[nodes.EXPR].label
    if isinstance(block, transformers.SeriesWithResiduals):  # e.g. SelectorWidth: attn + MLP
      by_layer.setdefault(layer_no, []).append((label, block.blocks[0]))
      by_layer.setdefault(layer_no + 1, []).append((label, block.blocks[1]))
    else:
      by_layer.setdefault(layer_no, []).append((label, block))
  layers = [by_layer[k] for k in sorted(by_layer) if by_layer[k]]
  _, module_names = assemble._get_model_config_and_module_names(craft_model)
  if len(layers) != len(module_names) or len(layers) != len(craft_model.blocks):
    raise RuntimeError("component grouping does not match tracr's craft model")

  comps: Dict[str, Any] = {}
  mlp_hidden: Dict[str, Dict[str, List[int]]] = {}
  for module_name, craft_block, members in zip(module_names, craft_model.blocks, layers):
    layer = int(module_name.split("/")[1].split("_")[1])
    if module_name.endswith("attn"):
      head = 0
      for label, block in members:
        for _ in range(block.as_multi().num_heads):
          comps[f"a{layer}.h{head}"] = label
          head += 1
      if head != craft_block.as_multi().num_heads:
        raise RuntimeError("head count mismatch in " + module_name)
    else:
      comps[f"m{layer}"] = [label for label, _ in members]
      # Hidden units: the parallel MLP's hidden space is the sorted join of each MLP's own
      # hidden directions, and c_fc's column j is direction j of that space.
      hidden = list(craft_block.fst.output_space.basis)
      cols = {}
      for label, block in members:
        own = set(block.fst.output_space.basis)
        cols[label] = [j for j, d in enumerate(hidden) if d in own]
      mlp_hidden[f"m{layer}"] = cols
  # Half-layers tracr leaves all-zero (no RASP expression placed there).
  n_layers = 1 + max(int(n.split("/")[1].split("_")[1]) for n in module_names)
  empty = [f"{kind}{l}" for l in range(n_layers) for kind in ("a", "m")
           if not any(c == f"m{l}" if kind == "m" else c.startswith(f"a{l}.") for c in comps)]
  craft_dirs = {str(d) for d in craft_model.residual_space.basis}
  if not craft_dirs <= set(residual_labels):
    raise RuntimeError("craft model residual space is not part of the compiled model's")
  return {"components": comps, "mlp_hidden_units": mlp_hidden, "empty_modules": empty}


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

def export_weights(model) -> Dict[str, np.ndarray]:
  """Maps tracr's haiku params onto GPT-2-like names; every weight stays [in, out].

  tracr's MultiHeadAttention computes x @ w + b for query/key/value and reshapes the
  H*key_size columns into [H, key_size] (head-major), which is the layout we keep.
  """
  p = model.params
  cfg = model.model_config
  f32 = lambda a: np.ascontiguousarray(np.asarray(a, dtype=np.float32))
  out = {
      "wte.weight": f32(p["token_embed"]["embeddings"]),
      "wpe.weight": f32(p["pos_embed"]["embeddings"]),
  }
  for l in range(cfg.num_layers):
    pre = f"transformer/layer_{l}"
    for ours, theirs in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"),
                         ("o_proj", "linear")):
      out[f"h.{l}.attn.{ours}.weight"] = f32(p[f"{pre}/attn/{theirs}"]["w"])
      out[f"h.{l}.attn.{ours}.bias"] = f32(p[f"{pre}/attn/{theirs}"]["b"])
    for ours, theirs in (("c_fc", "linear_1"), ("c_proj", "linear_2")):
      out[f"h.{l}.mlp.{ours}.weight"] = f32(p[f"{pre}/mlp/{theirs}"]["w"])
      out[f"h.{l}.mlp.{ours}.bias"] = f32(p[f"{pre}/mlp/{theirs}"]["b"])
  return out


def build_unembed(model, sink) -> Tuple[np.ndarray, List[str], List[Any], bool]:
  """Rebuilds tracr's unembedding, which it does not store as a parameter.

  tracr unembeds with vectorspace_fns.project(residual_space, output_space): a 0/1 matrix
  picking the output SOp's basis directions (sink[OUTPUT_BASIS], in basis order) out of the
  residual. Categorical outputs are decoded by argmax through the output encoder, whose
  encoding_map sends each value to its column; numerical outputs have a single column.
  """
  out_basis = list(bases.VectorSpaceWithBasis(sink[nodes.OUTPUT_BASIS]).basis)
  categorical = rasp.is_categorical(sink[nodes.EXPR])
  res = model.residual_labels
  u = np.zeros((len(res), len(out_basis)), dtype=np.float32)
  for j, d in enumerate(out_basis):
    u[res.index(str(d)), j] = 1.0
  if categorical:
    values = [d.value for d in out_basis]
    enc = model.output_encoder.encoding_map
    if any(enc[v] != j for j, v in enumerate(values)):
      raise RuntimeError("output encoder order differs from the output basis order")
    labels = [str(v) for v in values]
  else:
    if len(out_basis) != 1:
      raise RuntimeError("numerical output with more than one dimension")
    values = [None]
    labels = [sink[nodes.EXPR].label]
  return u, labels, values, categorical


def numpy_forward(w: Dict[str, np.ndarray], cfg: Dict[str, Any], ids: np.ndarray) -> np.ndarray:
  """Independent forward pass from the exported arrays: [B, T] ids -> [B, T, n_out].

  Non-causal softmax(QK^T * attn_scale) attention with an all-ones mask, ReLU MLPs,
  residual adds, no LayerNorm; the final residual is projected by unembed.weight.
  Computed in float64 from the float32 weights.
  """
  g = lambda k: w[k].astype(np.float64)
  B, T = ids.shape
  H, dk = cfg["n_head"], cfg["head_dim"]
  x = g("wte.weight")[ids] + g("wpe.weight")[np.arange(T)][None]
  for l in range(cfg["n_layer"]):
    a = f"h.{l}.attn."
    q = (x @ g(a + "q_proj.weight") + g(a + "q_proj.bias")).reshape(B, T, H, dk)
    k = (x @ g(a + "k_proj.weight") + g(a + "k_proj.bias")).reshape(B, T, H, dk)
    v = (x @ g(a + "v_proj.weight") + g(a + "v_proj.bias")).reshape(B, T, H, dk)
    logits = np.einsum("bthd,bshd->bhts", q, k) * cfg["attn_scale"]
    logits -= logits.max(axis=-1, keepdims=True)
    p = np.exp(logits)
    p /= p.sum(axis=-1, keepdims=True)
    z = np.einsum("bhts,bshd->bthd", p, v).reshape(B, T, H * dk)
    x = x + z @ g(a + "o_proj.weight") + g(a + "o_proj.bias")
    m = f"h.{l}.mlp."
    hdn = np.maximum(x @ g(m + "c_fc.weight") + g(m + "c_fc.bias"), 0.0)
    x = x + hdn @ g(m + "c_proj.weight") + g(m + "c_proj.bias")
  return x @ g("unembed.weight")


def input_pool(spec: Program) -> List[Tuple[Any, ...]]:
  vocab = sorted(spec.vocab)
  if spec.inputs == "product":
    return list(itertools.product(vocab, repeat=spec.max_seq_len))
  if spec.inputs == "distinct":
    return list(itertools.permutations(vocab, spec.max_seq_len))
  raise ValueError(spec.inputs)


def tracr_outputs(model, unembed, seqs: List[Tuple[Any, ...]]):
  """tracr's own outputs for many sequences: one batched call of the assembled forward.

  This is what AssembledTransformerModel.apply does for one sequence (encode with the input
  encoder, run `forward`, take the final residual); we batch it and unembed with the
  matrix tracr's unembed module would use. Returns ([B,T,n_out] float32, [B,T,D]).
  """
  ids = np.array([model.input_encoder.encode([BOS] + list(s)) for s in seqs])
  out = model.forward(model.params, ids)
  resid = np.asarray(out.transformer_output.output, dtype=np.float32)
  return resid @ unembed, resid, ids


def decode(values_out: np.ndarray, values: List[Any], categorical: bool) -> List[Any]:
  """Per-position decoded outputs of one sequence; position 0 (BOS) is None."""
  if categorical:
    return [None] + [str(values[int(i)]) for i in np.argmax(values_out[1:], axis=-1)]
  return [None] + [f32_float(x) for x in values_out[1:, 0]]


def f32_float(x) -> float:
  """A float32 as the shortest decimal that reads back as the same float32 (smaller JSON)."""
  return float(str(np.float32(x)))


def fail(program: str, what: str):
  raise SystemExit(f"[tracr-export] {program}: CHECK FAILED: {what}")


def export_program(spec: Program, out_dir: str, seed: int) -> Dict[str, Any]:
  program = build_program(spec)
  model = compile_program(spec, program)
  graph, sink, allocation, craft_model = craft_pipeline(spec, program)
  cfg_t = model.model_config

  # ---- weights and config
  weights = export_weights(model)
  unembed, out_labels, out_values, categorical = build_unembed(model, sink)
  weights["unembed.weight"] = unembed
  comps = components_of(graph, allocation, craft_model, model.residual_labels)
  vocab_ids = {str(tok): int(i) for tok, i in model.input_encoder.encoding_map.items()}
  d_model = len(model.residual_labels)
  config = {
      "model_type": "tracr",
      "program": spec.name,
      "description": spec.description,
      "n_layer": cfg_t.num_layers,
      "n_head": cfg_t.num_heads,
      "head_dim": cfg_t.key_size,
      "n_embd": d_model,
      "n_inner": cfg_t.mlp_hidden_size,
      "activation_function": "relu",
      "layer_norm": False,
      "attn_scale": float(1.0 / np.sqrt(cfg_t.key_size)),
      "causal": False,
      "max_seq_len": spec.max_seq_len,
      "n_positions": spec.max_seq_len + 1,
      "vocab": vocab_ids,
      "bos_token_id": vocab_ids[BOS],
      "pad_token_id": vocab_ids[PAD],
      "output": "categorical" if categorical else "numerical",
      "output_sop": sink[nodes.EXPR].label,
      "output_labels": out_labels,
      "residual_labels": list(model.residual_labels),
      "components": comps["components"],
      "mlp_hidden_units": comps["mlp_hidden_units"],
      "empty_modules": comps["empty_modules"],
      "tracr": {"package": "tracr-pypi==1.0.0", "mlp_exactness": 100,
                "compiler_bos": BOS, "compiler_pad": PAD},
  }
  shapes_ok = (weights["wte.weight"].shape == (len(vocab_ids), d_model)
               and weights["wpe.weight"].shape == (spec.max_seq_len + 1, d_model))
  if not shapes_ok:
    fail(spec.name, "embedding shapes")

  # ---- inputs: samples and dataset
  pool = input_pool(spec)
  rng = random.Random(f"{seed}:{spec.name}")
  sample_seqs = [pool[i] for i in sorted(rng.sample(range(len(pool)), min(N_SAMPLES, len(pool))))]
  if len(pool) > MAX_PAIRS:
    clean_idx = sorted(rng.sample(range(len(pool)), MAX_PAIRS))
  else:
    clean_idx = list(range(len(pool)))

  # tracr outputs for the whole pool at once (pools are at most a few thousand sequences)
  pool_out, pool_resid, pool_ids = tracr_outputs(model, unembed, pool)
  pool_dec = [decode(pool_out[i], out_values, categorical) for i in range(len(pool))]

  if spec.pairing == "random":
    corrupt_idx = []
    for i in clean_idx:
      j = rng.randrange(len(pool) - 1)
      corrupt_idx.append(j if j < i else j + 1)  # any index but i
  elif spec.pairing == "flip":
    corrupt_idx = []
    for i in clean_idx:
      other = [j for j in range(len(pool)) if pool_dec[j][-1] != pool_dec[i][-1]]
      corrupt_idx.append(rng.choice(other))
  else:
    raise ValueError(spec.pairing)

  # ---- checks
  # (1) numpy forward from the exported float32 arrays reproduces tracr's outputs
  np_out = numpy_forward(weights, config, pool_ids)
  max_diff = float(np.max(np.abs(np_out - pool_out)))
  if not max_diff <= ATOL:
    fail(spec.name, f"numpy forward differs from tracr by {max_diff:g} > {ATOL:g}")
  # (2) decoding the numpy outputs gives tracr's decoded outputs (argmax for categorical)
  for i in range(len(pool)):
    ours = decode(np_out[i], out_values, categorical)
    if categorical and ours != pool_dec[i]:
      fail(spec.name, f"argmax decoding differs on {pool[i]}: {ours} vs {pool_dec[i]}")
  # (3) tracr's own apply() agrees with the batched forward on the samples
  samples = {"inputs": [], "ids": [], "outputs": [], "decoded": []}
  for s in sample_seqs:
    res = model.apply([BOS] + list(s))
    out = np.asarray(res.transformer_output, dtype=np.float32)[0] @ unembed
    dec = decode(out, out_values, categorical)
    tracr_dec = res.decoded  # position 0 is BOS by tracr's convention
    if categorical and [None] + [str(v) for v in tracr_dec[1:]] != dec:
      fail(spec.name, f"apply() decoded {tracr_dec} but unembed argmax gives {dec}")
    if not categorical and np.max(np.abs(np.array(tracr_dec[1:], dtype=np.float64)
                                         - np.array(dec[1:]))) > ATOL:
      fail(spec.name, f"apply() numerical output {tracr_dec} vs {dec}")
    i = pool.index(tuple(s))
    if np.max(np.abs(out - pool_out[i])) > ATOL:
      fail(spec.name, "apply() and the batched forward disagree")
    if np.max(np.abs(numpy_forward(weights, config, np.array([res_ids(model, s)])) [0] - out)) > ATOL:
      fail(spec.name, "numpy forward differs from apply()")
    samples["inputs"].append([BOS] + [str(t) for t in s])
    samples["ids"].append(res_ids(model, s))
    samples["outputs"].append([[f32_float(x) for x in row] for row in out])
    samples["decoded"].append(dec)
  # (4) the compiled model computes the RASP program (tracr compiles some things
  #     approximately, e.g. numerical MLPs; categorical outputs must match exactly)
  rasp_bad = 0
  for i in clean_idx + corrupt_idx:
    want = program(list(pool[i]))
    got = pool_dec[i][1:]
    if categorical:
      ok = [str(v) for v in want] == got
    else:
      ok = np.max(np.abs(np.array(want, dtype=np.float64) - np.array(got))) <= RASP_ATOL
    rasp_bad += 0 if ok else 1
  if rasp_bad:
    fail(spec.name, f"compiled model differs from the RASP interpreter on {rasp_bad} inputs")

  # ---- dataset and positions
  rows = []
  for i, j in zip(clean_idx, corrupt_idx):
    if pool[i] == pool[j]:
      fail(spec.name, "corrupt equals clean")
    rows.append({
        "clean": [BOS] + [str(t) for t in pool[i]],
        "corrupt": [BOS] + [str(t) for t in pool[j]],
        "clean_output": pool_dec[i],
        "corrupt_output": pool_dec[j],
    })
  T = spec.max_seq_len + 1
  constant = [p for p in range(1, T)
              if len({r["clean_output"][p] for r in rows} | {r["corrupt_output"][p] for r in rows}) == 1]
  if spec.fixed_read_positions is not None:
    read = list(spec.fixed_read_positions)
    excluded = list(spec.fixed_excluded or [])
  else:
    read = [p for p in range(1, T) if p not in constant]
    excluded = [{"position": p, "why": "the program's output here is the same for every clean "
                 "and corrupt input"} for p in constant]
  differ = [sum(r["clean_output"][p] != r["corrupt_output"][p] for r in rows) for p in range(T)]
  task = {
      "program": spec.name,
      "description": spec.description,
      "vocab": [str(v) for v in sorted(spec.vocab)],
      "seq_len": spec.max_seq_len,
      "read_positions": read,
      "excluded_positions": excluded,
      "metric": "logit-diff" if categorical else "value",
      "output": config["output"],
      "pairs": len(rows),
      "pairs_with_different_output": {str(p): differ[p] for p in range(1, T)},
      "seed": seed,
      "inputs": spec.inputs,
      "pairing": spec.pairing,
      "built_as": spec.built_as,
  }

  # ---- write
  target = os.path.join(out_dir, f"tracr-{spec.name}")
  os.makedirs(target, exist_ok=True)
  save_file(weights, os.path.join(target, "model.safetensors"),
            metadata={"format": "pt"})  # one key: safetensors writes metadata unordered
  os.chmod(os.path.join(target, "model.safetensors"), 0o644)  # safetensors writes 0600
  back = load_file(os.path.join(target, "model.safetensors"))
  if set(back) != set(weights) or any(not np.array_equal(back[k], weights[k]) for k in weights):
    fail(spec.name, "model.safetensors does not read back as written")
  dump_json(os.path.join(target, "config.json"), config)
  dump_json(os.path.join(target, "samples.json"), samples, compact_lists=True)
  dump_json(os.path.join(target, "task.json"), task)
  with open(os.path.join(target, "dataset.jsonl"), "w") as f:
    for r in rows:
      f.write(json.dumps(r, separators=(",", ":")) + "\n")

  size = sum(os.path.getsize(os.path.join(target, n)) for n in os.listdir(target))
  return {
      "program": spec.name, "L": cfg_t.num_layers, "H": cfg_t.num_heads, "dk": cfg_t.key_size,
      "d_model": d_model, "d_mlp": cfg_t.mlp_hidden_size, "n_vocab": len(vocab_ids),
      "n_out": unembed.shape[1], "output": config["output"], "pairs": len(rows),
      "read": read, "max_diff": max_diff,
      "weights_bytes": os.path.getsize(os.path.join(target, "model.safetensors")),
      "dir_bytes": size,
  }


def res_ids(model, s) -> List[int]:
  return [int(i) for i in model.input_encoder.encode([BOS] + list(s))]


def dump_json(path: str, obj: Any, compact_lists: bool = False):
  with open(path, "w") as f:
    if compact_lists:
      # one sample per line keeps the file small and readable
      f.write("{\n")
      keys = list(obj)
      for n, k in enumerate(keys):
        f.write(f"  {json.dumps(k)}: [\n")
        items = obj[k]
        for m, it in enumerate(items):
          f.write("    " + json.dumps(it, separators=(",", ":")) + ("," if m + 1 < len(items) else "") + "\n")
        f.write("  ]" + ("," if n + 1 < len(keys) else "") + "\n")
      f.write("}\n")
    else:
      json.dump(obj, f, indent=2)
      f.write("\n")


def main(argv: Optional[Sequence[str]] = None) -> int:
  ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  ap.add_argument("--out-dir", required=True, help="directory to write tracr-<name>/ into")
  ap.add_argument("--programs", default="",
                  help="comma-separated names (default: all default programs); known: "
                       + ",".join(p.name for p in PROGRAMS))
  ap.add_argument("--seed", type=int, default=SEED)
  args = ap.parse_args(argv)
  by_name = {p.name: p for p in PROGRAMS}
  if args.programs:
    names = [n.strip() for n in args.programs.split(",") if n.strip()]
    unknown = [n for n in names if n not in by_name]
    if unknown:
      ap.error(f"unknown program(s) {unknown}; known: {sorted(by_name)}")
  else:
    names = [p.name for p in PROGRAMS if p.default]
  np.random.seed(args.seed)
  print(f"{'program':<13} {'L':>2} {'H':>2} {'dk':>3} {'d':>3} {'mlp':>4} {'V':>2} "
        f"{'out':<11} {'pairs':>5} {'weights':>8} {'dir':>8}  max|np-tracr|  read")
  for n in names:
    r = export_program(by_name[n], args.out_dir, args.seed)
    print(f"{r['program']:<13} {r['L']:>2} {r['H']:>2} {r['dk']:>3} {r['d_model']:>3} "
          f"{r['d_mlp']:>4} {r['n_vocab']:>2} {r['output']:<11} {r['pairs']:>5} "
          f"{r['weights_bytes']:>8} {r['dir_bytes']:>8}  {r['max_diff']:.2e}      {r['read']}",
          flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
