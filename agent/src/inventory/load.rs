//! The manifests loader: files and directories of YAML (multi-document) or JSON, including
//! `kind: List` and typed lists such as `PodList`. Reading files is the only IO here; turning
//! text into objects is [`Manifests::add_text`], which tests call directly.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, de::DeserializeOwned};
use serde_json::Value;

use super::{InventoryError, build::InventoryBuilder, model::Inventory};
use crate::policy::{
    AdminKind, AdminPolicy, Policy, Tier,
    admin::{AdminObject, AnpSpec, CnpSpec},
};

/// Where an object came from: file, 1-based document index, and 1-based item index in a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub file: PathBuf,
    pub document: usize,
    pub item: Option<usize>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file.display(), self.document)?;
        if let Some(i) = self.item {
            write!(f, ", item {i}")?;
        }
        Ok(())
    }
}

/// The objects read from manifests, before [`Manifests::finish`].
#[derive(Debug, Default)]
pub struct Manifests {
    builder: InventoryBuilder,
    policies: Vec<(Location, Policy)>,
    admin: Vec<(Location, AdminPolicy)>,
    notes: Vec<String>,
    warnings: Vec<String>,
    /// Unknown fields are notes, not errors.
    lenient: bool,
    /// The lines of the YAML document being read, and the file line of its first one.
    current: Option<(usize, Vec<String>)>,
}

/// What manifests describe: the inventory and the policies, plus notes on what was skipped.
#[derive(Debug)]
pub struct Loaded {
    pub inventory: Inventory,
    /// Valid NetworkPolicies, in the order read; a later one with the same namespace and name
    /// replaces an earlier one, as `kubectl apply` would.
    pub policies: Vec<Policy>,
    /// Valid ClusterNetworkPolicies, AdminNetworkPolicies and the
    /// BaselineAdminNetworkPolicy; a later one with the same kind and name replaces an earlier
    /// one.
    pub admin: Vec<AdminPolicy>,
    /// Objects skipped and other things a user may want to know.
    pub notes: Vec<String>,
    /// What makes verdicts incomplete: policy kinds that are not evaluated.
    pub warnings: Vec<String>,
}

/// Policy kinds trustmap does not evaluate, by API group: verdicts ignore them, and the loader
/// says so. CiliumNetworkPolicy is the exception for the offline commands, which evaluate it
/// from files and from a live cluster (see [`crate::policy::cilium`]); the agent does not
/// watch it yet, so it stays listed for the agent's warning.
pub const UNEVALUATED_POLICY_KINDS: &[(&str, &[&str])] = &[
    (
        "cilium.io",
        &["CiliumNetworkPolicy", "CiliumClusterwideNetworkPolicy"],
    ),
    (
        "projectcalico.org",
        &[
            "NetworkPolicy",
            "GlobalNetworkPolicy",
            "StagedNetworkPolicy",
            "StagedGlobalNetworkPolicy",
            "StagedKubernetesNetworkPolicy",
            "Tier",
        ],
    ),
    (
        "crd.projectcalico.org",
        &["NetworkPolicy", "GlobalNetworkPolicy"],
    ),
    ("k8s.cni.cncf.io", &["MultiNetworkPolicy"]),
    ("crd.antrea.io", &["NetworkPolicy", "ClusterNetworkPolicy"]),
];

fn unevaluated(api_version: &str, kind: &str) -> bool {
    let group = api_version.split_once('/').map_or("", |(g, _)| g);
    UNEVALUATED_POLICY_KINDS
        .iter()
        .any(|(g, kinds)| *g == group && kinds.contains(&kind))
}

/// Reads files and directories (recursively: `.yaml`, `.yml` and `.json` files, in name order).
/// Unknown fields are errors: see [`load_paths_with`].
pub fn load_paths<P: AsRef<Path>>(paths: &[P]) -> Result<Loaded, InventoryError> {
    load_paths_with(paths, false)
}

/// Like [`load_paths`]; with `lenient`, fields a kind does not have are notes, not errors.
pub fn load_paths_with<P: AsRef<Path>>(
    paths: &[P],
    lenient: bool,
) -> Result<Loaded, InventoryError> {
    let mut m = Manifests::default().lenient(lenient);
    for p in paths {
        let mut files = Vec::new();
        collect(p.as_ref(), true, &mut files)?;
        for file in files {
            let text = fs::read_to_string(&file).map_err(|source| InventoryError::Io {
                path: file.clone(),
                source,
            })?;
            m.add_text(&file, &text)?;
        }
    }
    Ok(m.finish())
}

