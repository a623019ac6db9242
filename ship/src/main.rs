//! `auditseal-ship`: ships HSM logs into auditseal (docs/HSM-LOGS.md).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser as _;

use auditseal_ship::config::{Config, Source};
use auditseal_ship::listen::{self, Listener};
use auditseal_ship::record::{Origin, to_event};
use auditseal_ship::send::{Outcome, Rejected, Sender};
use auditseal_ship::spool;
use auditseal_ship::tail::{Position, plan, read_segment};

#[derive(Debug, clap::Parser)]
#[command(
    name = "auditseal-ship",
    version = env!("AUDITSEAL_VERSION"),
    about = "Ship HSM logs (pkcs11-spy, ...) into auditseal, exactly once"
)]
struct Cli {
    /// The agent's TOML configuration.
    #[arg(long, env = "AUDITSEAL_SHIP_CONFIG")]
    config: PathBuf,
    /// Keep reading the sources as they grow (and across rotations), and receive syslog on
    /// the listeners, until stopped; without it, ship what is there (a listener's spool
    /// included) and exit.
    #[arg(long)]
    follow: bool,
}

struct Agent {
    config: Config,
    sender: Sender,
    host: String,
    runtime: tokio::runtime::Runtime,
}

impl Agent {
    /// Ships what is new in `source`; returns the events sent.
    fn pass(&self, source: &Source) -> anyhow::Result<Outcome> {
        let pos_path = self.config.state_dir.join(format!("{}.pos", source.name));
        let saved = Position::load(&pos_path)?;
        let mut total = Outcome::default();
        let path = source.read_path(&self.config.state_dir);
        let file = path.to_string_lossy();
        for segment in plan(&path, source.format, saved.as_ref())? {
            let module = source.format.parser().module();
            read_segment(
                &segment,
                source.format,
                self.config.batch_size,
                |records, pos| {
                    let origin = Origin {
                        source: &source.name,
                        module,
                        host: &self.host,
                        file: &file,
                        file_id: &pos.file_id,
                    };
                    let events: Vec<_> = records.iter().map(|r| to_event(r, &origin)).collect();
                    let out = self
                        .runtime
                        .block_on(self.sender.send(&events))
                        .map_err(|e| match e.downcast::<Rejected>() {
                            Ok(rejected) => {
                                // The event the server named, else the batch's first.
                                let at = rejected
                                    .first_invalid
                                    .and_then(|i| records.get(i))
                                    .or(records.first());
                                anyhow::Error::new(Halted {
                                    file: segment.path.display().to_string(),
                                    offset: at.map_or(pos.offset, |r| r.offset),
                                    line: at.map_or(pos.line, |r| r.line),
                                    rejected,
                                })
                            }
                            Err(e) => e,
                        })?;
                    total.stored += out.stored;
                    total.replayed += out.replayed;
                    Ok(())
                },
                |pos| pos.save(&pos_path),
            )?;
        }
        Ok(total)
    }
}

/// A batch the server rejected for good: its source ships nothing more until the agent is
/// started again (docs/HSM-LOGS.md "Follow").
#[derive(Debug)]
struct Halted {
    /// The file read (a rotated file's own name; a listener's spool).
    file: String,
    /// Where the refused event (or the batch) starts.
    offset: u64,
    line: u64,
    rejected: Rejected,
}

impl std::fmt::Display for Halted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server rejected the batch with the record at {} offset {} (line {}): {} {}",
            self.file, self.offset, self.line, self.rejected.status, self.rejected.answer
        )
    }
}

impl std::error::Error for Halted {}

fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(&cli.config)?;
    std::fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("cannot create state_dir {}", config.state_dir.display()))?;
    let sender = Sender::new(&config, if cli.follow { None } else { Some(8) })?;
    let host = match &config.host {
        Some(h) => h.clone(),
        None => hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into()),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let agent = Agent {
        config,
        sender,
        host,
        runtime,
    };
    // Listeners run only when following; once, a listener's source ships what its spool holds.
    let mut listeners = if cli.follow {
        start_listeners(&agent.config)?
    } else {
        HashMap::new()
    };
    let mut halted: HashSet<&str> = HashSet::new();
    loop {
        for source in &agent.config.sources {
            if let Some((l, reported)) = listeners.get_mut(source.name.as_str()) {
                report_counts(&source.name, l, reported);
                if let Err(e) = l.spool.lock().map(|s| s.sync()) {
                    eprintln!("auditseal-ship: {}: {e}", source.name);
                }
            }
            if halted.contains(source.name.as_str()) {
                continue;
            }
            let result = agent.pass(source);
            if let (Ok(_), Some((l, _))) = (&result, listeners.get(source.name.as_str())) {
                rotate_spool(&agent.config, &source.name, l);
            }
            match result {
                Ok(o) if o.stored + o.replayed > 0 => eprintln!(
                    "auditseal-ship: {}: {} events stored, {} already stored",
                    source.name, o.stored, o.replayed
                ),
                Ok(_) => {}
                // Rejected: sending it again would get the same answer.
                Err(e) if e.downcast_ref::<Halted>().is_some() => {
                    eprintln!(
                        "auditseal-ship: ERROR: source {}: {e:#}; the source is stopped (nothing \
                         after this record is sent) until the agent is started again",
                        source.name
                    );
                    if !cli.follow {
                        anyhow::bail!("the server rejected events of source {}", source.name);
                    }
                    halted.insert(&source.name);
                    if halted.len() == agent.config.sources.len() {
                        anyhow::bail!("every source is stopped");
                    }
                }
                // Following, a failure is reported and tried again at the next pass.
                Err(e) if cli.follow => eprintln!("auditseal-ship: {}: {e:#}", source.name),
                Err(e) => return Err(e.context(format!("source {}", source.name))),
            }
        }
        if !cli.follow {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(agent.config.poll_ms));
    }
}

/// Starts the listeners of the sources that have them, with nothing reported yet.
fn start_listeners(config: &Config) -> anyhow::Result<HashMap<&str, (Listener, [u64; 4])>> {
    let mut listeners = HashMap::new();
    for source in config.sources.iter().filter(|s| s.listens()) {
        let l = listen::start(source, &config.state_dir)
            .with_context(|| format!("source {}", source.name))?;
        eprintln!(
            "auditseal-ship: {}: listening on {}",
            source.name,
            l.bound.join(", ")
        );
        listeners.insert(source.name.as_str(), (l, [0; 4]));
    }
    Ok(listeners)
}

/// After a pass: replaces the source's spool if it is large and everything in it is shipped.
fn rotate_spool(config: &Config, name: &str, l: &Listener) {
    let pos_path = config.state_dir.join(format!("{name}.pos"));
    let rotated = Position::load(&pos_path).and_then(|pos| {
        let mut spool = l.spool.lock().map_err(|_| anyhow::anyhow!("spool lock"))?;
        spool.rotate_if_shipped(pos.as_ref(), spool::ROTATE_BYTES)
    });
    if let Err(e) = rotated {
        eprintln!("auditseal-ship: {name}: {e:#}");
    }
}

/// Writes what a listener counted when it changed: `net: received 12 SoftHSM2 lines, 3
/// messages of other programs (dropped), 0 unreadable, 0 lost`.
fn report_counts(name: &str, l: &Listener, reported: &mut [u64; 4]) {
    let now = l.counts.snapshot();
    if now != *reported {
        let [spooled, other, unreadable, lost] = now;
        eprintln!(
            "auditseal-ship: {name}: received {spooled} SoftHSM2 lines, {other} messages of \
             other programs (dropped), {unreadable} unreadable, {lost} lost"
        );
        *reported = now;
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auditseal-ship: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
