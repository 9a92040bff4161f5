//! The three edge sets from a compiled model's weights and dataset.

use std::collections::BTreeMap;
use std::path::Path;

use burn::module::Param;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use graph::{Dest, EdgeMatrix, Graph, GraphShape, Source};
use tasks::tracr::{TracrExample, TracrTask};
use transformer::layers::{Linear, Mlp};
use transformer::tracr::TracrConfig;
use transformer::{Batch, CpuBackend, LocalModel, Transformer};

use crate::{GroundTruthError, TrueEdges};

/// A weight counts as nonzero above this magnitude (tracr's unused weights are exact zeros).
pub const WEIGHT_ZERO: f32 = 1e-6;

/// Two activations differ when they are more than this far apart.
pub const ACTIVATION_TOLERANCE: f32 = 1e-3;

/// Dataset rows per forward pass.
const BATCH_ROWS: usize = 256;

type Result<T> = std::result::Result<T, GroundTruthError>;

/// The residual labels that carry only bookkeeping: `one` and the BOS token's direction
/// (`tokens:` followed by the vocabulary entry whose id is `bos_token_id`).
pub fn bookkeeping_labels(config: &TracrConfig) -> Vec<String> {
    let bos = config.vocab.iter().find(|(_, id)| **id == config.bos_token_id).map(|(token, _)| token.as_str()).unwrap_or("BOS");
    vec!["one".to_owned(), format!("tokens:{bos}")]
}

/// A matrix's values with its shape.
struct Matrix {
    name: String,
    rows: usize,
    cols: usize,
    values: Vec<f32>,
}

impl Matrix {
    fn read<B: Backend>(name: String, param: &Param<Tensor<B, 2>>) -> Result<Self> {
        let tensor = param.val();
        let [rows, cols] = tensor.dims();
        let values = tensor.into_data().to_vec::<f32>().map_err(|e| GroundTruthError::Mismatch(format!("{name}: cannot read values: {e:?}")))?;
        Ok(Self { name, rows, cols, values })
    }

    fn check(&self, rows: usize, cols: usize) -> Result<()> {
        if (self.rows, self.cols) == (rows, cols) {
            Ok(())
        } else {
            Err(GroundTruthError::Mismatch(format!("{} is [{}, {}], expected [{rows}, {cols}]", self.name, self.rows, self.cols)))
        }
    }

    /// Columns with a nonzero entry among `rows`.
    fn nonzero_cols(&self, rows: std::ops::Range<usize>) -> Vec<usize> {
        (0..self.cols).filter(|&c| rows.clone().any(|r| self.values[r * self.cols + c].abs() > WEIGHT_ZERO)).collect()
    }

    /// Rows with a nonzero entry among `cols`.
    fn nonzero_rows(&self, cols: std::ops::Range<usize>) -> Vec<usize> {
        (0..self.rows).filter(|&r| cols.clone().any(|c| self.values[r * self.cols + c].abs() > WEIGHT_ZERO)).collect()
    }
}

fn linear<B: Backend>(name: String, linear: &Linear<B>) -> Result<Matrix> {
    Matrix::read(name, &linear.weight)
}

/// Refuses a nonzero bias on a writer's output map.
fn check_zero_bias<B: Backend>(name: &str, linear: &Linear<B>) -> Result<()> {
    let Some(bias) = &linear.bias else { return Ok(()) };
    let values = bias.val().into_data().to_vec::<f32>().map_err(|e| GroundTruthError::Mismatch(format!("{name}: cannot read values: {e:?}")))?;
    match values.iter().position(|b| b.abs() > WEIGHT_ZERO) {
        Some(i) => Err(GroundTruthError::Mismatch(format!("{name}[{i}] = {}: a writer's output bias is not supported (tracr compiles none)", values[i]))),
        None => Ok(()),
    }
}

fn union(mut a: Vec<usize>, b: Vec<usize>) -> Vec<usize> {
    a.extend(b);
    a.sort_unstable();
    a.dedup();
    a
}

