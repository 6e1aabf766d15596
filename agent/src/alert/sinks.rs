//! Where alerts go (IO): a JSON-lines stream and an HTTP(S) webhook. The Kubernetes Event sink
//! lives with the kube client.
//!
//! Sinks never block the datapath loop: the webhook has its own task behind a bounded queue,
//! and a full queue counts the alert as dropped.

use std::{
    fs::File,
    io::{self, BufWriter, Write},
    time::Duration,
};

use prometheus_client::metrics::counter::Counter;
use tokio::sync::mpsc;
use tracing::warn;

use super::Alert;

/// Writes one JSON object per alert.
pub struct JsonLines {
    out: BufWriter<Box<dyn Write + Send>>,
}

impl JsonLines {
    /// `-` for stdout, else a file (appended to, so a restart keeps earlier alerts).
    pub fn open(target: &str) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(io::stdout())
        } else {
            Box::new(File::options().create(true).append(true).open(target)?)
        };
        Ok(Self {
            out: BufWriter::new(out),
        })
    }

    pub fn send(&mut self, alert: &Alert) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, alert)?;
        self.out.write_all(b"\n")?;
        self.out.flush()
    }
}

/// Posts alerts as JSON to a URL, with a timeout and retries with backoff.
pub struct Webhook {
    queue: mpsc::Sender<Alert>,
}

/// Webhook settings.
#[derive(Clone, Debug)]
pub struct WebhookConfig {
    pub url: String,
    pub timeout: Duration,
    /// Attempts per alert, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; it doubles after each failure.
    pub first_retry: Duration,
    pub queue: usize,
}

impl Webhook {
    /// Starts the posting task; needs a tokio runtime. `failures` counts alerts that every
    /// attempt failed to deliver.
    pub fn start(config: WebhookConfig, failures: Counter) -> Self {
        let (queue, mut rx) = mpsc::channel::<Alert>(config.queue);
        // https webhooks use rustls with the ring provider, the one kube's client uses too. A
        // provider installed earlier (by another part of the process) is fine as it is.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .build()
            .unwrap_or_default();
        tokio::spawn(async move {
            while let Some(alert) = rx.recv().await {
                let mut delay = config.first_retry;
                for attempt in 1..=config.attempts {
                    let res = client.post(&config.url).json(&alert).send().await;
                    match res {
                        Ok(r) if r.status().is_success() => break,
                        Ok(r) => {
                            warn!(url = config.url, status = %r.status(), attempt, "webhook refused the alert")
                        }
                        Err(e) => {
                            warn!(url = config.url, error = %e, attempt, "webhook unreachable")
                        }
                    }
                    if attempt == config.attempts {
                        failures.inc();
                    } else {
                        tokio::time::sleep(delay).await;
                        delay *= 2;
                    }
                }
            }
        });
        Self { queue }
    }

    /// Queues an alert; returns false when the queue is full (the caller counts it).
    pub fn send(&self, alert: &Alert) -> bool {
        self.queue.try_send(alert.clone()).is_ok()
    }
}
