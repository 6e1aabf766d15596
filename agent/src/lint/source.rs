//! What lint needs from the manifests beyond the inventory: where each object is (file and
//! line), scrape annotations, ServiceMonitors and PodMonitors, Service types and the Services
//! that Ingresses route to. Read from the text of each file ([`Sources::add_text`]); pure.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
};

use serde::Serialize;
use serde_json::Value;

use super::locate::{Seg, locate};
use crate::policy::{Labels, Selector};

/// A place in a manifest file, 1-based line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SourceLocation {
    pub file: PathBuf,
    pub line: usize,
}

/// One object's document: its file, its first line, its lines, and the path prefix of the
/// object inside the document (`items[3]` in a List).
#[derive(Clone, Debug)]
struct Doc {
    file: PathBuf,
    first_line: usize,
    lines: Vec<String>,
    prefix: Vec<Seg>,
}

/// A Prometheus-style scrape target: pods to scrape, on which port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScrapeTarget {
    /// What declared it, for messages: `Service shop/web`, `ServiceMonitor monitoring/web`.
    pub declared_by: String,
    pub namespaces: ScrapeNamespaces,
    /// The pods scraped; for a ServiceMonitor, the Services whose pods are scraped.
    pub pods: Selector,
    /// Whether `pods` selects Services (ServiceMonitor) rather than pods.
    pub selects_services: bool,
    pub port: ScrapePort,
    pub location: Option<SourceLocation>,
}

/// Where a scrape target's pods are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScrapeNamespaces {
    Named(Vec<String>),
    Any,
}

/// The port scraped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ScrapePort {
    Number(u16),
    /// A container port name.
    Named(String),
    /// A Service port name (ServiceMonitor), resolved to its targetPort by the rule.
    ServicePort(String),
    /// Not said: every declared container port of the pods.
    Declared,
}

/// A Service as lint sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceFacts {
    /// `spec.type`, `ClusterIP` when absent.
    pub kind: String,
    pub external_ips: bool,
    pub labels: Labels,
}

/// Facts gathered from the manifest texts.
#[derive(Clone, Debug, Default)]
pub struct Sources {
    /// Keyed by kind, namespace (empty for cluster objects) and name; the last one wins.
    docs: HashMap<(String, String, String), Doc>,
    pub scrape_targets: Vec<ScrapeTarget>,
    /// Keyed by namespace and name.
    pub services: BTreeMap<(String, String), ServiceFacts>,
    /// Services an Ingress or HTTPRoute sends traffic to: they are not internal-only.
    pub routed_services: Vec<(String, String)>,
}

const SCRAPE: &str = "prometheus.io/scrape";
const SCRAPE_PORT: &str = "prometheus.io/port";

fn s<'a>(v: &'a Value, ptr: &str) -> Option<&'a str> {
    v.pointer(ptr).and_then(Value::as_str)
}

fn labels_at(v: &Value, ptr: &str) -> Labels {
    v.pointer(ptr)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn selector_at(v: &Value, ptr: &str) -> Option<Selector> {
    let sel = v.pointer(ptr)?;
    let k: k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector =
        serde_json::from_value(sel.clone()).ok()?;
    Selector::from_k8s(&k, ptr).ok()
}

/// Splits YAML text into documents with their first line (1-based).
fn yaml_documents(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut docs = vec![(1, Vec::new())];
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") {
            docs.push((i + 2, Vec::new()));
        } else if let Some(d) = docs.last_mut() {
            d.1.push(line.to_owned());
        }
    }
    docs
}

impl Sources {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads the objects of one file's text. Documents that do not parse are left out: the
    /// inventory loader has already reported them.
    pub fn add_text(&mut self, path: &Path, text: &str) {
        if path.extension().is_some_and(|e| e == "json") {
            let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Value>();
            let mut offset = 0;
            while let Some(Ok(v)) = stream.next() {
                let start = text[offset..]
                    .find(|c: char| !c.is_whitespace())
                    .map_or(offset, |i| offset + i);
                let line = text[..start].matches('\n').count() + 1;
                offset = stream.byte_offset();
                let doc = Doc {
                    file: path.to_owned(),
                    first_line: line,
                    lines: Vec::new(),
                    prefix: Vec::new(),
                };
                self.add_value(&v, doc);
            }
            return;
        }
        for (first_line, lines) in yaml_documents(text) {
            let Ok(v) = serde_yaml::from_str::<Value>(&lines.join("\n")) else {
                continue;
            };
            let doc = Doc {
                file: path.to_owned(),
                first_line,
                lines,
                prefix: Vec::new(),
            };
            self.add_value(&v, doc);
        }
    }

