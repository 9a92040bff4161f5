//! A patched run kept up to date as its hard mask is edited a few edges at a time: the same
//! values as [`crate::patched_logits`] (each destination reads the actual outputs of its kept
//! sources and the ablated outputs of the others), computed by recomputing only the nodes an
//! edit reaches.
//!
//! The run holds, under its current mask, every destination slot's input and every node's
//! output. Removing edge (u, v) adds `ablated_u − actual_u` to v's input (restoring it subtracts
//! that); a node whose input changed is recomputed alone (a head from the projections of its
//! three inputs, only the changed ones projected again; an MLP; the logits), and its change in
//! output is added to the inputs of the slots it still feeds — so an edit costs the nodes it
//! reaches through kept edges, few once the layers above are sparse (ACDC's order decides the top
//! layers first). Nodes of the last block and the logits are kept at each row's read position
//! alone (nothing else reads them); everything else at every position the batch computes, over
//! its cached prefix.

use std::collections::BTreeMap;

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use graph::{Dest, EdgeMatrix, Graph, Qkv, Source};
use transformer::{Batch, HeadInput, Transformer};

use crate::RecordedRun;
use crate::activations::at_positions;

/// An edit: an edge and whether it is to be kept.
pub type Edit = ((usize, usize), bool);

/// A patched run under a hard mask, updated edit by edit ([`IncrementalRun::trial`], then
/// [`IncrementalRun::commit`]).
pub struct IncrementalRun<B: Backend> {
    graph: Graph,
    batch: Batch<B>,
    mask: EdgeMatrix<bool>,
    /// Ablated outputs [n_fwd, rows or 1, pos, d_model], and at each row's read position.
    ablated: Tensor<B, 4>,
    ablated_read: Tensor<B, 4>,
    /// Each row's read position among the computed ones.
    readout: Vec<usize>,
    /// Per source: its output under the mask, [rows, pos, d_model] (pos 1 in the last block).
    outputs: Vec<Tensor<B, 3>>,
    /// Per source: its output is out of date (its inputs changed while it fed no kept edge, so
    /// nothing read it); recomputed when an edit keeps an edge from it again.
    stale: Vec<bool>,
    /// Per source: kept at each row's read position alone (the last block's nodes, and in a
    /// shrinking run every node whose kept edges lead only to read positions).
    narrow: Vec<bool>,
    /// Edits only remove edges ([`IncrementalRun::shrinking`]).
    shrinking: bool,
    /// Per destination slot: its input under the mask, [rows, pos, d_model].
    inputs: Vec<Compensated<B>>,
    /// Per head slot: the projection [rows, pos, d_head] of its input, once needed.
    projections: Vec<Option<Tensor<B, 3>>>,
    /// The vocabulary columns the logits are read at (None: all).
    tokens: Option<Vec<u32>>,
    logits: Tensor<B, 2>,
}

/// The result of edits tried on an [`IncrementalRun`], to read and then commit or drop.
pub struct Trial<B: Backend> {
    edits: Vec<Edit>,
    inputs: BTreeMap<usize, Compensated<B>>,
    projections: BTreeMap<usize, Tensor<B, 3>>,
    outputs: BTreeMap<usize, Tensor<B, 3>>,
    /// Sources whose inputs changed but which feed no kept edge: left out of date.
    stale: Vec<usize>,
    /// Logits at each row's read position under the edited mask, [rows, vocab].
    pub logits: Tensor<B, 2>,
}

