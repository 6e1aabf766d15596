//! Who can reach what: metrics scrapers that policies block (TM004), and internal-only
//! Services whose pods no ingress policy isolates (TM040).

use std::collections::BTreeSet;

use super::Ctx;
use crate::{
    flow::Protocol,
    inventory::{NamespaceId, PodId, TargetPort},
    lint::{Finding, RuleId, ScrapeNamespaces, ScrapePort, ScrapeTarget, Subject, fix},
    policy::{Connection, Direction, Labels, Selector, SideVerdict},
};

pub fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    scrapes(ctx, out);
    internal_services(ctx, out);
}

fn labels_selector(l: &Labels) -> Selector {
    Selector::from_labels(l.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

fn in_scope(ctx: &Ctx<'_>, scope: &ScrapeNamespaces, ns: NamespaceId) -> bool {
    match scope {
        ScrapeNamespaces::Any => true,
        ScrapeNamespaces::Named(v) => v.iter().any(|n| *n == ctx.inv.namespace(ns).name),
    }
}

/// The pods of a scrape target with the port scraped on each.
fn target_pods(ctx: &Ctx<'_>, t: &ScrapeTarget) -> Vec<(PodId, u16)> {
    let mut out = Vec::new();
    let port_on = |pod: PodId, port: &ScrapePort| -> Vec<u16> {
        let cps = &ctx.inv.pod(pod).ports;
        match port {
            ScrapePort::Number(n) => vec![*n],
            ScrapePort::Named(n) | ScrapePort::ServicePort(n) => cps
                .iter()
                .filter(|c| c.name.as_deref() == Some(n) && c.protocol == Protocol::Tcp)
                .map(|c| c.port)
                .collect(),
            ScrapePort::Declared => cps
                .iter()
                .filter(|c| c.protocol == Protocol::Tcp)
                .map(|c| c.port)
                .collect(),
        }
    };
    if !t.selects_services {
        for &pod in &ctx.pods {
            let p = ctx.inv.pod(pod);
            if in_scope(ctx, &t.namespaces, p.namespace) && t.pods.matches(&p.labels) {
                out.extend(port_on(pod, &t.port).into_iter().map(|n| (pod, n)));
            }
        }
        return out;
    }
    for svc in ctx.inv.services() {
        let ns = &ctx.inv.namespace(svc.namespace).name;
        let facts = ctx.sources.services.get(&(ns.clone(), svc.name.clone()));
        let labels = facts.map(|f| f.labels.clone()).unwrap_or_default();
        if !in_scope(ctx, &t.namespaces, svc.namespace) || !t.pods.matches(&labels) {
            continue;
        }
        let Some(sel) = &svc.selector else { continue };
        let sel = labels_selector(sel);
        let port = match &t.port {
            ScrapePort::ServicePort(name) => {
                match svc.ports.iter().find(|p| p.name.as_deref() == Some(name)) {
                    Some(sp) => match &sp.target {
                        TargetPort::Number(n) => ScrapePort::Number(*n),
                        TargetPort::Named(n) => ScrapePort::Named(n.clone()),
                    },
                    None => continue,
                }
            }
            other => other.clone(),
        };
        for &pod in &ctx.pods {
            let p = ctx.inv.pod(pod);
            if p.namespace == svc.namespace && sel.matches(&p.labels) {
                out.extend(port_on(pod, &port).into_iter().map(|n| (pod, n)));
            }
        }
    }
    out
}

fn scrapes(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let scrapers: Vec<(PodId, &Selector)> = ctx
        .pods
        .iter()
        .filter_map(|&p| {
            let l = &ctx.inv.pod(p).labels;
            ctx.opts
                .scrapers
                .iter()
                .find(|s| s.matches(l))
                .map(|s| (p, s))
        })
        .collect();
    if scrapers.is_empty() {
        return;
    }
    let mut seen = BTreeSet::new();
    for t in &ctx.sources.scrape_targets {
        for (target, port) in target_pods(ctx, t) {
            for &(scraper, scraper_sel) in &scrapers {
                let c = Connection {
                    src: ctx.inv.resolve_pod(scraper, None),
                    dst: ctx.inv.resolve_pod(target, None),
                    protocol: Protocol::Tcp,
                    port: Some(port),
                    dst_names: &[],
                };
                let v = ctx.ev.evaluate(&c);
                for (d, side, pod) in [
                    (Direction::Egress, v.egress, scraper),
                    (Direction::Ingress, v.ingress, target),
                ] {
                    if !matches!(side, SideVerdict::Denied) {
                        continue;
                    }
                    let names = (ctx.names(&[scraper]), ctx.names(&[target]));
                    if !seen.insert((names.clone(), port, d)) {
                        continue;
                    }
                    out.push(blocked(
                        ctx,
                        t,
                        (scraper, scraper_sel),
                        target,
                        port,
                        d,
                        pod,
                    ));
                }
            }
        }
    }
}

fn blocked(
    ctx: &Ctx<'_>,
    t: &ScrapeTarget,
    (scraper, scraper_sel): (PodId, &Selector),
    target: PodId,
    port: u16,
    d: Direction,
    denying: PodId,
) -> Finding {
    let policy = &ctx.policies[ctx.ev.selecting(d, denying)[0] as usize];
    let s_name = ctx.names(&[scraper]).join("");
    let t_name = ctx.names(&[target]).join("");
    let ns_of = |p: PodId| ctx.inv.namespace(ctx.inv.pod(p).namespace).name.clone();
    let target_sel = workload_selector(ctx, target);
    let (side, yaml) = match d {
        Direction::Egress => (
            format!("the egress of {s_name}"),
            fix::allow_policy(
                "allow-metrics-scrape",
                &ns_of(scraper),
                scraper_sel,
                Direction::Egress,
                &fix::pod_peer(Some(&ns_of(target)), &target_sel),
                &[(Protocol::Tcp, port)],
            ),
        ),
        Direction::Ingress => (
            format!("the ingress of {t_name}"),
            fix::allow_policy(
                "allow-metrics-scrape",
                &ns_of(target),
                &target_sel,
                Direction::Ingress,
                &fix::pod_peer(Some(&ns_of(scraper)), scraper_sel),
                &[(Protocol::Tcp, port)],
            ),
        ),
    };
    Finding::new(
        RuleId::MetricsScrapeBlocked,
        Subject {
            policy: Some(policy.key()),
            direction: Some(d),
            object: Some(t_name.clone()),
            ..Subject::default()
        },
        format!(
            "{} asks for {t_name} to be scraped on TCP {port}, but {side} denies {s_name} -> {t_name} (isolated by {})",
            t.declared_by,
            policy.key()
        ),
        format!("allow {s_name} to {t_name} on TCP {port} in {}", dir_name(d)),
    )
    .yaml(yaml)
    .at(ctx
        .policy_location(policy, &[])
        .or_else(|| t.location.clone()))
}

fn dir_name(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

/// The selector that stands for a pod's workload: its `spec.selector`, else its labels.
fn workload_selector(ctx: &Ctx<'_>, pod: PodId) -> Selector {
    let p = ctx.inv.pod(pod);
    p.workload
        .and_then(|w| ctx.inv.workload(w).selector.clone())
        .unwrap_or_else(|| labels_selector(&p.labels))
}

/// TM040: a ClusterIP Service without external IPs and without an Ingress or route in
/// front of it is internal-only; its pods should be isolated for ingress.
fn internal_services(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for svc in ctx.inv.services() {
        let ns = &ctx.inv.namespace(svc.namespace).name;
        if !ctx.checks_namespace(ns) {
            continue;
        }
        let key = (ns.clone(), svc.name.clone());
        let facts = ctx.sources.services.get(&key).cloned().unwrap_or_default();
        let internal = matches!(facts.kind.as_str(), "ClusterIP" | "")
            && !facts.external_ips
            && !ctx.sources.routed_services.contains(&key);
        let Some(sel) = &svc.selector else { continue };
        if !internal {
            continue;
        }
        let sel = labels_selector(sel);
        let open: Vec<PodId> = ctx
            .pods_in(svc.namespace)
            .filter(|&p| sel.matches(&ctx.inv.pod(p).labels))
            .filter(|&p| ctx.ev.selecting(Direction::Ingress, p).is_empty())
            .collect();
        if open.is_empty() {
            continue;
        }
        let ports: Vec<(Protocol, u16)> = svc
            .ports
            .iter()
            .map(|p| match p.target {
                TargetPort::Number(n) => (p.protocol, n),
                TargetPort::Named(_) => (p.protocol, p.port),
            })
            .collect();
        out.push(
            Finding::new(
                RuleId::InternalServiceExposed,
                Subject {
                    object: Some(format!("Service {ns}/{}", svc.name)),
                    direction: Some(Direction::Ingress),
                    ..Subject::default()
                },
                format!(
                    "Service {ns}/{} is internal-only (ClusterIP, no Ingress or route), but no ingress policy selects its pods ({}): every pod of the cluster can connect to them",
                    svc.name,
                    ctx.names(&open).join(", ")
                ),
                "add an ingress policy for the Service's pods that allows its clients only".into(),
            )
            .yaml(fix::allow_policy(
                &format!("{}-ingress", svc.name),
                ns,
                &sel,
                Direction::Ingress,
                "{podSelector: {matchLabels: {app: <client>}}}",
                &ports,
            ))
            .at(ctx.sources.locate("Service", ns, &svc.name, &[])),
        );
    }
}