    fn add_value(&mut self, v: &Value, doc: Doc) {
        let kind = s(v, "/kind").unwrap_or("");
        if kind.ends_with("List")
            && let Some(items) = v.get("items").and_then(Value::as_array)
        {
            let item_kind = kind.trim_end_matches("List");
            for (j, item) in items.iter().enumerate() {
                let mut item = item.clone();
                if let Value::Object(o) = &mut item
                    && !item_kind.is_empty()
                {
                    o.entry("kind").or_insert_with(|| item_kind.into());
                }
                let mut d = doc.clone();
                d.prefix.extend([Seg::key("items"), Seg::Index(j)]);
                self.add_value(&item, d);
            }
            return;
        }
        let Some(name) = s(v, "/metadata/name") else {
            return;
        };
        let cluster_scoped = matches!(
            kind,
            "Namespace"
                | "Node"
                | "ClusterNetworkPolicy"
                | "AdminNetworkPolicy"
                | "BaselineAdminNetworkPolicy"
        );
        let ns = if cluster_scoped {
            String::new()
        } else {
            s(v, "/metadata/namespace").unwrap_or("default").to_owned()
        };
        let location = Some(SourceLocation {
            file: doc.file.clone(),
            line: doc.first_line + locate_in(&doc, &[]),
        });
        match kind {
            "Pod" => self.annotated(v, "Pod", &ns, name, "/metadata", location.clone()),
            "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => self.annotated(
                v,
                kind,
                &ns,
                name,
                "/spec/template/metadata",
                location.clone(),
            ),
            "Service" => self.service(v, &ns, name, location.clone()),
            "ServiceMonitor" | "PodMonitor" => self.monitor(v, kind, &ns, name, location.clone()),
            "Ingress" => self.ingress(v, &ns),
            "HTTPRoute" | "GRPCRoute" | "TLSRoute" | "TCPRoute" => self.route(v, &ns),
            _ => {}
        }
        self.docs
            .insert((kind.to_owned(), ns, name.to_owned()), doc);
    }

    /// Pods (or a workload's template) with `prometheus.io/scrape: "true"`.
    fn annotated(
        &mut self,
        v: &Value,
        kind: &str,
        ns: &str,
        name: &str,
        meta: &str,
        location: Option<SourceLocation>,
    ) {
        let ann = labels_at(v, &format!("{meta}/annotations"));
        if ann.get(SCRAPE).map(String::as_str) != Some("true") {
            return;
        }
        let labels = labels_at(v, &format!("{meta}/labels"));
        self.scrape_targets.push(ScrapeTarget {
            declared_by: format!("{kind} {ns}/{name}"),
            namespaces: ScrapeNamespaces::Named(vec![ns.to_owned()]),
            pods: Selector::from_labels(labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            selects_services: false,
            port: scrape_port(&ann),
            location,
        });
    }

    fn service(&mut self, v: &Value, ns: &str, name: &str, location: Option<SourceLocation>) {
        let facts = ServiceFacts {
            kind: s(v, "/spec/type").unwrap_or("ClusterIP").to_owned(),
            external_ips: v
                .pointer("/spec/externalIPs")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty()),
            labels: labels_at(v, "/metadata/labels"),
        };
        self.services
            .insert((ns.to_owned(), name.to_owned()), facts);
        let ann = labels_at(v, "/metadata/annotations");
        if ann.get(SCRAPE).map(String::as_str) != Some("true") {
            return;
        }
        let sel = labels_at(v, "/spec/selector");
        if sel.is_empty() {
            return;
        }
        self.scrape_targets.push(ScrapeTarget {
            declared_by: format!("Service {ns}/{name}"),
            namespaces: ScrapeNamespaces::Named(vec![ns.to_owned()]),
            pods: Selector::from_labels(sel.iter().map(|(k, v)| (k.as_str(), v.as_str()))),
            selects_services: false,
            port: scrape_port(&ann),
            location,
        });
    }

    /// A ServiceMonitor selects Services (whose pods are then scraped on a Service port's
    /// targetPort); a PodMonitor selects pods directly. Services are resolved by the rule.
    fn monitor(
        &mut self,
        v: &Value,
        kind: &str,
        ns: &str,
        name: &str,
        location: Option<SourceLocation>,
    ) {
        let namespaces = if v.pointer("/spec/namespaceSelector/any") == Some(&Value::Bool(true)) {
            ScrapeNamespaces::Any
        } else {
            match v
                .pointer("/spec/namespaceSelector/matchNames")
                .and_then(Value::as_array)
            {
                Some(names) => ScrapeNamespaces::Named(
                    names
                        .iter()
                        .filter_map(|n| n.as_str().map(str::to_owned))
                        .collect(),
                ),
                None => ScrapeNamespaces::Named(vec![ns.to_owned()]),
            }
        };
        let Some(selector) = selector_at(v, "/spec/selector") else {
            return;
        };
        let endpoints_key = if kind == "PodMonitor" {
            "/spec/podMetricsEndpoints"
        } else {
            "/spec/endpoints"
        };
        let endpoints = v
            .pointer(endpoints_key)
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for e in endpoints {
            let port = match (e.get("port").and_then(Value::as_str), e.get("targetPort")) {
                (_, Some(Value::Number(n))) => n
                    .as_u64()
                    .and_then(|n| u16::try_from(n).ok())
                    .map(ScrapePort::Number),
                (_, Some(Value::String(n))) => Some(ScrapePort::Named(n.clone())),
                (Some(p), _) if kind == "PodMonitor" => Some(ScrapePort::Named(p.to_owned())),
                (Some(p), _) => Some(ScrapePort::ServicePort(p.to_owned())),
                _ => None,
            };
            let Some(port) = port else { continue };
            self.scrape_targets.push(ScrapeTarget {
                declared_by: format!("{kind} {ns}/{name}"),
                namespaces: namespaces.clone(),
                pods: selector.clone(),
                selects_services: kind == "ServiceMonitor",
                port,
                location: location.clone(),
            });
        }
    }

    fn ingress(&mut self, v: &Value, ns: &str) {
        let mut names = Vec::new();
        collect_strings(v.pointer("/spec"), "service", "name", &mut names);
        for n in names {
            self.routed_services.push((ns.to_owned(), n));
        }
    }

    fn route(&mut self, v: &Value, ns: &str) {
        for rule in v
            .pointer("/spec/rules")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for b in rule
                .get("backendRefs")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(n) = b.get("name").and_then(Value::as_str) {
                    let bns = b.get("namespace").and_then(Value::as_str).unwrap_or(ns);
                    self.routed_services.push((bns.to_owned(), n.to_owned()));
                }
            }
        }
    }

    /// Where a field of an object is: `path` inside the object, e.g. `spec.ingress[0].from[1]`.
    pub fn locate(&self, kind: &str, ns: &str, name: &str, path: &[Seg]) -> Option<SourceLocation> {
        let doc = self
            .docs
            .get(&(kind.to_owned(), ns.to_owned(), name.to_owned()))?;
        Some(SourceLocation {
            file: doc.file.clone(),
            line: doc.first_line + locate_in(doc, path),
        })
    }

    /// Where the first object of a namespace is: the Namespace, else any object in it.
    pub fn namespace_location(&self, ns: &str) -> Option<SourceLocation> {
        if let Some(l) = self.locate("Namespace", "", ns, &[]) {
            return Some(l);
        }
        let mut keys: Vec<&(String, String, String)> =
            self.docs.keys().filter(|k| k.1 == ns).collect();
        keys.sort();
        let k = keys.first()?;
        self.locate(&k.0, &k.1, &k.2, &[])
    }
}

