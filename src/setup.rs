//! Loading what the daemon needs before it may start: the configuration
//! and the firmware profiles it references, with every problem of either
//! reported together (a config typo never starts a half-configured daemon).

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Table;

use crate::config::{Config, ConfigError, Problem};
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

/// Load and validate the configuration file at `path` with its profiles.
pub fn load(path: &Path) -> Result<Setup, SetupError> {
    build(path, read_table(path))
}

/// Validate an already merged table (the local file with central's config
/// over it, `config::layered::merge`) with the same rules as
/// [`load`], which `storegate check` runs; `label` names it in messages.
pub fn from_table(table: &Table, label: &Path) -> Result<Setup, SetupError> {
    build(label, Ok(table.clone()))
}

/// The configuration file as a TOML table, or why it is not one.
pub fn read_table(path: &Path) -> Result<Table, ConfigError> {
    let fail = |message: String| ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            key: String::new(),
            message,
        }],
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read the file: {e}")))?;
    text.parse()
        .map_err(|e: toml::de::Error| fail(format!("not valid TOML: {}", e.to_string().trim_end())))
}

fn build(path: &Path, table: Result<Table, ConfigError>) -> Result<Setup, SetupError> {
    // profiles_dir comes from the config itself; it is read first so that
    // profiles in that directory count as known.
    let profiles_dir = table
        .as_ref()
        .ok()
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
    match table.and_then(|t| Config::from_table(&t, path, &names)) {
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
