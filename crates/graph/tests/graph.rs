//! Pins the graph of spec §1: counts, index layout, edge order, names.

use graph::{Dest, Graph, GraphError, GraphShape, Node, Qkv, Source};

fn shape(n_layers: usize, n_heads: usize) -> GraphShape {
    GraphShape { n_layers, n_heads }
}

fn gpt2() -> Graph {
    Graph::new(shape(12, 12)).unwrap()
}

/// The spec's count formula, term by term: |E| = sum_l [3H u_l + (u_l + H)] + 1 + L(H+1).
fn spec_edge_count(s: GraphShape) -> usize {
    let (l, h) = (s.n_layers, s.n_heads);
    let per_layer: usize = (0..l)
        .map(|layer| {
            let u = 1 + layer * (h + 1);
            3 * h * u + (u + h)
        })
        .sum();
    per_layer + 1 + l * (h + 1)
}

/// The spec's construction from a running list of upstream nodes, with no index arithmetic.
fn construct_edges(s: GraphShape, mut visit: impl FnMut(Source, Dest)) {
    let mut upstream = vec![Source::Input];
    for layer in 0..s.n_layers {
        for &src in &upstream {
            for head in 0..s.n_heads {
                for qkv in Qkv::ALL {
                    visit(src, Dest::Head { layer, head, qkv });
                }
            }
        }
        upstream.extend((0..s.n_heads).map(|head| Source::Head { layer, head }));
        for &src in &upstream {
            visit(src, Dest::Mlp { layer });
        }
        upstream.push(Source::Mlp { layer });
    }
    for &src in &upstream {
        visit(src, Dest::Logits);
    }
}

/// Counts, formula, construction and `edges()` all agree; returns the graph for further checks.
fn check_model(s: GraphShape, n_edges: usize, n_fwd: usize, n_bwd: usize) -> Graph {
    let g = Graph::new(s).unwrap();
    assert_eq!((g.n_edges(), g.n_fwd(), g.n_bwd()), (n_edges, n_fwd, n_bwd), "{s:?}");
    assert_eq!(spec_edge_count(s), n_edges, "spec formula, {s:?}");

    let mut enumerated = g.edges();
    let mut constructed = 0;
    construct_edges(s, |src, dst| {
        let pair = (g.fwd_index(src).unwrap(), g.bwd_index(dst).unwrap());
        assert_eq!(enumerated.next(), Some(pair), "edge {constructed} ({src}->{dst}), {s:?}");
        assert!(pair.0 < g.prev(dst).unwrap());
        constructed += 1;
    });
    assert_eq!(enumerated.next(), None, "edges() yields more than the construction, {s:?}");
    assert_eq!(constructed, n_edges, "{s:?}");

    // Every node feeds logits: the "+ 1 + L(H+1)" term is n_fwd.
    assert_eq!(g.prev(Dest::Logits).unwrap(), n_fwd);
    assert_eq!(g.edges().filter(|&(_, bwd)| bwd == n_bwd - 1).count(), n_fwd);
    g
}

#[test]
fn gpt2_small_counts() {
    check_model(shape(12, 12), 32_491, 157, 445);
}

#[test]
fn qwen25_05b_counts() {
    check_model(shape(24, 14), 179_749, 361, 1_033);
}

#[test]
fn gemma2_2b_counts() {
    check_model(shape(26, 8), 74_218, 235, 651);
}

#[test]
fn llama31_8b_counts() {
    check_model(shape(32, 32), 1_592_881, 1_057, 3_105);
}

#[test]
fn smollm2_135m_counts() {
    let s = shape(30, 9);
    // u_l = 1 + 10 l, sum over l < 30 = 30 + 10 * 435 = 4380;
    // |E| = 27 * 4380 + (4380 + 30 * 9) + 1 + 30 * 10 = 118260 + 4650 + 301.
    assert_eq!(spec_edge_count(s), 123_211);
    check_model(s, 123_211, 301, 841);
}