/// Lines below the document's first line at which the path (after the List prefix) is.
fn locate_in(doc: &Doc, path: &[Seg]) -> usize {
    if doc.lines.is_empty() {
        return 0;
    }
    let full: Vec<Seg> = doc.prefix.iter().chain(path).cloned().collect();
    let lines: Vec<&str> = doc.lines.iter().map(String::as_str).collect();
    locate(&lines, &full)
}

fn scrape_port(ann: &Labels) -> ScrapePort {
    match ann.get(SCRAPE_PORT).map(|p| p.parse::<u16>()) {
        Some(Ok(p)) => ScrapePort::Number(p),
        Some(Err(_)) => ScrapePort::Named(ann[SCRAPE_PORT].clone()),
        None => ScrapePort::Declared,
    }
}

/// Every string at `.../{outer}/{inner}` anywhere below `v` (Ingress backends).
fn collect_strings(v: Option<&Value>, outer: &str, inner: &str, out: &mut Vec<String>) {
    match v {
        Some(Value::Object(o)) => {
            if let Some(n) = o
                .get(outer)
                .and_then(|x| x.get(inner))
                .and_then(Value::as_str)
            {
                out.push(n.to_owned());
            }
            for x in o.values() {
                collect_strings(Some(x), outer, inner, out);
            }
        }
        Some(Value::Array(a)) => a
            .iter()
            .for_each(|x| collect_strings(Some(x), outer, inner, out)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_lines_count_from_the_document_start() {
        let text = "apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: p\n  namespace: a\nspec:\n  podSelector: {}\n  ingress:\n  - from:\n    - podSelector: {}\n";
        let mut s = Sources::new();
        s.add_text(Path::new("x.yaml"), text);
        let at = |path: &[Seg]| s.locate("NetworkPolicy", "a", "p", path).unwrap().line;
        assert_eq!(at(&[]), 5);
        let peer = [
            Seg::key("spec"),
            Seg::key("ingress"),
            Seg::Index(0),
            Seg::key("from"),
            Seg::Index(0),
        ];
        assert_eq!(at(&peer), 14);
        assert_eq!(s.namespace_location("a").unwrap().line, 1);
    }

    #[test]
    fn scrape_annotations_and_monitors_become_targets() {
        let text = r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  template:
    metadata:
      labels: {app: web}
      annotations: {prometheus.io/scrape: "true", prometheus.io/port: "9100"}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: api, namespace: monitoring}
spec:
  namespaceSelector: {matchNames: [shop]}
  selector: {matchLabels: {app: api}}
  endpoints: [{port: metrics}]
"#;
        let mut s = Sources::new();
        s.add_text(Path::new("x.yaml"), text);
        assert_eq!(s.scrape_targets.len(), 2);
        assert_eq!(s.scrape_targets[0].port, ScrapePort::Number(9100));
        assert_eq!(
            s.scrape_targets[1].namespaces,
            ScrapeNamespaces::Named(vec!["shop".into()])
        );
        assert_eq!(s.scrape_targets[1].location.as_ref().unwrap().line, 10);
    }
}
