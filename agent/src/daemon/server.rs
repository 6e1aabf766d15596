//! The agent's HTTP endpoints: `/metrics`, `/healthz`, `/readyz`, `/flows`, `/graph`.

use std::sync::{
    Arc, RwLock,
    atomic::{AtomicBool, Ordering},
};

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
    routing::get,
};
use prometheus_client::registry::Registry;

/// What the endpoints read; the agent loop writes it.
pub struct Shared {
    pub registry: Registry,
    /// Programs attached and inventory synced.
    pub ready: AtomicBool,
    /// The node's edges as a JSON array, refreshed by the agent loop.
    pub flows: RwLock<String>,
    /// The flow graph page (`trustmap graph -o html`), refreshed by the agent loop.
    pub graph: RwLock<String>,
}

impl Shared {
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Self {
            registry,
            ready: AtomicBool::new(false),
            flows: RwLock::new("[]".into()),
            graph: RwLock::new(
                "<!DOCTYPE html><title>trustmap</title><p>The graph is drawn once the agent is ready.</p>"
                    .into(),
            ),
        })
    }
}

pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/flows", get(flows))
        .route("/graph", get(graph))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::render(&s.registry),
    )
}

async fn readyz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    if s.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

async fn flows(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let body = s
        .flows
        .read()
        .map(|f| f.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn graph(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    let body = s
        .graph
        .read()
        .map(|g| g.clone())
        .unwrap_or_else(|e| e.into_inner().clone());
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body)
}
