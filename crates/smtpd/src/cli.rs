//! The `smtpd` command line: serve, check a configuration, hash a password.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{Config, LogFormat};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "smtpd",
    version,
    about = "A mail submission server with a complete AUTH system"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the server (without --config: /etc/smtpd/smtpd.toml).
    Serve {
        /// The TOML configuration file (default /etc/smtpd/smtpd.toml; the demo is
        /// examples/smtpd.toml).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Check a configuration file and exit non-zero naming the wrong key.
    CheckConfig {
        /// The TOML configuration file.
        file: PathBuf,
    },
    /// Read a password from the terminal (no echo) or stdin and print its argon2id hash.
    HashPassword {
        /// Also print SCRAM-SHA-256 keys (`hash:keys`), so the user can log in with SCRAM.
        #[arg(long)]
        scram: bool,
        /// argon2id cost as `m=KiB,t=passes,p=lanes` (default m=19456,t=2,p=1, OWASP's
        /// recommendation). Each verification takes m KiB of memory on one worker.
        #[arg(long)]
        params: Option<String>,
    },
    /// Make a DKIM signing key: write it (PEM, mode 0600, never over an existing file) and
    /// print its DNS TXT record and the `[[dkim]]` section that uses it.
    DkimKeygen {
        /// The signing domain (`d=`).
        #[arg(long)]
        domain: String,
        /// The selector (`s=`): the record is `<selector>._domainkey.<domain>`.
        #[arg(long)]
        selector: String,
        /// Where the private key goes.
        #[arg(long)]
        out: PathBuf,
        /// `rsa` (rsa-sha256) or `ed25519` (ed25519-sha256, RFC 8463).
        #[arg(long, default_value = "rsa")]
        algorithm: String,
        /// RSA key size in bits (at least 2048).
        #[arg(long, default_value_t = 2048)]
        bits: usize,
    },
}

/// Runs the command line (the whole `smtpd` binary).
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Cmd::Serve { config } => serve(config),
        Cmd::CheckConfig { file } => match Config::load(&file) {
            Ok(c) => {
                // Exactly what `serve` loads: users, maps, certificates.
                if let Err(e) = crate::app::load(&c) {
                    let end = e.find([' ', ':']).unwrap_or(e.len());
                    let rest = e[end..].trim_start_matches(':').trim_start();
                    eprintln!("{}: key `{}`: {rest}", file.display(), &e[..end]);
                    return ExitCode::FAILURE;
                }
                println!("{}: ok ({} listener(s))", file.display(), c.listeners.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        Cmd::HashPassword { scram, params } => hash_password(scram, params.as_deref()),
        Cmd::DkimKeygen {
            domain,
            selector,
            out,
            algorithm,
            bits,
        } => dkim_keygen(&domain, &selector, &out, &algorithm, bits),
    }
}

fn dkim_keygen(
    domain: &str,
    selector: &str,
    out: &std::path::Path,
    algorithm: &str,
    bits: usize,
) -> ExitCode {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    // The names are checked as `[[dkim]]` checks them.
    let section = crate::dkim::DkimSection {
        domain: domain.to_owned(),
        selector: selector.to_owned(),
        key: out.to_path_buf(),
    };
    let generated = match crate::dkim::generate(algorithm, bits) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .and_then(|mut f| f.write_all(generated.pem.as_bytes()));
    if let Err(e) = written {
        eprintln!("{}: {e}", out.display());
        return ExitCode::FAILURE;
    }
    if let Err(e) = crate::dkim::KeySet::load(std::slice::from_ref(&section)) {
        let _ = std::fs::remove_file(out);
        eprintln!("{e}");
        return ExitCode::FAILURE;
    }
    println!("; the DNS record to publish:");
    println!(
        "{selector}._domainkey.{domain}. IN TXT {}",
        crate::dkim::txt_strings(&generated.txt)
    );
    println!();
    println!("# the smtpd.toml section that signs with it:");
    println!("[[dkim]]");
    println!("domain = \"{domain}\"");
    println!("selector = \"{selector}\"");
    println!("key = \"{}\"", out.display());
    ExitCode::SUCCESS
}

fn hash_password(scram: bool, params: Option<&str>) -> ExitCode {
    let params = match params.map(crate::users::parse_params).transpose() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("--params: {e}");
            return ExitCode::FAILURE;
        }
    };
    let password = if std::io::stdin().is_terminal() {
        match rpassword::prompt_password("Password: ") {
            Ok(p) => p,
            Err(e) => {
                eprintln!("cannot read the password: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        let mut line = String::new();
        if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
            eprintln!("cannot read the password: {e}");
            return ExitCode::FAILURE;
        }
        line.trim_end_matches(['\r', '\n']).to_owned()
    };
    if password.is_empty() {
        eprintln!("empty password");
        return ExitCode::FAILURE;
    }
    let keys = if scram {
        match crate::users::scram_keys(&password) {
            Ok(k) => format!(":{k}"),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        String::new()
    };
    let hashed = match params {
        Some(p) => crate::users::hash_password_with(&password, p),
        None => crate::users::hash_password(&password),
    };
    match hashed {
        Ok(h) => {
            println!("{h}{keys}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Where `smtpd serve` looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/smtpd/smtpd.toml";

fn serve(path: Option<PathBuf>) -> ExitCode {
    let path = match path {
        Some(p) => p,
        None if std::path::Path::new(DEFAULT_CONFIG_PATH).exists() => {
            PathBuf::from(DEFAULT_CONFIG_PATH)
        }
        None => {
            eprintln!(
                "smtpd: no configuration: {DEFAULT_CONFIG_PATH} does not exist and no --config was given \
                 (the demo on 127.0.0.1:2525: smtpd serve --config examples/smtpd.toml)"
            );
            return ExitCode::FAILURE;
        }
    };
    let config = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    // RUST_LOG, when set, overrides `[log] level`; either must be a valid filter.
    let (level, origin) = match std::env::var("RUST_LOG") {
        Ok(v) if !v.trim().is_empty() => (v, "RUST_LOG"),
        _ => (config.log.level.clone(), "log.level"),
    };
    if let Err(e) = crate::config::check_log_filter(&level) {
        eprintln!("smtpd: {origin}: {e}");
        return ExitCode::FAILURE;
    }
    let filter = match tracing_subscriber::EnvFilter::try_new(&level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("smtpd: {origin}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(crate::app::run(config, shutdown_signal()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("smtpd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
