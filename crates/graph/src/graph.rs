use std::ops::Range;

use thiserror::Error;

use crate::matrix::EdgeMatrix;
use crate::names::EdgeName;

/// Layer and query-head counts: all the graph depends on, so one value sizes every index and name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GraphShape {
    /// Number of transformer blocks (L).
    pub n_layers: usize,
    /// Query heads per layer (H); grouped-query models are ungrouped, so every query head is a node.
    pub n_heads: usize,
}

/// Which input of a head an edge feeds, since each head reads three separate copies of the residual.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Qkv {
    /// The query input.
    Q,
    /// The key input.
    K,
    /// The value input.
    V,
}

impl Qkv {
    /// The three slots in index order, so loops over slots follow the backward layout.
    pub const ALL: [Self; 3] = [Self::Q, Self::K, Self::V];

    fn offset(self) -> usize {
        match self {
            Self::Q => 0,
            Self::K => 1,
            Self::V => 2,
        }
    }
}

/// A node that writes to the residual stream: the upstream end of an edge, with a forward index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// The token embedding (`input`).
    Input,
    /// One attention head's output (`a{layer}.h{head}`).
    Head {
        /// Layer of the head.
        layer: usize,
        /// Head within the layer.
        head: usize,
    },
    /// One MLP's output (`m{layer}`).
    Mlp {
        /// Layer of the MLP.
        layer: usize,
    },
}

/// An input slot that reads the residual stream: the downstream end of an edge, with a backward index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dest {
    /// One of a head's q/k/v inputs (`a{layer}.h{head}<q>` etc.).
    Head {
        /// Layer of the head.
        layer: usize,
        /// Head within the layer.
        head: usize,
        /// Which of the head's three inputs.
        qkv: Qkv,
    },
    /// An MLP's input (`m{layer}`).
    Mlp {
        /// Layer of the MLP.
        layer: usize,
    },
    /// The final residual stream read by the unembedding (`logits`).
    Logits,
}

/// A node as circuit files name it: every source plus `logits`, which has no output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Node {
    /// A node that writes to the residual stream.
    Source(Source),
    /// The logits node.
    Logits,
}

impl From<Source> for Node {
    fn from(source: Source) -> Self {
        Self::Source(source)
    }
}

/// Why a name, index or shape does not fit a graph; each message names the offending value.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GraphError {
    /// The text is not a well-formed name of the expected kind.
    #[error("malformed {kind} name {name:?}")]
    Malformed {
        /// What was being parsed ("edge", "node", ...).
        kind: &'static str,
        /// The text as given.
        name: String,
    },
    /// The name is well formed but refers to a layer or head the model does not have.
    #[error("{name:?} is outside a model of {n_layers} layers and {n_heads} heads")]
    OutOfShape {
        /// The node, slot or edge as given.
        name: String,
        /// Layers of the model.
        n_layers: usize,
        /// Heads of the model.
        n_heads: usize,
    },
    /// Both ends exist but the source is not upstream of the destination.
    #[error("\"{src}->{dst}\" is not an edge: {src} is not upstream of {dst}")]
    NotAnEdge {
        /// The would-be upstream end.
        src: Source,
        /// The would-be downstream end.
        dst: Dest,
    },
    /// A raw index past the end of its axis.
    #[error("{kind} index {index} is out of range 0..{len}")]
    IndexOutOfRange {
        /// Which axis ("forward", "backward" or "node").
        kind: &'static str,
        /// The index given.
        index: usize,
        /// Length of the axis.
        len: usize,
    },
    /// A dense matrix given with the wrong number of cells for the graph.
    #[error("an edge matrix of this graph has {expected} cells ([n_fwd, n_bwd]), not {found}")]
    MatrixSize {
        /// Cells given.
        found: usize,
        /// n_fwd × n_bwd.
        expected: usize,
    },
    /// The dense `[n_fwd, n_bwd]` layout would not fit in `usize`.
    #[error("a graph of {n_layers} layers and {n_heads} heads is too large to index")]
    TooLarge {
        /// Layers asked for.
        n_layers: usize,
        /// Heads asked for.
        n_heads: usize,
    },
}

