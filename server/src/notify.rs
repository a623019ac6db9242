//! systemd's service notifications (sd_notify, for `Type=notify` units such as
//! conf/systemd/auditseal.service; docs/OPERATIONS.md "Running as a service"): `READY=1` once
//! the server listens, `STOPPING=1` when it is told to stop, `WATCHDOG=1` every half of the
//! watchdog interval systemd asks for. Without `NOTIFY_SOCKET` in the environment nothing is
//! sent.

use std::time::Duration;

use sd_notify::NotifyState;

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

/// The server listens: the start is complete.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// A reload (SIGHUP) begins (systemd's `Type=notify-reload` protocol).
pub fn reloading() {
    match NotifyState::monotonic_usec_now() {
        Ok(now) => send(&[NotifyState::Reloading, now]),
        Err(e) => tracing::warn!(error = %e, "cannot read the monotonic clock"),
    }
}

/// The reload is over (applied or refused): the server serves as before.
pub fn reloaded() {
    send(&[NotifyState::Ready, NotifyState::Status("reloaded")]);
}

/// The server was told to stop and is finishing.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
}

/// With a watchdog asked for (`WATCHDOG_USEC`, `WatchdogSec=` in the unit), a task of this
/// runtime that pings every half of its interval: a runtime that hangs stops the pings and
/// systemd restarts the process. Nothing else gates the pings: a database or HSM outage is
/// recovered from without a restart.
pub fn start_watchdog() {
    let Some(interval) = sd_notify::watchdog_enabled() else {
        return;
    };
    let every = (interval / 2).max(Duration::from_millis(100));
    tracing::info!(
        interval_ms = interval.as_millis() as u64,
        "systemd watchdog: pinging every half interval"
    );
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    });
}