/// Checks the model against the graph and config: layers, heads, residual width.
fn check_shapes<B: Backend>(model: &Transformer<B>, graph: Graph, config: &TracrConfig) -> Result<()> {
    let GraphShape { n_layers, n_heads } = graph.shape();
    let c = &model.config;
    let mismatch = |what: &str, model: usize, other: usize, of: &str| GroundTruthError::Mismatch(format!("{what}: the model has {model}, the {of} {other}"));
    if c.n_layers != n_layers || model.blocks.len() != n_layers {
        return Err(mismatch("layers", c.n_layers, n_layers, "graph"));
    }
    if c.n_heads != n_heads {
        return Err(mismatch("heads", c.n_heads, n_heads, "graph"));
    }
    if c.d_model != config.residual_labels.len() {
        return Err(mismatch("residual dimensions", c.d_model, config.residual_labels.len(), "config's residual_labels"));
    }
    if c.n_layers != config.n_layer || c.n_heads != config.n_head {
        return Err(GroundTruthError::Mismatch(format!(
            "the model has {} layers of {} heads, the config {} of {}",
            c.n_layers, c.n_heads, config.n_layer, config.n_head
        )));
    }
    Ok(())
}

/// The residual dimensions each writer writes, in forward-index order: `input` the nonzero
/// columns of the token and position embeddings, a head its rows of `o_proj`, an MLP `c_proj`.
pub fn writer_dims<B: Backend>(model: &Transformer<B>, graph: Graph) -> Result<Vec<Vec<usize>>> {
    let (d, dh) = (model.config.d_model, model.config.d_head);
    let mut dims = Vec::with_capacity(graph.n_fwd());
    for fwd in 0..graph.n_fwd() {
        let source = graph.source_at(fwd).ok_or_else(|| GroundTruthError::Mismatch(format!("forward index {fwd} outside the graph")))?;
        dims.push(match source {
            Source::Input => {
                let wte = Matrix::read("token embedding".into(), &model.token_embedding)?;
                wte.check(model.config.vocab_size, d)?;
                let mut input = wte.nonzero_cols(0..wte.rows);
                if let Some(wpe) = &model.position_embedding {
                    let wpe = Matrix::read("position embedding".into(), wpe)?;
                    wpe.check(wpe.rows, d)?;
                    input = union(input, wpe.nonzero_cols(0..wpe.rows));
                }
                input
            }
            Source::Head { layer, head } => {
                let attn = &model.blocks[layer].attn;
                check_zero_bias(&format!("blocks[{layer}].attn.o.bias"), &attn.o)?;
                let o = linear(format!("blocks[{layer}].attn.o"), &attn.o)?;
                o.check(model.config.n_heads * dh, d)?;
                o.nonzero_cols(head * dh..(head + 1) * dh)
            }
            Source::Mlp { layer } => {
                let down = model.blocks[layer].mlp.down();
                check_zero_bias(&format!("blocks[{layer}].mlp.fc_out.bias"), down)?;
                let fc_out = linear(format!("blocks[{layer}].mlp.fc_out"), down)?;
                fc_out.check(fc_out.rows, d)?;
                fc_out.nonzero_cols(0..fc_out.rows)
            }
        });
    }
    Ok(dims)
}