#[test]
fn gpt2_index_checks() {
    let g = gpt2();
    assert_eq!(g.fwd_index(Source::Input), Ok(0));
    assert_eq!(g.fwd_index(Source::Mlp { layer: 0 }), Ok(13));
    assert_eq!(g.fwd_index(Source::Head { layer: 1, head: 0 }), Ok(14));
    assert_eq!(g.bwd_index(Dest::Head { layer: 0, head: 5, qkv: Qkv::K }), Ok(17));
    assert_eq!(g.bwd_index(Dest::Mlp { layer: 0 }), Ok(36));
    assert_eq!(g.bwd_index(Dest::Logits), Ok(444));
    assert_eq!(g.node_index(Node::Logits), Ok(157));
    assert_eq!(g.prev(Dest::Head { layer: 0, head: 3, qkv: Qkv::V }), Ok(1));
    assert_eq!(g.prev(Dest::Mlp { layer: 0 }), Ok(13));
    assert_eq!(g.prev(Dest::Head { layer: 11, head: 0, qkv: Qkv::Q }), Ok(1 + 11 * 13));
    assert_eq!(g.prev(Dest::Logits), Ok(157));
}

#[test]
fn indices_invert() {
    for s in [shape(12, 12), shape(30, 9), shape(1, 1)] {
        let g = Graph::new(s).unwrap();
        for fwd in 0..g.n_fwd() {
            let src = g.source_at(fwd).unwrap();
            assert_eq!(g.fwd_index(src), Ok(fwd));
        }
        for bwd in 0..g.n_bwd() {
            let dst = g.dest_at(bwd).unwrap();
            assert_eq!(g.bwd_index(dst), Ok(bwd));
        }
        for index in 0..g.n_nodes() {
            assert_eq!(g.node_index(g.node_at(index).unwrap()), Ok(index));
        }
        assert_eq!(g.source_at(g.n_fwd()), None);
        assert_eq!(g.dest_at(g.n_bwd()), None);
        assert_eq!(g.node_at(g.n_nodes()), None);
    }
}

#[test]
fn out_of_shape_nodes_are_errors() {
    let g = gpt2();
    let err = g.fwd_index(Source::Head { layer: 0, head: 12 }).unwrap_err();
    assert_eq!(err.to_string(), "\"a0.h12\" is outside a model of 12 layers and 12 heads");
    assert!(g.fwd_index(Source::Mlp { layer: 12 }).is_err());
    assert!(g.bwd_index(Dest::Head { layer: 12, head: 0, qkv: Qkv::Q }).is_err());
    assert!(g.prev(Dest::Mlp { layer: 12 }).is_err());
}

#[test]
fn real_edge_mask_matches_edges_and_prev() {
    for s in [shape(12, 12), shape(30, 9)] {
        let g = Graph::new(s).unwrap();
        let mask = g.real_edge_mask();
        assert_eq!(mask.as_slice().len(), g.n_fwd() * g.n_bwd());
        assert_eq!(mask.as_slice().iter().filter(|&&real| real).count(), g.n_edges());
        assert_eq!(mask.count_edges(), g.n_edges());
        for (fwd, bwd) in g.edges() {
            assert!(mask[(fwd, bwd)]);
        }
        // Each column is exactly the first prev(dest) rows.
        for bwd in 0..g.n_bwd() {
            let prev = g.prev(g.dest_at(bwd).unwrap()).unwrap();
            for fwd in 0..g.n_fwd() {
                assert_eq!(mask[(fwd, bwd)], fwd < prev, "({fwd}, {bwd})");
                assert_eq!(mask.as_slice()[fwd * g.n_bwd() + bwd], fwd < prev, "row-major layout at ({fwd}, {bwd})");
                assert_eq!(g.is_edge(fwd, bwd), fwd < prev);
            }
        }
    }
}

