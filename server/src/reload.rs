//! SIGHUP: what changes without a restart (docs/OPERATIONS.md "Reloading"). The configuration
//! is read again from where it came from (file, environment, command line) and checked whole;
//! then, only if all of it is usable, the HTTPS certificate, key and client CA, the client
//! certificate roles (`[[auth.clients]]`) and the API tokens are replaced. Anything wrong
//! leaves the running configuration as it was. File sinks of `[[forward]]` are reopened at every
//! SIGHUP, even when the new configuration is refused (logrotate moved their file away); other
//! `[[forward]]` changes need a restart. Open connections are not touched: each keeps the
//! TLS session it has; new connections get the new certificate.

use std::sync::Arc;

use anyhow::Context;

use auditseal_core::config::{Overrides, Settings};

use crate::auth::Auth;
use crate::metrics::Metrics;
use crate::serve::SharedAcceptor;

/// Everything a reload replaces, and how to read the configuration again.
pub struct Reloader {
    pub overrides: Overrides,
    /// None: the server speaks plain HTTP (switching needs a restart).
    pub tls: Option<SharedAcceptor>,
    pub auth: Arc<Auth>,
    pub metrics: Arc<Metrics>,
    /// The file sinks of `[[forward]]`, reopened at each reload (logrotate).
    pub files: auditseal_core::forward::FileReopener,
}

impl Reloader {
    /// Reads, checks and applies the configuration; returns what was reloaded, or why nothing
    /// was.
    pub async fn reload(&self) -> anyhow::Result<String> {
        let settings =
            Settings::resolve(self.overrides.clone()).context("cannot read the configuration")?;
        let section = settings.file.server.tls.as_ref();
        let tls = match (&self.tls, section) {
            (None, Some(_)) => anyhow::bail!(
                "[server.tls] was added: switching from HTTP to HTTPS needs a restart"
            ),
            (Some(_), None) => anyhow::bail!(
                "[server.tls] was removed: switching from HTTPS to HTTP needs a restart"
            ),
            (Some(shared), Some(t)) => {
                let acceptor = crate::tls::acceptor(t, &settings.data_dir)
                    .context("cannot set up HTTPS ([server.tls])")?;
                let not_after = crate::tls::certificate_not_after(t, &settings.data_dir)
                    .context("cannot set up HTTPS ([server.tls])")?;
                Some((shared, acceptor, not_after))
            }
            (None, None) => None,
        };
        let roles = crate::startup::certificate_roles(&settings)?;
        let mut done = Vec::new();
        if let Some((shared, acceptor, not_after)) = tls {
            *shared.write().unwrap_or_else(|e| e.into_inner()) = acceptor;
            self.metrics.tls_certificate(not_after);
            crate::startup::warn_of_expiry(not_after);
            done.push(format!(
                "HTTPS certificate (expires {})",
                auditseal_core::time::format_iso8601(not_after.saturating_mul(1000))
            ));
        }
        done.push(format!("{} client certificate roles", roles.len()));
        self.auth.set_certificate_roles(roles);
        match self.auth.reload_tokens().await {
            Ok(()) => done.push("API tokens".into()),
            Err(e) => tracing::warn!(error = %e, "cannot read the API tokens now; the tokens \
                read before stay in force"),
        }
        Ok(done.join(", "))
    }

    /// Reloads at every SIGHUP `hup` receives, for as long as the process runs (register it
    /// before the start: from then on a SIGHUP no longer stops the process).
    pub fn on_sighup(self, mut hup: tokio::signal::unix::Signal) {
        tokio::spawn(async move {
            while hup.recv().await.is_some() {
                crate::notify::reloading();
                // Whatever the configuration now says: logrotate has moved the files away.
                for file in self.files.reopen() {
                    tracing::info!(sink = %file, "SIGHUP: the forwarding file is reopened");
                }
                match self.reload().await {
                    Ok(what) => tracing::info!(reloaded = %what, "SIGHUP: configuration reloaded; \
                        other settings take effect at the next restart"),
                    Err(e) => tracing::error!(
                        error = %auditseal_core::report::one_line(e.chain()),
                        "SIGHUP: the new configuration is refused; the running one stays"
                    ),
                }
                crate::notify::reloaded();
            }
        });
    }
}
