//! Circuits in EAP-IG's JSON format: exact output, round trips, and the validation of input files.

use graph::{Circuit, CircuitError, Dest, Graph, GraphShape, Qkv, Source};
use serde_json::{Value, json};

fn graph(n_layers: usize, n_heads: usize) -> Graph {
    Graph::new(GraphShape { n_layers, n_heads }).unwrap()
}

/// A 1-layer, 1-head model: 4 nodes, 8 edges, small enough to write out by hand.
fn tiny() -> Circuit {
    let g = graph(1, 1);
    let mut c = Circuit::new(g, 4);
    for (fwd, bwd, score, on) in [
        (0, 0, Some(0.5), true),
        (0, 1, Some(-0.25), false),
        (0, 2, None, false),
        (0, 3, Some(1.0), true),
        (1, 3, Some(0.1), false),
        (0, 4, Some(2.5e-8), false),
        (1, 4, Some(-3.0), false),
        (2, 4, Some(0.003), true),
    ] {
        c.set_score(fwd, bwd, score).unwrap();
        c.set_edge_in_graph(fwd, bwd, on).unwrap();
    }
    for (node, on) in [(0, true), (1, false), (2, true), (3, true)] {
        c.set_node_in_graph(node, on).unwrap();
    }
    c
}

const TINY_JSON: &str = concat!(
    r#"{"cfg":{"n_layers":1,"n_heads":1,"parallel_attn_mlp":false,"d_model":4},"#,
    r#""nodes":{"input":{"in_graph":true},"a0.h0":{"in_graph":false},"m0":{"in_graph":true},"#,
    r#""logits":{"in_graph":true}},"#,
    r#""edges":{"input->a0.h0<q>":{"score":0.5,"in_graph":true},"#,
    r#""input->a0.h0<k>":{"score":-0.25,"in_graph":false},"#,
    r#""input->a0.h0<v>":{"score":null,"in_graph":false},"#,
    r#""input->m0":{"score":1.0,"in_graph":true},"#,
    r#""a0.h0->m0":{"score":0.1,"in_graph":false},"#,
    r#""input->logits":{"score":2.5e-8,"in_graph":false},"#,
    r#""a0.h0->logits":{"score":-3.0,"in_graph":false},"#,
    r#""m0->logits":{"score":0.003,"in_graph":true}}}"#,
);

#[test]
fn writes_eap_ig_format_exactly() {
    let c = tiny();
    assert_eq!(c.to_json_string().unwrap(), TINY_JSON);
    let mut streamed = Vec::new();
    c.write_json(&mut streamed).unwrap();
    assert_eq!(String::from_utf8(streamed).unwrap(), TINY_JSON);
}

#[test]
fn reads_back_what_it_writes() {
    let c = tiny();
    assert_eq!(Circuit::from_json_str(TINY_JSON, c.graph()).unwrap(), c);
}

#[test]
fn gpt2_round_trip() {
    let g = graph(12, 12);
    let mut c = Circuit::new(g, 768);
    // Deterministic pseudo-random scores spanning many magnitudes, some unscored edges.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    for (fwd, bwd) in g.edges() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let mantissa = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        let exponent = ((state >> 8) % 24) as i32 - 16;
        let score = (!state.is_multiple_of(17)).then(|| mantissa * 10f32.powi(exponent));
        c.set_score(fwd, bwd, score).unwrap();
        c.set_edge_in_graph(fwd, bwd, state.is_multiple_of(3)).unwrap();
    }
    for node in (0..g.n_nodes()).step_by(3) {
        c.set_node_in_graph(node, true).unwrap();
    }
    let text = c.to_json_string().unwrap();
    let back = Circuit::from_json_str(&text, g).unwrap();
    assert_eq!(back, c);
    assert_eq!(back.d_model(), 768);
    assert_eq!(back.to_json_string().unwrap(), text);

    let value: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["edges"].as_object().unwrap().len(), 32_491);
    assert_eq!(value["nodes"].as_object().unwrap().len(), 158);
    assert_eq!(value["cfg"], json!({"n_layers": 12, "n_heads": 12, "parallel_attn_mlp": false, "d_model": 768}));
}

