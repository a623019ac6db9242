//! Sending events to `POST /api/v1/events:batch` (docs/API.md), retried with the same pks
//! until the server answers something final ("Retries").

use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;

use crate::config::Config;

pub struct Sender {
    client: reqwest::Client,
    url: String,
    /// Give up after this many failed tries in a row (`None`: never, in follow mode).
    max_tries: Option<u32>,
}

/// What the server did with a batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Rows written now.
    pub stored: usize,
    /// Events already stored (a re-read): answered from their rows, nothing written.
    pub replayed: usize,
}

impl Sender {
    pub fn new(config: &Config, max_tries: Option<u32>) -> anyhow::Result<Sender> {
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(10));
        if let Some(token) = config.token()? {
            let mut headers = reqwest::header::HeaderMap::new();
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(cert) = &config.client_cert {
            let mut pem = std::fs::read(cert)
                .with_context(|| format!("cannot read client_cert {}", cert.display()))?;
            if let Some(key) = &config.client_key {
                pem.extend(
                    std::fs::read(key)
                        .with_context(|| format!("cannot read client_key {}", key.display()))?,
                );
            }
            builder = builder.identity(
                reqwest::Identity::from_pem(&pem).context("client_cert/client_key are not PEM")?,
            );
        }
        if let Some(ca) = &config.ca_cert {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read ca_cert {}", ca.display()))?;
            builder = builder.add_root_certificate(
                reqwest::Certificate::from_pem(&pem).context("ca_cert is not PEM")?,
            );
        }
        Ok(Sender {
            client: builder.build().context("cannot build the HTTP client")?,
            url: format!(
                "{}/api/v1/events:batch",
                config.server.trim_end_matches('/')
            ),
            max_tries,
        })
    }

    /// Sends `events` as NDJSON until acknowledged. 408, 5xx and broken connections are
    /// tried again with the same body (the pks make that safe); anything else is final.
    pub async fn send(&self, events: &[Value]) -> anyhow::Result<Outcome> {
        let mut body = Vec::with_capacity(events.len() * 512);
        for e in events {
            serde_json::to_writer(&mut body, e)?;
            body.push(b'\n');
        }
        let mut tries = 0u32;
        let mut wait = Duration::from_millis(200);
        loop {
            tries += 1;
            let why = match self
                .client
                .post(&self.url)
                .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                .body(body.clone())
                .send()
                .await
            {
                Ok(resp) if resp.status().is_success() => {
                    let answer: Value = resp.json().await.context("the server's answer")?;
                    return Ok(outcome(&answer));
                }
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let text = resp.text().await.unwrap_or_default();
                    if status != 408 && status < 500 {
                        bail!("the server refused the events: {status} {text}");
                    }
                    format!("{status} {text}")
                }
                Err(e) => format!("{e}"),
            };
            if self.max_tries.is_some_and(|m| tries >= m) {
                bail!("the server did not take the events after {tries} tries: {why}");
            }
            eprintln!(
                "auditseal-ship: will retry in {} ms: {why}",
                wait.as_millis()
            );
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(5));
        }
    }
}

fn outcome(answer: &Value) -> Outcome {
    let events = answer["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let replayed = events.iter().filter(|e| e["replayed"] == true).count();
    Outcome {
        stored: events.len() - replayed,
        replayed,
    }
}
