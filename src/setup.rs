//! Loading what the daemon needs before it may start: the configuration
//! and the firmware profiles it references, with every problem of either
//! reported together (a config typo never starts a half-configured daemon).

use std::fmt;
use std::path::{Path, PathBuf};

use toml::Table;

use crate::config::{self, Config, ConfigError, Problem, Transport};
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
    match std::fs::read_to_string(path) {
        Ok(text) => build(path, config::parse_table(&text, path), Some(&text)),
        Err(e) => build(path, Err(cannot_read(path, e)), None),
    }
}

/// Validate an already merged table (the local file with central's config
/// over it, `config::layered::merge`) with the same rules as [`load`],
/// which `storegate check` runs; `label` names it in messages.
pub fn from_table(table: &Table, label: &Path) -> Result<Setup, SetupError> {
    build(label, Ok(table.clone()), None)
}

/// The configuration file as a TOML table, or why it is not one.
pub fn read_table(path: &Path) -> Result<Table, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| cannot_read(path, e))?;
    config::parse_table(&text, path)
}

fn cannot_read(path: &Path, e: std::io::Error) -> ConfigError {
    ConfigError {
        file: path.to_path_buf(),
        problems: vec![Problem {
            key: String::new(),
            message: format!("cannot read the file: {e}"),
            ..Default::default()
        }],
    }
}

fn build(
    path: &Path,
    table: Result<Table, ConfigError>,
    text: Option<&str>,
) -> Result<Setup, SetupError> {
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
    // Checked on the config as read, problems or not, so that a device's
    // mismatch with its profile is reported in the same pass as a typo.
    let more = |config: &Config| {
        let mut problems = profiles::check_devices(config, &profiles);
        problems.extend(check_locale(&config.locale));
        problems
    };
    match table.and_then(|t| Config::from_table_with(&t, text, path, &names, more)) {
        Ok(config) => {
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

/// The locale must be one labels can be written in: an unknown one would
/// print every price the US way without a word.
fn check_locale(locale: &str) -> Option<Problem> {
    use crate::domain::price_text::{KNOWN_LANGUAGES, is_known_locale};
    (!is_known_locale(locale)).then(|| Problem {
        key: "locale".into(),
        message: format!(
            "unknown locale {locale:?}; use a known language with its region, e.g. \"de-DE\", \"de-AT\", \"fr-FR\", \"en-GB\" (known languages: {})",
            KNOWN_LANGUAGES.join(", ")
        ),
        ..Default::default()
    })
}

/// What is doubtful in a valid configuration but may be right by the
/// time the agent runs: a serial `port` that does not exist now (the USB
/// adapter not plugged in yet). Each line names the file, line and
/// device, and lists the serial ports this machine does have.
pub fn warnings(path: &Path, config: &Config) -> Vec<String> {
    let mut problems: Vec<Problem> = config
        .devices
        .iter()
        .enumerate()
        .filter_map(|(i, d)| match &d.transport {
            Transport::Serial(line) | Transport::ModbusRtu { line, .. } if !line.port.exists() => {
                Some((i, line.port.clone()))
            }
            _ => None,
        })
        .map(|(i, port)| Problem {
            key: format!("device[{i}].port"),
            message: format!("{} does not exist (yet)", port.display()),
            ..Default::default()
        })
        .collect();
    if problems.is_empty() {
        return Vec::new();
    }
    let hint =
        crate::devices::serial_ports::missing_port_hint(&crate::devices::serial_ports::available());
    for p in &mut problems {
        p.message = format!("{}; {hint}; plug the device in or correct port", p.message);
    }
    if let Ok(text) = std::fs::read_to_string(path) {
        crate::config::locate(&text, &mut problems);
    }
    problems.iter().map(|p| p.in_file(path)).collect()
}
