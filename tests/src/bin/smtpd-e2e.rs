//! The `smtpd` binary's exact code (`smtpd::cli::main`), built by Cargo for these tests so they
//! never run a stale binary.

fn main() -> std::process::ExitCode {
    smtpd::cli::main()
}
