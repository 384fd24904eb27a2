//! Logging setup: text or JSON lines on stderr, filtered by `RUST_LOG` or `--log-level`.

use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. `level` is used when `RUST_LOG` is not set.
pub fn init(format: LogFormat, level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter(level)));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests) keeps the first subscriber.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// `level`, except that the AWS SDK config loader's own warnings (a debug dump for each
/// provider that found nothing) show only at debug and trace: the operator reports a
/// missing credential itself, in one line that says what to set.
fn default_filter(level: &str) -> String {
    if ["debug", "trace"].contains(&level.trim().to_ascii_lowercase().as_str()) {
        level.to_string()
    } else {
        format!("{level},aws_config=error")
    }
}

#[cfg(test)]
mod tests {
    /// The credential chain's dumps are quiet at the default level, not at debug.
    #[test]
    fn credential_chain_dumps_only_at_debug() {
        assert_eq!(super::default_filter("warn"), "warn,aws_config=error");
        assert_eq!(super::default_filter("debug"), "debug");
    }
}
