//! A stand-in for the Kubernetes API server: plain HTTP on 127.0.0.1, speaking the real list and
//! watch JSON. Tests script replies per (method, path, watch) and push watch events; every
//! request is recorded for assertions. What is not scripted gets an empty list, a watch that
//! stays open, an echo of an apply patch, or a successful delete.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use futures::{StreamExt as _, stream};
use http_body_util::{BodyExt as _, StreamBody, combinators::BoxBody};
use hyper::{Request, Response, body::Frame, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::mpsc};

/// One request the stub received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: BTreeMap<String, String>,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Recorded {
    pub fn is_watch(&self) -> bool {
        self.query
            .get("watch")
            .is_some_and(|v| v == "true" || v == "1")
    }

    pub fn is_list(&self) -> bool {
        self.method == "GET" && !self.is_watch()
    }
}

/// A scripted reply.
pub enum Reply {
    /// A JSON body with a status code.
    Json(u16, Value),
    /// A watch stream: these events, then the stream ends (`close`) or stays open for
    /// [`Stub::push`].
    Watch { events: Vec<Value>, close: bool },
}

type Key = (String, String, bool);

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    scripted: HashMap<Key, VecDeque<Reply>>,
    open_watches: HashMap<String, Vec<mpsc::UnboundedSender<Value>>>,
}

pub struct Stub {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A list body as the API server sends it.
pub fn list(kind: &str, resource_version: &str, items: Vec<Value>) -> Value {
    json!({
        "kind": format!("{kind}List"), "apiVersion": "v1",
        "metadata": {"resourceVersion": resource_version},
        "items": items,
    })
}

/// A watch event line's object.
pub fn event(kind: &str, object: Value) -> Value {
    json!({"type": kind, "object": object})
}

/// The `ERROR` watch event of an expired resourceVersion.
pub fn gone() -> Value {
    event(
        "ERROR",
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": "too old resource version: 1 (5)", "reason": "Expired", "code": 410}),
    )
}

/// A failure `Status` body.
pub fn status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("stub says {reason}"), "reason": reason, "code": code})
}

impl Stub {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let state = Arc::new(Mutex::new(State::default()));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        Self { url, state, task }
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("stub URL"));
        kube::Client::try_from(config).expect("client for the stub")
    }

    /// Queues a reply for the next matching request (`watch`: a `?watch=true` GET).
    pub fn script(&self, method: &str, path: &str, watch: bool, reply: Reply) {
        self.lock()
            .scripted
            .entry((method.into(), path.into(), watch))
            .or_default()
            .push_back(reply);
    }

    /// Sends an event on every open watch of `path`; returns how many got it.
    pub fn push(&self, path: &str, event: Value) -> usize {
        let mut state = self.lock();
        let senders = state.open_watches.entry(path.into()).or_default();
        senders.retain(|s| s.send(event.clone()).is_ok());
        senders.len()
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Waits (up to 20 s) until `cond` holds for the recorded requests.
    pub async fn wait_requests(&self, what: &str, cond: impl Fn(&[Recorded]) -> bool) {
        wait(what, || cond(&self.requests())).await;
    }

    /// Waits until a watch of `path` is open, so that pushed events reach it.
    pub async fn wait_watch(&self, path: &str) {
        wait(&format!("an open watch of {path}"), || {
            let mut state = self.lock();
            let senders = state.open_watches.entry(path.into()).or_default();
            senders.retain(|s| !s.is_closed());
            !senders.is_empty()
        })
        .await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("stub state")
    }
}

/// Polls `cond` every 20 ms for up to 20 s, and panics naming `what` if it never holds.
pub async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

type Body = BoxBody<Bytes, Infallible>;

fn json_response(code: u16, value: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header("content-type", "application/json")
        .body(
            http_body_util::Full::new(Bytes::from(value.to_string()))
                .map_err(|e| match e {})
                .boxed(),
        )
        .expect("valid response")
}

fn watch_response(
    events: Vec<Value>,
    rest: Option<mpsc::UnboundedReceiver<Value>>,
) -> Response<Body> {
    fn line(v: Value) -> Result<Frame<Bytes>, Infallible> {
        Ok(Frame::data(Bytes::from(format!("{v}\n"))))
    }
    let first = stream::iter(events.into_iter().map(line));
    let body: Body = match rest {
        Some(rx) => {
            let more = stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|v| (line(v), rx))
            });
            http_body_util::BodyExt::boxed(StreamBody::new(first.chain(more)))
        }
        None => http_body_util::BodyExt::boxed(StreamBody::new(first)),
    };
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body)
        .expect("valid response")
}

fn parse_query(q: Option<&str>) -> BTreeMap<String, String> {
    form_urlencoded::parse(q.unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

async fn handle(
    state: Arc<Mutex<State>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Body>, Infallible> {
    let method = req.method().to_string();
    let path = req.uri().path().to_owned();
    let query = parse_query(req.uri().query());
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let rec = Recorded {
        method: method.clone(),
        path: path.clone(),
        query,
        content_type,
        body,
        at: Instant::now(),
    };
    let watch = rec.is_watch();
    let mut st = state.lock().expect("stub state");
    st.requests.push(rec.clone());
    let scripted = st
        .scripted
        .get_mut(&(method.clone(), path.clone(), watch))
        .and_then(VecDeque::pop_front);
    let reply = match scripted {
        Some(r) => r,
        None => default_reply(&rec),
    };
    Ok(match reply {
        Reply::Json(code, value) => json_response(code, &value),
        Reply::Watch {
            events,
            close: true,
        } => watch_response(events, None),
        Reply::Watch {
            events,
            close: false,
        } => {
            let (tx, rx) = mpsc::unbounded_channel();
            st.open_watches.entry(path).or_default().push(tx);
            watch_response(events, Some(rx))
        }
    })
}

fn default_reply(rec: &Recorded) -> Reply {
    match rec.method.as_str() {
        "GET" if rec.is_watch() => Reply::Watch {
            events: Vec::new(),
            close: false,
        },
        "GET"
            if rec
                .path
                .rsplit('/')
                .next()
                .is_some_and(|s| s.ends_with('s')) =>
        {
            Reply::Json(200, list("", "1", Vec::new()))
        }
        "PATCH" => {
            let mut obj: Value = serde_json::from_slice(&rec.body).unwrap_or(Value::Null);
            obj["metadata"]["resourceVersion"] = json!("2");
            Reply::Json(200, obj)
        }
        "DELETE" => Reply::Json(
            200,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}),
        ),
        _ => Reply::Json(404, status(404, "NotFound")),
    }
}
