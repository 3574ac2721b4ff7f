//! Structured logs through `tracing`, as text for people or JSON for log pipelines.

use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Logging options both binaries accept.
#[derive(Clone, Debug, clap::Args)]
pub struct LogArgs {
    /// Log format.
    #[arg(long, env = "OMS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax, e.g. `info` or `info,kube=debug`.
    #[arg(long, env = "OMS_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("--log-level {level:?} is not a valid filter (try `info` or `info,kube=debug`): {source}")]
    ParseFilter { level: String, source: tracing_subscriber::filter::ParseError },
    #[error("a global logger is already installed")]
    InstallSubscriber,
}

/// Installs the global subscriber; call once at start-up.
pub fn init(args: &LogArgs) -> Result<(), LoggingError> {
    let filter = EnvFilter::try_new(&args.log_level)
        .map_err(|source| LoggingError::ParseFilter { level: args.log_level.clone(), source })?;
    // Colours only for a person at a terminal: a pod's log is a file.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    let installed = match args.log_format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|_| LoggingError::InstallSubscriber)
}
