"""Shared plumbing of the two PyTorch peers of `cargo xtask perf compare`.

Both peers (`transformerlens_peer.py`, `hf_peer.py`) read the same job file, use the same MIB
graph layout (mib-spec.md §1: dense [n_fwd, n_bwd] score matrices in EAP-IG's index order), load
the same GGUF weights through transformers' GGUF reader in float32, and write the same result
file. Only that plumbing lives here; each peer's attribution and evaluation code is its own, so the
two stay independent implementations of the numbers they are compared on.
"""

import json
import os
import platform
import sys
import tempfile
import time

import torch


# ----------------------------------------------------------------------------------------------
# The MIB graph of a model shape (mib-spec.md §1)
# ----------------------------------------------------------------------------------------------
class GraphLayout:
    """EAP-IG's dense index layout for L layers and H (query) heads.

    forward (sources):      input = 0, a{l}.h{h} = 1 + l(H+1) + h, m{l} = 1 + l(H+1) + H
    backward (destinations): a{l}.h{h}<q|k|v> = l(3H+1) + {0,1,2}H + h, m{l} = l(3H+1) + 3H,
                             logits = L(3H+1)
    The sources that can feed a destination are the first prev(v) forward indices.
    """

    def __init__(self, n_layers: int, n_heads: int):
        self.L, self.H = n_layers, n_heads
        self.n_fwd = 1 + n_layers * (n_heads + 1)
        self.n_bwd = n_layers * (3 * n_heads + 1) + 1

    def fwd_head(self, layer: int, head: int = 0) -> int:
        return 1 + layer * (self.H + 1) + head

    def fwd_mlp(self, layer: int) -> int:
        return 1 + layer * (self.H + 1) + self.H

    def bwd_qkv(self, layer: int, slot: int, head: int = 0) -> int:
        """slot 0 = q, 1 = k, 2 = v."""
        return layer * (3 * self.H + 1) + slot * self.H + head

    def bwd_mlp(self, layer: int) -> int:
        return layer * (3 * self.H + 1) + 3 * self.H

    @property
    def bwd_logits(self) -> int:
        return self.n_bwd - 1

    def prev_head(self, layer: int) -> int:
        return 1 + layer * (self.H + 1)

    def prev_mlp(self, layer: int) -> int:
        return 1 + layer * (self.H + 1) + self.H

    @property
    def prev_logits(self) -> int:
        return self.n_fwd

    def real_edges(self) -> torch.Tensor:
        """[n_fwd, n_bwd] bool: True where the source is upstream of the destination."""
        mask = torch.zeros(self.n_fwd, self.n_bwd, dtype=torch.bool)
        for layer in range(self.L):
            a = self.bwd_qkv(layer, 0)
            mask[: self.prev_head(layer), a : a + 3 * self.H] = True
            mask[: self.prev_mlp(layer), self.bwd_mlp(layer)] = True
        mask[:, self.bwd_logits] = True
        return mask

    def ablation_mask(self, kept_edges) -> torch.Tensor:
        """[n_fwd, n_bwd] float32: 1 on every real edge NOT in the circuit (those are patched)."""
        kept = torch.zeros(self.n_fwd, self.n_bwd, dtype=torch.bool)
        if len(kept_edges):
            idx = torch.tensor(kept_edges, dtype=torch.long).reshape(-1, 2)
            kept[idx[:, 0], idx[:, 1]] = True
        return (self.real_edges() & ~kept).to(torch.float32)


# ----------------------------------------------------------------------------------------------
# Job, model, result
# ----------------------------------------------------------------------------------------------
def setup_torch() -> int:
    """Threads: os.cpu_count(), or PEER_THREADS when set (e.g. to match circuitbench's count)."""
    threads = int(os.environ.get("PEER_THREADS") or os.cpu_count() or 1)
    torch.set_num_threads(threads)
    torch.set_default_dtype(torch.float32)
    return threads


def read_job(path: str) -> dict:
    with open(path) as f:
        job = json.load(f)
    lengths = {len(p["clean"]) for p in job["pairs"]} | {len(p["counterfactual"]) for p in job["pairs"]}
    if len(lengths) != 1:
        raise SystemExit(f"all prompts must have the same length (no padding); got lengths {sorted(lengths)}")
    return job


def job_tensors(job: dict):
    """(clean ids [N, P], counterfactual ids [N, P], correct [N], incorrect [N]) as int64 tensors."""
    pairs = job["pairs"]
    clean = torch.tensor([p["clean"] for p in pairs], dtype=torch.long)
    cf = torch.tensor([p["counterfactual"] for p in pairs], dtype=torch.long)
    correct = torch.tensor([p["correct"] for p in pairs], dtype=torch.long)
    incorrect = torch.tensor([p["incorrect"] for p in pairs], dtype=torch.long)
    return clean, cf, correct, incorrect


def load_hf_from_gguf(gguf_path: str):
    """The Hugging Face Llama model for a GGUF file, dequantised to float32, eval mode, frozen."""
    from transformers import AutoModelForCausalLM

    gguf_path = os.path.abspath(gguf_path)
    model = AutoModelForCausalLM.from_pretrained(
        os.path.dirname(gguf_path), gguf_file=os.path.basename(gguf_path), dtype=torch.float32
    )
    model.eval()
    model.requires_grad_(False)
    return model


def logit_diff(last_logits: torch.Tensor, correct: torch.Tensor, incorrect: torch.Tensor) -> torch.Tensor:
    """m per pair: logit(correct) - logit(incorrect), from logits [N, vocab] at the last position."""
    rows = torch.arange(last_logits.shape[0])
    return last_logits[rows, correct] - last_logits[rows, incorrect]


def versions(*modules: str) -> str:
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}"]
    from importlib.metadata import version

    for name in modules:
        parts.append(f"{name} {version(name)}")
    return ", ".join(parts)


class Stopwatch:
    """`with Stopwatch() as t: ...` then t.seconds (time.perf_counter)."""

    def __enter__(self):
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.start
        return False


def write_result(path: str, result: dict) -> None:
    """Write JSON atomically: a temporary file in the same folder, then rename."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".peer-", suffix=".json", dir=folder)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(result, f)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def scores_list(scores: torch.Tensor, real: torch.Tensor) -> list:
    """Row-major [n_fwd * n_bwd] floats with every non-edge entry exactly 0."""
    return torch.where(real, scores, torch.zeros_like(scores)).reshape(-1).tolist()


def open_job(job_path):
    """Sets up torch (threads, no autograd by default) and reads the job: returns the thread
    count, the job, its graph layout and its tensors (clean, counterfactual, correct, incorrect)."""
    threads = setup_torch()
    torch.set_grad_enabled(False)
    job = read_job(job_path)
    return threads, job, GraphLayout(job["n_layers"], job["n_heads"]), job_tensors(job)


def run_stages(tag, system, threads, load_seconds, job, handlers, real, out_path):
    """Runs the job's stages in order, each timed around its handler (stage name -> function of no
    arguments returning the stage's output), and writes the result file."""
    result = {"system": system, "threads": threads, "load_seconds": load_seconds, "stages": {}}
    for stage in job["stages"]:
        handler = handlers.get(stage)
        if handler is None:
            raise SystemExit(f"unknown stage {stage!r}")
        with Stopwatch() as t:
            out = handler()
        if "scores" in out:
            out["scores"] = scores_list(out["scores"], real)
        result["stages"][stage] = {"seconds": t.seconds, **out}
        print(f"[{tag}] {stage}: {t.seconds:.3f} s", file=sys.stderr)
    write_result(out_path, result)
