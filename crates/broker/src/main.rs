//! `postbox`: parse the command line, set up logging, run the broker until a signal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Write;
use std::process::ExitCode;

use postbox_broker::Config;
use postbox_broker::config::{self, Action, ConfigError, LogFormat};
use tracing::{error, info};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let loaded = match config::load(args.clone(), |var| std::env::var(var).ok()) {
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
        Action::Healthcheck(url) => return healthcheck(&url),
        Action::ConfigReference => {
            print!("{}", config::reference());
            return ExitCode::SUCCESS;
        }
        Action::HashPassword => {
            let mut password = String::new();
            if std::io::stdin().read_line(&mut password).is_err() || password.trim_end().is_empty()
            {
                eprintln!("postbox: give the password on standard input");
                return ExitCode::from(2);
            }
            println!(
                "{}",
                postbox_auth::hash_password(password.trim_end_matches(['\r', '\n']))
            );
            return ExitCode::SUCCESS;
        }
        Action::Run => {}
    }
    // Held to the end of main: dropping it writes out the last log lines.
    let _log_flush = init_logging(&loaded.config);
    // Every connection is a descriptor: use as many as the hard limit allows.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if (limit as usize) < loaded.config.max_connections + 64 => tracing::warn!(
            limit,
            max_connections = loaded.config.max_connections,
            "the open file limit is lower than max-connections; raise it (ulimit -n, LimitNOFILE)"
        ),
        Ok(_) => {}
        Err(error) => tracing::warn!("cannot raise the open file limit: {error}"),
    }
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
    runtime.block_on(run(loaded.config, args))
}

async fn run(config: Config, args: Vec<std::ffi::OsString>) -> ExitCode {
    // Handlers go in before anyone can be told the broker is ready, so an early signal
    // is handled, not fatal.
    let mut signals = Signals::install();
    let mut running = match postbox_broker::start(config).await {
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
        match signals.next().await {
            "SIGHUP" => {
                // The same command line and environment, with the file read again.
                info!("SIGHUP received: reloading the configuration");
                match config::load(args.clone(), |var| std::env::var(var).ok()) {
                    Ok(fresh) => {
                        if let Err(error) = running.reload(fresh.config) {
                            error!("reload refused, nothing changed: {error}");
                        }
                    }
                    Err(error) => error!("reload refused, nothing changed: {error}"),
                }
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

/// GETs `url` (plain `http://host:port/path`) and succeeds on status 200.
fn healthcheck(url: &str) -> ExitCode {
    use std::io::Read;
    use std::net::{TcpStream, ToSocketAddrs};
    use std::time::Duration;
    let Some(rest) = url.strip_prefix("http://") else {
        eprintln!("postbox: healthcheck needs an http:// URL");
        return ExitCode::from(2);
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_owned()), |(a, p)| (a, format!("/{p}")));
    let Some(addr) = authority.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("postbox: cannot resolve {authority}");
        return ExitCode::FAILURE;
    };
    let attempt = || -> std::io::Result<String> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
        )?;
        let mut response = String::new();
        stream.read_to_string(&mut response)?;
        Ok(response)
    };
    match attempt() {
        Ok(response) if response.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!(
                "postbox: {}",
                response.lines().next().unwrap_or("no response")
            );
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("postbox: {url}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The signals postbox acts on.
struct Signals {
    #[cfg(unix)]
    streams: [tokio::signal::unix::Signal; 3],
}

impl Signals {
    fn install() -> Signals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let handler = |kind| signal(kind).expect("install a signal handler");
            Signals {
                streams: [
                    handler(SignalKind::interrupt()),
                    handler(SignalKind::terminate()),
                    handler(SignalKind::hangup()),
                ],
            }
        }
        #[cfg(not(unix))]
        Signals {}
    }

    /// Resolves on SIGINT, SIGTERM or SIGHUP and names the signal.
    async fn next(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            let [int, term, hup] = &mut self.streams;
            tokio::select! {
                _ = int.recv() => "SIGINT",
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
}

/// Logs go to stderr from a thread of their own: a runtime thread only formats a line
/// and queues it, so a slow log reader (a pipe, journald) never stalls connections.
/// Under a flood the queue drops lines rather than block.
fn init_logging(config: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Batched: the writer thread flushes when its queue runs dry, one write for many lines.
    // 16k queued lines (the default is 128k slots, 4 MiB, touched as lines pass through).
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .buffered_lines_limit(16 * 1024)
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stderr(),
        ));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match config.log_format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    guard
}

/// jemalloc rather than the system allocator: after a load it hands memory back (with
/// the background thread configured in .cargo/config.toml), where glibc's arenas kept
/// it, and it is faster on the broker's paths (README, "Memory").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
