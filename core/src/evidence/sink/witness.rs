//! An HTTP witness: each item is POSTed as one JSON body to a configured URL, one request per
//! item, in order. Only a 2xx answer counts as delivered; anything else (no answer, a redirect,
//! 4xx, 5xx) leaves the item queued and is retried.

use std::path::PathBuf;
use std::time::Duration;

use super::SinkError;
use super::forwarder::{Transport, Undelivered};

/// How long one request may take, connecting included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

pub struct WitnessSender {
    url: reqwest::Url,
    client: reqwest::Client,
}

impl WitnessSender {
    /// `ca_file`: CA certificates (PEM) an https witness's certificate must chain to, instead
    /// of the system's.
    pub fn new(url: &str, ca_file: Option<&PathBuf>) -> Result<WitnessSender, SinkError> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|e| SinkError::Config(format!("witness URL {url:?}: {e}")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(SinkError::Config(format!(
                "witness URL {url:?}: http:// or https:// only"
            )));
        }
        let mut b = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(REQUEST_TIMEOUT)
            // A redirected POST may turn into a GET: a witness must answer itself.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("auditseal/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = ca_file {
            let bad = |reason: String| SinkError::Config(format!("{}: {reason}", path.display()));
            let pem = std::fs::read(path).map_err(|e| bad(format!("cannot read it: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("not valid PEM certificates: {e}")))?;
            if certs.is_empty() {
                return Err(bad("no CERTIFICATE in it".into()));
            }
            b = b.tls_certs_only(certs);
        }
        let client = b
            .build()
            .map_err(|e| SinkError::Config(format!("witness client: {e}")))?;
        Ok(WitnessSender {
            url: parsed,
            client,
        })
    }
}

#[async_trait::async_trait]
impl Transport for WitnessSender {
    type Item = serde_json::Value;

    fn describe(&self) -> String {
        format!("witness {}", self.url)
    }

    async fn deliver(&self, items: &[serde_json::Value]) -> Result<(), Undelivered> {
        for (i, item) in items.iter().enumerate() {
            let stop = |reason: String| Undelivered {
                delivered: i,
                reason,
            };
            let r = self
                .client
                .post(self.url.clone())
                .json(item)
                .send()
                .await
                .map_err(|e| stop(error_chain(&e)))?;
            let status = r.status();
            if !status.is_success() {
                let body = r.text().await.unwrap_or_default();
                let body: String = body.chars().take(200).collect();
                return Err(stop(format!("answered {status}: {body}")));
            }
        }
        Ok(())
    }
}

/// reqwest's error with its causes ("error sending request: connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}