#[test]
fn layer_indices() {
    let g = gpt2();
    let first = g.layer(0).unwrap();
    assert_eq!((first.q_bwd, first.k_bwd, first.v_bwd), (0..12, 12..24, 24..36));
    assert_eq!((first.mlp_bwd, first.heads_fwd, first.mlp_fwd), (36, 1..13, 13));
    let last = g.layer(11).unwrap();
    assert_eq!(last.qkv_bwd(Qkv::K), 11 * 37 + 12..11 * 37 + 24);
    assert_eq!((last.mlp_bwd, last.heads_fwd, last.mlp_fwd), (443, 144..156, 156));
    assert_eq!(g.layer(12), None);

    // Layers tile the axes: bwd 0..n_bwd-1 and fwd 1..n_fwd, in order, and agree with the enums.
    for s in [shape(12, 12), shape(24, 14), shape(30, 9)] {
        let g = Graph::new(s).unwrap();
        let (mut next_bwd, mut next_fwd) = (0, 1);
        for li in g.layers() {
            let layer = li.layer;
            for qkv in Qkv::ALL {
                let slots = li.qkv_bwd(qkv);
                assert_eq!(slots.start, next_bwd);
                for (head, bwd) in slots.clone().enumerate() {
                    assert_eq!(g.dest_at(bwd), Some(Dest::Head { layer, head, qkv }));
                }
                next_bwd = slots.end;
            }
            assert_eq!(li.mlp_bwd, next_bwd);
            assert_eq!(g.dest_at(li.mlp_bwd), Some(Dest::Mlp { layer }));
            assert_eq!(li.heads_fwd.start, next_fwd);
            assert_eq!(g.prev(Dest::Head { layer, head: 0, qkv: Qkv::Q }), Ok(li.heads_fwd.start));
            assert_eq!(g.prev(Dest::Mlp { layer }), Ok(li.mlp_fwd));
            assert_eq!(li.mlp_fwd, li.heads_fwd.end);
            assert_eq!(g.source_at(li.mlp_fwd), Some(Source::Mlp { layer }));
            next_bwd = li.mlp_bwd + 1;
            next_fwd = li.mlp_fwd + 1;
        }
        assert_eq!((next_bwd, next_fwd), (g.n_bwd() - 1, g.n_fwd()));
    }
}

#[test]
fn spec_name_examples() {
    let g = gpt2();
    let a9h9 = g.fwd_index(Source::Head { layer: 9, head: 9 }).unwrap();
    let a11h10q = g.bwd_index(Dest::Head { layer: 11, head: 10, qkv: Qkv::Q }).unwrap();
    assert_eq!(g.edge_name(a9h9, a11h10q).unwrap(), "a9.h9->a11.h10<q>");
    assert_eq!(g.edge_name(0, 36).unwrap(), "input->m0");
    assert_eq!(g.edge_name(156, 444).unwrap(), "m11->logits");
    assert_eq!(g.parse_edge_name("a9.h9->a11.h10<q>"), Ok((a9h9, a11h10q)));
    assert_eq!(g.parse_edge_name("input->m0"), Ok((0, 36)));
    assert_eq!(g.parse_edge_name("m11->logits"), Ok((156, 444)));
    assert_eq!(g.parse_edge_name("a0.h5->a0.h5<k>").unwrap_err().to_string(), "\"a0.h5->a0.h5<k>\" is not an edge: a0.h5 is not upstream of a0.h5<k>");

    let names: Vec<String> = (0..g.n_nodes()).map(|i| g.node_at(i).unwrap().to_string()).collect();
    assert_eq!(&names[..3], ["input", "a0.h0", "a0.h1"]);
    assert_eq!(&names[12..15], ["a0.h11", "m0", "a1.h0"]);
    assert_eq!(&names[156..], ["m11", "logits"]);
    let slots: Vec<String> = [0, 12, 24, 36, 444].map(|b| g.dest_at(b).unwrap().to_string()).to_vec();
    assert_eq!(slots, ["a0.h0<q>", "a0.h0<k>", "a0.h0<v>", "m0", "logits"]);
}

#[test]
fn every_name_round_trips() {
    for s in [shape(12, 12), shape(30, 9)] {
        let g = Graph::new(s).unwrap();
        for (fwd, bwd) in g.edges() {
            let name = g.edge_name(fwd, bwd).unwrap();
            assert_eq!(g.parse_edge_name(&name), Ok((fwd, bwd)), "{name}");
        }
        for index in 0..g.n_nodes() {
            let node = g.node_at(index).unwrap();
            let name = node.to_string();
            assert_eq!(name.parse::<Node>(), Ok(node));
            assert_eq!(g.parse_node_name(&name), Ok(index));
        }
        for fwd in 0..g.n_fwd() {
            let src = g.source_at(fwd).unwrap();
            assert_eq!(src.to_string().parse::<Source>(), Ok(src));
        }
        for bwd in 0..g.n_bwd() {
            let dst = g.dest_at(bwd).unwrap();
            assert_eq!(dst.to_string().parse::<Dest>(), Ok(dst));
        }
    }
}