impl<B: Backend> IncrementalRun<B> {
    /// The run of `batch` under the full graph, from its recorded clean run `run` (over the same
    /// batch), with `ablated` [n_fwd, rows or 1, pos, d_model] the ablation's node outputs at the
    /// batch's computed positions.
    pub fn new(graph: &Graph, batch: &Batch<B>, run: &RecordedRun<B>, ablated: Tensor<B, 4>) -> Self {
        let [n_fwd, rows, t, d] = run.nodes.dims();
        assert_eq!(n_fwd, graph.n_fwd(), "a run of the graph's model");
        let readout = batch.read_computed();
        let ablated_read = at_positions(ablated.clone(), &readout);
        let last = graph.shape().n_layers - 1;
        let read = |x: &Tensor<B, 3>| at_rows(x, &readout);
        let outputs = (0..n_fwd)
            .map(|u| {
                let out = run.nodes.clone().slice([u..u + 1, 0..rows, 0..t, 0..d]).squeeze_dim::<3>(0);
                if Self::node_in_last_block(graph, u) { read(&out) } else { out }
            })
            .collect();
        let last_query = read(&run.layer_inputs[last]);
        let inputs = (0..graph.n_bwd())
            .map(|v| match graph.dest_at(v).expect("a slot of the graph") {
                Dest::Head { layer, qkv: Qkv::Q, .. } if layer == last => last_query.clone(),
                Dest::Head { layer, .. } => run.layer_inputs[layer].clone(),
                Dest::Mlp { layer } if layer == last => read(&run.mlp_inputs[layer]),
                Dest::Mlp { layer } => run.mlp_inputs[layer].clone(),
                Dest::Logits => read(&run.final_input),
            })
            .map(Compensated::new)
            .collect();
        Self {
            graph: *graph,
            batch: batch.clone(),
            mask: graph.real_edge_mask(),
            ablated,
            ablated_read,
            readout,
            outputs,
            stale: vec![false; n_fwd],
            narrow: (0..n_fwd).map(|u| Self::node_in_last_block(graph, u)).collect(),
            shrinking: false,
            inputs,
            projections: vec![None; graph.n_bwd()],
            tokens: None,
            logits: run.logits.clone(),
        }
    }

    /// This run for edits that only remove edges (ACDC's): a node whose kept edges come to lead
    /// only to read positions (the logits, MLPs and queries that are themselves read there) is
    /// then computed at each row's read position alone, as the last block's are — an MLP chain
    /// into the logits costs a position per row instead of the suffix. Restoring an edge in such
    /// a run panics.
    pub fn shrinking(mut self) -> Self {
        self.shrinking = true;
        self.narrow_by_demand();
        self
    }

    /// In a shrinking run, narrows every node whose kept edges lead only to read positions:
    /// its output and the inputs it reads at its read position (its MLP input, its query input)
    /// gathered there once; its query projection dropped, to be projected there when needed.
    fn narrow_by_demand(&mut self) {
        let graph = self.graph;
        for u in (1..graph.n_fwd()).rev() {
            if self.narrow[u] {
                continue;
            }
            let needs_every_position = (0..graph.n_bwd()).any(|v| {
                graph.is_edge(u, v)
                    && self.mask[(u, v)]
                    && match graph.dest_at(v).expect("a slot of the graph") {
                        Dest::Head { qkv: Qkv::K | Qkv::V, .. } => true,
                        Dest::Head { qkv: Qkv::Q, .. } | Dest::Mlp { .. } => !self.narrow[graph.dest_node(v).expect("a slot of the graph")],
                        Dest::Logits => false,
                    }
            });
            if needs_every_position {
                continue;
            }
            let read = |x: &Tensor<B, 3>| at_rows(x, &self.readout);
            let slot = match graph.source_at(u).expect("a source of the graph") {
                Source::Head { layer, head } => graph.layer(layer).expect("a layer of the graph").q_bwd.start + head,
                Source::Mlp { layer } => graph.layer(layer).expect("a layer of the graph").mlp_bwd,
                Source::Input => unreachable!("the input node is skipped"),
            };
            self.outputs[u] = read(&self.outputs[u]);
            let input = &self.inputs[slot];
            self.inputs[slot] = Compensated { sum: read(&input.sum), lost: input.lost.as_ref().map(read) };
            self.projections[slot] = None;
            self.narrow[u] = true;
        }
    }

    /// This run with its logits read at `tokens`' columns alone, [rows, tokens] (the answers a
    /// logit difference reads): the unembedding of a large vocabulary is most of a trial's work.
    pub fn reading(mut self, tokens: Vec<u32>) -> Self {
        let index =
            Tensor::from_data(burn::tensor::TensorData::new(tokens.iter().map(|&t| t as i64).collect::<Vec<_>>(), [tokens.len()]), &self.logits.device());
        self.logits = self.logits.select(1, index);
        self.tokens = Some(tokens);
        self
    }

    /// The current mask.
    pub fn mask(&self) -> &EdgeMatrix<bool> {
        &self.mask
    }

