//! The incremental run equals a full patched pass under every mask it is edited to: random
//! sequences of removals and restorations (several edges at a time, trials dropped and
//! committed) on GPT-2- and Llama-shaped tiny models, suffix and full positions, counterfactual
//! and mean ablation.

use burn::tensor::{Tensor, TensorData};
use graph::{EdgeMatrix, Graph, GraphShape};
use patching::{Ablation, IncrementalRun, PairBatches, Positions, RecordedRun, patched_logits, record_run};
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use transformer::{Batch, CpuBackend, LocalModel, Transformer};

type B = CpuBackend;

fn load(name: &str) -> (Transformer<B>, Graph) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../transformer/tests/fixtures").join(name);
    let model = LocalModel::Dir(dir).load::<B>(&Default::default()).unwrap().model;
    let graph = Graph::new(GraphShape { n_layers: model.config.n_layers, n_heads: model.config.n_heads }).unwrap();
    (model, graph)
}

/// Five pairs of uneven lengths, differing from position 2, 3 or 5 on.
fn prompts(vocab: u32) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    (0..5u32)
        .map(|i| {
            let len = 7 + (i as usize % 3);
            let clean: Vec<u32> = (0..len as u32).map(|p| (3 + 11 * i + 13 * p) % vocab).collect();
            let mut counterfactual = clean.clone();
            let from = [2, 3, 5][i as usize % 3];
            for (p, t) in counterfactual.iter_mut().enumerate().skip(from) {
                *t = (*t + 7 + p as u32) % vocab;
            }
            (clean, counterfactual)
        })
        .unzip()
}

/// The largest difference, relative to the reference's largest logit (at least 1).
fn difference(ours: Tensor<B, 2>, reference: Tensor<B, 2>) -> f32 {
    let scale = reference.clone().abs().max().into_scalar().max(1.0);
    (ours - reference).abs().max().into_scalar() / scale
}

/// A tiny model with its pairs' clean batch, ablated outputs and recorded clean run.
struct Fixture {
    model: Transformer<B>,
    graph: Graph,
    clean: Batch<B>,
    ablated: Tensor<B, 4>,
    run: RecordedRun<B>,
}

impl Fixture {
    fn new(name: &str, ablation: &Ablation<B>, positions: Positions) -> Self {
        let (model, graph) = load(name);
        let (clean, counterfactual) = prompts(model.config.vocab_size as u32);
        let reads: Vec<usize> = clean.iter().map(|c| c.len() - 1).collect();
        let batches = PairBatches::new(&model, &clean, &counterfactual, &reads, ablation, positions).unwrap();
        let ablated = ablation.ablated_nodes(&model, &batches.counterfactual).unwrap();
        let run = record_run(&model, &batches.clean);
        Self { model, graph, clean: batches.clean, ablated, run }
    }

    fn incremental(&self) -> IncrementalRun<B> {
        IncrementalRun::new(&self.graph, &self.clean, &self.run, self.ablated.clone())
    }

    /// The full patched pass's logits under `mask`.
    fn full(&self, mask: &EdgeMatrix<bool>) -> Tensor<B, 2> {
        patched_logits(&self.model, &self.graph, &self.clean, self.ablated.clone(), &[mask])
    }
}

#[test]
fn edits_give_the_full_patched_pass() {
    for name in ["gpt2-tiny", "llama-tiny"] {
        // Zero ablation ablates most of an input away and the norm rescales what is left, so the
        // two computations' roundings (both sums of many node outputs) differ more there.
        for (ablation, positions, tolerance) in
            [(Ablation::Counterfactual, Positions::Suffix, 2e-6), (Ablation::Counterfactual, Positions::Full, 2e-6), (Ablation::Zero, Positions::Suffix, 5e-5)]
        {
            let fixture = Fixture::new(name, &ablation, positions);
            let (model, graph) = (&fixture.model, fixture.graph);
            let mut incremental = fixture.incremental();
            // The same run reading three vocabulary columns alone, as a logit difference does.
            let mut narrow = fixture.incremental().reading(vec![1, 4, 9]);
            let columns = |x: Tensor<B, 2>| x.select(1, Tensor::from_data(TensorData::new(vec![1i64, 4, 9], [3]), &Default::default()));
            let full = |mask: &EdgeMatrix<bool>| fixture.full(mask);
            assert!(difference(incremental.logits(), full(&graph.real_edge_mask())) < 1e-6);
            let edges: Vec<(usize, usize)> = graph.edges().collect();
            let mut rng = ChaCha8Rng::seed_from_u64(7);
            let mut expected = graph.real_edge_mask();
            for step in 0..120 {
                // Mostly removals, some restorations, one to four edges at a time.
                let edits: Vec<((usize, usize), bool)> =
                    (0..rng.random_range(1..=4)).map(|_| (*edges.choose(&mut rng).unwrap(), rng.random_bool(0.25))).collect();
                let mut mask = expected.clone();
                for &(e, keep) in &edits {
                    mask[e] = keep;
                }
                let trial = incremental.trial(model, &edits);
                let tried = difference(trial.logits.clone(), full(&mask));
                assert!(tried < tolerance, "{name} {ablation:?} {positions:?} step {step}: {tried}");
                let narrow_trial = narrow.trial(model, &edits);
                assert!(difference(narrow_trial.logits.clone(), columns(trial.logits.clone())) < 1e-6, "{name}: the columns read alone");
                if step % 3 != 2 {
                    incremental.commit(trial);
                    narrow.commit(narrow_trial);
                    expected = mask;
                }
                assert_eq!(incremental.mask(), &expected);
                assert!(difference(incremental.logits(), full(&expected)) < tolerance);
            }
            let kept = expected.edge_values().filter(|(_, k)| **k).count();
            assert!(kept < graph.n_edges() / 2, "{name}: the edits reached a sparse mask ({kept} of {} kept)", graph.n_edges());
        }
    }
}

