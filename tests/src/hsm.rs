//! A real SoftHSM2 token for tests, made with softhsm2-util and OpenSC's pkcs11-tool in a
//! temporary directory: an RSA-2048 key, an EC P-256 key and a 32-byte generic secret.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "1234";
pub const SO_PIN: &str = "5678";

/// A SoftHSM2 configuration with one initialised token. The directory is removed on drop.
pub struct SoftHsm {
    pub dir: tempfile::TempDir,
    pub label: String,
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {cmd:?}: {e} (run scripts/test, which installs softhsm2 and opensc)")
    });
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl SoftHsm {
    /// A token labelled `label` holding `rsakey` (id 01), `eckey` (02) and `hmackey` (03).
    pub fn new(label: &str) -> SoftHsm {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} is missing: run scripts/test (installs softhsm2)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(dir.path().join("tokens")).expect("tokens dir");
        std::fs::write(
            dir.path().join("softhsm2.conf"),
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                dir.path().join("tokens").display()
            ),
        )
        .expect("softhsm2.conf");
        let hsm = SoftHsm {
            dir,
            label: label.to_string(),
        };
        run(hsm.cmd("softhsm2-util").args([
            "--init-token",
            "--free",
            "--label",
            label,
            "--pin",
            PIN,
            "--so-pin",
            SO_PIN,
        ]));
        for args in [
            &[
                "--keypairgen",
                "--key-type",
                "rsa:2048",
                "--label",
                "rsakey",
                "--id",
                "01",
            ][..],
            &[
                "--keypairgen",
                "--key-type",
                "EC:prime256v1",
                "--label",
                "eckey",
                "--id",
                "02",
            ],
            &[
                "--keygen",
                "--key-type",
                "GENERIC:32",
                "--label",
                "hmackey",
                "--id",
                "03",
            ],
        ] {
            hsm.tool(args);
        }
        hsm
    }

    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("softhsm2.conf")
    }

    pub fn tokens_dir(&self) -> PathBuf {
        self.dir.path().join("tokens")
    }

    /// A command with SOFTHSM2_CONF pointing at this token's configuration.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.env("SOFTHSM2_CONF", self.conf());
        c
    }

    /// Runs pkcs11-tool on this token, logged in; returns stdout. SoftHSM2's file store can
    /// be unreadable for a moment while another process (a test's own module) rewrites the
    /// token's file; pkcs11-tool then says it finds no such token. That, and only that, is
    /// tried again, a few times.
    pub fn tool(&self, args: &[&str]) -> String {
        let command = || {
            let mut c = self.cmd("pkcs11-tool");
            c.args([
                "--module",
                MODULE,
                "--token-label",
                &self.label,
                "--login",
                "--pin",
                PIN,
            ])
            .args(args);
            c
        };
        for tries in 1.. {
            let out = command()
                .output()
                .expect("run pkcs11-tool (scripts/test installs opensc)");
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            if out.status.success() {
                return stdout.into_owned();
            }
            if tries < 5 && stderr.contains("No slot with token named") {
                std::thread::sleep(std::time::Duration::from_millis(200));
                continue;
            }
            panic!("{:?} failed: {stdout}{stderr}", command());
        }
        unreachable!()
    }

    /// The slot id SoftHSM gave the token (it changes when a token is initialised).
    pub fn slot_id(&self) -> u64 {
        let out = run(self.cmd("softhsm2-util").arg("--show-slots"));
        let mut current = None;
        for line in out.lines() {
            let line = line.trim();
            if let Some(n) = line
                .strip_prefix("Slot ")
                .and_then(|n| n.trim().parse::<u64>().ok())
            {
                current = Some(n);
            }
            if line.starts_with("Label:") && line.trim_start_matches("Label:").trim() == self.label
            {
                return current.expect("slot line before label");
            }
        }
        panic!("token {} not found in {out}", self.label)
    }

    /// Writes the public key of `label` as PEM (via pkcs11-tool and openssl).
    pub fn public_key_pem(&self, label: &str, out_dir: &Path) -> PathBuf {
        let der = out_dir.join(format!("{label}.pub.der"));
        let pem = out_dir.join(format!("{label}.pub.pem"));
        self.tool(&[
            "--read-object",
            "--type",
            "pubkey",
            "--label",
            label,
            "-o",
            der.to_str().unwrap(),
        ]);
        run(Command::new("openssl").args([
            "pkey",
            "-pubin",
            "-inform",
            "DER",
            "-in",
            der.to_str().unwrap(),
            "-out",
            pem.to_str().unwrap(),
        ]));
        pem
    }
}
