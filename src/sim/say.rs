//! Where a simulator reports what it sends: one compact line per thing on
//! stdout for `storegate sim ...` (an installer watches it next to the
//! agent's log), nowhere inside `storegate demo`, whose terminal belongs
//! to the story and the live summary.

use std::fmt::Display;
use std::sync::Arc;

/// A simulator's voice. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Say {
    /// `None`: quiet.
    prefix: Option<Arc<str>>,
}

impl Say {
    /// Print lines as `{prefix}: {line}` on stdout.
    pub fn stdout(prefix: &str) -> Say {
        Say {
            prefix: Some(prefix.into()),
        }
    }

    /// Say nothing.
    pub fn quiet() -> Say {
        Say { prefix: None }
    }

    pub fn line(&self, what: impl Display) {
        if let Some(p) = &self.prefix {
            println!("{p}: {what}");
        }
    }
}