    /// Logits at each row's read position under the current mask, [rows, vocab] (or [rows,
    /// tokens], [`IncrementalRun::reading`]).
    pub fn logits(&self) -> Tensor<B, 2> {
        self.logits.clone()
    }

    fn node_in_last_block(graph: &Graph, u: usize) -> bool {
        let last = graph.shape().n_layers - 1;
        matches!(graph.source_at(u), Some(Source::Head { layer, .. } | Source::Mlp { layer }) if layer == last)
    }

    /// Positions a full-width tensor of the run has.
    fn batch_positions(&self) -> usize {
        self.ablated.dims()[2]
    }

    /// Whether slot `v` is kept at the read positions alone: the query or MLP input of a narrow
    /// node, and the logits.
    fn slot_at_readout(&self, v: usize) -> bool {
        match self.graph.dest_at(v).expect("a slot of the graph") {
            Dest::Head { qkv: Qkv::K | Qkv::V, .. } => false,
            Dest::Head { qkv: Qkv::Q, .. } | Dest::Mlp { .. } => self.narrow[self.graph.dest_node(v).expect("a slot of the graph")],
            Dest::Logits => true,
        }
    }

    /// Source `u`'s tensor `x` (at its own positions) at slot `v`'s positions.
    fn at_slot(&self, x: Tensor<B, 3>, u: usize, v: usize) -> Tensor<B, 3> {
        if self.slot_at_readout(v) && !self.narrow[u] { at_rows(&x, &self.readout) } else { x }
    }

    /// Source `u`'s ablated output at slot `v`'s positions, [rows or 1, pos, d_model].
    fn ablated_at(&self, u: usize, v: usize) -> Tensor<B, 3> {
        let source = if self.slot_at_readout(v) { &self.ablated_read } else { &self.ablated };
        let [_, rows, t, d] = source.dims();
        source.clone().slice([u..u + 1, 0..rows, 0..t, 0..d]).squeeze_dim(0)
    }

    /// The logits under the current mask with `edits` applied, and what committing them changes.
    /// A node whose inputs change is recomputed only if it still feeds a kept edge.
    pub fn trial(&mut self, model: &Transformer<B>, edits: &[Edit]) -> Trial<B> {
        let graph = self.graph;
        let mut mask = self.mask.clone();
        let mut deltas: BTreeMap<usize, Tensor<B, 3>> = BTreeMap::new();
        let mut trial = Trial {
            edits: edits.to_vec(),
            inputs: BTreeMap::new(),
            projections: BTreeMap::new(),
            outputs: BTreeMap::new(),
            stale: Vec::new(),
            logits: self.logits.clone(),
        };
        for &((u, v), keep) in edits {
            assert!(graph.is_edge(u, v), "an edit of a real edge");
            assert!(!(keep && self.shrinking && !self.mask[(u, v)]), "a shrinking run only removes edges");
            if mask[(u, v)] == keep {
                continue;
            }
            mask[(u, v)] = keep;
            if keep && self.stale[u] && !trial.outputs.contains_key(&u) {
                let fresh = self.recompute(model, u, &mut trial);
                trial.outputs.insert(u, fresh);
            }
            let actual = trial.outputs.get(&u).unwrap_or(&self.outputs[u]).clone();
            let change = self.ablated_at(u, v) - self.at_slot(actual, u, v);
            add(&mut deltas, v, if keep { change.neg() } else { change });
        }
        let feeds = |u: usize| (0..graph.n_bwd()).any(|v| graph.is_edge(u, v) && mask[(u, v)]);
        for li in graph.layers() {
            let dirty: Vec<usize> = (0..graph.shape().n_heads)
                .filter(|&h| [li.q_bwd.start, li.k_bwd.start, li.v_bwd.start].iter().any(|s| deltas.contains_key(&(s + h))))
                .collect();
            for &h in &dirty {
                for v in [li.q_bwd.start + h, li.k_bwd.start + h, li.v_bwd.start + h] {
                    if let Some(delta) = deltas.get(&v) {
                        trial.inputs.insert(v, self.inputs[v].plus(delta.clone()));
                    }
                }
            }
            let (heads, unread): (Vec<usize>, Vec<usize>) = dirty.into_iter().partition(|&h| feeds(li.heads_fwd.start + h));
            trial.stale.extend(unread.into_iter().map(|h| li.heads_fwd.start + h));
            if !heads.is_empty() {
                let outputs = self.heads(model, li.layer, &heads, &mut trial);
                for (h, out) in heads.iter().zip(outputs) {
                    self.propagate(&mask, &mut deltas, &mut trial, li.heads_fwd.start + h, out);
                }
            }
            if let Some(delta) = deltas.get(&li.mlp_bwd) {
                let input = self.inputs[li.mlp_bwd].plus(delta.clone());
                let out = feeds(li.mlp_fwd).then(|| model.mlp_node(li.layer, input.sum.clone()));
                trial.inputs.insert(li.mlp_bwd, input);
                match out {
                    Some(out) => self.propagate(&mask, &mut deltas, &mut trial, li.mlp_fwd, out),
                    None => trial.stale.push(li.mlp_fwd),
                }
            }
        }
        let logits_slot = graph.n_bwd() - 1;
        if let Some(delta) = deltas.get(&logits_slot) {
            let input = self.inputs[logits_slot].plus(delta.clone());
            trial.logits = model.logits_of(input.sum.clone(), self.tokens.as_deref());
            trial.inputs.insert(logits_slot, input);
        }
        trial
    }

