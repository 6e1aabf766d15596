//! Graphviz DOT and Mermaid flowcharts of a [`GraphModel`]: one cluster (subgraph) per
//! namespace, edges coloured by verdict and labelled with ports and counts.

use std::fmt::Write as _;

use super::GraphModel;

fn dot_str(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A DOT digraph.
pub fn to_dot(m: &GraphModel) -> String {
    let mut s = String::from(
        "digraph trustmap {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"sans-serif\"];\n  edge [fontname=\"sans-serif\", fontsize=10];\n",
    );
    for (gi, (group, nodes)) in m.groups().into_iter().enumerate() {
        let _ = writeln!(
            s,
            "  subgraph cluster_{gi} {{\n    label={};",
            dot_str(&group)
        );
        for i in nodes {
            let n = &m.nodes[i];
            let shape = match n.kind {
                super::NodeKind::Workload => "box",
                super::NodeKind::Node => "box3d",
                super::NodeKind::External => "ellipse",
            };
            let _ = writeln!(
                s,
                "    n{i} [label={}, shape={shape}, tooltip={}];",
                dot_str(&n.label),
                dot_str(&n.id)
            );
        }
        s.push_str("  }\n");
    }
    for e in &m.edges {
        let style = match e.verdict {
            super::EdgeVerdict::Excess => ", style=dashed",
            super::EdgeVerdict::Denied => ", style=bold",
            _ => "",
        };
        let _ = writeln!(
            s,
            "  n{} -> n{} [color={}, fontcolor={}, label={}{style}];",
            e.src,
            e.dst,
            dot_str(e.verdict.colour()),
            dot_str(e.verdict.colour()),
            dot_str(&format!("{}: {}", e.verdict.as_str(), e.label()))
        );
    }
    s.push_str("}\n");
    s
}

fn mermaid_str(s: &str) -> String {
    // Mermaid labels are quoted; quotes and brackets become entity codes.
    s.replace('"', "#quot;")
        .replace('<', "#lt;")
        .replace('>', "#gt;")
}

/// A Mermaid flowchart.
pub fn to_mermaid(m: &GraphModel) -> String {
    let mut s = String::from("flowchart LR\n");
    for (gi, (group, nodes)) in m.groups().into_iter().enumerate() {
        let _ = writeln!(s, "  subgraph g{gi} [\"{}\"]", mermaid_str(&group));
        for i in nodes {
            let n = &m.nodes[i];
            let (open, close) = match n.kind {
                super::NodeKind::Workload => ("[", "]"),
                super::NodeKind::Node => ("[[", "]]"),
                super::NodeKind::External => ("((", "))"),
            };
            let _ = writeln!(s, "    n{i}{open}\"{}\"{close}", mermaid_str(&n.label));
        }
        s.push_str("  end\n");
    }
    for e in &m.edges {
        let arrow = match e.verdict {
            super::EdgeVerdict::Excess => "-.->",
            super::EdgeVerdict::Denied => "==>",
            _ => "-->",
        };
        let _ = writeln!(
            s,
            "  n{} {arrow}|\"{}: {}\"| n{}",
            e.src,
            e.verdict.as_str(),
            mermaid_str(&e.label()),
            e.dst
        );
    }
    for (i, e) in m.edges.iter().enumerate() {
        let _ = writeln!(
            s,
            "  linkStyle {i} stroke:{},color:{}",
            e.verdict.colour(),
            e.verdict.colour()
        );
    }
    s
}
