//! `postbox`: parse the command line, set up logging, run the broker until a signal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::process::ExitCode;

use postbox_broker::Config;
use postbox_broker::config::{self, Action, ConfigError, LogFormat};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let loaded = match config::load(std::env::args_os(), |var| std::env::var(var).ok()) {
        Ok(loaded) => loaded,
        Err(ConfigError::Cli(error)) => error.exit(),
        Err(error) => {
            eprintln!("postbox: {error}");
            return ExitCode::from(2);
        }
    };
    match loaded.action {
        Action::PrintConfig => {
            print!("{}", loaded.config.to_annotated_toml(&loaded.sources));
            return ExitCode::SUCCESS;
        }
        Action::CheckConfig(path) => {
            println!("{}: ok", path.display());
            return ExitCode::SUCCESS;
        }
        Action::Run => {}
    }
    init_logging(&loaded.config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("postbox: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(loaded.config))
}

async fn run(config: Config) -> ExitCode {
    let running = match postbox_broker::start(config).await {
        Ok(running) => running,
        Err(error) => {
            error!("{error}");
            eprintln!("postbox: {error}");
            return ExitCode::FAILURE;
        }
    };
    // One line per listener, then `ready`, on stdout: for scripts and tests that start
    // postbox on port 0.
    let mut stdout = std::io::stdout().lock();
    for listening in running.listening() {
        let _ = writeln!(
            stdout,
            "listening {} {}",
            listening.transport, listening.addr
        );
    }
    let _ = writeln!(stdout, "ready");
    let _ = stdout.flush();
    drop(stdout);
    info!(
        node = running.node_id(),
        "postbox {} ready",
        env!("CARGO_PKG_VERSION")
    );

    let signal = loop {
        match wait_for_signal().await {
            "SIGHUP" => {
                info!("SIGHUP received: reloading");
                running.reload();
            }
            other => break other,
        }
    };
    info!("{signal} received: shutting down");
    if running.shutdown().await {
        info!("all connections closed");
    }
    ExitCode::SUCCESS
}

/// Resolves on SIGINT, SIGTERM or SIGHUP and names the signal.
async fn wait_for_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
        let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => "SIGINT",
            _ = term.recv() => "SIGTERM",
            _ = hup.recv() => "SIGHUP",
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "Ctrl-C"
    }
}

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
