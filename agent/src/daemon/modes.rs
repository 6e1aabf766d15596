//! Per-namespace modes (pure): `observe` (learn and flag would-deny edges, no unexpected-flow
//! alerts; the default), `alert` (the baseline is frozen: flows it does not allow raise alerts)
//! and `off`. A namespace's annotation `trustmap.dev/mode` wins over the agent's configuration,
//! which wins over the default.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};

/// The annotation that sets a namespace's mode.
pub const MODE_ANNOTATION: &str = "trustmap.dev/mode";

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Observe,
    Alert,
    Off,
}

impl FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "observe" => Ok(Self::Observe),
            "alert" => Ok(Self::Alert),
            "off" => Ok(Self::Off),
            _ => Err(format!(
                "unknown mode {s:?}: expected observe, alert or off"
            )),
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Observe => "observe",
            Self::Alert => "alert",
            Self::Off => "off",
        })
    }
}

/// The agent's configuration of modes (the `modes` key of its config file).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModeConfig {
    #[serde(default)]
    pub default: Mode,
    /// Namespace name → mode.
    #[serde(default)]
    pub namespaces: BTreeMap<String, Mode>,
}

impl ModeConfig {
    /// The mode of a namespace, given its annotations. An annotation with an unknown value is
    /// ignored (and reported by the caller), not taken as `off`.
    pub fn mode_of(&self, namespace: &str, annotations: &BTreeMap<String, String>) -> Mode {
        annotations
            .get(MODE_ANNOTATION)
            .and_then(|v| v.parse().ok())
            .or_else(|| self.namespaces.get(namespace).copied())
            .unwrap_or(self.default)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(v: &str) -> BTreeMap<String, String> {
        [(MODE_ANNOTATION.to_owned(), v.to_owned())].into()
    }

    #[test]
    fn annotation_wins_over_config_which_wins_over_default() {
        let c = ModeConfig {
            default: Mode::Observe,
            namespaces: [("shop".to_owned(), Mode::Alert)].into(),
        };
        assert_eq!(c.mode_of("shop", &ann("off")), Mode::Off);
        assert_eq!(c.mode_of("shop", &BTreeMap::new()), Mode::Alert);
        assert_eq!(c.mode_of("other", &BTreeMap::new()), Mode::Observe);
    }

    #[test]
    fn an_unknown_annotation_value_falls_back() {
        let c = ModeConfig::default();
        assert_eq!(c.mode_of("shop", &ann("enforce")), Mode::Observe);
        assert_eq!("ALERT".parse::<Mode>(), Ok(Mode::Alert));
    }
}
