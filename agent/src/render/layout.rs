//! A deterministic layout for the HTML graph: one box per namespace (the outside last),
//! nodes stacked in it, boxes dealt to the shortest of a few columns; edges as quadratic
//! curves between node sides, bent apart when several join the same two nodes.

use super::GraphModel;

pub const NODE_W: f64 = 230.0;
pub const NODE_H: f64 = 28.0;
const GAP: f64 = 10.0;
const HEADER: f64 = 26.0;
const PAD: f64 = 12.0;
const COL_GAP: f64 = 170.0;
const MARGIN: f64 = 20.0;

/// A rectangle.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rect {
    pub x: f64,
    pub y: f64,
    pub w: f64,
    pub h: f64,
}

/// Positions for every group, node and edge.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub groups: Vec<(String, Rect)>,
    pub nodes: Vec<Rect>,
    /// SVG path data and the label position, per edge.
    pub edges: Vec<(String, f64, f64)>,
    pub width: f64,
    pub height: f64,
}

pub fn layout(m: &GraphModel) -> Layout {
    let groups = m.groups();
    let cols = groups.len().clamp(1, 4);
    let mut col_h = vec![MARGIN; cols];
    let mut nodes = vec![
        Rect {
            x: 0.0,
            y: 0.0,
            w: NODE_W,
            h: NODE_H
        };
        m.nodes.len()
    ];
    let mut boxes = Vec::new();
    for (name, members) in groups {
        let h = HEADER + PAD + members.len() as f64 * (NODE_H + GAP);
        let col = (0..cols)
            .min_by(|&a, &b| col_h[a].total_cmp(&col_h[b]))
            .unwrap_or(0);
        let x = MARGIN + col as f64 * (NODE_W + 2.0 * PAD + COL_GAP);
        let y = col_h[col];
        for (k, &i) in members.iter().enumerate() {
            nodes[i] = Rect {
                x: x + PAD,
                y: y + HEADER + k as f64 * (NODE_H + GAP),
                w: NODE_W,
                h: NODE_H,
            };
        }
        boxes.push((
            name,
            Rect {
                x,
                y,
                w: NODE_W + 2.0 * PAD,
                h,
            },
        ));
        col_h[col] += h + 30.0;
    }
    // Parallel edges (same two nodes, either direction) are bent apart.
    let mut seen: std::collections::HashMap<(usize, usize), usize> = Default::default();
    let edges = m
        .edges
        .iter()
        .map(|e| {
            let key = (e.src.min(e.dst), e.src.max(e.dst));
            let k = seen.entry(key).or_insert(0);
            *k += 1;
            path(&nodes[e.src], &nodes[e.dst], *k as f64)
        })
        .collect();
    let width = MARGIN * 2.0 + cols as f64 * (NODE_W + 2.0 * PAD + COL_GAP) - COL_GAP;
    let height = col_h.iter().copied().fold(0.0, f64::max) + MARGIN;
    Layout {
        groups: boxes,
        nodes,
        edges,
        width,
        height,
    }
}

fn path(a: &Rect, b: &Rect, k: f64) -> (String, f64, f64) {
    let (ay, by) = (a.y + a.h / 2.0, b.y + b.h / 2.0);
    if a == b {
        // A workload to itself (two replicas): a loop on the right side.
        let (x, y) = (a.x + a.w, ay);
        let r = 14.0 + 6.0 * k;
        return (
            format!(
                "M{:.1},{:.1} C{:.1},{:.1} {:.1},{:.1} {:.1},{:.1}",
                x,
                y - 6.0,
                x + r * 2.0,
                y - r,
                x + r * 2.0,
                y + r,
                x,
                y + 6.0
            ),
            x + r * 1.6,
            y,
        );
    }
    let same_col = (a.x - b.x).abs() < 1.0;
    let (ax, bx) = if same_col {
        (a.x + a.w, b.x + b.w)
    } else if a.x < b.x {
        (a.x + a.w, b.x)
    } else {
        (a.x, b.x + b.w)
    };
    let (mx, my) = ((ax + bx) / 2.0, (ay + by) / 2.0);
    let (dx, dy) = (bx - ax, by - ay);
    let len = (dx * dx + dy * dy).sqrt().max(1.0);
    let bend = if same_col {
        40.0 + (dy.abs() / 6.0)
    } else {
        0.0
    } + 18.0 * (k - 1.0);
    // Perpendicular to the chord; in one column, always out to the right.
    let (px, py) = if same_col {
        (1.0, 0.0)
    } else {
        (-dy / len, dx / len)
    };
    let (cx, cy) = (mx + px * bend * 2.0, my + py * bend * 2.0);
    (
        format!("M{ax:.1},{ay:.1} Q{cx:.1},{cy:.1} {bx:.1},{by:.1}"),
        mx + px * bend,
        my + py * bend,
    )
}