#[test]
fn reads_files_as_python_eap_ig_writes_them() {
    // Python's float(f32) digits, indentation, keys in another order, extra cfg and node keys.
    let text = r#"{
      "edges": {
        "input->a0.h0<q>": {"score": 0.10000000149011612, "in_graph": true},
        "input->a0.h0<k>": {"in_graph": false, "score": -2},
        "input->a0.h0<v>": {"score": 1e-3, "in_graph": false},
        "input->m0": {"score": 0.0, "in_graph": true},
        "a0.h0->m0": {"score": -0.0, "in_graph": false},
        "input->logits": {"score": 3, "in_graph": false},
        "a0.h0->logits": {"score": 0.5, "in_graph": false},
        "m0->logits": {"score": 0.25, "in_graph": true}
      },
      "nodes": {
        "logits": {"in_graph": true},
        "m0": {"in_graph": true, "score": 0.5},
        "a0.h0": {"in_graph": false},
        "input": {"in_graph": true, "neurons": [true, false]}
      },
      "cfg": {"n_layers": 1, "n_heads": 1, "parallel_attn_mlp": false, "d_model": 64, "d_head": 64}
    }"#;
    let c = Circuit::from_json_str(text, graph(1, 1)).unwrap();
    assert_eq!(c.d_model(), 64);
    assert_eq!(c.score(0, 0), Some(0.1));
    assert_eq!(c.score(0, 1), Some(-2.0));
    assert_eq!(c.score(0, 2), Some(0.001));
    assert_eq!(c.score(2, 4), Some(0.25));
    assert!(c.edge_in_graph(0, 0) && c.edge_in_graph(0, 3) && c.edge_in_graph(2, 4));
    assert!(!c.edge_in_graph(0, 1) && !c.edge_in_graph(1, 3));
    assert_eq!((0..4).map(|n| c.node_in_graph(n)).collect::<Vec<_>>(), [true, false, true, true]);
}

/// The tiny circuit's JSON, edited.
fn tiny_with(edit: impl FnOnce(&mut Value)) -> String {
    let mut value: Value = serde_json::from_str(TINY_JSON).unwrap();
    edit(&mut value);
    value.to_string()
}

fn read_tiny(text: &str) -> CircuitError {
    Circuit::from_json_str(text, graph(1, 1)).unwrap_err()
}

#[test]
fn unknown_names_are_named() {
    let text = tiny_with(|v| v["edges"]["m0->a0.h0<q>"] = json!({"score": 1.0, "in_graph": false}));
    let err = read_tiny(&text);
    assert!(matches!(err, CircuitError::UnknownEdge(_)), "{err:?}");
    assert!(err.to_string().contains("\"m0->a0.h0<q>\""), "{err}");

    let text = tiny_with(|v| v["edges"]["input->a0.h1<q>"] = json!({"score": 1.0, "in_graph": false}));
    assert!(read_tiny(&text).to_string().contains("\"input->a0.h1<q>\""));

    let text = tiny_with(|v| v["edges"]["input=>m0"] = json!({"score": 1.0, "in_graph": false}));
    assert!(read_tiny(&text).to_string().contains("\"input=>m0\""));

    // A NaN inside a name is text, not a score.
    let text = tiny_with(|v| v["nodes"]["aNaN"] = json!({"in_graph": true}));
    let err = read_tiny(&text);
    assert!(matches!(err, CircuitError::UnknownNode(_)), "{err:?}");
    assert!(err.to_string().contains("\"aNaN\""), "{err}");

    let text = tiny_with(|v| v["nodes"]["m1"] = json!({"in_graph": true}));
    assert!(read_tiny(&text).to_string().contains("\"m1\""));
}

