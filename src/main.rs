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
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let code = exit_code(std::panic::catch_unwind(cli::run));
    if code != exit::SUCCESS {
        std::process::exit(code);
    }
}

/// The exit statuses `rslad --help` and the README document.
mod exit {
    pub const SUCCESS: i32 = 0;
    /// A usage or input error: a bad flag, file, setting or data set, or a run that cannot go
    /// on as asked (a diverged training); the message says what to fix.
    pub const INPUT: i32 = 1;
    /// An internal error: rslad panicked (a bug).
    pub const INTERNAL: i32 = 2;
}

/// Reports how the command ended (on stderr, or on stdout for `--help` and `--version`) and
/// returns its exit status.
fn exit_code(outcome: std::thread::Result<anyhow::Result<()>>) -> i32 {
    match outcome {
        Ok(Ok(())) => exit::SUCCESS,
        Ok(Err(e)) => match e.downcast_ref::<clap::Error>() {
            // clap formats its own messages; help and version are no errors.
            Some(usage) => {
                let _ = usage.print();
                if usage.use_stderr() {
                    exit::INPUT
                } else {
                    exit::SUCCESS
                }
            }
            None => {
                eprintln!("error: {}", message(&e));
                exit::INPUT
            }
        },
        Err(_) => {
            // The panic hook has printed the panic's message and place.
            eprintln!(
                "error: internal error (rslad panicked above: a bug); please report it with the \
                 command line and the output"
            );
            exit::INTERNAL
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Errors are input errors, clap's usage errors too (not clap's own status 2), help is
    /// success, and a panic is an internal error.
    #[test]
    fn exit_statuses_follow_the_documented_table() {
        assert_eq!(exit_code(Ok(Ok(()))), 0);
        assert_eq!(exit_code(Ok(Err(anyhow::anyhow!("bad file")))), 1);
        let usage = cli::parse_for_test(&["rslad", "train", "--no-such-flag"]).unwrap_err();
        assert_eq!(exit_code(Ok(Err(usage))), 1);
        let help = cli::parse_for_test(&["rslad", "--help"]).unwrap_err();
        assert_eq!(exit_code(Ok(Err(help))), 0);
        let panic = std::panic::catch_unwind(|| -> anyhow::Result<()> { panic!("a bug") });
        assert_eq!(exit_code(panic), 2);
    }
}
