//! The webhook sink against a real HTTP receiver on loopback: the alert's JSON arrives, a refusal
//! is retried, and an alert every attempt fails to deliver is counted, never silently lost.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{Router, extract::State, http::StatusCode, routing::post};
use chrono::Utc;
use prometheus_client::metrics::counter::Counter;
use trustmap::{
    alert::{
        Alert, AlertKind, EdgeKey,
        sinks::{Webhook, WebhookConfig},
    },
    flow::Protocol,
};

/// Answers each POST with the next status of `script` (then 200), keeping every body.
#[derive(Clone, Default)]
struct Receiver {
    script: Arc<Mutex<Vec<u16>>>,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn hook(State(r): State<Receiver>, body: String) -> StatusCode {
    r.bodies
        .lock()
        .unwrap()
        .push(serde_json::from_str(&body).expect("the webhook posts JSON"));
    let mut script = r.script.lock().unwrap();
    let code = if script.is_empty() {
        200
    } else {
        script.remove(0)
    };
    StatusCode::from_u16(code).unwrap()
}

async fn serve(script: Vec<u16>) -> (String, Receiver) {
    let r = Receiver {
        script: Arc::new(Mutex::new(script)),
        ..Receiver::default()
    };
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(r.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, r)
}

fn alert() -> Alert {
    Alert {
        kind: AlertKind::WouldDeny,
        edge: EdgeKey {
            src: "shop/Deployment/web".into(),
            dst: "shop/Deployment/db".into(),
            protocol: Protocol::Tcp,
            port: Some(5432),
        },
        src_pod: Some("shop/web-1".into()),
        dst_names: Vec::new(),
        first_seen: Utc::now(),
        count: 1,
        explanation: serde_json::json!({"verdict": "deny"}),
    }
}

fn config(url: String) -> WebhookConfig {
    WebhookConfig {
        url,
        timeout: Duration::from_secs(2),
        attempts: 3,
        first_retry: Duration::from_millis(10),
        queue: 8,
    }
}

async fn wait_for(what: impl Fn() -> bool) {
    for _ in 0..300 {
        if what() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_refused_alert_is_retried_and_arrives_as_json() {
    let (url, r) = serve(vec![503]).await;
    let failures = Counter::default();
    let hook = Webhook::start(config(url), failures.clone());
    assert!(hook.send(&alert()));
    wait_for(|| r.bodies.lock().unwrap().len() == 2).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let bodies = r.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2, "one refusal, one retry: {bodies:?}");
    assert_eq!(bodies[0], bodies[1]);
    assert_eq!(bodies[0]["kind"], "would_deny");
    assert_eq!(bodies[0]["src"], "shop/Deployment/web");
    assert_eq!(bodies[0]["port"], 5432);
    assert_eq!(failures.get(), 0);
}

#[tokio::test]
async fn an_alert_no_attempt_delivers_is_counted() {
    let (url, r) = serve(vec![500, 500, 500]).await;
    let failures = Counter::default();
    let hook = Webhook::start(config(url), failures.clone());
    assert!(hook.send(&alert()));
    wait_for(|| failures.get() == 1).await;
    assert_eq!(failures.get(), 1);
    assert_eq!(r.bodies.lock().unwrap().len(), 3, "three attempts");
}

#[tokio::test]
async fn an_unreachable_webhook_times_out_and_is_counted() {
    // A listener that accepts and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", silent.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let failures = Counter::default();
    let mut c = config(url);
    c.timeout = Duration::from_millis(100);
    c.attempts = 2;
    let hook = Webhook::start(c, failures.clone());
    assert!(hook.send(&alert()));
    wait_for(|| failures.get() == 1).await;
    assert_eq!(failures.get(), 1);
}

#[tokio::test]
async fn an_https_webhook_gets_a_tls_client_and_failures_are_counted() {
    // Nothing listens on port 1: the TLS client is built (no provider panic) and the refused
    // connection counts as a failed delivery.
    let failures = Counter::default();
    let mut c = config("https://127.0.0.1:1/hook".into());
    c.attempts = 1;
    let hook = Webhook::start(c, failures.clone());
    assert!(hook.send(&alert()));
    wait_for(|| failures.get() == 1).await;
    assert_eq!(failures.get(), 1);
}