fn collect(path: &Path, explicit: bool, out: &mut Vec<PathBuf>) -> Result<(), InventoryError> {
    let io = |source| InventoryError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        let mut entries = fs::read_dir(path)
            .map_err(io)?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)?;
        entries.sort();
        for e in entries {
            collect(&e, false, out)?;
        }
    } else {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if explicit || matches!(ext, "yaml" | "yml" | "json") {
            out.push(path.to_owned());
        }
    }
    Ok(())
}

impl Manifests {
    pub fn new() -> Self {
        Self::default()
    }

    /// Unknown fields become notes instead of errors (`--lenient`).
    pub fn lenient(mut self, lenient: bool) -> Self {
        self.lenient = lenient;
        self
    }

    /// Parses the text of one file (`path` only names it in errors and notes). JSON when the
    /// file name ends in `.json`, YAML otherwise.
    pub fn add_text(&mut self, path: &Path, text: &str) -> Result<(), InventoryError> {
        let syntax = |document, message: String| InventoryError::Syntax {
            path: path.to_owned(),
            document,
            message,
        };
        let docs: Vec<Value> = if path.extension().is_some_and(|e| e == "json") {
            serde_json::Deserializer::from_str(text)
                .into_iter::<Value>()
                .enumerate()
                .map(|(i, d)| d.map_err(|e| syntax(i + 1, e.to_string())))
                .collect::<Result<_, _>>()?
        } else {
            serde_yaml::Deserializer::from_str(text)
                .enumerate()
                .map(|(i, d)| Value::deserialize(d).map_err(|e| syntax(i + 1, e.to_string())))
                .collect::<Result<_, _>>()?
        };
        // Each YAML document's lines, to name the line of an unknown field; only when the
        // split agrees with the parser's count of documents.
        let texts = if path.extension().is_some_and(|e| e == "json") {
            Vec::new()
        } else {
            yaml_documents(text)
        };
        let with_lines = texts.len() == docs.len();
        for (i, doc) in docs.into_iter().enumerate() {
            let loc = Location {
                file: path.to_owned(),
                document: i + 1,
                item: None,
            };
            self.current = with_lines.then(|| texts[i].clone());
            let r = self.add_value(doc, loc);
            self.current = None;
            r?;
        }
        Ok(())
    }