/// Index ranges of one layer, grouped the way a patching engine walks through a layer.
///
/// A layer's heads are fed by forward indices `0..heads_fwd.start` and its MLP by `0..mlp_fwd`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LayerIndices {
    /// The layer these indices belong to.
    pub layer: usize,
    /// Backward indices of the layer's q slots, one per head.
    pub q_bwd: Range<usize>,
    /// Backward indices of the layer's k slots, one per head.
    pub k_bwd: Range<usize>,
    /// Backward indices of the layer's v slots, one per head.
    pub v_bwd: Range<usize>,
    /// Backward index of the layer's MLP input.
    pub mlp_bwd: usize,
    /// Forward indices of the layer's heads.
    pub heads_fwd: Range<usize>,
    /// Forward index of the layer's MLP.
    pub mlp_fwd: usize,
}

impl LayerIndices {
    /// The slot range for one of q/k/v, so code can loop over [`Qkv::ALL`] instead of naming fields.
    pub fn qkv_bwd(&self, qkv: Qkv) -> Range<usize> {
        match qkv {
            Qkv::Q => self.q_bwd.clone(),
            Qkv::K => self.k_bwd.clone(),
            Qkv::V => self.v_bwd.clone(),
        }
    }
}

/// The full computational graph of one model shape: counts, index layout, names and edges (spec §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Graph {
    shape: GraphShape,
    n_fwd: usize,
    n_bwd: usize,
    n_edges: usize,
}

impl Graph {
    /// Builds the graph of a shape, refusing shapes whose dense layout would overflow `usize`.
    pub fn new(shape: GraphShape) -> Result<Self, GraphError> {
        let GraphShape { n_layers: l, n_heads: h } = shape;
        let too_large = || GraphError::TooLarge { n_layers: l, n_heads: h };
        let n_fwd = h.checked_add(1).and_then(|x| x.checked_mul(l)).and_then(|x| x.checked_add(1)).ok_or_else(too_large)?;
        let n_bwd = h.checked_mul(3).and_then(|x| x.checked_add(1)).and_then(|x| x.checked_mul(l)).and_then(|x| x.checked_add(1)).ok_or_else(too_large)?;
        n_fwd.checked_mul(n_bwd).ok_or_else(too_large)?;
        // |E| = sum_l [3H u_l + (u_l + H)] + n_fwd with u_l = 1 + l(H+1), summed in closed form.
        // Every term is bounded by n_fwd * n_bwd, which was just checked.
        let sum_u = l + (h + 1) * (l * l.saturating_sub(1) / 2);
        let n_edges = (3 * h + 1) * sum_u + l * h + n_fwd;
        Ok(Self { shape, n_fwd, n_bwd, n_edges })
    }

    /// The shape the graph was built from, for code that needs L or H.
    pub fn shape(&self) -> GraphShape {
        self.shape
    }

    /// Number of sources (rows of dense score matrices): 1 + L(H+1).
    pub fn n_fwd(&self) -> usize {
        self.n_fwd
    }

    /// Number of destination slots (columns of dense score matrices): L(3H+1) + 1.
    pub fn n_bwd(&self) -> usize {
        self.n_bwd
    }

    /// Number of real edges, the denominator of circuit-size fractions.
    pub fn n_edges(&self) -> usize {
        self.n_edges
    }

    /// Number of named nodes in circuit files: every source plus `logits`.
    pub fn n_nodes(&self) -> usize {
        self.n_fwd + 1
    }

    /// Forward (row) index of a source, checked against the shape.
    pub fn fwd_index(&self, source: Source) -> Result<usize, GraphError> {
        let fits = match source {
            Source::Input => true,
            Source::Head { layer, head } => layer < self.shape.n_layers && head < self.shape.n_heads,
            Source::Mlp { layer } => layer < self.shape.n_layers,
        };
        if fits { Ok(self.fwd_of(source)) } else { Err(self.out_of_shape(source)) }
    }

    /// Backward (column) index of a destination slot, checked against the shape.
    pub fn bwd_index(&self, dest: Dest) -> Result<usize, GraphError> {
        let fits = match dest {
            Dest::Head { layer, head, .. } => layer < self.shape.n_layers && head < self.shape.n_heads,
            Dest::Mlp { layer } => layer < self.shape.n_layers,
            Dest::Logits => true,
        };
        if fits { Ok(self.bwd_of(dest)) } else { Err(self.out_of_shape(dest)) }
    }

    /// Index of a node in circuit node lists: its forward index, or `n_fwd` for `logits` (as in EAP-IG).
    pub fn node_index(&self, node: Node) -> Result<usize, GraphError> {
        match node {
            Node::Source(source) => self.fwd_index(source),
            Node::Logits => Ok(self.n_fwd),
        }
    }

    /// The source at a forward index, inverting [`Graph::fwd_index`].
    pub fn source_at(&self, fwd: usize) -> Option<Source> {
        (fwd < self.n_fwd).then(|| self.source_of(fwd))
    }