/// The residual dimensions each reader slot reads, in backward-index order: a head's q, k or v
/// the nonzero rows of its columns of that map, an MLP the nonzero rows of `c_fc`, `logits` the
/// nonzero rows of the unembedding.
pub fn reader_dims<B: Backend>(model: &Transformer<B>, graph: Graph) -> Result<Vec<Vec<usize>>> {
    let (d, dh, nh) = (model.config.d_model, model.config.d_head, model.config.n_heads);
    let mut dims = Vec::with_capacity(graph.n_bwd());
    for bwd in 0..graph.n_bwd() {
        let dest = graph.dest_at(bwd).ok_or_else(|| GroundTruthError::Mismatch(format!("backward index {bwd} outside the graph")))?;
        dims.push(match dest {
            Dest::Head { layer, head, qkv } => {
                let attn = &model.blocks[layer].attn;
                let (name, map) = match qkv {
                    graph::Qkv::Q => ("q", &attn.q),
                    graph::Qkv::K => ("k", &attn.k),
                    graph::Qkv::V => ("v", &attn.v),
                };
                let w = linear(format!("blocks[{layer}].attn.{name}"), map)?;
                w.check(d, nh * dh)?;
                w.nonzero_rows(head * dh..(head + 1) * dh)
            }
            Dest::Mlp { layer } => {
                let Mlp::Relu(mlp) = &model.blocks[layer].mlp else {
                    return Err(GroundTruthError::Mismatch(format!("block {layer}'s MLP is not a ReLU MLP: not a tracr model")));
                };
                let fc_in = linear(format!("blocks[{layer}].mlp.fc_in"), &mlp.fc_in)?;
                fc_in.check(d, fc_in.cols)?;
                fc_in.nonzero_rows(0..fc_in.cols)
            }
            Dest::Logits => {
                let Some(unembedding) = &model.unembedding else {
                    return Err(GroundTruthError::Mismatch("the model has no unembedding: not a tracr model".into()));
                };
                let u = Matrix::read("unembedding".into(), unembedding)?;
                u.check(d, u.cols)?;
                u.nonzero_rows(0..u.cols)
            }
        });
    }
    Ok(dims)
}

/// The largest |clean − corrupt| of each writer's output in each residual dimension over every
/// dataset pair and every position but BOS (0) and padding: `[n_fwd][d_model]`.
pub fn writer_differences<B: Backend>(model: &Transformer<B>, graph: Graph, examples: &[TracrExample]) -> Result<Vec<Vec<f32>>> {
    let d = model.config.d_model;
    let n_fwd = graph.n_fwd();
    let device = model.token_embedding.val().device();
    let mut worst = vec![vec![0f32; d]; n_fwd];
    for (chunk_index, chunk) in examples.chunks(BATCH_ROWS).enumerate() {
        if let Some((i, e)) = chunk.iter().enumerate().find(|(_, e)| e.clean.len() != e.corrupt.len()) {
            return Err(GroundTruthError::Mismatch(format!(
                "example {}: clean has {} tokens, corrupt {}",
                chunk_index * BATCH_ROWS + i,
                e.clean.len(),
                e.corrupt.len()
            )));
        }
        let clean: Vec<Vec<u32>> = chunk.iter().map(|e| e.clean.clone()).collect();
        let corrupt: Vec<Vec<u32>> = chunk.iter().map(|e| e.corrupt.clone()).collect();
        let record = |seqs: &[Vec<u32>]| -> Result<(Vec<f32>, [usize; 4])> {
            let batch = Batch::<B>::new(seqs, &model.config, &device)?;
            let (_, nodes) = patching::record_nodes(model, &batch);
            let dims = nodes.dims();
            let values = nodes.into_data().to_vec::<f32>().map_err(|e| GroundTruthError::Mismatch(format!("node outputs: {e:?}")))?;
            Ok((values, dims))
        };
        let (a, dims) = record(&clean)?;
        let (b, _) = record(&corrupt)?;
        let [k, rows, len, dd] = dims;
        if k != n_fwd || rows != chunk.len() || dd != d {
            return Err(GroundTruthError::Mismatch(format!("recorded nodes are {dims:?}, expected [{n_fwd}, {}, _, {d}]", chunk.len())));
        }
        for (fwd, worst) in worst.iter_mut().enumerate() {
            for (row, example) in chunk.iter().enumerate() {
                for pos in 1..example.clean.len().min(len) {
                    let at = ((fwd * rows + row) * len + pos) * d;
                    for (dim, w) in worst.iter_mut().enumerate() {
                        let diff = (a[at + dim] - b[at + dim]).abs();
                        // NaN compares false, so a non-finite output would vanish: count it as a difference.
                        *w = if diff.is_nan() { f32::INFINITY } else { w.max(diff) };
                    }
                }
            }
        }
    }
    Ok(worst)
}