    fn add_value(&mut self, doc: Value, loc: Location) -> Result<(), InventoryError> {
        if doc.is_null() {
            return Ok(());
        }
        let kind = doc
            .get("kind")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        if let Some(item_kind) = kind.strip_suffix("List")
            && let Some(Value::Array(items)) = doc.get("items")
        {
            let api_version = doc.get("apiVersion").cloned();
            for (j, mut item) in items.clone().into_iter().enumerate() {
                // Typed lists (PodList) leave kind and apiVersion out of their items.
                if let Value::Object(o) = &mut item
                    && !item_kind.is_empty()
                {
                    o.entry("kind").or_insert_with(|| item_kind.into());
                    if let Some(v) = &api_version {
                        o.entry("apiVersion").or_insert_with(|| v.clone());
                    }
                }
                let loc = Location {
                    item: Some(j + 1),
                    ..loc.clone()
                };
                self.add_value(item, loc)?;
            }
            return Ok(());
        }
        let api_version = doc.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        let lines: Option<Vec<&str>> = self
            .current
            .as_ref()
            .map(|(_, l)| l.iter().map(String::as_str).collect());
        let mut ctx = DecodeContext {
            lines: lines.as_deref(),
            first_line: self.current.as_ref().map_or(1, |(f, _)| *f),
            lenient: self.lenient,
            notes: &mut self.notes,
        };
        let b = &mut self.builder;
        let r = match (api_version, kind.as_str()) {
            ("v1", "Namespace") => decode(doc, &loc, &mut ctx).and_then(|o| b.namespace(&o)),
            ("v1", "Pod") => decode(doc, &loc, &mut ctx).and_then(|o| b.pod(&o)),
            ("v1", "Service") => decode(doc, &loc, &mut ctx).and_then(|o| b.service(&o)),
            ("v1", "Node") => decode(doc, &loc, &mut ctx).and_then(|o| b.node(&o)),
            ("v1", "ReplicationController") => {
                decode(doc, &loc, &mut ctx).and_then(|o| b.replication_controller(&o))
            }
            ("apps/v1", "Deployment") => decode(doc, &loc, &mut ctx).and_then(|o| b.deployment(&o)),
            ("apps/v1", "StatefulSet") => {
                decode(doc, &loc, &mut ctx).and_then(|o| b.stateful_set(&o))
            }
            ("apps/v1", "DaemonSet") => decode(doc, &loc, &mut ctx).and_then(|o| b.daemon_set(&o)),
            ("apps/v1", "ReplicaSet") => {
                decode(doc, &loc, &mut ctx).and_then(|o| b.replica_set(&o))
            }
            ("batch/v1", "Job") => decode(doc, &loc, &mut ctx).and_then(|o| b.job(&o)),
            ("batch/v1", "CronJob") => decode(doc, &loc, &mut ctx).and_then(|o| b.cron_job(&o)),
            ("discovery.k8s.io/v1", "EndpointSlice") => {
                decode(doc, &loc, &mut ctx).and_then(|o| b.endpoint_slice(&o))
            }
            (
                "policy.networking.k8s.io/v1alpha2" | "policy.networking.k8s.io/v1beta1",
                "ClusterNetworkPolicy",
            ) => {
                let o: AdminObject<CnpSpec> = decode(doc, &loc, &mut ctx)?;
                let p = AdminPolicy::from_cnp(&o)
                    .map_err(|e| in_document(&loc, &kind, &o.metadata.name, e.into()))?;
                self.admin.push((loc.clone(), p));
                Ok(())
            }
            (
                "policy.networking.k8s.io/v1alpha1",
                "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy",
            ) => {
                let o: AdminObject<AnpSpec> = decode(doc, &loc, &mut ctx)?;
                let p = AdminPolicy::from_v1alpha1(&o, kind == "BaselineAdminNetworkPolicy")
                    .map_err(|e| in_document(&loc, &kind, &o.metadata.name, e.into()))?;
                self.admin.push((loc.clone(), p));
                Ok(())
            }
            ("cilium.io/v2", "CiliumNetworkPolicy") => {
                let cnp: crate::policy::cilium::CiliumNetworkPolicy = decode(doc, &loc, &mut ctx)?;
                let policy = Policy::from_cilium(&cnp)
                    .map_err(|e| in_document(&loc, &kind, &cnp.metadata.name, e.into()))?;
                self.builder.reference_namespace(&policy.namespace);
                self.policies.push((loc.clone(), policy));
                Ok(())
            }
            (api, k) if unevaluated(api, k) => {
                let name = doc
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or("(unnamed)");
                self.warnings.push(format!(
                    "{loc}: {api} {k} {name} is not evaluated: verdicts ignore it, so they may be wrong where it applies"
                ));
                Ok(())
            }
            ("networking.k8s.io/v1", "NetworkPolicy") => {
                let np = decode(doc, &loc, &mut ctx)?;
                let policy = Policy::from_k8s(&np)
                    .map_err(|e| in_document(&loc, &kind, &np.metadata.name, e.into()))?;
                self.builder.reference_namespace(&policy.namespace);
                self.policies.push((loc.clone(), policy));
                Ok(())
            }
            _ => {
                let what = if kind.is_empty() {
                    "an object without kind".to_owned()
                } else {
                    format!("{api_version} {kind}")
                };
                self.notes.push(format!("{loc}: skipped {what}"));
                Ok(())
            }
        };
        r.map_err(|e| match e {
            e @ (InventoryError::Decode { .. } | InventoryError::InDocument { .. }) => e,
            e => in_document(&loc, &kind, &None, e),
        })
    }

