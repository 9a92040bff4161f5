"""Self-check of the two peers (not used by `cargo xtask perf compare`; run it by hand).

    python selfcheck.py GGUF WORKDIR [--pairs N] [--check-only | --time-only]

1. TransformerLens' logits equal the Hugging Face model's (within 1e-3) on the job's prompts.
2. Both peers run a small IOI job (all four stages) and agree with each other: max |difference| and
   relative L2 difference of every score vector, max |difference| of every m.
3. Identities of the patched forward: the circuit with every real edge gives m = m_clean; the
   empty circuit gives m = m_empty (the counterfactual run's logit difference).
4. EAP against exact patching to first order: for a handful of edges, the change of mean m when
   only that edge is patched (a circuit of all other edges) against -EAP score.
With --time-only (or after the checks) it times a 16-pair job with ten random circuits.
"""

import argparse
import json
import os
import random
import subprocess
import sys

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import peer_common as pc  # noqa: E402

NAMES = [" Mary", " John", " Tom", " James", " Anna", " Paul", " Sarah", " David", " Kate", " Mark", " Lisa", " Peter"]
TEMPLATES = [
    "When{A} and{B} went to the store,{C} gave a drink to",
    "When{A} and{B} went to the park,{C} gave a ball to",
    "After{A} and{B} went to the house,{C} gave a book to",
    "While{A} and{B} were at the office,{C} handed a letter to",
]


def make_pairs(tok, n, seed=0):
    rng = random.Random(seed)
    single = [nm for nm in NAMES if len(tok.encode(nm, add_special_tokens=False)) == 1]
    bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
    by_len = {}
    for _ in range(20 * n):
        t = rng.choice(TEMPLATES)
        a, b = rng.sample(single, 2)
        clean = t.format(A=a, B=b, C=b)  # answer a (the indirect object)
        cf = t.format(A=a, B=b, C=a)  # second mention swapped: answer b
        ci = bos + tok.encode(clean, add_special_tokens=False)
        fi = bos + tok.encode(cf, add_special_tokens=False)
        if len(ci) != len(fi):
            continue
        pair = {
            "clean": ci,
            "counterfactual": fi,
            "correct": tok.encode(a, add_special_tokens=False)[0],
            "incorrect": tok.encode(b, add_special_tokens=False)[0],
        }
        by_len.setdefault(len(ci), []).append(pair)
    best = max(by_len.values(), key=len)
    return best[:n]


def write_job(path, gguf, pairs, circuits):
    """Writes a job with every stage for SmolLM2's shape (30 layers, 9 heads); returns its path."""
    job = {
        "gguf": gguf, "n_layers": 30, "n_heads": 9, "pairs": pairs, "ig_steps": 5,
        "stages": ["eap", "eap-ig-inputs", "gim", "evaluation"], "circuits": circuits,
    }
    with open(path, "w") as f:
        json.dump(job, f)
    return path


def run_peer(script, job_path, out_path):
    cmd = ["nice", "-n", "10", sys.executable, os.path.join(HERE, script), job_path, out_path]
    subprocess.run(cmd, check=True)
    with open(out_path) as f:
        return json.load(f)


