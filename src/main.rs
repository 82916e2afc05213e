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
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