    /// The destination slot at a backward index, inverting [`Graph::bwd_index`].
    pub fn dest_at(&self, bwd: usize) -> Option<Dest> {
        (bwd < self.n_bwd).then(|| self.dest_of(bwd))
    }

    /// The node index a destination slot belongs to (a head's q, k and v slots all belong to the
    /// head's source index, an MLP's input to the MLP's; `logits` is node `n_fwd`); None past the
    /// last slot.
    pub fn dest_node(&self, bwd: usize) -> Option<usize> {
        self.dest_at(bwd).map(|dest| match dest {
            Dest::Head { layer, head, .. } => self.fwd_of(Source::Head { layer, head }),
            Dest::Mlp { layer } => self.fwd_of(Source::Mlp { layer }),
            Dest::Logits => self.n_fwd,
        })
    }

    /// A circuit's edge count at a budget given as a fraction of all edges: n = floor(fraction ×
    /// |E|), computed in f64 as MIB does.
    pub fn edge_budget(&self, fraction: f64) -> usize {
        (fraction * self.n_edges() as f64).floor() as usize
    }

    /// The node at a node index, inverting [`Graph::node_index`].
    pub fn node_at(&self, index: usize) -> Option<Node> {
        (index < self.n_nodes()).then(|| self.node_of(index))
    }

    /// How many sources feed a destination: exactly forward indices `0..prev(dest)` are its parents.
    pub fn prev(&self, dest: Dest) -> Result<usize, GraphError> {
        self.bwd_index(dest).map(|_| self.prev_of(dest))
    }

    /// Whether `(fwd, bwd)` is a real edge rather than a cell of the dense layout that is always empty.
    pub fn is_edge(&self, fwd: usize, bwd: usize) -> bool {
        bwd < self.n_bwd && fwd < self.prev_of(self.dest_of(bwd))
    }

    /// The index ranges of one layer, or `None` past the last layer.
    pub fn layer(&self, layer: usize) -> Option<LayerIndices> {
        (layer < self.shape.n_layers).then(|| self.layer_of(layer))
    }

    /// The index ranges of every layer in order, for engines that process the model layer by layer.
    pub fn layers(&self) -> impl Iterator<Item = LayerIndices> + use<> {
        let graph = *self;
        (0..self.shape.n_layers).map(move |layer| graph.layer_of(layer))
    }

    /// Every real edge as `(fwd, bwd)`, in the order EAP-IG builds (and serialises) them.
    ///
    /// Layer by layer: each upstream source into every head's q, k, v; then every upstream source,
    /// now including the layer's heads, into the MLP; finally every source into `logits`.
    pub fn edges(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let n_heads = self.shape.n_heads;
        let logits = self.n_bwd - 1;
        let into_layers = self.layers().flat_map(move |li| {
            let (q, k, v) = (li.q_bwd.start, li.k_bwd.start, li.v_bwd.start);
            let mlp_bwd = li.mlp_bwd;
            let into_heads =
                (0..li.heads_fwd.start).flat_map(move |fwd| (0..n_heads).flat_map(move |head| [q + head, k + head, v + head].map(|bwd| (fwd, bwd))));
            let into_mlp = (0..li.mlp_fwd).map(move |fwd| (fwd, mlp_bwd));
            into_heads.chain(into_mlp)
        });
        into_layers.chain((0..self.n_fwd).map(move |fwd| (fwd, logits)))
    }

    /// The mask of the real edges (true on every edge): the full circuit's keep-mask.
    pub fn real_edge_mask(&self) -> EdgeMatrix<bool> {
        let prevs: Vec<usize> = (0..self.n_bwd).map(|bwd| self.prev_of(self.dest_of(bwd))).collect();
        EdgeMatrix::from_fn(*self, |fwd, bwd| fwd < prevs[bwd])
    }

    /// The spec name of a real edge (`a9.h9->a11.h10<q>`), as used for circuit-file keys.
    pub fn edge_name(&self, fwd: usize, bwd: usize) -> Result<String, GraphError> {
        let (src, dst) = self.edge_ends(fwd, bwd)?;
        Ok(EdgeName(src, dst).to_string())
    }