    /// Source `u`'s output from its current inputs (an out-of-date node about to be read again).
    fn recompute(&mut self, model: &Transformer<B>, u: usize, trial: &mut Trial<B>) -> Tensor<B, 3> {
        match self.graph.source_at(u).expect("a source of the graph") {
            Source::Head { layer, head } => self.heads(model, layer, &[head], trial).remove(0),
            Source::Mlp { layer } => {
                let slot = self.graph.layer(layer).expect("a layer of the graph").mlp_bwd;
                model.mlp_node(layer, self.inputs[slot].sum.clone())
            }
            Source::Input => unreachable!("the input node has no inputs to go out of date"),
        }
    }

    /// A recomputed node's new output `out`: its change reaches the inputs it still feeds under `mask`.
    fn propagate(&self, mask: &EdgeMatrix<bool>, deltas: &mut BTreeMap<usize, Tensor<B, 3>>, trial: &mut Trial<B>, u: usize, out: Tensor<B, 3>) {
        let before = trial.outputs.get(&u).unwrap_or(&self.outputs[u]).clone();
        let change = out.clone() - before;
        for v in (0..self.graph.n_bwd()).filter(|&v| self.graph.is_edge(u, v) && mask[(u, v)]) {
            add(deltas, v, self.at_slot(change.clone(), u, v));
        }
        trial.outputs.insert(u, out);
    }

    /// Heads `heads` of block `layer` recomputed from their inputs (the trial's where it changed
    /// them): each input projected again only if changed (or never projected), the run's own
    /// projections filled in as needed; outputs at the block's positions.
    fn heads(&mut self, model: &Transformer<B>, layer: usize, heads: &[usize], trial: &mut Trial<B>) -> Vec<Tensor<B, 3>> {
        let first = self.graph.layer(layer).expect("a layer of the graph").heads_fwd.start;
        let (narrow, wide): (Vec<usize>, Vec<usize>) = heads.iter().partition(|&&h| self.narrow[first + h]);
        let mut outputs: BTreeMap<usize, Tensor<B, 3>> = BTreeMap::new();
        for (group, at_readout) in [(narrow, true), (wide, false)] {
            if !group.is_empty() {
                let computed = self.head_group(model, layer, &group, at_readout, trial);
                outputs.extend(group.into_iter().zip(computed));
            }
        }
        heads.iter().map(|h| outputs.remove(h).expect("computed above")).collect()
    }

