//! SVG plots written as text (no plotting or Graphviz dependency): a faithfulness curve per model
//! and task with one line per method and its bootstrap band, and each method's top circuit as a
//! node-link diagram on a layer axis.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::Path;

use evaluator::{CurveKind, CurvePoint};
use graph::{Dest, Qkv, Source};

use crate::BenchError;
use crate::cell::CellResult;
use crate::sweep::{sha256_hex, slug, write_atomic};

/// Line colours, one per method in first-seen order (colour-blind-safe Okabe–Ito, then greys).
const COLOURS: [&str; 10] = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#777777", "#BBBBBB"];

/// Edges whose score is positive (they help the task) and negative (they hurt it): ColorBrewer's
/// RdBu ends, apart for colour-blind readers too.
const POSITIVE: &str = "#2166AC";
/// See [`POSITIVE`].
const NEGATIVE: &str = "#B2182B";

/// The faithfulness axis never reaches beyond this: a random baseline's band can span far more,
/// and the curves that matter lie between 0 and a little over 1. Values outside are drawn at the edge.
const F_LIMITS: (f64, f64) = (-1.0, 2.0);

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// A tick label: at most two decimals, no trailing zeros, a true minus sign.
fn tick_label(v: f64) -> String {
    let text = format!("{:.2}", v);
    let text = text.trim_end_matches('0').trim_end_matches('.');
    match text {
        "-0" => "0".into(),
        t => t.replace('-', "−"),
    }
}

/// A step that gives at most eight ticks over `span`.
fn tick_step(span: f64) -> f64 {
    [0.1, 0.2, 0.25, 0.5, 1.0].into_iter().find(|&step| span / step <= 8.0).unwrap_or(1.0)
}

/// The label of the decade 10^d: `0.001`, `0.1`, `1`, `10`.
fn decade_label(d: i32) -> String {
    if d >= 0 { format!("{}", 10u64.pow(d as u32)) } else { format!("{:.*}", (-d) as usize, 10f64.powi(d)) }
}

