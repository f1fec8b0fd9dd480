//! TLS material for a test's etcd cluster, made with openssl: a CA, a server certificate for
//! the members and a client certificate.

use std::path::Path;
use std::process::Command;

use crate::host::must;

/// A CA, a server certificate for the members (127.0.0.1 and the `n` underlay addresses) and
/// a client certificate, in `dir`.
pub fn make_certs(dir: &Path, n: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let openssl = |args: &[&str]| {
        must(Command::new("openssl").current_dir(dir).args(args));
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=embedns test CA",
    ]);
    let ips: Vec<String> = std::iter::once("IP:127.0.0.1".to_string())
        .chain((1..=n).map(|i| format!("IP:10.99.0.{i}")))
        .collect();
    for (name, usage, san) in [
        (
            "server",
            "serverAuth",
            format!("subjectAltName={}", ips.join(",")),
        ),
        (
            "client",
            "clientAuth",
            "subjectAltName=DNS:embedns".to_string(),
        ),
    ] {
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!("{san}\nextendedKeyUsage={usage}\nbasicConstraints=CA:FALSE\n"),
        )
        .unwrap();
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            &format!("{name}-key.pem"),
            "-out",
            &format!("{name}.csr"),
            "-subj",
            &format!("/CN={name}"),
        ]);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &format!("{name}.csr"),
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-out",
            &format!("{name}.pem"),
            "-days",
            "2",
            "-extfile",
            &format!("{name}.ext"),
        ]);
    }
}
