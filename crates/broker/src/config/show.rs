//! Showing a [`Config`] to people: `print-config`'s annotated TOML and the table that
//! reload logs are built from. Secret values are masked in both.

use std::collections::BTreeMap;

use super::Config;
use super::layers::Source;
use super::options::{OPTIONS, Secrecy};
use super::secret::{Secret, SecretUrl};

impl Config {
    /// The configuration as a TOML table fit to be shown: secrets are masked.
    pub(super) fn shown(&self) -> toml::Table {
        let mut table = toml::Table::try_from(self).expect("Config serializes to a table");
        for spec in OPTIONS {
            // Secret fields serialize as their real text; mask it as their types do.
            if let Some(toml::Value::String(value)) = table.get_mut(spec.name) {
                match spec.secrecy {
                    Secrecy::Public => {}
                    Secrecy::Secret => *value = Secret::from(value.as_str()).to_string(),
                    Secrecy::Url => *value = SecretUrl::from(value.as_str()).to_string(),
                }
            }
        }
        table
    }

    /// Renders the configuration as TOML, each line commented with its source; secrets
    /// are masked, so the output is safe to paste into a bug report.
    pub fn to_annotated_toml(&self, sources: &BTreeMap<&'static str, Source>) -> String {
        let table = self.shown();
        let mut out = String::new();
        for spec in OPTIONS {
            let value = table
                .get(spec.name)
                .map(ToString::to_string)
                .unwrap_or_default();
            let source = sources.get(spec.name).cloned().unwrap_or(Source::Default);
            out.push_str(&format!("{} = {value}  # {source}\n", spec.name));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::layers::load_with;

    const SECRETS: [&str; 4] = [
        "jwt-secret-value-0123456789abcdef0123",
        "admin-token-value",
        "redis-url-password",
        "cluster-password-value",
    ];

    #[test]
    fn secrets_are_masked_in_print_config_debug_and_differences() {
        let url = format!("redis://postbox:{}@10.0.0.5:6379", SECRETS[2]);
        let loaded = load_with(
            &["--admin-token", SECRETS[1], "--cluster", &url],
            &[
                ("POSTBOX_JWT_SECRET", SECRETS[0]),
                ("POSTBOX_CLUSTER_PASSWORD", SECRETS[3]),
            ],
        )
        .unwrap();
        assert_eq!(loaded.config.jwt_secret.expose(), SECRETS[0]);
        assert_eq!(loaded.config.cluster.expose(), url);
        let printed = loaded.config.to_annotated_toml(&loaded.sources);
        let debug = format!("{loaded:?}");
        let differences = format!("{:?}", Config::defaults().differences(&loaded.config));
        let cluster = format!("{:?}", loaded.config.cluster_config("n1"));
        for text in [&printed, &debug, &differences, &cluster] {
            for secret in SECRETS {
                assert!(!text.contains(secret), "{secret} in {text}");
            }
        }
        assert!(
            printed.contains("jwt-secret = \"****\"  # env POSTBOX_JWT_SECRET"),
            "{printed}"
        );
        assert!(
            printed.contains("admin-token = \"****\"  # flag"),
            "{printed}"
        );
        assert!(
            printed.contains("cluster = \"redis://postbox:****@10.0.0.5:6379\"  # flag"),
            "{printed}"
        );
        assert!(printed.contains("cluster-password = \"****\""), "{printed}");
        // An unset secret shows as unset.
        let defaults = Config::defaults().to_annotated_toml(&BTreeMap::new());
        assert!(
            defaults.contains("jwt-secret = \"\"  # default"),
            "{defaults}"
        );
        let changed = Config::defaults().differences(&loaded.config);
        let jwt = changed
            .iter()
            .find(|(name, _, _)| *name == "jwt-secret")
            .unwrap();
        assert_eq!((jwt.1.as_str(), jwt.2.as_str()), (r#""""#, r#""****""#));
    }
}