#[test]
fn bad_edge_names_are_named_in_errors() {
    let g = gpt2();
    for bad in [
        "",
        "->",
        "input",
        "input->",
        "a0.h0->m0x",
        "a01.h0->m1",
        "a0.h00->m1",
        "a+1.h0->m1",
        "a0.h0->a1.h0",
        "a0.h0->a1.h0<x>",
        "a0.h0->a1.h0<q>x",
        "a0.h0<q>->m0",
        "logits->m0",
        "input->input",
        "input->m0->logits",
        "a0h0->m0",
        " input->m0",
    ] {
        let err = g.parse_edge_name(bad).unwrap_err();
        assert_eq!(err, GraphError::Malformed { kind: "edge", name: bad.to_owned() });
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    for (bad, message) in [
        ("a0.h12->m0", "\"a0.h12->m0\" is outside a model of 12 layers and 12 heads"),
        ("input->m12", "\"input->m12\" is outside a model of 12 layers and 12 heads"),
        ("m5->a2.h0<q>", "\"m5->a2.h0<q>\" is not an edge: m5 is not upstream of a2.h0<q>"),
        ("m0->m0", "\"m0->m0\" is not an edge: m0 is not upstream of m0"),
        ("a1.h0->m0", "\"a1.h0->m0\" is not an edge: a1.h0 is not upstream of m0"),
    ] {
        assert_eq!(g.parse_edge_name(bad).unwrap_err().to_string(), message);
    }
    for bad in ["", "m", "a0", "a0.h0<q>", "Logits", "m-1", "input "] {
        let err = g.parse_node_name(bad).unwrap_err();
        assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
    }
    assert!(g.parse_node_name("a12.h0").is_err());
}

#[test]
fn edge_name_rejects_non_edges() {
    let g = gpt2();
    assert!(matches!(g.edge_name(157, 0), Err(GraphError::IndexOutOfRange { kind: "forward", .. })));
    assert!(matches!(g.edge_name(0, 445), Err(GraphError::IndexOutOfRange { kind: "backward", .. })));
    assert!(matches!(g.edge_name(13, 0), Err(GraphError::NotAnEdge { .. })));
    assert!(!g.is_edge(0, 445));
    assert!(!g.is_edge(usize::MAX, 0));
}

#[test]
fn oversized_shapes_are_refused() {
    let err = Graph::new(shape(usize::MAX, 2)).unwrap_err();
    assert_eq!(err, GraphError::TooLarge { n_layers: usize::MAX, n_heads: 2 });
    assert!(Graph::new(shape(1 << 20, 1 << 20)).is_err());
}

#[test]
fn edge_matrix_checks_its_size_and_cells() {
    let g = Graph::new(shape(2, 3)).unwrap();
    let err = graph::EdgeMatrix::from_vec(g, vec![0.0f32; 5]).unwrap_err();
    assert_eq!(err, graph::GraphError::MatrixSize { found: 5, expected: g.n_fwd() * g.n_bwd() });
    let m = graph::EdgeMatrix::from_fn(g, |f, b| (f * 1000 + b) as f32);
    assert_eq!(m[(3, 7)], 3007.0);
    assert_eq!(m.row(3)[7], 3007.0);
    assert_eq!(m.get(g.n_fwd(), 0), None);
    assert_eq!(m.get(0, g.n_bwd()), None);
    let order: Vec<(usize, usize)> = m.edge_values().map(|(e, _)| e).collect();
    assert_eq!(order, g.edges().collect::<Vec<_>>());
    assert!(m.edge_values().all(|((f, b), &v)| v == (f * 1000 + b) as f32));
    let on = graph::EdgeMatrix::filled(g, false).with_edges(true);
    assert_eq!(on, g.real_edge_mask());
}

#[test]
#[should_panic(expected = "outside the")]
fn edge_matrix_index_outside_the_layout_panics() {
    let g = Graph::new(shape(2, 3)).unwrap();
    let m = graph::EdgeMatrix::filled(g, 0u8);
    let _ = m[(0, g.n_bwd())];
}
