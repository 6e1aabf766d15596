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

use std::os::unix::fs::OpenOptionsExt as _;

impl JsonLines {
    /// `-` for stdout, else a file (appended to, so a restart keeps earlier alerts).
    pub fn open(target: &str) -> io::Result<Self> {
        let out: Box<dyn Write + Send> = if target == "-" {
            Box::new(io::stdout())
        } else {
            // Alerts name workloads and their connections: readable by the owner only.
            Box::new(
                File::options()
                    .create(true)
                    .append(true)
                    .mode(0o600)
                    .open(target)?,
            )
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

/// A webhook URL as logs may show it: scheme, host and port only. The path and query of an
/// incoming-webhook URL (Slack's `/services/T…/B…/secret`, Teams' signature) are its
/// credential, and user information is one too.
pub fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path() == "/" && u.query().is_none() {
                ""
            } else {
                "/…"
            };
            format!("{}://{host}{port}{rest}", u.scheme())
        }
        Err(_) => "(an unparsable URL)".to_owned(),
    }
}

/// Posts alerts as JSON to a URL, with a timeout and retries with backoff.
pub struct Webhook {
    queue: mpsc::Sender<Alert>,
}

/// Webhook settings.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: String,
    pub timeout: Duration,
    /// Attempts per alert, the first included.
    pub attempts: u32,
    /// Wait before the second attempt; it doubles after each failure.
    pub first_retry: Duration,
    pub queue: usize,
}

/// Debug output names the webhook without its credential (see [`redacted`]).
impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &redacted(&self.url))
            .field("timeout", &self.timeout)
            .field("attempts", &self.attempts)
            .field("first_retry", &self.first_retry)
            .field("queue", &self.queue)
            .finish()
    }
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
                            warn!(webhook = %redacted(&config.url), status = %r.status(), attempt, "webhook refused the alert")
                        }
                        Err(e) => {
                            // reqwest's error names the URL: said without it.
                            warn!(webhook = %redacted(&config.url), error = %e.without_url(), attempt, "webhook unreachable")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_name_a_webhook_without_its_credential() {
        assert_eq!(
            redacted("https://hooks.slack.com/services/T000/B000/XXXXsecret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redacted("https://user:pass@alerts.example:8443/hook?sig=abc"),
            "https://alerts.example:8443/…"
        );
        assert_eq!(redacted("http://receiver.local/"), "http://receiver.local");
        assert_eq!(redacted("not a url"), "(an unparsable URL)");
        let config = WebhookConfig {
            url: "https://hooks.slack.com/services/T000/B000/XXXXsecret".into(),
            timeout: Duration::from_secs(5),
            attempts: 3,
            first_retry: Duration::from_millis(500),
            queue: 16,
        };
        assert!(!format!("{config:?}").contains("secret"));
    }
}
