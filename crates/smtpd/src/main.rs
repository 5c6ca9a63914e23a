//! `smtpd`: serve, check a configuration, hash a password (see `smtpd --help`).

fn main() -> std::process::ExitCode {
    smtpd::cli::main()
}