    /// Builds the inventory and settles duplicate policies.
    pub fn finish(mut self) -> Loaded {
        let mut policies: Vec<Policy> = Vec::new();
        for (loc, p) in self.policies {
            if let Some(old) = policies
                .iter_mut()
                .find(|o| o.kind == p.kind && o.namespace == p.namespace && o.name == p.name)
            {
                self.notes.push(format!(
                    "{loc}: NetworkPolicy {} replaces an earlier one with the same name",
                    p.key()
                ));
                *old = p;
            } else {
                policies.push(p);
            }
        }
        let mut admin: Vec<AdminPolicy> = Vec::new();
        for (loc, p) in self.admin {
            if let Some(old) = admin
                .iter_mut()
                .find(|o| o.kind == p.kind && o.name == p.name)
            {
                self.notes.push(format!(
                    "{loc}: {} replaces an earlier one with the same name",
                    p.key()
                ));
                *old = p;
            } else {
                admin.push(p);
            }
        }
        if admin
            .iter()
            .filter(|p| p.kind == AdminKind::BaselineAdminNetworkPolicy)
            .count()
            > 0
            && admin
                .iter()
                .any(|p| p.kind == AdminKind::ClusterNetworkPolicy && p.tier == Tier::Baseline)
        {
            self.notes.push(
                "both a BaselineAdminNetworkPolicy and Baseline-tier ClusterNetworkPolicies: \
                 the BaselineAdminNetworkPolicy is evaluated after all of them"
                    .into(),
            );
        }
        Loaded {
            inventory: self.builder.build(),
            policies,
            admin,
            notes: self.notes,
            warnings: self.warnings,
        }
    }
}

fn in_document(
    loc: &Location,
    kind: &str,
    name: &Option<String>,
    e: InventoryError,
) -> InventoryError {
    InventoryError::InDocument {
        location: loc.to_string(),
        object: match name {
            Some(n) => format!("{kind} {n}"),
            None => kind.to_owned(),
        },
        source: Box::new(e),
    }
}

/// Decodes one object. Fields its kind does not have are an error (with the line of each, when
/// the document's text is known), or with `lenient` a note.
fn decode<T: DeserializeOwned>(
    doc: Value,
    loc: &Location,
    ctx: &mut DecodeContext<'_>,
) -> Result<T, InventoryError> {
    let kind = doc
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let name = doc
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let object = match name {
        Some(n) => format!("{kind} {n}"),
        None => kind,
    };
    let (t, unknown) =
        super::strict::deserialize_strict(doc).map_err(|e| InventoryError::Decode {
            location: loc.to_string(),
            object: object.clone(),
            field: e.path().to_string(),
            message: e.inner().to_string(),
        })?;
    if unknown.is_empty() {
        return Ok(t);
    }
    let fields: Vec<String> = unknown
        .iter()
        .map(|u| {
            let line = ctx.lines.map(|lines| {
                let path = crate::lint::locate::parse_path(&u.path);
                ctx.first_line + crate::lint::locate::locate(lines, &path)
            });
            let mut s = format!("unknown field {}", u.path);
            match (line, u.closest) {
                (Some(l), Some(c)) => s.push_str(&format!(" (line {l}, did you mean {c}?)")),
                (Some(l), None) => s.push_str(&format!(" (line {l})")),
                (None, Some(c)) => s.push_str(&format!(" (did you mean {c}?)")),
                (None, None) => {}
            }
            s
        })
        .collect();
    if ctx.lenient {
        for f in fields {
            ctx.notes
                .push(format!("{loc}: {object}: {f}: ignored (--lenient)"));
        }
        return Ok(t);
    }
    Err(InventoryError::UnknownFields {
        location: loc.to_string(),
        object,
        fields,
    })
}

/// The documents of a YAML text, split at `---` lines: each with the file line of its first line
/// and its lines. Empty documents (comments only) are dropped, as the parser drops them.
fn yaml_documents(text: &str) -> Vec<(usize, Vec<String>)> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, Vec<String>)> = None;
    for (i, line) in text.lines().enumerate() {
        let is_sep = line == "---" || line.starts_with("--- ");
        if is_sep {
            if let Some(d) = cur.take() {
                out.push(d);
            }
            cur = Some((i + 2, Vec::new()));
            continue;
        }
        cur.get_or_insert_with(|| (i + 1, Vec::new()))
            .1
            .push(line.to_owned());
    }
    out.extend(cur);
    out.retain(|(_, lines)| {
        lines.iter().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        })
    });
    out
}

/// What [`decode`] needs beyond the document: its text, if known, and the loader's mode.
struct DecodeContext<'a> {
    /// The document's lines and the file line of its first one.
    lines: Option<&'a [&'a str]>,
    first_line: usize,
    lenient: bool,
    notes: &'a mut Vec<String>,
}