    /// [`IncrementalRun::heads`] for heads all at the read positions or all at every one.
    fn head_group(&mut self, model: &Transformer<B>, layer: usize, heads: &[usize], at_readout: bool, trial: &mut Trial<B>) -> Vec<Tensor<B, 3>> {
        let li = self.graph.layer(layer).expect("a layer of the graph");
        let qkv: Vec<Tensor<B, 4>> = [(li.q_bwd.start, HeadInput::Query), (li.k_bwd.start, HeadInput::Key), (li.v_bwd.start, HeadInput::Value)]
            .into_iter()
            .map(|(first, kind)| {
                let at = (at_readout && kind == HeadInput::Query).then_some(self.readout.as_slice());
                let slot = |h: usize| first + h;
                let missing: Vec<usize> =
                    heads.iter().copied().filter(|&h| trial.inputs.contains_key(&slot(h)) || self.projections[slot(h)].is_none()).collect();
                if !missing.is_empty() {
                    let inputs = missing.iter().map(|&h| trial.inputs.get(&slot(h)).unwrap_or(&self.inputs[slot(h)]).sum.clone()).collect();
                    let projected = model.head_projections(&self.batch, layer, kind, &missing, Tensor::stack(inputs, 0), at);
                    let [rows, _, t, dh] = projected.dims();
                    for (j, &h) in missing.iter().enumerate() {
                        let p = projected.clone().slice([0..rows, j..j + 1, 0..t, 0..dh]).squeeze_dim::<3>(1);
                        if trial.inputs.contains_key(&slot(h)) {
                            trial.projections.insert(slot(h), p);
                        } else {
                            self.projections[slot(h)] = Some(p);
                        }
                    }
                }
                let per_head: Vec<Tensor<B, 3>> =
                    heads.iter().map(|&h| trial.projections.get(&slot(h)).or(self.projections[slot(h)].as_ref()).expect("projected above").clone()).collect();
                let positions = if at.is_some() { 1 } else { self.batch_positions() };
                assert!(per_head.iter().all(|p| p.dims()[1] == positions), "a projection at the positions its head is computed at");
                Tensor::stack(per_head, 1)
            })
            .collect();
        let qkv: [Tensor<B, 4>; 3] = qkv.try_into().unwrap_or_else(|_| unreachable!("three inputs"));
        let at = at_readout.then_some(self.readout.as_slice());
        let outputs = model.heads_attend(&self.batch, layer, heads, qkv, at);
        let [_, rows, t, d] = outputs.dims();
        (0..heads.len()).map(|j| outputs.clone().slice([j..j + 1, 0..rows, 0..t, 0..d]).squeeze_dim(0)).collect()
    }

    /// Applies a trial of this run's current state: its edits, inputs, outputs and logits.
    pub fn commit(&mut self, trial: Trial<B>) {
        let Trial { edits, inputs, mut projections, outputs, stale, logits } = trial;
        for ((u, v), keep) in edits {
            self.mask[(u, v)] = keep;
        }
        for (v, input) in inputs {
            self.inputs[v] = input;
            // A changed head input was projected again; other slots have no projection.
            self.projections[v] = projections.remove(&v);
        }
        for (u, out) in outputs {
            self.outputs[u] = out;
            self.stale[u] = false;
        }
        for u in stale {
            self.stale[u] = true;
        }
        self.logits = logits;
        if self.shrinking {
            self.narrow_by_demand();
        }
    }
}

/// [rows, pos, d] at one position per row: [rows, 1, d].
fn at_rows<B: Backend>(x: &Tensor<B, 3>, positions: &[usize]) -> Tensor<B, 3> {
    at_positions(x.clone().unsqueeze(), positions).squeeze_dim(0)
}

/// A running sum with Kahan's compensation: a slot's input is its clean value plus every change
/// an edit made to it, and without compensation their rounding errors add up (they show where
/// most of an input's sources are ablated away and a norm rescales what is left).
#[derive(Debug, Clone)]
struct Compensated<B: Backend> {
    sum: Tensor<B, 3>,
    /// The low-order part lost so far (negated), None while nothing was.
    lost: Option<Tensor<B, 3>>,
}

impl<B: Backend> Compensated<B> {
    fn new(sum: Tensor<B, 3>) -> Self {
        Self { sum, lost: None }
    }

    /// This sum plus `x`.
    fn plus(&self, x: Tensor<B, 3>) -> Self {
        let y = match &self.lost {
            Some(lost) => x - lost.clone(),
            None => x,
        };
        let sum = self.sum.clone() + y.clone();
        let lost = (sum.clone() - self.sum.clone()) - y;
        Self { sum, lost: Some(lost) }
    }
}

/// Adds `x` to slot `v`'s change.
fn add<B: Backend>(deltas: &mut BTreeMap<usize, Tensor<B, 3>>, v: usize, x: Tensor<B, 3>) {
    let sum = match deltas.remove(&v) {
        Some(prev) => prev + x,
        None => x,
    };
    deltas.insert(v, sum);
}