    /// Parses an edge name into the `(fwd, bwd)` of a real edge of this graph.
    pub fn parse_edge_name(&self, name: &str) -> Result<(usize, usize), GraphError> {
        let malformed = || GraphError::Malformed { kind: "edge", name: name.to_owned() };
        let (src, dst) = name.split_once("->").ok_or_else(malformed)?;
        let src: Source = src.parse().map_err(|_| malformed())?;
        let dst: Dest = dst.parse().map_err(|_| malformed())?;
        let out_of_shape = |_| self.out_of_shape(name);
        let fwd = self.fwd_index(src).map_err(out_of_shape)?;
        let bwd = self.bwd_index(dst).map_err(out_of_shape)?;
        if fwd < self.prev_of(dst) { Ok((fwd, bwd)) } else { Err(GraphError::NotAnEdge { src, dst }) }
    }

    /// Parses a node name into its node index (see [`Graph::node_index`]).
    pub fn parse_node_name(&self, name: &str) -> Result<usize, GraphError> {
        let node: Node = name.parse()?;
        self.node_index(node).map_err(|_| self.out_of_shape(name))
    }

    /// Both ends of a real edge given by indices; errors say which index is wrong.
    pub(crate) fn edge_ends(&self, fwd: usize, bwd: usize) -> Result<(Source, Dest), GraphError> {
        let src = self.source_at(fwd).ok_or(GraphError::IndexOutOfRange { kind: "forward", index: fwd, len: self.n_fwd })?;
        let dst = self.dest_at(bwd).ok_or(GraphError::IndexOutOfRange { kind: "backward", index: bwd, len: self.n_bwd })?;
        if fwd < self.prev_of(dst) { Ok((src, dst)) } else { Err(GraphError::NotAnEdge { src, dst }) }
    }

    /// Decodes any node index below `n_nodes`.
    pub(crate) fn node_of(&self, index: usize) -> Node {
        if index < self.n_fwd { Node::Source(self.source_of(index)) } else { Node::Logits }
    }

    /// Decodes any forward index below `n_fwd`.
    pub(crate) fn source_of(&self, fwd: usize) -> Source {
        let h = self.shape.n_heads;
        match fwd.checked_sub(1) {
            None => Source::Input,
            Some(rest) => {
                let layer = rest / (h + 1);
                match rest % (h + 1) {
                    head if head < h => Source::Head { layer, head },
                    _ => Source::Mlp { layer },
                }
            }
        }
    }

    /// Decodes any backward index below `n_bwd`.
    pub(crate) fn dest_of(&self, bwd: usize) -> Dest {
        let h = self.shape.n_heads;
        if bwd >= self.n_bwd - 1 {
            return Dest::Logits;
        }
        let layer = bwd / (3 * h + 1);
        let within = bwd % (3 * h + 1);
        if within == 3 * h {
            return Dest::Mlp { layer };
        }
        let qkv = match within / h {
            0 => Qkv::Q,
            1 => Qkv::K,
            _ => Qkv::V,
        };
        Dest::Head { layer, head: within % h, qkv }
    }

    fn fwd_of(&self, source: Source) -> usize {
        let h = self.shape.n_heads;
        match source {
            Source::Input => 0,
            Source::Head { layer, head } => 1 + layer * (h + 1) + head,
            Source::Mlp { layer } => 1 + layer * (h + 1) + h,
        }
    }

    fn bwd_of(&self, dest: Dest) -> usize {
        let h = self.shape.n_heads;
        match dest {
            Dest::Head { layer, head, qkv } => layer * (3 * h + 1) + qkv.offset() * h + head,
            Dest::Mlp { layer } => layer * (3 * h + 1) + 3 * h,
            Dest::Logits => self.n_bwd - 1,
        }
    }

    fn prev_of(&self, dest: Dest) -> usize {
        let h = self.shape.n_heads;
        match dest {
            Dest::Head { layer, .. } => 1 + layer * (h + 1),
            Dest::Mlp { layer } => 1 + layer * (h + 1) + h,
            Dest::Logits => self.n_fwd,
        }
    }

    fn layer_of(&self, layer: usize) -> LayerIndices {
        let h = self.shape.n_heads;
        let bwd = layer * (3 * h + 1);
        let fwd = 1 + layer * (h + 1);
        LayerIndices {
            layer,
            q_bwd: bwd..bwd + h,
            k_bwd: bwd + h..bwd + 2 * h,
            v_bwd: bwd + 2 * h..bwd + 3 * h,
            mlp_bwd: bwd + 3 * h,
            heads_fwd: fwd..fwd + h,
            mlp_fwd: fwd + h,
        }
    }

    fn out_of_shape(&self, name: impl ToString) -> GraphError {
        GraphError::OutOfShape { name: name.to_string(), n_layers: self.shape.n_layers, n_heads: self.shape.n_heads }
    }
}