/// Faithfulness against log10(fraction): solid lines for signed selection (CPR's curve) and for a
/// method's own circuits, dashed for absolute (CMD's), one colour per method, each with a shaded
/// band: the 95% bootstrap interval over the evaluation pairs at every budget.
pub fn curves_svg(title: &str, cells: &[&CellResult]) -> String {
    let (w, h, left, right, top, bottom) = (860.0, 460.0, 64.0, 290.0, 44.0, 56.0);
    let points: Vec<&CurvePoint> = cells.iter().flat_map(|c| c.curves.curve.iter()).collect();
    let values = points.iter().flat_map(|p| [Some(p.faithfulness), p.faithfulness_interval.map(|i| i.low), p.faithfulness_interval.map(|i| i.high)]);
    let (mut fmin, mut fmax, mut clipped) = (0.0f64, 1.0f64, false);
    for v in values.flatten() {
        clipped |= !(F_LIMITS.0..=F_LIMITS.1).contains(&v);
        fmin = fmin.min(v.max(F_LIMITS.0));
        fmax = fmax.max(v.min(F_LIMITS.1));
    }
    let step = tick_step(fmax - fmin);
    let (fmin, fmax) = ((fmin / step + 1e-9).floor() * step, (fmax / step - 1e-9).ceil() * step);
    let (mut xmin, mut xmax) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in &points {
        xmin = xmin.min(p.fraction.log10());
        xmax = xmax.max(p.fraction.log10());
    }
    if xmax <= xmin {
        (xmin, xmax) = if xmin.is_finite() { (xmin - 1.0, xmax + 1.0) } else { (-3.0, 0.0) };
    }
    let (plot_right, plot_bottom) = (w - right, h - bottom);
    let xl = |log: f64| left + (log - xmin) / (xmax - xmin) * (plot_right - left);
    let x = |fraction: f64| xl(fraction.log10());
    let y = |f: f64| top + (fmax - f.clamp(fmin, fmax)) / (fmax - fmin) * (plot_bottom - top);
    let mut svg = String::new();
    let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#, (plot_right + left) / 2.0, escape(title));
    // Horizontal grid and labelled ticks at every step; f = 0 and f = 1 (the empty circuit and the
    // model) stand out.
    let ticks = ((fmax - fmin) / step).round() as usize;
    for i in 0..=ticks {
        let f = fmin + i as f64 * step;
        let guide = f.abs() < 1e-9 || (f - 1.0).abs() < 1e-9;
        let stroke = if guide { r##"stroke="#888" stroke-dasharray="4,3""## } else { r##"stroke="#e6e6e6""## };
        let _ = writeln!(
            svg,
            r#"<line x1="{left}" y1="{0:.1}" x2="{plot_right}" y2="{0:.1}" {stroke}/><text class="ytick" x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"#,
            y(f),
            left - 7.0,
            y(f) + 4.0,
            tick_label(f)
        );
    }
    // Decades labelled, the 2…9 multiples between them as minor ticks.
    for d in (xmin.floor() as i32)..=(xmax.ceil() as i32) {
        for k in 1..10 {
            let log = d as f64 + (k as f64).log10();
            if log < xmin - 1e-9 || log > xmax + 1e-9 {
                continue;
            }
            let px = xl(log);
            let len = if k == 1 { 6.0 } else { 3.0 };
            let _ = writeln!(svg, r#"<line x1="{px:.1}" y1="{plot_bottom}" x2="{px:.1}" y2="{}" stroke="black"/>"#, plot_bottom + len);
            if k == 1 {
                let _ = writeln!(svg, r#"<text x="{px:.1}" y="{}" text-anchor="middle">{}</text>"#, plot_bottom + 20.0, decade_label(d));
            }
        }
    }
    let _ = writeln!(svg, r#"<line x1="{left}" y1="{plot_bottom}" x2="{plot_right}" y2="{plot_bottom}" stroke="black"/>"#);
    let _ = writeln!(svg, r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{plot_bottom}" stroke="black"/>"#);
    let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="middle">fraction of edges kept (log scale)</text>"#, (plot_right + left) / 2.0, h - 12.0);
    let mid = (plot_bottom + top) / 2.0;
    let _ = writeln!(svg, r#"<text x="16" y="{mid}" transform="rotate(-90 16 {mid})" text-anchor="middle">faithfulness f(C)</text>"#);
    let kinds = [(CurveKind::Signed, ""), (CurveKind::Given, ""), (CurveKind::Absolute, r#" stroke-dasharray="6,4""#)];
    // Bands first, so every line lies on top of every band.
    for (i, cell) in cells.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (kind, _) in kinds {
            let curve: Vec<&CurvePoint> = cell.curves.curve.iter().filter(|p| p.kind == kind).collect();
            let Some(bands) = curve.iter().map(|p| p.faithfulness_interval.map(|b| (p.fraction, b))).collect::<Option<Vec<_>>>() else { continue };
            if bands.len() < 2 {
                continue;
            }
            let upper = bands.iter().map(|(f, b)| format!("{:.1},{:.1}", x(*f), y(b.high)));
            let lower = bands.iter().rev().map(|(f, b)| format!("{:.1},{:.1}", x(*f), y(b.low)));
            let _ = writeln!(
                svg,
                r#"<polygon class="band" points="{}" fill="{colour}" fill-opacity="0.13" stroke="none"><title>{} ({}): 95% interval</title></polygon>"#,
                upper.chain(lower).collect::<Vec<_>>().join(" "),
                escape(&cell.method),
                kind.name()
            );
        }
    }
    for (i, cell) in cells.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (kind, dash) in kinds {
            let curve: Vec<&CurvePoint> = cell.curves.curve.iter().filter(|p| p.kind == kind).collect();
            if curve.is_empty() {
                continue;
            }
            let path: Vec<String> = curve.iter().map(|p| format!("{:.1},{:.1}", x(p.fraction), y(p.faithfulness))).collect();
            let _ = writeln!(svg, r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#, path.join(" "));
            // Filled dots for the signed (or given) curve, open ones for the absolute.
            let fill = if kind == CurveKind::Absolute { "white" } else { colour };
            for p in &curve {
                let _ = writeln!(
                    svg,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="2.6" fill="{fill}" stroke="{colour}" stroke-width="1.2"><title>{} {} {}: f {:.4}</title></circle>"#,
                    x(p.fraction),
                    y(p.faithfulness),
                    escape(&cell.method),
                    kind.name(),
                    p.fraction,
                    p.faithfulness
                );
            }
        }
    }
    // The legend: methods, then what the line styles and bands mean.
    let lx = plot_right + 14.0;
    for (i, cell) in cells.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let ly = top + 6.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            escape(&cell.method)
        );
    }
    let mut ly = top + 20.0 + 18.0 * cells.len() as f64;
    let resamples = cells.iter().find_map(|c| c.curves.resampling).map(|r| r.resamples);
    let mut notes: Vec<(&str, String)> = vec![("solid", "signed selection (CPR)".into()), ("dashed", "absolute selection (CMD)".into())];
    if cells.iter().any(|c| c.curves.curve.iter().any(|p| p.faithfulness_interval.is_some())) {
        notes.push(("band", "95% bootstrap interval".into()));
        notes.push((
            "",
            match resamples {
                Some(n) => format!("over the pairs ({n} resamples)"),
                None => "over the evaluation pairs".into(),
            },
        ));
    }
    if clipped {
        notes.push(("", format!("f beyond [{}, {}] drawn at the edge", tick_label(F_LIMITS.0), tick_label(F_LIMITS.1))));
    }
    for (sample, text) in notes {
        match sample {
            "solid" | "dashed" => {
                let dash = if sample == "dashed" { r#" stroke-dasharray="6,4""# } else { "" };
                let _ = writeln!(svg, r##"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="#444" stroke-width="2"{dash}/>"##, lx + 24.0);
            }
            "band" => {
                let _ = writeln!(svg, r##"<rect x="{lx}" y="{}" width="24" height="10" fill="#444" fill-opacity="0.2"/>"##, ly - 5.0);
            }
            _ => {}
        }
        let _ = writeln!(svg, r#"<text x="{}" y="{}" font-size="11">{}</text>"#, lx + 30.0, ly + 4.0, escape(&text));
        ly += 16.0;
    }
    svg.push_str("</svg>\n");
    svg
}

/// A node of the circuit diagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Node {
    Input,
    Head { layer: usize, head: usize },
    Mlp { layer: usize },
    Logits,
}

impl Node {
    fn of_source(source: Source) -> Self {
        match source {
            Source::Input => Node::Input,
            Source::Head { layer, head } => Node::Head { layer, head },
            Source::Mlp { layer } => Node::Mlp { layer },
        }
    }

    /// The node an edge ends at, and which of a head's inputs it feeds.
    fn of_dest(dest: Dest) -> (Self, Option<Qkv>) {
        match dest {
            Dest::Head { layer, head, qkv } => (Node::Head { layer, head }, Some(qkv)),
            Dest::Mlp { layer } => (Node::Mlp { layer }, None),
            Dest::Logits => (Node::Logits, None),
        }
    }

    /// The diagram's row, bottom up: the input, each layer's heads then its MLP, the logits.
    fn row(self) -> usize {
        match self {
            Node::Input => 0,
            Node::Head { layer, .. } => 2 * layer + 1,
            Node::Mlp { layer } => 2 * layer + 2,
            Node::Logits => usize::MAX,
        }
    }

    fn label(self) -> String {
        match self {
            Node::Input => "input".into(),
            Node::Head { layer, head } => format!("a{layer}.h{head}"),
            Node::Mlp { layer } => format!("m{layer}"),
            Node::Logits => "logits".into(),
        }
    }
}

/// The layer of a row (None for the input's and the logits').
fn row_layer(row: usize) -> Option<usize> {
    (row != 0 && row != usize::MAX).then(|| (row - 1) / 2)
}

/// A row of the diagram, top down: a row of nodes, or a gap standing for layers with none.
enum Row {
    Nodes(usize),
    Gap { first: usize, last: usize },
}

/// The horizontal offset of a head's q, k and v inputs from its centre: edges into each slot end
/// under its letter.
fn slot_offset(slot: Option<Qkv>) -> f64 {
    match slot {
        Some(Qkv::Q) => -15.0,
        Some(Qkv::V) => 15.0,
        Some(Qkv::K) | None => 0.0,
    }
}

/// The dash pattern of an edge into a slot (solid into q, an MLP or the logits).
fn slot_dash(slot: Option<Qkv>) -> &'static str {
    match slot {
        Some(Qkv::K) => r#" stroke-dasharray="7,3""#,
        Some(Qkv::V) => r#" stroke-dasharray="2,2.5""#,
        Some(Qkv::Q) | None => "",
    }
}

/// The top circuit of one cell as a node-link diagram: rows on a labelled layer axis (the input at
/// the bottom, each layer's heads and then its MLP, the logits on top; layers without a drawn node
/// folded into one thin row), heads in columns by index, arrows from source to destination coloured
/// by the sign of the score and as wide as its magnitude, edges into a head's q, k or v input ending
/// under that letter with their own dash pattern; a legend says all this. The picture is as large
/// as what it draws.
pub fn circuit_svg(cell: &CellResult) -> String {
    let mut edges: Vec<(Node, Node, Option<Qkv>, f32, &str)> = cell
        .top_edges
        .iter()
        .filter_map(|(name, score)| {
            let (src, dst) = name.split_once("->")?;
            let (dst, slot) = Node::of_dest(dst.parse().ok()?);
            Some((Node::of_source(src.parse().ok()?), dst, slot, *score, name.as_str()))
        })
        .collect();
    // Strong edges drawn last, on top.
    edges.sort_by(|a, b| a.3.abs().total_cmp(&b.3.abs()));
    let title = format!("{} on {} — {}", cell.model, cell.task, cell.method);
    let title_width = 7.2 * title.chars().count() as f64 + 40.0;
    if edges.is_empty() {
        let w = title_width.max(420.0);
        return format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"70\" viewBox=\"0 0 {w} 70\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"{0}\" y=\"24\" text-anchor=\"middle\" font-size=\"14\">{1}</text>\n<text x=\"{0}\" y=\"50\" text-anchor=\"middle\" fill=\"#555\">no edge scores to draw (the method gave its circuits without scores)</text>\n</svg>\n",
            w / 2.0,
            escape(&title)
        );
    }
    let nodes: BTreeSet<Node> = edges.iter().flat_map(|e| [e.0, e.1]).collect();
    let heads: Vec<usize> =
        nodes.iter().filter_map(|n| if let Node::Head { head, .. } = n { Some(*head) } else { None }).collect::<BTreeSet<_>>().into_iter().collect();
    let node_rows: BTreeSet<usize> = nodes.iter().map(|n| n.row()).collect();
    // Rows top down, with a gap where whole layers hold no drawn node.
    let mut rows: Vec<Row> = Vec::new();
    let mut previous_layer: Option<usize> = None;
    for &row in &node_rows {
        if let Some(layer) = row_layer(row) {
            let next_expected = previous_layer.map_or(0, |l| l + 1);
            if layer > next_expected {
                rows.push(Row::Gap { first: next_expected, last: layer - 1 });
            }
            previous_layer = Some(layer);
        }
        rows.push(Row::Nodes(row));
    }
    rows.reverse();
    let (row_h, gap_h, col_w, node_w, node_h) = (62.0, 24.0, 66.0, 54.0, 30.0);
    let (axis_x, top) = (76.0, 58.0);
    let first_col = axis_x + 20.0 + node_w / 2.0;
    let columns = heads.len().max(1);
    let plot_right = first_col + col_w * (columns - 1) as f64 + node_w / 2.0 + 12.0;
    let centre_x = first_col + col_w * (columns - 1) as f64 / 2.0;
    let mut row_y: BTreeMap<usize, f64> = BTreeMap::new();
    let mut gaps: Vec<(f64, usize, usize)> = Vec::new();
    let mut yy = top;
    for row in &rows {
        match *row {
            Row::Nodes(r) => {
                row_y.insert(r, yy + row_h / 2.0);
                yy += row_h;
            }
            Row::Gap { first, last } => {
                gaps.push((yy + gap_h / 2.0, first, last));
                yy += gap_h;
            }
        }
    }
    let plot_bottom = yy;
    let at = |n: Node| -> (f64, f64) {
        let x = match n {
            Node::Head { head, .. } => first_col + col_w * heads.iter().position(|&h| h == head).unwrap_or(0) as f64,
            _ => centre_x,
        };
        (x, row_y[&n.row()])
    };
    let legend_x = plot_right + 28.0;
    let legend_h = 250.0;
    let w = (legend_x + 200.0).max(title_width);
    let h = (plot_bottom + 16.0).max(top + legend_h);
    let max_score = edges.iter().map(|e| e.3.abs()).fold(f32::MIN_POSITIVE, f32::max);
    let width_of = |score: f32| 0.7 + 3.8 * (score.abs() / max_score) as f64;

    let mut svg = String::new();
    let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="10">"#);
    let _ = writeln!(svg, r#"<defs>"#);
    for (id, colour) in [("arrow-positive", POSITIVE), ("arrow-negative", NEGATIVE)] {
        let _ = writeln!(
            svg,
            r#"<marker id="{id}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" markerUnits="userSpaceOnUse" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="{colour}"/></marker>"#
        );
    }
    let _ = writeln!(svg, r#"</defs>"#);
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#, w / 2.0, escape(&title));
    let _ = writeln!(svg, r##"<text x="{}" y="40" text-anchor="middle" font-size="11" fill="#555">its top {} edges by |score|</text>"##, w / 2.0, edges.len());
    // Layer bands and the axis: one label per layer, centred on its rows.
    let mut layers: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
    for (&row, &cy) in &row_y {
        if let Some(layer) = row_layer(row) {
            let span = layers.entry(layer).or_insert((f64::INFINITY, f64::NEG_INFINITY));
            *span = (span.0.min(cy - row_h / 2.0), span.1.max(cy + row_h / 2.0));
        }
    }
    for (i, (layer, (y0, y1))) in layers.iter().enumerate() {
        if i % 2 == 0 {
            let _ = writeln!(svg, r##"<rect x="{axis_x}" y="{y0:.1}" width="{:.1}" height="{:.1}" fill="#f2f4f7"/>"##, plot_right - axis_x, y1 - y0);
        }
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{1:.1}" x2="{axis_x}" y2="{1:.1}" stroke="black"/><text class="layer" x="{2}" y="{3:.1}" text-anchor="end">layer {layer}</text>"#,
            axis_x - 5.0,
            (y0 + y1) / 2.0,
            axis_x - 8.0,
            (y0 + y1) / 2.0 + 3.5
        );
    }
    for (label, row) in [("input", 0), ("logits", usize::MAX)] {
        if let Some(&cy) = row_y.get(&row) {
            let _ = writeln!(
                svg,
                r#"<line x1="{}" y1="{cy:.1}" x2="{axis_x}" y2="{cy:.1}" stroke="black"/><text x="{}" y="{:.1}" text-anchor="end">{label}</text>"#,
                axis_x - 5.0,
                axis_x - 8.0,
                cy + 3.5
            );
        }
    }
    let _ = writeln!(svg, r#"<line x1="{axis_x}" y1="{top}" x2="{axis_x}" y2="{plot_bottom}" stroke="black"/>"#);
    let mid = (top + plot_bottom) / 2.0;
    let _ = writeln!(
        svg,
        r#"<text x="14" y="{mid}" transform="rotate(-90 14 {mid})" text-anchor="middle" font-size="11">layer (bottom: input, top: logits)</text>"#
    );
    // Edges: from the top of the source to the bottom of the destination (under the slot's letter
    // for a head), a curve leaving and arriving vertically so the arrowhead points up.
    for (src, dst, slot, score, name) in &edges {
        let ((sx, sy), (tx, ty)) = (at(*src), at(*dst));
        let (sy, tx, ty) = (sy - node_h / 2.0, tx + slot_offset(*slot), ty + node_h / 2.0 + 1.0);
        let bend = (sy - ty).abs() * 0.4;
        let (colour, marker) = if *score >= 0.0 { (POSITIVE, "arrow-positive") } else { (NEGATIVE, "arrow-negative") };
        let _ = writeln!(
            svg,
            r#"<path class="edge" d="M{sx:.1},{sy:.1} C{sx:.1},{:.1} {tx:.1},{:.1} {tx:.1},{ty:.1}" fill="none" stroke="{colour}" stroke-width="{:.2}" stroke-opacity="0.8"{} marker-end="url(#{marker})"><title>{} {score:.4}</title></path>"#,
            sy - bend,
            ty + bend,
            width_of(*score),
            slot_dash(*slot),
            escape(name)
        );
    }
    for node in &nodes {
        let (cx, cy) = at(*node);
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{node_w}" height="{node_h}" rx="5" fill="#fafafa" stroke="#333"/>"##,
            cx - node_w / 2.0,
            cy - node_h / 2.0
        );
        match node {
            Node::Head { .. } => {
                let _ = writeln!(svg, r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, cy - 2.0, node.label());
                for slot in Qkv::ALL {
                    let _ = writeln!(
                        svg,
                        r##"<text class="slot" x="{:.1}" y="{:.1}" text-anchor="middle" font-size="7.5" fill="#666">{slot}</text>"##,
                        cx + slot_offset(Some(slot)),
                        cy + node_h / 2.0 - 3.0
                    );
                }
            }
            _ => {
                let _ = writeln!(svg, r#"<text x="{cx:.1}" y="{:.1}" text-anchor="middle">{}</text>"#, cy + 3.5, node.label());
            }
        }
    }
    // Gaps last among the drawing, so their labels stay readable over the edges that cross them.
    for (cy, first, last) in &gaps {
        let layers = if first == last { format!("layer {first}") } else { format!("layers {first}–{last}") };
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{:.1}" font-size="9" font-style="italic" fill="#777" stroke="white" stroke-width="3" paint-order="stroke">{layers}: no drawn node</text>"##,
            axis_x + 8.0,
            cy + 3.0
        );
    }
    // The legend: a header, then lines of (sample colour, width, dash; text), or notes.
    let thin = max_score * 0.1;
    // A sample line's colour, width and dash; None for a header.
    type Sample<'a> = Option<(&'a str, f64, &'a str)>;
    let legend: [(Sample, String); 12] = [
        (None, "edge score".into()),
        (Some((POSITIVE, 2.5, "")), "positive: helps the task".into()),
        (Some((NEGATIVE, 2.5, "")), "negative: hurts the task".into()),
        (Some(("#555", width_of(thin), "")), format!("width ∝ |score| (thin: {thin:.3})")),
        (Some(("#555", width_of(max_score), "")), format!("|score| = {max_score:.3} (largest)")),
        (None, "into a head's input".into()),
        (Some(("#555", 1.8, slot_dash(Some(Qkv::Q)))), "q (query): solid".into()),
        (Some(("#555", 1.8, slot_dash(Some(Qkv::K)))), "k (key): dashed".into()),
        (Some(("#555", 1.8, slot_dash(Some(Qkv::V)))), "v (value): dotted".into()),
        (Some(("none", 0.0, "")), "each ends under its letter".into()),
        (Some(("none", 0.0, "")), "into MLPs and logits: solid".into()),
        (Some(("none", 0.0, "")), "arrows: source → destination".into()),
    ];
    let mut ly = top + 4.0;
    for (i, (sample, text)) in legend.iter().enumerate() {
        match sample {
            None => {
                ly += if i == 0 { 0.0 } else { 12.0 };
                let _ = writeln!(svg, r#"<text x="{legend_x}" y="{ly:.1}" font-size="11" font-weight="bold">{}</text>"#, escape(text));
            }
            Some((colour, width, dash)) => {
                if *colour != "none" {
                    let _ = writeln!(
                        svg,
                        r#"<line x1="{legend_x}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="{colour}" stroke-width="{width:.2}"{dash}/>"#,
                        ly - 3.5,
                        legend_x + 26.0
                    );
                }
                let _ = writeln!(svg, r#"<text x="{}" y="{ly:.1}" font-size="10">{}</text>"#, legend_x + 34.0, escape(text));
            }
        }
        ly += 17.0;
    }
    svg.push_str("</svg>\n");
    svg
}

/// The name each model's plots carry: its file-name form, and where two models of the run share
/// that form (`task:ioi` and a directory `task_ioi`), a short hash of the exact argument as well,
/// so one model's plots never overwrite another's.
fn model_stems(cells: &[CellResult]) -> BTreeMap<&str, String> {
    let mut by_slug: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for cell in cells {
        let models = by_slug.entry(slug(&cell.model)).or_default();
        if !models.contains(&cell.model.as_str()) {
            models.push(&cell.model);
        }
    }
    by_slug
        .into_iter()
        .flat_map(|(stem, models)| {
            let shared = models.len() > 1;
            models.into_iter().map(move |m| (m, if shared { format!("{stem}.{}", &sha256_hex(m.as_bytes())[..12]) } else { stem.clone() }))
        })
        .collect()
}

/// Precision against recall of each method's circuits on one compiled model, a line per method
/// through its budgets (the curve by |score|, or the method's own circuits), its AUROC in the
/// legend: where each method's circuits sit against the true circuit.
pub fn precision_recall_svg(title: &str, cells: &[&CellResult]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 460.0, 64.0, 300.0, 44.0, 56.0);
    let (plot_right, plot_bottom) = (w - right, h - bottom);
    let x = |recall: f64| left + recall.clamp(0.0, 1.0) * (plot_right - left);
    let y = |precision: f64| plot_bottom - precision.clamp(0.0, 1.0) * (plot_bottom - top);
    let mut svg = String::new();
    let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{}" y="24" text-anchor="middle" font-size="15">{}</text>"#, (plot_right + left) / 2.0, escape(title));
    for i in 0..=5 {
        let v = i as f64 / 5.0;
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{0:.1}" x2="{plot_right}" y2="{0:.1}" stroke="#e6e6e6"/><text class="ytick" x="{1}" y="{2:.1}" text-anchor="end">{3}</text>"##,
            y(v),
            left - 7.0,
            y(v) + 4.0,
            tick_label(v)
        );
        let _ = writeln!(
            svg,
            r#"<line x1="{0:.1}" y1="{plot_bottom}" x2="{0:.1}" y2="{1}" stroke="black"/><text class="xtick" x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"#,
            x(v),
            plot_bottom + 6.0,
            plot_bottom + 20.0,
            tick_label(v)
        );
    }
    let _ = writeln!(svg, r#"<line x1="{left}" y1="{plot_bottom}" x2="{plot_right}" y2="{plot_bottom}" stroke="black"/>"#);
    let _ = writeln!(svg, r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{plot_bottom}" stroke="black"/>"#);
    let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="middle">recall of the true edges</text>"#, (plot_right + left) / 2.0, h - 12.0);
    let mid = (plot_bottom + top) / 2.0;
    let _ = writeln!(svg, r#"<text x="16" y="{mid}" transform="rotate(-90 16 {mid})" text-anchor="middle">precision</text>"#);
    for (i, cell) in cells.iter().enumerate() {
        let Some(truth) = &cell.ground_truth else { continue };
        let colour = COLOURS[i % COLOURS.len()];
        let points: Vec<(f64, f64)> = cell
            .curves
            .curve
            .iter()
            .zip(&truth.points)
            // An empty circuit has no precision: it is not a point of the curve.
            .filter(|(p, _)| p.kind != CurveKind::Signed && p.pruned_edges > 0)
            .map(|(_, t)| (t.recall, t.precision))
            .collect();
        let path: Vec<String> = points.iter().map(|&(r, p)| format!("{:.1},{:.1}", x(r), y(p))).collect();
        let _ = writeln!(svg, r#"<polyline class="method" points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#, path.join(" "));
        for &(r, p) in &points {
            let _ = writeln!(svg, r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"/>"#, x(r), y(p));
        }
        let label = match truth.auroc() {
            Some(a) => format!("{} (AUROC {a:.2})", cell.method),
            None => format!("{} (no scores)", cell.method),
        };
        let ly = top + 8.0 + i as f64 * 20.0;
        let _ = writeln!(svg, r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/>"#, plot_right + 16.0, plot_right + 40.0);
        let _ = writeln!(svg, r#"<text x="{}" y="{}">{}</text>"#, plot_right + 46.0, ly + 4.0, escape(&label));
    }
    svg.push_str("</svg>\n");
    svg
}

/// Writes `faithfulness-<model>-<task>.svg` per model and task, `circuit-<model>-<task>-<method>.svg`
/// per cell, and `truth-<model>.svg` per model whose cells were scored against a true circuit, into
/// `dir` (see [`model_stems`] for `<model>`).
pub fn write_plots(dir: &Path, cells: &[CellResult]) -> Result<(), BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Io { path: dir.into(), source })?;
    let stems = model_stems(cells);
    let mut groups: Vec<((&str, &str), Vec<&CellResult>)> = Vec::new();
    for cell in cells {
        let key = (cell.model.as_str(), cell.task.as_str());
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, group)) => group.push(cell),
            None => groups.push((key, vec![cell])),
        }
    }
    for ((model, task), group) in &groups {
        let title = format!("{model} on {task}: faithfulness by budget");
        write_atomic(&dir.join(format!("faithfulness-{}-{}.svg", stems[model], slug(task))), curves_svg(&title, group).as_bytes())?;
    }
    for cell in cells {
        let name = format!("circuit-{}-{}-{}.svg", stems[cell.model.as_str()], slug(&cell.task), slug(&cell.method));
        write_atomic(&dir.join(name), circuit_svg(cell).as_bytes())?;
    }
    for ((model, _), group) in &groups {
        let scored: Vec<&CellResult> = group.iter().copied().filter(|c| c.ground_truth.is_some()).collect();
        if let Some(truth) = scored.first().and_then(|c| c.ground_truth.as_ref()) {
            let title = format!("{model}: circuits against the {} truth ({} edges)", truth.truth, truth.truth_edges);
            write_atomic(&dir.join(format!("truth-{}.svg", stems[model])), precision_recall_svg(&title, &scored).as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// A cell with one point per fraction and selection: faithfulness `f(fraction)`, its interval
    /// ±0.1 when `bands`, and the given top edges.
    fn cell(method: &str, f: impl Fn(f64) -> f64, bands: bool, top_edges: &[(&str, f32)]) -> CellResult {
        let curve: Vec<serde_json::Value> = ["signed", "absolute"]
            .iter()
            .flat_map(|selection| [0.01, 0.1, 0.5, 1.0].map(|x| (*selection, x)))
            .map(|(selection, x)| {
                let interval = bands.then(|| json!({ "low": f(x) - 0.1, "high": f(x) + 0.1 }));
                json!({ "selection": selection, "fraction": x, "nominal_edges": 1, "pruned_edges": 1, "m_circuit": 0.0, "faithfulness": f(x),
                        "faithfulness_interval": interval })
            })
            .collect();
        serde_json::from_value(json!({
            "model": "m", "task": "ioi", "method": method, "ablation": "counterfactual", "definition": "d",
            "discovery_examples": 1, "discovery_dropped": 0, "evaluation_examples": 1, "evaluation_dropped": 0,
            "m_full": 1.0, "m_empty": 0.0, "curve": curve, "cpr": 0.5, "cmd": 0.5, "mean_f_signed": 0.5, "mean_f_absolute": 0.5,
            "resampling": bands.then(|| json!({ "resamples": 1000, "seed": 0, "undefined": 0 })),
            "discovery_seconds": 0.0, "evaluation_seconds": 0.0, "forward_passes": 0, "backward_passes": 0, "peak_memory_mib": null,
            "top_edges": top_edges,
        }))
        .unwrap()
    }

    /// The numbers of the y axis's tick labels.
    fn y_ticks(svg: &str) -> Vec<f64> {
        svg.split(r#"class="ytick""#).skip(1).map(|s| s[s.find('>').unwrap() + 1..s.find('<').unwrap()].replace('−', "-").parse().unwrap()).collect()
    }

    /// The value of attribute `name` in the first element of `svg` that has it.
    fn attribute(svg: &str, name: &str) -> f64 {
        let start = svg.find(&format!(" {name}=\"")).unwrap() + name.len() + 3;
        svg[start..start + svg[start..].find('"').unwrap()].parse().unwrap()
    }

    #[test]
    fn the_faithfulness_axis_is_labelled_above_one_and_bands_are_drawn() {
        let over = cell("eap", |x| 1.3 * x.powf(0.2), true, &[]);
        let plain = cell("random", |x| x, false, &[]);
        let svg = curves_svg("t", &[&over, &plain]);
        let ticks = y_ticks(&svg);
        assert!(ticks.iter().any(|&t| t > 1.0 && t <= 1.5), "a labelled tick above 1: {ticks:?}");
        assert!(ticks.contains(&0.0) && ticks.contains(&1.0), "{ticks:?}");
        assert!(ticks.windows(2).all(|w| (w[1] - w[0] - 0.2).abs() < 1e-9), "evenly, bottom up: {ticks:?}");
        assert_eq!((ticks[0], ticks[ticks.len() - 1]), (0.0, 1.4), "the data's range, no more: {ticks:?}");
        // One band per curve with intervals (eap's signed and absolute), none for random's.
        assert_eq!(svg.matches(r#"<polygon class="band""#).count(), 2, "{svg}");
        assert!(svg.contains("95% bootstrap interval") && svg.contains("1000 resamples"));
        // Within [0, 1] the axis stays there, without the band's legend.
        let svg = curves_svg("t", &[&plain]);
        assert_eq!(y_ticks(&svg).last(), Some(&1.0));
        assert!(!svg.contains("<polygon") && !svg.contains("bootstrap"));
        // Far beyond the limits: drawn at the edge, and said so.
        let wild = cell("random", |x| 10.0 * x - 4.0, true, &[]);
        let ticks = y_ticks(&curves_svg("t", &[&wild]));
        assert_eq!((ticks.first(), ticks.last()), (Some(&-1.0), Some(&2.0)), "{ticks:?}");
        assert!(curves_svg("t", &[&wild]).contains("drawn at the edge"));
    }

    #[test]
    fn circuit_diagrams_have_arrows_signs_slots_and_a_layer_axis() {
        let edges = [
            ("input->a0.h1<q>", 0.9f32),
            ("a0.h1->a2.h0<k>", 0.5),
            ("a0.h1->a2.h0<v>", -0.4),
            ("a2.h0->m2", 0.3),
            ("m2->logits", 0.8),
            ("a2.h0->logits", -0.1),
        ];
        let svg = circuit_svg(&cell("eap", |x| x, false, &edges));
        assert!(svg.contains(r#"<marker id="arrow-positive""#) && svg.contains(r#"<marker id="arrow-negative""#));
        assert_eq!(svg.matches(r#"marker-end="url(#arrow-positive)""#).count(), 4);
        assert_eq!(svg.matches(r#"marker-end="url(#arrow-negative)""#).count(), 2);
        assert_eq!(svg.matches(&format!(r#"stroke="{NEGATIVE}""#)).count(), 2 + 1, "two edges and the legend's sample");
        // q/k/v: letters under both heads, a dash pattern per slot.
        assert_eq!(svg.matches(r#"class="slot""#).count(), 6);
        assert!(svg.contains("a0.h1-&gt;a2.h0&lt;k&gt;") && svg.contains(r#"stroke-dasharray="7,3" marker-end"#));
        assert!(svg.contains(r#"stroke-dasharray="2,2.5" marker-end"#));
        // The layer axis: layers 0 and 2 labelled, layer 1 folded into a gap row.
        assert!(svg.contains(">layer 0</text>") && svg.contains(">layer 2</text>") && svg.contains("layer 1: no drawn node"));
        assert!(!svg.contains(">layer 1</text>"));
        // Width grows with |score|: the 0.9 edge is the widest.
        let width = |name: &str| {
            let at = svg.find(&escape(name)).unwrap();
            let path = &svg[svg[..at].rfind("<path").unwrap()..at];
            attribute(path, "stroke-width")
        };
        assert!(width("input->a0.h1<q>") > width("a0.h1->a2.h0<k>") && width("a0.h1->a2.h0<k>") > width("a2.h0->logits"));
    }

    #[test]
    fn a_circuit_diagram_is_as_large_as_what_it_draws() {
        // Two heads far apart, in layers 0 and 29 of a deep model: two columns, two layer rows.
        let edges = [("input->a0.h0<q>", 0.9f32), ("a0.h0->a29.h8<v>", 0.5), ("a29.h8->logits", 0.4)];
        let svg = circuit_svg(&cell("eap", |x| x, false, &edges));
        let (w, h) = (attribute(&svg, "width"), attribute(&svg, "height"));
        assert!(w < 600.0 && h < 400.0, "{w} x {h}");
        assert!(svg.contains("layers 1–28: no drawn node"));
        // No edges: one line saying so, not an empty page.
        let svg = circuit_svg(&cell("eap", |x| x, false, &[]));
        assert!(attribute(&svg, "height") <= 80.0 && svg.contains("no edge scores"));
    }
}
