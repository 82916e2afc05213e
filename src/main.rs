//! The `rslad` command; everything else is in the library.

mod cli;

#[global_allocator]
static ALLOC: cli::alloc::Counting = cli::alloc::Counting;

fn main() {
    // Die quietly on a closed pipe (`rslad models | head`) instead of panicking.
    #[cfg(unix)]
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    rslad::backend::init();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RSLAD_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = cli::run() {
        eprintln!("error: {}", message(&e));
        std::process::exit(1);
    }
}

/// The error and its causes, joined by ": ", leaving out a cause whose text the message
/// already shows (most of rslad's errors include their source, so `{:#}` would print an
/// operating-system error twice).
fn message(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.is_empty() {
            out = text;
        } else if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
    }
    out
}
