//! The command line: the clap command with one flag per option, `--config`, the
//! subcommands, and what the parsed command line asks the binary to do.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches};

use super::options::{OPTIONS, OptionSpec, ValueKind};

/// The precedence rule, as printed by `postbox --help` and in the
/// [`reference()`](super::reference()).
pub const PRECEDENCE: &str = "Each option can be given as a flag, a key in the --config TOML \
file, or a POSTBOX_* environment variable (POSTBOX_ plus the name in upper case with _ for -). \
Precedence: flags over the file, the file over the environment, the environment over defaults.";

/// What the command line asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run the broker.
    Run,
    /// Print the effective configuration with the source of each value, then exit.
    PrintConfig,
    /// Validate a configuration file without binding anything, then exit.
    CheckConfig(PathBuf),
    /// Read a password on stdin and print its argon2 hash for a users file.
    HashPassword,
    /// Print the configuration reference (docs/configuration.md) in Markdown.
    ConfigReference,
    /// Check a running broker's health endpoint (for container health checks).
    Healthcheck(String),
}

/// The clap command: one flag per option, plus `--config` and the subcommands.
pub fn command() -> clap::Command {
    let mut command = clap::Command::new("postbox")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Postbox, a STOMP 1.2 message broker")
        .after_help(PRECEDENCE)
        .arg(
            Arg::new("config")
                .short('c')
                .long("config")
                .value_name("FILE")
                .global(true)
                .help("Read options from this TOML file"),
        )
        .subcommand(
            clap::Command::new("print-config")
                .about("Print the effective configuration and where each value came from"),
        )
        .subcommand(
            clap::Command::new("healthcheck")
                .about(
                    "Exit 0 if a broker's HTTP endpoint answers 200 (for container health checks)",
                )
                .arg(
                    Arg::new("url")
                        .default_value("http://127.0.0.1:8080/readyz")
                        .value_name("URL"),
                ),
        )
        .subcommand(
            clap::Command::new("config-reference")
                .about("Print the reference of every option in Markdown (docs/configuration.md)"),
        )
        .subcommand(clap::Command::new("hash-password").about(
            "Read a password from standard input and print its argon2id hash for a users file",
        ))
        .subcommand(
            clap::Command::new("check-config")
                .about("Validate a configuration file without starting the broker")
                .arg(Arg::new("file").required(true).value_name("FILE")),
        );
    for spec in OPTIONS {
        command = command.arg(flag(spec));
    }
    command
}

/// The flag for one option, its help naming the variable and the default. Values stay
/// text here: `load` converts them to the option's type with the environment's rules.
fn flag(spec: &'static OptionSpec) -> Arg {
    let help = format!(
        "{} [env: {}] [default: {}]",
        spec.help,
        spec.env_var(),
        spec.default
    );
    let arg = Arg::new(spec.name).long(spec.name).global(true).help(help);
    match spec.kind {
        // `--flag` alone means true; `--flag=false` turns a default-true option off.
        ValueKind::Bool => arg
            .num_args(0..=1)
            .require_equals(true)
            .default_missing_value("true")
            .value_name("BOOL"),
        ValueKind::Rules => arg.value_name("TOML"),
        ValueKind::List => arg
            .action(ArgAction::Append)
            .value_delimiter(',')
            .value_name("LIST"),
        ValueKind::Int => arg.value_name("N"),
        ValueKind::Float => arg.value_name("X"),
        ValueKind::Str => arg.value_name("TEXT"),
    }
}

/// What the parsed command line asks for, and the configuration file to read, if any
/// (`check-config` names its own; `hash-password` and the like read none).
pub(super) fn action(matches: &ArgMatches) -> (Action, Option<PathBuf>) {
    match matches.subcommand() {
        Some(("print-config", _)) => (Action::PrintConfig, config_path(matches)),
        Some(("hash-password", _)) => (Action::HashPassword, None),
        Some(("config-reference", _)) => (Action::ConfigReference, None),
        Some(("healthcheck", sub)) => {
            let url = sub.get_one::<String>("url").cloned().unwrap_or_default();
            (Action::Healthcheck(url), None)
        }
        Some(("check-config", sub)) => {
            let file: PathBuf = sub.get_one::<String>("file").expect("required").into();
            (Action::CheckConfig(file.clone()), Some(file))
        }
        _ => (Action::Run, config_path(matches)),
    }
}

/// The `--config` file, if one was given.
fn config_path(matches: &ArgMatches) -> Option<PathBuf> {
    matches.get_one::<String>("config").map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_documents_every_option_and_the_precedence() {
        let help = command().render_long_help().to_string();
        for spec in OPTIONS {
            assert!(help.contains(&format!("--{}", spec.name)), "{}", spec.name);
            assert!(help.contains(&spec.env_var()), "{}", spec.name);
        }
        assert!(help.contains("Precedence"));
    }
}
