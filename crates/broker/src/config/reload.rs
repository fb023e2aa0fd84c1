//! What a reload (SIGHUP) may change: which options take effect without a restart, what
//! changed between two configurations, and putting an option back to its running value.

use serde::Deserialize;

use super::Config;
use super::options::{self, OPTIONS, Reload};

impl Config {
    /// Options whose values differ from `other`'s: (name, this value, other's value),
    /// secrets masked, so a reload can log each change and restore what needs a restart.
    pub fn differences(&self, other: &Config) -> Vec<(&'static str, String, String)> {
        let ours = toml::Table::try_from(self).expect("Config serializes to a table");
        let theirs = toml::Table::try_from(other).expect("Config serializes to a table");
        let (ours_shown, theirs_shown) = (self.shown(), other.shown());
        OPTIONS
            .iter()
            .filter(|spec| ours.get(spec.name) != theirs.get(spec.name))
            .map(|spec| {
                let show = |table: &toml::Table| {
                    table
                        .get(spec.name)
                        .map(ToString::to_string)
                        .unwrap_or_default()
                };
                (spec.name, show(&ours_shown), show(&theirs_shown))
            })
            .collect()
    }

    /// Sets option `name` back to `other`'s value, as a reload does for an option that
    /// needs a restart. An unknown name, or a value that does not fit, changes nothing.
    pub fn restore(&mut self, name: &str, other: &Config) {
        let mut ours = toml::Table::try_from(&*self).expect("Config serializes to a table");
        let theirs = toml::Table::try_from(other).expect("Config serializes to a table");
        if let Some(value) = theirs.get(name) {
            ours.insert(name.to_owned(), value.clone());
            if let Ok(config) = Config::deserialize(toml::Value::Table(ours)) {
                *self = config;
            }
        }
    }
}

/// Whether a change to option `name` can take effect without a restart (on SIGHUP), as
/// its declaration in [`OPTIONS`] says. Limits, heart-beats and authentication apply to
/// connections made after the reload; listeners, the cluster, virtual hosts, queues'
/// policies and logging need a restart. An unknown name is not reloadable.
pub fn reloadable(name: &str) -> bool {
    options::find(name).is_some_and(|spec| spec.reload == Reload::Live)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_applies_live_options_and_restores_the_others() {
        let running = Config::defaults();
        let fresh = Config {
            listen: vec!["127.0.0.1:1".into()],
            max_headers: 7,
            ..Config::defaults()
        };
        let changed: Vec<&str> = running
            .differences(&fresh)
            .into_iter()
            .map(|(name, _, _)| name)
            .collect();
        assert_eq!(changed, ["listen", "max-headers"]);
        let mut applied = fresh.clone();
        for name in changed.iter().filter(|name| !reloadable(name)) {
            applied.restore(name, &running);
        }
        assert_eq!(applied.listen, running.listen);
        assert_eq!(applied.max_headers, 7);
        assert!(!reloadable("no-such-option"));
    }
}
