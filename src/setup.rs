//! Loading what the daemon needs before it may start: the configuration
//! and the firmware profiles it references, with every problem of either
//! reported together (a config typo never starts a half-configured daemon).

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError};
use crate::profiles::{self, ProfileSet};

/// Problems in the config file and/or profile files, each naming its file.
#[derive(Debug, thiserror::Error)]
pub struct SetupError(pub Vec<ConfigError>);

impl fmt::Display for SetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// A validated configuration with its profiles.
pub struct Setup {
    pub config: Config,
    pub profiles: ProfileSet,
}

pub fn load(path: &Path) -> Result<Setup, SetupError> {
    // profiles_dir comes from the config itself; a first lenient read finds
    // it so that profiles in that directory count as known.
    let profiles_dir = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.parse::<toml::Table>().ok())
        .and_then(|t| t.get("profiles_dir")?.as_str().map(PathBuf::from))
        .unwrap_or_else(|| "/usr/share/storegate/firmware-profiles".into());
    let (profiles, mut errors) = match ProfileSet::load(&profiles_dir) {
        Ok(p) => (p, Vec::new()),
        Err(errors) => (ProfileSet::default(), errors),
    };
    let mut names = profiles.names();
    if !errors.is_empty() {
        // A broken profile file is reported as such, not again as unknown.
        names.extend(profiles::BUILTIN.iter().map(|(n, _)| n.to_string()));
        names.extend(
            errors
                .iter()
                .filter_map(|e| e.file.file_stem()?.to_str().map(String::from)),
        );
    }
    match Config::load(path, &names) {
        Ok(config) => {
            let problems = profiles::check_devices(&config, &profiles);
            if !problems.is_empty() {
                errors.insert(
                    0,
                    ConfigError {
                        file: path.to_path_buf(),
                        problems,
                    },
                );
            }
            if errors.is_empty() {
                Ok(Setup { config, profiles })
            } else {
                Err(SetupError(errors))
            }
        }
        Err(e) => {
            errors.insert(0, e);
            Err(SetupError(errors))
        }
    }
}
