//! The flow map as one self-contained HTML page: the graph model as JSON, elkjs (vendored, see
//! `vendor/elkjs/README.md`) for the layered layout, and our script `graph.js`, which draws the
//! SVG from elk's positions and adds the toggles, the search, the details panel and the
//! self-check the browser tests read. No external resource; a Content-Security-Policy forbids
//! fetching any.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{EdgeVerdict, GraphModel};

const SCRIPT: &str = include_str!("graph.js");

/// elkjs 0.12.1, `lib/elk.bundled.js`, unmodified (EPL-2.0; its licence is beside it).
pub(super) const ELK: &str = include_str!("vendor/elkjs/elk.bundled.js");

const STYLE: &str = r#"
body{margin:0;font:13px system-ui,sans-serif;color:#1d2733;background:#f7f8fa;display:flex;flex-direction:column;height:100vh}
header{display:flex;flex-wrap:wrap;gap:10px;align-items:center;padding:8px 12px;background:#fff;border-bottom:1px solid #d8dde3}
header h1{font-size:15px;margin:0 6px 0 0}
fieldset{border:1px solid #d8dde3;border-radius:4px;padding:2px 8px;margin:0}
legend{font-size:11px;color:#5b6775}
label{margin-right:8px;white-space:nowrap}
#search{width:240px}
#status{color:#5b6775;font-style:italic}
.swatch{display:inline-block;width:18px;height:3px;vertical-align:middle;margin-right:3px}
main{flex:1;display:flex;min-height:0}
#graph{flex:1;cursor:grab;background:#fff}
#graph text{text-rendering:geometricPrecision}
#graph.dragging{cursor:grabbing}
aside{width:360px;overflow:auto;padding:10px 12px;border-left:1px solid #d8dde3;background:#fff}
aside h2{font-size:14px;overflow-wrap:anywhere}
aside h3{font-size:13px;margin:12px 0 2px}
aside ul{margin:2px 0;padding-left:18px;overflow-wrap:anywhere}
aside pre.policy{font-size:11px;background:#f3f5f7;padding:6px;overflow:auto;max-height:420px}
.muted{color:#6c7a89}
.group rect{fill:#eef2f6;stroke:#c3ccd6}
.group-label{font:600 13px system-ui,sans-serif;fill:#3d4a59;cursor:pointer}
.node{cursor:pointer}
.node rect{fill:#fff;stroke:#7b8794}
.node.k-external rect{fill:#fff7e6;stroke:#b7791f}
.node.k-node rect{fill:#edf2ff;stroke:#4c6ef5}
.node.collapsed rect{fill:#e3e9f0;stroke:#3d4a59;stroke-dasharray:4 2}
.node-label{font:12px system-ui,sans-serif;fill:#1d2733;pointer-events:none}
.collapsed-label{font-weight:600}
.edge{fill:none;stroke-width:2;opacity:.85;pointer-events:none}
.v-excess.edge{stroke-dasharray:6 4}
.edge-hit{fill:none;stroke:transparent;stroke-width:10;cursor:pointer}
.focus .edge,.focus .node{opacity:.25}
.focus .edge.hl{opacity:1;stroke-width:3}
.focus .node.hl{opacity:1}
.node.hl rect{stroke-width:2}
#edge-tip rect{fill:#fff;stroke:#c3ccd6;opacity:.95}
#edge-tip text{font:600 11px system-ui,sans-serif;text-anchor:middle}
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
    EdgeVerdict::Allowed,
    EdgeVerdict::Excess,
    EdgeVerdict::Denied,
];

fn verdict_title(v: EdgeVerdict) -> &'static str {
    match v {
        EdgeVerdict::Observed => "observed",
        EdgeVerdict::Excess => "excess (allowed, never seen)",
        EdgeVerdict::Denied => "refused (seen, would be denied)",
        EdgeVerdict::Allowed => "allowed",
    }
}

/// The most excess (or, without flows, allowed) edges the page carries. A cluster without
/// policies allows every pair of workloads: 500 workloads would make 250 000 edges that no one
/// can read and a page of tens of megabytes. Above this the page leaves them out and says so;
/// `trustmap matrix` and `trustmap blast-radius` list them.
pub const PAGE_EDGE_LIMIT: usize = 3000;

/// The model the page carries, and the verdicts left out of it with their edge counts.
#[derive(serde::Serialize)]
struct PageModel<'a> {
    #[serde(flatten)]
    model: &'a GraphModel,
    trimmed: BTreeMap<&'static str, usize>,
}

/// The whole page. `title` names what is shown (e.g. the manifests).
pub fn render_html(m: &GraphModel, title: &str) -> String {
    let mut trimmed = BTreeMap::new();
    for v in [EdgeVerdict::Excess, EdgeVerdict::Allowed] {
        let n = m.edges.iter().filter(|e| e.verdict == v).count();
        if n > PAGE_EDGE_LIMIT {
            trimmed.insert(v.as_str(), n);
        }
    }
    let kept;
    let model = if trimmed.is_empty() {
        m
    } else {
        kept = GraphModel {
            edges: m
                .edges
                .iter()
                .filter(|e| !trimmed.contains_key(e.verdict.as_str()))
                .cloned()
                .collect(),
            nodes: m.nodes.clone(),
            with_flows: m.with_flows,
            policies: m.policies.clone(),
            blast: m.blast.clone(),
        };
        &kept
    };
    let mut s = String::with_capacity(ELK.len() + 64 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'\">\
         <meta name=\"viewport\" content=\"width=device-width\"><title>trustmap: {}</title><style>{STYLE}</style></head>\n<body>\n\
         <header><h1>trustmap flow map</h1>\
         <input id=\"search\" type=\"search\" list=\"workload-list\" placeholder=\"find a workload\" aria-label=\"find a workload\">\
         <datalist id=\"workload-list\"></datalist>",
        esc(title)
    );
    s.push_str("<fieldset><legend>edges</legend>");
    for v in VERDICTS {
        let n = m.edges.iter().filter(|e| e.verdict == v).count();
        if n == 0 {
            continue;
        }
        if trimmed.contains_key(v.as_str()) {
            let _ = write!(
                s,
                "<label title=\"`trustmap matrix` and `trustmap blast-radius` list them\"><input type=\"checkbox\" disabled data-verdict value=\"{v}\" data-colour=\"{c}\"><span class=\"swatch\" style=\"background:{c}\"></span>{t} ({n}, too many to draw)</label>",
                v = v.as_str(),
                c = v.colour(),
                t = verdict_title(v),
            );
            continue;
        }
        // Observed (or, without flows, allowed) edges by default; excess and refused ones on
        // demand.
        let on = matches!(v, EdgeVerdict::Observed | EdgeVerdict::Allowed);
        let _ = write!(
            s,
            "<label><input type=\"checkbox\"{checked} data-verdict value=\"{v}\" data-colour=\"{c}\"><span class=\"swatch\" style=\"background:{c}\"></span>{t} ({n})</label>",
            checked = if on { " checked" } else { "" },
            v = v.as_str(),
            c = v.colour(),
            t = verdict_title(v),
        );
    }
    s.push_str(
        "</fieldset><fieldset><legend>view</legend><button id=\"zoom-in\" title=\"zoom in\">+</button> \
         <button id=\"zoom-out\" title=\"zoom out\">&#8722;</button> <button id=\"zoom-fit\">fit</button> \
         <button id=\"expand-all\">expand all</button> <button id=\"collapse-all\">collapse all</button></fieldset>\
         <span id=\"status\" role=\"status\"></span></header>\n<main>",
    );
    s.push_str("<svg id=\"graph\" xmlns=\"http://www.w3.org/2000/svg\" preserveAspectRatio=\"xMidYMid meet\"><defs>");
    for v in VERDICTS {
        let _ = write!(
            s,
            "<marker id=\"arrow-{0}\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto-start-reverse\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"{1}\"/></marker>",
            v.as_str(),
            v.colour()
        );
    }
    s.push_str("</defs></svg>\n<aside id=\"details\"></aside></main>\n<noscript>The flow map needs JavaScript; `trustmap graph -o dot` draws it without.</noscript>\n");
    let json = serde_json::to_string(&PageModel { model, trimmed })
        .expect("the graph serializes")
        .replace('<', "\\u003c");
    let _ = write!(
        s,
        "<script type=\"application/json\" id=\"graph-data\">{json}</script>\n\
         <script>/* elkjs 0.12.1 (https://github.com/kieler/elkjs), lib/elk.bundled.js, unmodified. \
         Eclipse Public License 2.0 (or GPL-3.0-or-later); source and licence: \
         https://www.npmjs.com/package/elkjs/v/0.12.1 */\n{ELK}</script>\n<script>{SCRIPT}</script>\n</body></html>\n"
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vendored elkjs is the published file, byte for byte (see vendor/elkjs/README.md).
    #[test]
    fn vendored_elkjs_is_the_published_file() {
        let digest = ring::digest::digest(&ring::digest::SHA256, ELK.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "b1032b7cfd2a57c54c6f0e8369d7665e19a579954f7cd20a6dae28f1912ea0d7"
        );
    }

    #[test]
    fn the_page_carries_the_model_the_layout_library_and_the_toggles() {
        let m = GraphModel {
            nodes: vec![
                super::super::GraphNode {
                    id: "shop/Deployment/a</script>".into(),
                    label: "a".into(),
                    group: "shop".into(),
                    kind: super::super::NodeKind::Workload,
                },
                super::super::GraphNode {
                    id: "shop/Deployment/b".into(),
                    label: "b".into(),
                    group: "shop".into(),
                    kind: super::super::NodeKind::Workload,
                },
            ],
            edges: vec![
                super::super::GraphEdge {
                    src: 0,
                    dst: 1,
                    verdict: EdgeVerdict::Observed,
                    items: vec![],
                },
                super::super::GraphEdge {
                    src: 1,
                    dst: 0,
                    verdict: EdgeVerdict::Denied,
                    items: vec![],
                },
            ],
            with_flows: true,
            policies: Default::default(),
            blast: Default::default(),
        };
        let page = render_html(&m, "t<1>");
        assert!(page.contains("<title>trustmap: t&lt;1&gt;</title>"));
        // The model cannot close its script element early.
        assert!(page.contains("shop/Deployment/a\\u003c/script>"));
        assert_eq!(page.matches("</script>").count(), 3);
        // Observed edges on by default, refused ones behind an unchecked toggle, and no toggle
        // for verdicts the graph does not have.
        assert!(page.contains("<input type=\"checkbox\" checked data-verdict value=\"observed\""));
        assert!(page.contains("<input type=\"checkbox\" data-verdict value=\"denied\""));
        assert!(!page.contains("value=\"excess\""));
        assert!(page.contains(ELK) && page.contains(SCRIPT));
    }
}
