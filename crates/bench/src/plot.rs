//! SVG plots written as text (no plotting or Graphviz dependency): a faithfulness curve per model
//! and task with one line per method, and each method's top circuit as a node-link diagram.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::Path;

use evaluator::CurveKind;

use crate::BenchError;
use crate::cell::CellResult;
use crate::sweep::{sha256_hex, slug, write_atomic};

/// Line colours, one per method in first-seen order (colour-blind-safe Okabe–Ito, then greys).
const COLOURS: [&str; 10] = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000", "#777777", "#BBBBBB"];

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Faithfulness against log10(fraction): solid lines for signed selection (CPR's curve), dashed for
/// absolute (CMD's), one colour per method.
pub fn curves_svg(title: &str, cells: &[&CellResult]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 440.0, 60.0, 190.0, 40.0, 50.0);
    let points = cells.iter().flat_map(|c| c.curves.curve.iter());
    let (mut fmin, mut fmax) = (0.0f64, 1.0f64);
    let (mut xmin, mut xmax) = (f64::INFINITY, f64::NEG_INFINITY);
    for p in points {
        fmin = fmin.min(p.faithfulness.max(-1.0));
        fmax = fmax.max(p.faithfulness.min(2.0));
        xmin = xmin.min(p.fraction.log10());
        xmax = xmax.max(p.fraction.log10());
    }
    if xmax <= xmin {
        (xmin, xmax) = (xmin - 1.0, xmax + 1.0);
    }
    let x = |fraction: f64| left + (fraction.log10() - xmin) / (xmax - xmin) * (w - left - right);
    let y = |f: f64| top + (fmax - f.clamp(fmin, fmax)) / (fmax - fmin) * (h - top - bottom);
    let mut svg = String::new();
    let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#);
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(svg, r#"<text x="{}" y="22" text-anchor="middle" font-size="15">{}</text>"#, (w - right + left) / 2.0, escape(title));
    // Axes, the f = 0 and f = 1 guides, and decade ticks.
    let _ = writeln!(svg, r#"<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>"#, h - bottom, w - right, h - bottom);
    let _ = writeln!(svg, r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>"#, h - bottom);
    for f in [0.0, 1.0] {
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#999" stroke-dasharray="2,3"/><text x="{2}" y="{3}" text-anchor="end">{f}</text>"##,
            y(f),
            w - right,
            left - 6.0,
            y(f) + 4.0
        );
    }
    let mut decade = xmin.floor();
    while decade <= xmax.ceil() {
        if decade >= xmin - 1e-9 && decade <= xmax + 1e-9 {
            let px = left + (decade - xmin) / (xmax - xmin) * (w - left - right);
            let _ = writeln!(svg, r#"<text x="{px}" y="{}" text-anchor="middle">{}</text>"#, h - bottom + 18.0, 10f64.powf(decade));
        }
        decade += 1.0;
    }
    let _ = writeln!(svg, r#"<text x="{}" y="{}" text-anchor="middle">fraction of edges (log scale)</text>"#, (w - right + left) / 2.0, h - 10.0);
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{}" transform="rotate(-90 16 {})" text-anchor="middle">faithfulness</text>"#,
        (h - bottom + top) / 2.0,
        (h - bottom + top) / 2.0
    );
    for (i, cell) in cells.iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        for (kind, dash) in [(CurveKind::Signed, ""), (CurveKind::Given, ""), (CurveKind::Absolute, r#" stroke-dasharray="6,4""#)] {
            let path: Vec<String> =
                cell.curves.curve.iter().filter(|p| p.kind == kind).map(|p| format!("{:.1},{:.1}", x(p.fraction), y(p.faithfulness))).collect();
            let _ = writeln!(svg, r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#, path.join(" "));
        }
        let ly = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{0}" y1="{ly}" x2="{1}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{2}" y="{3}">{4}</text>"#,
            w - right + 12.0,
            w - right + 36.0,
            w - right + 42.0,
            ly + 4.0,
            escape(&cell.method)
        );
    }
    let ly = top + 16.0 + 18.0 * cells.len() as f64;
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{ly}" font-size="11">solid: signed (CPR)</text><text x="{}" y="{}" font-size="11">dashed: absolute (CMD)</text>"#,
        w - right + 12.0,
        w - right + 12.0,
        ly + 15.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// Where a node sits in the diagram: (layer row from the bottom, column); the input is row 0,
/// layer l's heads and MLP row l + 1, the logits the top row.
fn node_place(name: &str, n_layers: usize) -> Option<(usize, usize)> {
    if name == "input" {
        return Some((0, 0));
    }
    if name == "logits" {
        return Some((n_layers + 1, 0));
    }
    if let Some(rest) = name.strip_prefix('m') {
        return rest.parse::<usize>().ok().map(|l| (l + 1, usize::MAX));
    }
    let rest = name.strip_prefix('a')?;
    let (layer, head) = rest.split_once(".h")?;
    Some((layer.parse::<usize>().ok()? + 1, head.parse().ok()?))
}

/// The top circuit of one cell as a node-link diagram: edges by signed score, wider for larger
/// |score|, blue when the edge helps the task and red when it hurts; q/k/v inputs labelled.
pub fn circuit_svg(cell: &CellResult) -> String {
    let parsed: Vec<(&str, &str, String, f32)> = cell
        .top_edges
        .iter()
        .filter_map(|(name, score)| {
            let (src, dst) = name.split_once("->")?;
            let (dst, slot) = match dst.split_once('<') {
                Some((d, s)) => (d, s.trim_end_matches('>').to_string()),
                None => (dst, String::new()),
            };
            Some((src, dst, slot, *score))
        })
        .collect();
    let mut layers = 0;
    let mut heads = 1;
    for (src, dst, _, _) in &parsed {
        for n in [src, dst] {
            if let Some(rest) = n.strip_prefix('a').and_then(|r| r.split_once(".h")) {
                layers = layers.max(rest.0.parse::<usize>().unwrap_or(0) + 1);
                heads = heads.max(rest.1.parse::<usize>().unwrap_or(0) + 1);
            }
            if let Some(l) = n.strip_prefix('m').and_then(|r| r.parse::<usize>().ok()) {
                layers = layers.max(l + 1);
            }
        }
    }
    let columns = heads + 1;
    let (w, row_h) = (140.0 + 80.0 * columns as f64, 60.0);
    let h = 80.0 + row_h * (layers + 1) as f64;
    let place = |name: &str| -> Option<(f64, f64)> {
        let (row, col) = node_place(name, layers)?;
        let col = if col == usize::MAX {
            heads
        } else if row == 0 || row == layers + 1 {
            heads / 2
        } else {
            col
        };
        Some((80.0 + 80.0 * col as f64, h - 40.0 - row_h * row as f64))
    };
    let max_score = parsed.iter().map(|p| p.3.abs()).fold(f32::MIN_POSITIVE, f32::max);
    let mut svg = String::new();
    let _ = writeln!(svg, r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="10">"#);
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="18" text-anchor="middle" font-size="13">{} on {} — {}: top {} edges</text>"#,
        w / 2.0,
        escape(&cell.model),
        escape(&cell.task),
        escape(&cell.method),
        parsed.len()
    );
    let mut nodes: BTreeMap<&str, (f64, f64)> = BTreeMap::new();
    for (src, dst, slot, score) in &parsed {
        let (Some(a), Some(b)) = (place(src), place(dst)) else { continue };
        nodes.insert(src, a);
        nodes.insert(dst, b);
        let colour = if *score >= 0.0 { "#0072B2" } else { "#D55E00" };
        let width = 0.5 + 4.0 * (score.abs() / max_score);
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="{colour}" stroke-width="{width:.2}" opacity="0.7"><title>{} {score:.4}</title></line>"#,
            a.0,
            a.1,
            b.0,
            b.1,
            escape(&format!("{src}->{dst}{}", if slot.is_empty() { String::new() } else { format!("<{slot}>") }))
        );
    }
    for (name, (x, y)) in &nodes {
        let _ = writeln!(
            svg,
            r##"<circle cx="{x:.1}" cy="{y:.1}" r="18" fill="#f4f4f4" stroke="#333"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            y + 3.5,
            escape(name)
        );
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

/// Writes `faithfulness-<model>-<task>.svg` per model and task, and `circuit-<model>-<task>-<method>.svg`
/// per cell, into `dir` (see [`model_stems`] for `<model>`).
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
    Ok(())
}
