//! `auditseal-ship`: ships HSM logs into auditseal (docs/HSM-LOGS.md).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser as _;

use auditseal_ship::config::{Config, Source};
use auditseal_ship::record::{Origin, to_event};
use auditseal_ship::send::{Outcome, Sender};
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
    /// Keep reading the sources as they grow (and across rotations) until stopped; without
    /// it, ship what is there and exit.
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
        let file = source.path.to_string_lossy();
        for segment in plan(&source.path, source.format, saved.as_ref())? {
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
                    let out = self.runtime.block_on(self.sender.send(&events))?;
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
    loop {
        for source in &agent.config.sources {
            match agent.pass(source) {
                Ok(o) if o.stored + o.replayed > 0 => eprintln!(
                    "auditseal-ship: {}: {} events stored, {} already stored",
                    source.name, o.stored, o.replayed
                ),
                Ok(_) => {}
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("auditseal-ship: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
