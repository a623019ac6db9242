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

    /// Sends `events` as NDJSON until acknowledged. 408, 429, 5xx and broken connections are
    /// tried again with the same body (the pks make that safe); any other answer is final, a
    /// [`Rejected`] error.
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
                    if status != 408 && status != 429 && status < 500 {
                        return Err(Rejected::new(status, &text).into());
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

/// The server's final refusal of a batch (a 4xx other than 408 and 429): sending it again
/// would get the same answer (docs/HSM-LOGS.md "Follow").
#[derive(Debug, thiserror::Error)]
#[error("the server rejected the batch: {status} {answer}")]
pub struct Rejected {
    pub status: u16,
    /// The answer's text, cut at 500 characters.
    pub answer: String,
    /// The index in the batch of the first event the server named as invalid (400's
    /// `invalid[0].index`, docs/API.md), if it named one.
    pub first_invalid: Option<usize>,
}

impl Rejected {
    fn new(status: u16, text: &str) -> Rejected {
        let first_invalid = serde_json::from_str::<Value>(text)
            .ok()
            .and_then(|v| v["invalid"][0]["index"].as_u64())
            .map(|i| i as usize);
        let mut answer: String = text.chars().take(500).collect();
        if answer.len() < text.len() {
            answer.push_str(" ...");
        }
        Rejected {
            status,
            answer,
            first_invalid,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rejection_names_the_first_invalid_event() {
        let r = Rejected::new(
            400,
            r#"{"error":"bad_request","message":"1 of the events are invalid","invalid":[{"index":3,"reason":"x"}]}"#,
        );
        assert_eq!((r.status, r.first_invalid), (400, Some(3)));
        let r = Rejected::new(401, &"x".repeat(600));
        assert_eq!(r.first_invalid, None);
        assert_eq!(r.answer.len(), 504);
    }
}