/// A node cut off from everything it feeds is left out of date while its inputs change, and
/// recomputed when an edge from it is kept again.
#[test]
fn a_node_feeding_nothing_is_brought_up_to_date_when_read_again() {
    for name in ["gpt2-tiny", "llama-tiny"] {
        let fixture = Fixture::new(name, &Ablation::Counterfactual, Positions::Suffix);
        let (model, graph) = (&fixture.model, fixture.graph);
        let mut incremental = fixture.incremental();
        let head = graph.layer(0).unwrap().heads_fwd.start; // a0.h0
        let outgoing: Vec<(usize, usize)> = graph.edges().filter(|&(u, _)| u == head).collect();
        let incoming: Vec<(usize, usize)> = graph.edges().filter(|&(_, v)| graph.dest_node(v) == Some(head)).collect();
        let mut mask = graph.real_edge_mask();
        let mut apply = |edits: Vec<((usize, usize), bool)>, mask: &mut EdgeMatrix<bool>| {
            for &(e, keep) in &edits {
                mask[e] = keep;
            }
            let trial = incremental.trial(model, &edits);
            incremental.commit(trial);
            difference(incremental.logits(), fixture.full(mask))
        };
        assert!(apply(outgoing.iter().map(|&e| (e, false)).collect(), &mut mask) < 2e-6);
        // Its inputs change while it feeds nothing, then one of its edges is kept again.
        assert!(apply(incoming.iter().step_by(2).map(|&e| (e, false)).collect(), &mut mask) < 2e-6);
        let restored = *outgoing.last().unwrap();
        assert!(apply(vec![(restored, true)], &mut mask) < 2e-6, "{name}: restoring {}", graph.edge_name(restored.0, restored.1).unwrap());
    }
}

/// A shrinking run (removals only, nodes narrowed to the read positions as their kept edges
/// allow) equals the full patched pass all the way down to the empty circuit.
#[test]
fn a_shrinking_run_equals_the_full_pass_as_edges_go() {
    for name in ["gpt2-tiny", "llama-tiny"] {
        let fixture = Fixture::new(name, &Ablation::Counterfactual, Positions::Suffix);
        let (model, graph) = (&fixture.model, fixture.graph);
        let mut shrinking = fixture.incremental().shrinking();
        let mut edges: Vec<(usize, usize)> = graph.edges().collect();
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        edges.shuffle(&mut rng);
        let mut mask = graph.real_edge_mask();
        // Twice over the edges: the first time a quarter of the trials dropped, the second time
        // every edge still kept removed, down to the empty circuit.
        for pass in 0..2 {
            for (step, chunk) in edges.chunks(3).enumerate() {
                let edits: Vec<((usize, usize), bool)> = chunk.iter().filter(|&&e| mask[e]).map(|&e| (e, false)).collect();
                if edits.is_empty() {
                    continue;
                }
                let trial = shrinking.trial(model, &edits);
                let mut tried = mask.clone();
                for &(e, _) in &edits {
                    tried[e] = false;
                }
                assert!(difference(trial.logits.clone(), fixture.full(&tried)) < 2e-6, "{name} pass {pass} step {step}");
                if pass == 1 || step % 4 != 3 {
                    shrinking.commit(trial);
                    mask = tried;
                }
            }
        }
        assert!(mask.edge_values().all(|(_, k)| !*k));
    }
}
