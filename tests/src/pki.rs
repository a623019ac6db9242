//! Certificates made by the `openssl` command at test time: a CA and the server and client
//! certificates it issues (HTTPS with client certificates: tests/tests/mtls.rs, ui.rs).

use std::path::Path;
use std::process::{Command, Stdio};

/// Runs `openssl` in `dir` with `cmd` (split at spaces) and then `more` (kept whole).
pub fn openssl(dir: &Path, cmd: &str, more: &[&str]) {
    let out = Command::new("openssl")
        .args(cmd.split_whitespace())
        .args(more)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {cmd} {more:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const NEW_KEY: &str = "-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes";

/// A self-signed CA: `<name>.pem`, `<name>.key`.
pub fn make_ca(dir: &Path, name: &str, subject: &str) {
    openssl(
        dir,
        &format!(
            "req -x509 {NEW_KEY} -days 2 -keyout {name}.key -out {name}.pem \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign"
        ),
        &["-subj", subject],
    );
}

/// A certificate `<name>.pem` (key `<name>.key`) issued by CA `ca`, with extensions `ext`.
pub fn issue(dir: &Path, ca: &str, name: &str, subject: &str, ext: &str) {
    std::fs::write(
        dir.join(format!("{name}.ext")),
        format!("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n{ext}\n"),
    )
    .unwrap();
    openssl(
        dir,
        &format!("req -new {NEW_KEY} -keyout {name}.key -out {name}.csr"),
        &["-subj", subject],
    );
    openssl(
        dir,
        &format!(
            "x509 -req -in {name}.csr -CA {ca}.pem -CAkey {ca}.key -CAcreateserial -days 2 \
             -extfile {name}.ext -out {name}.pem"
        ),
        &[],
    );
}

/// The server certificate for `https://127.0.0.1`: `server.pem`, `server.key`, issued by `ca`.
pub fn issue_server(dir: &Path, ca: &str) {
    issue(
        dir,
        ca,
        "server",
        "/O=Example/CN=127.0.0.1",
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1",
    );
}

pub fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap()
}

/// A client that trusts only `dir`'s `ca.pem` and, given a name, presents that certificate.
pub fn client(dir: &Path, identity: Option<&str>) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(&read(dir, "ca.pem")).unwrap();
    let mut b = reqwest::Client::builder().tls_certs_only([ca]);
    if let Some(name) = identity {
        let mut pem = read(dir, &format!("{name}.pem"));
        pem.extend(read(dir, &format!("{name}.key")));
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}