/// The candidate edges that lie on some `input -> … -> logits` path of candidates: an edge is
/// kept when its writer is reached from `input` and its reader's node reaches `logits`.
pub fn close_paths(graph: Graph, candidates: &EdgeMatrix<bool>) -> EdgeMatrix<bool> {
    let (n_fwd, n_bwd) = (graph.n_fwd(), graph.n_bwd());
    let on = |fwd: usize, bwd: usize| graph.is_edge(fwd, bwd) && candidates.get(fwd, bwd).copied().unwrap_or(false);
    // Node of each reader slot: a head's or MLP's forward index, n_fwd for logits.
    let node: Vec<usize> = (0..n_bwd).map(|bwd| graph.dest_node(bwd).unwrap_or(n_fwd)).collect();
    // Edges go from lower forward indices to higher nodes, so one sweep each way settles reachability.
    let mut from_input = vec![false; n_fwd];
    from_input[0] = true;
    for target in 1..n_fwd {
        from_input[target] = (0..n_bwd).filter(|&bwd| node[bwd] == target).any(|bwd| (0..n_fwd).any(|w| from_input[w] && on(w, bwd)));
    }
    let mut to_logits = vec![false; n_fwd + 1];
    to_logits[n_fwd] = true;
    for writer in (0..n_fwd).rev() {
        to_logits[writer] = (0..n_bwd).any(|bwd| on(writer, bwd) && to_logits[node[bwd]]);
    }
    EdgeMatrix::from_fn(graph, |fwd, bwd| on(fwd, bwd) && from_input[fwd] && to_logits[node[bwd]])
}

impl TrueEdges {
    /// Computes the three sets of a compiled model from its weights and its dataset's pairs.
    pub fn compute<B: Backend>(model: &Transformer<B>, graph: Graph, config: &TracrConfig, examples: &[TracrExample]) -> Result<Self> {
        check_shapes(model, graph, config)?;
        if examples.is_empty() {
            return Err(GroundTruthError::Mismatch("no dataset pair: the patching set needs clean / corrupt inputs".into()));
        }
        let writers = writer_dims(model, graph)?;
        let readers = reader_dims(model, graph)?;
        let shared_dims =
            |fwd: usize, bwd: usize| -> Vec<usize> { writers[fwd].iter().copied().filter(|dim| readers[bwd].binary_search(dim).is_ok()).collect() };
        let candidates = EdgeMatrix::from_fn(graph, |fwd, bwd| graph.is_edge(fwd, bwd) && !shared_dims(fwd, bwd).is_empty());
        let structural = close_paths(graph, &candidates);

        let differences = writer_differences(model, graph, examples)?;
        let differs = EdgeMatrix::from_fn(graph, |fwd, bwd| {
            structural[(fwd, bwd)] && shared_dims(fwd, bwd).iter().any(|&dim| differences[fwd][dim] > ACTIVATION_TOLERANCE)
        });
        let patching = close_paths(graph, &differs);

        let bookkeeping = bookkeeping_labels(config);
        let label = |dim: usize| config.residual_labels[dim].clone();
        let mut shared = BTreeMap::new();
        for ((fwd, bwd), on) in structural.edge_values() {
            if *on {
                shared.insert((fwd, bwd), shared_dims(fwd, bwd).into_iter().map(label).collect::<Vec<String>>());
            }
        }
        let plumbing = EdgeMatrix::from_fn(graph, |fwd, bwd| shared.get(&(fwd, bwd)).is_some_and(|labels| labels.iter().all(|l| bookkeeping.contains(l))));
        Ok(Self { program: config.program.clone(), graph, structural, patching, plumbing, shared })
    }
}

/// Computes the true edges of the compiled model in `dir` (its `config.json`, weights, `task.json`
/// and `dataset.jsonl`) on the CPU.
pub fn compute_dir(dir: &Path) -> Result<TrueEdges> {
    let config = TracrConfig::read(&dir.join("config.json"))?;
    let model = LocalModel::Dir(dir.to_path_buf()).load::<CpuBackend>(&Default::default())?.model;
    let task = TracrTask::load(dir)?;
    let graph = Graph::new(GraphShape { n_layers: config.n_layer, n_heads: config.n_head })?;
    TrueEdges::compute(&model, graph, &config, &task.examples)
}