def compare(a, b, label):
    a, b = torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64)
    mx = (a - b).abs().max().item()
    rel = ((a - b).norm() / b.norm().clamp_min(1e-30)).item()
    print(f"  {label:<26} max|diff| {mx:.3e}   rel L2 {rel:.3e}")
    return mx, rel


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("gguf")
    ap.add_argument("workdir")
    ap.add_argument("--pairs", type=int, default=4)
    ap.add_argument("--time-pairs", type=int, default=16)
    ap.add_argument("--check-only", action="store_true")
    ap.add_argument("--time-only", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    pc.setup_torch()
    torch.set_grad_enabled(False)

    from transformers import AutoTokenizer

    gguf = os.path.abspath(args.gguf)
    tok = AutoTokenizer.from_pretrained(os.path.dirname(gguf), gguf_file=os.path.basename(gguf))
    g = pc.GraphLayout(30, 9)
    real = g.real_edges()
    real_list = real.nonzero().tolist()
    print(f"graph: {len(real_list)} real edges, n_fwd {g.n_fwd}, n_bwd {g.n_bwd}")

    if not args.time_only:
        pairs = make_pairs(tok, args.pairs)
        print(f"check job: {len(pairs)} pairs of {len(pairs[0]['clean'])} tokens")
        # 1. TL logits == HF logits
        import transformerlens_peer as tlp

        hf = pc.load_hf_from_gguf(gguf)
        tl = tlp.build_hooked_transformer(hf)
        ids = torch.tensor([p["clean"] for p in pairs])
        d = (tl(ids) - hf(ids).logits).abs().max().item()
        print(f"1. TL vs HF logits: max|diff| {d:.3e} ({'ok' if d < 1e-3 else 'FAIL'})")
        del tl, hf

        # Circuits: all edges, none, and "all but one" for a handful of edges (exact patching).
        random.seed(1)
        probe = random.sample(real_list, 6)
        # plus a few edges likely to matter: into logits from late MLPs / heads
        probe += [[g.fwd_mlp(29), g.bwd_logits], [g.fwd_mlp(28), g.bwd_logits], [0, g.bwd_mlp(0)], [g.fwd_head(20, 3), g.bwd_logits]]
        circuits = [real_list, []]
        for e in probe:
            circuits.append([x for x in real_list if x != e])
        jp = write_job(os.path.join(args.workdir, "check-job.json"), gguf, pairs, circuits)
        res = {
            "tl": run_peer("transformerlens_peer.py", jp, os.path.join(args.workdir, "check-tl.json")),
            "hf": run_peer("hf_peer.py", jp, os.path.join(args.workdir, "check-hf.json")),
        }
        print("2. agreement (TL vs HF):")
        for st in ["eap", "eap-ig-inputs", "gim"]:
            compare(res["tl"]["stages"][st]["scores"], res["hf"]["stages"][st]["scores"], st + " scores")
        ev = {k: r["stages"]["evaluation"] for k, r in res.items()}
        compare(ev["tl"]["m_clean"], ev["hf"]["m_clean"], "m_clean")
        compare(ev["tl"]["m_empty"], ev["hf"]["m_empty"], "m_empty")
        compare(ev["tl"]["m"], ev["hf"]["m"], "m (all circuits)")
        for k in ["tl", "hf"]:
            e = ev[k]
            full = max(abs(x - y) for x, y in zip(e["m"][0], e["m_clean"]))
            empty = max(abs(x - y) for x, y in zip(e["m"][1], e["m_empty"]))
            print(f"3. [{k}] all edges: max|m - m_clean| {full:.2e}; no edges: max|m - m_empty| {empty:.2e}")
        print(f"   m_clean {sum(ev['tl']['m_clean']) / len(pairs):.4f}, m_empty {sum(ev['tl']['m_empty']) / len(pairs):.4f} (means)")
        print("4. EAP vs exact single-edge patching (score vs -(mean m change)):")
        for k in ["tl", "hf"]:
            sc = torch.tensor(res[k]["stages"]["eap"]["scores"]).view(g.n_fwd, g.n_bwd)
            gim = torch.tensor(res[k]["stages"]["gim"]["scores"]).view(g.n_fwd, g.n_bwd)
            ig = torch.tensor(res[k]["stages"]["eap-ig-inputs"]["scores"]).view(g.n_fwd, g.n_bwd)
            m_clean = torch.tensor(ev[k]["m_clean"])
            print(f"  [{k}] {'edge':>14} {'exact':>11} {'eap':>11} {'eap-ig':>11} {'gim':>11}")
            for e, m in zip(probe, ev[k]["m"][2:]):
                exact = -(torch.tensor(m) - m_clean).mean().item()
                print(f"  [{k}] {str(e):>14} {exact:11.4e} {sc[e[0], e[1]].item():11.4e} {ig[e[0], e[1]].item():11.4e} {gim[e[0], e[1]].item():11.4e}")

    if not args.check_only:
        pairs = make_pairs(tok, args.time_pairs, seed=7)
        print(f"timing job: {len(pairs)} pairs of {len(pairs[0]['clean'])} tokens")
        rng = random.Random(3)
        fractions = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
        circuits = [rng.sample(real_list, max(1, round(f * len(real_list)))) for f in fractions]
        jp = write_job(os.path.join(args.workdir, "time-job.json"), gguf, pairs, circuits)
        res = {}
        for k, script in [("hf", "hf_peer.py"), ("tl", "transformerlens_peer.py")]:
            res[k] = run_peer(script, jp, os.path.join(args.workdir, f"time-{k}.json"))
        print(f"{'stage':<16}{'transformerlens':>16}{'hf':>10}")
        print(f"{'load':<16}{res['tl']['load_seconds']:16.2f}{res['hf']['load_seconds']:10.2f}")
        for st in job["stages"]:
            print(f"{st:<16}{res['tl']['stages'][st]['seconds']:16.2f}{res['hf']['stages'][st]['seconds']:10.2f}")
        for st in ["eap", "eap-ig-inputs", "gim"]:
            compare(res["tl"]["stages"][st]["scores"], res["hf"]["stages"][st]["scores"], st + " scores")
        compare(res["tl"]["stages"]["evaluation"]["m"], res["hf"]["stages"]["evaluation"]["m"], "m (10 circuits)")
        print("threads:", res["tl"]["threads"], "| systems:", res["tl"]["system"], "|", res["hf"]["system"])


if __name__ == "__main__":
    main()
