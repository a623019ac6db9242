//! `auditseal-server check-config`: checks a configuration as a start would, without its side
//! effects (docs/OPERATIONS.md "Checking a configuration"), and prints the resolved settings
//! without secrets. Nothing is created: not the data directory, the database, its schema or a
//! key; no lock is taken and no port kept.

use anyhow::Context;

use auditseal_core::config::{
    DEFAULT_CHECKPOINT_SECS, KeyMode, Settings, SyslogSetting, load_keys,
};
use auditseal_core::store;

use crate::config::ServerConfig;

/// One line of the report: a setting and what was found, or a problem.
struct Report {
    lines: Vec<String>,
    problems: usize,
}

impl Report {
    fn ok(&mut self, what: &str, found: impl std::fmt::Display) {
        self.lines.push(format!("  {what}: {found}"));
    }

    fn check<T>(&mut self, what: &str, r: anyhow::Result<T>, found: impl FnOnce(T) -> String) {
        match r {
            Ok(v) => self.ok(what, found(v)),
            Err(e) => {
                self.problems += 1;
                self.lines.push(format!(
                    "  {what}: ERROR {}",
                    auditseal_core::report::one_line(e.chain())
                ));
            }
        }
    }
}

/// Checks everything a start checks; prints the report on stdout. Ok(true) when nothing is
/// wrong.
pub async fn check_config(settings: &Settings, cfg: &ServerConfig) -> anyhow::Result<bool> {
    let mut r = Report {
        lines: Vec::new(),
        problems: 0,
    };
    r.ok("node id", &settings.node_id);
    r.ok("data directory", settings.data_dir.display());
    r.ok("log device", format!("{:?}", cfg.device).to_lowercase());
    listeners(&mut r, cfg).await;
    https(&mut r, settings);
    let roles = crate::startup::certificate_roles(settings);
    r.check("client certificate roles", roles, |m| m.len().to_string());
    database(&mut r, settings).await;
    read_database(&mut r, settings).await;
    keys(&mut r, settings).await?;
    r.ok("checkpoints", checkpoints(settings));
    let sinks = auditseal_core::forward::plan(&settings.file.forward, &settings.data_dir)
        .context("[[forward]]");
    r.check("event forwarding", sinks, |plans| {
        if plans.is_empty() {
            "none".into()
        } else {
            let each: Vec<String> = plans
                .iter()
                .map(|p| format!("{} to {}", p.name(), p.describe()))
                .collect();
            each.join("; ")
        }
    });
    println!("auditseal-server check-config:");
    for l in &r.lines {
        println!("{l}");
    }
    if r.problems == 0 {
        println!("configuration OK");
    } else {
        println!("{} problem(s): the server would not start", r.problems);
    }
    Ok(r.problems == 0)
}

/// The listen addresses: each resolves and is free now.
async fn listeners(r: &mut Report, cfg: &ServerConfig) {
    for (what, bind) in [
        ("listen", Some(&cfg.bind)),
        ("metrics listener", cfg.metrics_bind.as_ref()),
    ] {
        let Some(bind) = bind else {
            r.ok(what, "none");
            continue;
        };
        let free = async {
            let addr = crate::startup::resolve_bind(bind, what).await?;
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr}"))?;
            anyhow::Ok(addr)
        };
        r.check(what, free.await, |a| format!("{a} (free)"));
    }
}

/// `[server.tls]`: the acceptor builds, and when the certificate expires.
fn https(r: &mut Report, settings: &Settings) {
    let Some(t) = &settings.file.server.tls else {
        r.ok("HTTPS", "off (plain HTTP)");
        return;
    };
    let tls = crate::tls::acceptor(t, &settings.data_dir)
        .and_then(|_| crate::tls::certificate_not_after(t, &settings.data_dir))
        .context("cannot set up HTTPS ([server.tls])");
    r.check("HTTPS", tls, |not_after| {
        let left = not_after - auditseal_core::time::now_millis() / 1000;
        let when = if left <= 0 {
            " (EXPIRED)"
        } else if left < 14 * 86_400 {
            " (within 14 days)"
        } else {
            ""
        };
        format!(
            "certificate {} expires {}{when}",
            t.cert_file.display(),
            auditseal_core::time::format_iso8601(not_after.saturating_mul(1000)),
        )
    });
}

