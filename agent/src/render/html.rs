//! The graph as one self-contained HTML page: inline SVG laid out here, inline CSS and the
//! inline script in `graph.js` (zoom, pan, filters, edge details). No external resource; a
//! Content-Security-Policy forbids fetching any.

use std::fmt::Write as _;

use super::{
    EdgeVerdict, GraphModel, NodeKind,
    layout::{NODE_H, layout},
};

const SCRIPT: &str = include_str!("graph.js");

const STYLE: &str = r#"
body{margin:0;font:13px system-ui,sans-serif;color:#1d2733;background:#f7f8fa;display:flex;flex-direction:column;height:100vh}
header{display:flex;flex-wrap:wrap;gap:14px;align-items:center;padding:8px 12px;background:#fff;border-bottom:1px solid #d8dde3}
header h1{font-size:15px;margin:0 8px 0 0}
fieldset{border:1px solid #d8dde3;border-radius:4px;padding:2px 8px;margin:0}
legend{font-size:11px;color:#5b6775}
label{margin-right:8px;white-space:nowrap}
.swatch{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:3px}
main{flex:1;display:flex;min-height:0}
#graph{flex:1;cursor:grab;background:#fff}
#graph.dragging{cursor:grabbing}
aside{width:330px;overflow:auto;padding:10px 12px;border-left:1px solid #d8dde3;background:#fff}
aside h2{font-size:14px;word-break:break-all}
aside h3{font-size:13px;margin:10px 0 2px}
aside ul{margin:2px 0;padding-left:18px}
.group rect{fill:#eef2f6;stroke:#c3ccd6}
.group text{font-weight:600;fill:#3d4a59}
.node rect{fill:#fff;stroke:#7b8794;rx:5}
.node.k-external rect{fill:#fff7e6;stroke:#b7791f}
.node.k-node rect{fill:#edf2ff;stroke:#4c6ef5}
.node text{font-size:12px;fill:#1d2733;pointer-events:none}
.edge{fill:none;stroke-width:2;cursor:pointer;opacity:.85}
.edge:hover,.edge.selected{stroke-width:4;opacity:1}
.v-excess.edge{stroke-dasharray:6 4}
.edge-label{font-size:10px;pointer-events:none}
.no-labels .edge-label{display:none}
.hidden{display:none}
.verdict{font-weight:600}
"#;

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

const VERDICTS: [EdgeVerdict; 4] = [
    EdgeVerdict::Observed,
    EdgeVerdict::Excess,
    EdgeVerdict::Denied,
    EdgeVerdict::Allowed,
];

fn verdict_title(v: EdgeVerdict) -> &'static str {
    match v {
        EdgeVerdict::Observed => "allowed and observed",
        EdgeVerdict::Excess => "allowed, never observed (excess)",
        EdgeVerdict::Denied => "observed, would be denied",
        EdgeVerdict::Allowed => "allowed (no flows given)",
    }
}

/// The whole page. `title` names what is shown (e.g. the manifests).
pub fn render_html(m: &GraphModel, title: &str) -> String {
    let l = layout(m);
    let mut s = String::new();
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>trustmap: {}</title><style>{STYLE}</style></head>\n<body>\n<header><h1>trustmap flow graph</h1>",
        esc(title)
    );
    s.push_str("<fieldset><legend>verdict</legend>");
    for v in VERDICTS {
        if !m.edges.iter().any(|e| e.verdict == v) {
            continue;
        }
        let _ = write!(
            s,
            "<label><input type=\"checkbox\" checked data-filter=\"verdict\" value=\"{0}\"><span class=\"swatch\" style=\"background:{1}\"></span>{2}</label>",
            v.as_str(),
            v.colour(),
            verdict_title(v)
        );
    }
    s.push_str("</fieldset><fieldset><legend>namespace</legend>");
    for (g, _) in &l.groups {
        let _ = write!(
            s,
            "<label><input type=\"checkbox\" checked data-filter=\"group\" value=\"{0}\">{0}</label>",
            esc(g)
        );
    }
    let labels_on = if m.edges.len() <= 40 { " checked" } else { "" };
    let _ = write!(
        s,
        "</fieldset><fieldset><legend>view</legend><button id=\"zoom-in\" title=\"zoom in\">+</button> \
         <button id=\"zoom-out\" title=\"zoom out\">&#8722;</button> <button id=\"zoom-fit\">fit</button> \
         <label><input type=\"checkbox\" id=\"labels\"{labels_on}>labels</label></fieldset></header>\n<main>"
    );
    let _ = write!(
        s,
        "<svg id=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {:.0} {:.0}\" preserveAspectRatio=\"xMidYMid meet\"{}><defs>",
        l.width,
        l.height,
        if labels_on.is_empty() {
            " class=\"no-labels\""
        } else {
            ""
        }
    );
    for v in VERDICTS {
        let _ = write!(
            s,
            "<marker id=\"arrow-{0}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{1}\"/></marker>",
            v.as_str(),
            v.colour()
        );
    }
    s.push_str("</defs>\n");
    for (g, r) in &l.groups {
        let _ = writeln!(
            s,
            "<g class=\"group\" data-group=\"{0}\"><rect x=\"{1:.1}\" y=\"{2:.1}\" width=\"{3:.1}\" height=\"{4:.1}\" rx=\"6\"/><text x=\"{5:.1}\" y=\"{6:.1}\">{0}</text></g>",
            esc(g),
            r.x,
            r.y,
            r.w,
            r.h,
            r.x + 10.0,
            r.y + 17.0
        );
    }
    for (i, (e, (d, lx, ly))) in m.edges.iter().zip(&l.edges).enumerate() {
        let v = e.verdict.as_str();
        let _ = writeln!(
            s,
            "<path class=\"edge v-{v}\" data-edge=\"{i}\" d=\"{d}\" stroke=\"{c}\" marker-end=\"url(#arrow-{v})\"><title>{t}</title></path>\
             <text class=\"edge-label\" data-edge=\"{i}\" x=\"{lx:.1}\" y=\"{ly:.1}\" fill=\"{c}\" text-anchor=\"middle\">{lab}</text>",
            c = e.verdict.colour(),
            t = esc(&format!(
                "{} -> {}: {} ({v})",
                m.nodes[e.src].id,
                m.nodes[e.dst].id,
                e.label()
            )),
            lab = esc(&truncate(&e.label(), 40)),
        );
    }
    for (i, (n, r)) in m.nodes.iter().zip(&l.nodes).enumerate() {
        let kind = match n.kind {
            NodeKind::Workload => "workload",
            NodeKind::Node => "node",
            NodeKind::External => "external",
        };
        let _ = writeln!(
            s,
            "<g class=\"node k-{kind}\" data-node=\"{i}\" data-group=\"{g}\"><title>{id}</title><rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\"/><text x=\"{tx:.1}\" y=\"{ty:.1}\">{lab}</text></g>",
            g = esc(&n.group),
            id = esc(&n.id),
            x = r.x,
            y = r.y,
            w = r.w,
            h = r.h,
            tx = r.x + 8.0,
            ty = r.y + NODE_H / 2.0 + 4.0,
            lab = esc(&truncate(&n.label, 34)),
        );
    }
    s.push_str("</svg>\n<aside id=\"details\"><p>Click an edge to see its ports, counts and the rules that explain its verdict. Scroll to zoom, drag to pan.</p></aside></main>\n");
    let json = serde_json::to_string(m)
        .expect("the graph serializes")
        .replace('<', "\\u003c");
    let _ = write!(
        s,
        "<script type=\"application/json\" id=\"graph-data\">{json}</script>\n<script>{SCRIPT}</script>\n</body></html>\n"
    );
    s
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        return s.to_owned();
    }
    let mut t: String = s.chars().take(n - 1).collect();
    t.push('…');
    t
}