#[test]
fn cfg_for_another_model_is_refused() {
    let gpt2 = graph(12, 12);
    let err = Circuit::from_json_str(TINY_JSON, gpt2).unwrap_err();
    assert_eq!(err.to_string(), "circuit cfg is for 1 layers and 1 heads, but the model has 12 layers and 12 heads");
    let text = tiny_with(|v| v["cfg"]["parallel_attn_mlp"] = json!(true));
    assert!(matches!(read_tiny(&text), CircuitError::ParallelAttnMlp));
    let text = tiny_with(|v| v["cfg"].as_object_mut().unwrap().remove("n_heads").map(drop).unwrap());
    assert!(matches!(read_tiny(&text), CircuitError::Json(_)));
}

#[test]
fn non_finite_scores_name_their_edge() {
    let placeholder = tiny_with(|v| v["edges"]["a0.h0->m0"]["score"] = json!(12345.5));
    for (literal, shown) in [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("1e300", "1e300")] {
        let text = placeholder.replace("12345.5", literal);
        let err = read_tiny(&text);
        assert_eq!(err.to_string(), format!("edge \"a0.h0->m0\" has score {shown}, not a finite f32"));
    }
    let text = tiny_with(|v| v["edges"]["a0.h0->m0"]["score"] = json!("0.5"));
    assert!(read_tiny(&text).to_string().contains("\"a0.h0->m0\""));
}

#[test]
fn missing_entries_are_refused() {
    let text = tiny_with(|v| v["edges"].as_object_mut().unwrap().remove("input->m0").map(drop).unwrap());
    assert_eq!(read_tiny(&text).to_string(), "circuit lacks 1 edges, e.g. \"input->m0\"");
    let text = tiny_with(|v| v["nodes"].as_object_mut().unwrap().remove("logits").map(drop).unwrap());
    assert_eq!(read_tiny(&text).to_string(), "circuit lacks 1 nodes, e.g. \"logits\"");
    let text = tiny_with(|v| v["edges"]["input->m0"].as_object_mut().unwrap().remove("in_graph").map(drop).unwrap());
    assert!(matches!(read_tiny(&text), CircuitError::Json(_)));
    assert!(matches!(read_tiny("{\"cfg\": "), CircuitError::Json(_)));
}

#[test]
fn setters_refuse_bad_input() {
    let g = graph(12, 12);
    let mut c = Circuit::new(g, 768);
    let a0h5 = g.fwd_index(Source::Head { layer: 0, head: 5 }).unwrap();
    let m0 = g.bwd_index(Dest::Mlp { layer: 0 }).unwrap();
    let err = c.set_score(a0h5, m0, Some(f32::NAN)).unwrap_err();
    assert_eq!(err.to_string(), "edge \"a0.h5->m0\" has score NaN, not a finite f32");
    assert!(c.set_score(a0h5, m0, Some(f32::NEG_INFINITY)).is_err());
    assert_eq!(c.score(a0h5, m0), None);

    let a0h0q = g.bwd_index(Dest::Head { layer: 0, head: 0, qkv: Qkv::Q }).unwrap();
    let err = c.set_score(a0h5, a0h0q, Some(1.0)).unwrap_err();
    assert_eq!(err.to_string(), "\"a0.h5->a0.h0<q>\" is not an edge: a0.h5 is not upstream of a0.h0<q>");
    assert!(c.set_edge_in_graph(0, g.n_bwd(), true).is_err());
    assert!(c.set_node_in_graph(g.n_nodes(), true).is_err());
    assert!(!c.edge_in_graph(a0h5, a0h0q));
    assert!(!c.node_in_graph(g.n_nodes()));

    c.set_edge_in_graph(a0h5, m0, true).unwrap();
    let mask = c.edge_mask();
    assert_eq!(mask.count_edges(), 1);
    assert!(mask[(a0h5, m0)]);
}