/// The database answers and its schema can be read; the default one may not exist yet.
async fn database(r: &mut Report, settings: &Settings) {
    let redacted = store::redact_url(&settings.database_url);
    let db_file = settings
        .database_url
        .strip_prefix("sqlite://")
        .or_else(|| settings.database_url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p))
        .filter(|p| !p.contains(":memory:"));
    // A SQLite file that is not there is never opened here: a URL with ?mode=rwc would
    // create it, and check-config creates nothing.
    if let Some(f) = db_file.filter(|f| !std::path::Path::new(f).exists()) {
        if settings.database_is_default || settings.database_url.contains("mode=rwc") {
            let later = format!("{redacted} (does not exist yet: the first start creates it)");
            r.ok("database", later);
        } else {
            let missing = Err(anyhow::anyhow!(
                "there is no database at {f}: only the default one, or a URL with ?mode=rwc, \
                 is created by the start"
            ));
            r.check("database", missing, |()| String::new());
        }
        return;
    }
    let db = async {
        let s = store::open_existing(&settings.database_url).await?;
        let tokens = s
            .tokens()
            .await
            .context("the schema is missing or unreadable (a start creates or upgrades it)")?;
        anyhow::Ok(tokens.iter().filter(|t| t.revoked.is_none()).count())
    };
    r.check("database", db.await, |n| {
        format!("{redacted} (reachable; {n} valid API tokens)")
    });
}

/// `database_read_url`: usable, and what it is. One that does not answer is said but is no
/// problem: the server starts, and its reads get 503 until it answers.
async fn read_database(r: &mut Report, settings: &Settings) {
    let Some(url) = settings.database_read_url.as_deref() else {
        r.ok("read database", "none (reads use the database)");
        return;
    };
    let redacted = store::redact_url(url);
    let usable = if settings.database_url.starts_with("postgres") {
        store::ReadOnlyStore::open(url).map_err(anyhow::Error::from)
    } else {
        Err(anyhow::anyhow!(
            "database_read_url is set but database_url is not PostgreSQL"
        ))
    };
    let db = match usable {
        Ok(db) => db,
        Err(e) => return r.check("read database", Err::<(), _>(e), |()| String::new()),
    };
    let found = match db.probe().await {
        Ok(p) if p.standby => format!(
            "{redacted} (a standby, replay {:.1} s behind)",
            p.lag_seconds
        ),
        Ok(_) => format!(
            "{redacted} (WARNING a writable server, not a standby: reads go there; if it is \
             the primary, nothing moves off it)"
        ),
        Err(e) => format!(
            "{redacted} (WARNING does not answer: {e}; the server starts, reads get 503 until \
             it answers)"
        ),
    };
    r.ok("read database", found);
}

/// The keys open as at a start (PKCS#11 tokens log in); the default key may not exist yet.
async fn keys(r: &mut Report, settings: &Settings) -> anyhow::Result<()> {
    let p = &settings.protection;
    let signs = p.enable_sign;
    let default_key = settings.data_dir.join("signing-key.pem");
    if p.keys.is_empty() && !default_key.exists() {
        r.ok(
            "keys",
            if signs {
                format!(
                    "the default software key {} does not exist yet: the first start generates it",
                    default_key.display()
                )
            } else {
                "none (protection.enable_sign is false)".into()
            },
        );
        return Ok(());
    }
    let (protection, dir) = (p.clone(), settings.data_dir.clone());
    // Off the async workers: an HSM login blocks.
    let keys =
        tokio::task::spawn_blocking(move || load_keys(&protection, &dir, KeyMode::VerifyOnly))
            .await?
            .context("cannot load the keys")
            .and_then(|(setup, _)| {
                if signs && !setup.listing.iter().any(|k| k.current && k.can_sign) {
                    anyhow::bail!("the current keyid cannot sign: it cannot protect new rows");
                }
                Ok(setup.listing)
            });
    r.check("keys", keys, |listing| {
        let each: Vec<String> = listing
            .iter()
            .map(|k| {
                let role = if k.current && signs {
                    " (signs new rows)"
                } else if k.can_sign {
                    ""
                } else {
                    " (verify only)"
                };
                format!("keyid {} {} {}{role}", k.keyid, k.algorithm, k.source)
            })
            .collect();
        each.join("; ")
    });
    Ok(())
}

/// How often checkpoints are written, and where their copies go.
fn checkpoints(settings: &Settings) -> String {
    let c = &settings.file.checkpoint;
    let every = c.interval_secs.unwrap_or(DEFAULT_CHECKPOINT_SECS);
    let receivers: Vec<String> = [
        c.file.as_ref().map(|f| format!("file {}", f.display())),
        c.syslog.as_ref().map(|s| match s {
            SyslogSetting::Socket(p) => format!("local syslog {}", p.display()),
            SyslogSetting::Remote(r) => format!("syslog {}", r.address),
        }),
        c.witness.as_ref().map(|w| format!("witness {}", w.url)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if every == 0 || !settings.protection.enable_sign {
        "off".to_string()
    } else if receivers.is_empty() {
        format!("every {every} s; no copy outside the database")
    } else {
        format!("every {every} s; copies to {}", receivers.join(", "))
    }
}
