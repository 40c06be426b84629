//! Bearer tokens and roles (spec/local-api.md, "Auth").
//!
//! Each role has a token file: one token per line, blank lines and `#`
//! comments ignored. A missing file means nobody has that role. Files are
//! re-read when they change on disk (checked on every authenticated
//! request: one `stat` per file) and on [`Tokens::reload`] (SIGHUP), so
//! tokens can be rotated without a restart.
//!
//! Only SHA-256 digests of the tokens are kept. Comparing digests, which
//! all have the same length, with an xor-fold over every byte of every
//! known token makes the comparison constant-time: neither the position of
//! the first wrong byte nor the token length nor which token matched shows
//! in the timing. Tokens are never logged.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::Shared;
use super::error::ApiError;
use crate::config::ApiConfig;

/// Who a token belongs to. `Central` may do everything `Staff` may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Staff,
    Central,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Staff => "staff",
            Role::Central => "central",
        }
    }
}

type TokenDigest = [u8; 32];

/// What identifies a version of a token file: a rewrite in place changes
/// the mtime (and usually the length), an atomic rename the inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// The tokens of one role and the file they came from.
struct RoleTokens {
    role: Role,
    path: Option<PathBuf>,
    state: Mutex<Loaded>,
}

#[derive(Default)]
struct Loaded {
    /// `None` when the file did not exist (or could not be read) last time.
    stamp: Option<Stamp>,
    digests: Vec<TokenDigest>,
}

/// The token sets of both roles. Cheap to clone; clones share the sets.
#[derive(Clone)]
pub struct Tokens {
    roles: Arc<[RoleTokens; 2]>,
}

impl Tokens {
    /// Load the token files of the `[api.token_files]` config.
    pub fn from_config(api: &ApiConfig) -> Tokens {
        Tokens::new(api.staff_tokens.clone(), api.central_tokens.clone())
    }

    /// Load both token files now; a role without a file (or whose file does
    /// not exist) is disabled, which is logged once here.
    pub fn new(staff: Option<PathBuf>, central: Option<PathBuf>) -> Tokens {
        let tokens = Tokens {
            roles: Arc::new([
                RoleTokens::new(Role::Staff, staff),
                RoleTokens::new(Role::Central, central),
            ]),
        };
        for r in tokens.roles.iter() {
            r.load(true);
        }
        tokens
    }

    /// Re-read both files whether or not they look changed (SIGHUP).
    pub fn reload(&self) {
        for r in self.roles.iter() {
            r.load(true);
        }
    }

    /// The role of a presented token, `None` for an unknown one. Files
    /// changed on disk are re-read first.
    pub fn role_of(&self, token: &str) -> Option<Role> {
        let presented: TokenDigest = Sha256::digest(token.as_bytes()).into();
        let mut best = None;
        // Check every role (no early exit) and keep the highest.
        for r in self.roles.iter() {
            r.refresh();
            if r.contains(&presented) {
                best = best.max(Some(r.role));
            }
        }
        best
    }
}

impl RoleTokens {
    fn new(role: Role, path: Option<PathBuf>) -> Self {
        RoleTokens {
            role,
            path,
            state: Mutex::new(Loaded::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Loaded> {
        // The guarded data is replaced whole, never left half-written.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-read the file if its stamp changed since the last read.
    fn refresh(&self) {
        let Some(path) = &self.path else { return };
        let now = stamp_of(path);
        if now != self.lock().stamp {
            self.load(false);
        }
    }

    /// Read the file into the digest set. `announce` logs the outcome even
    /// when nothing changed (start-up and SIGHUP).
    fn load(&self, announce: bool) {
        let role = self.role.as_str();
        let Some(path) = &self.path else {
            if announce {
                tracing::info!(
                    role,
                    "no token file configured for role {role}: the role is disabled"
                );
            }
            return;
        };
        let stamp = stamp_of(path);
        let (digests, stamp) = match std::fs::read_to_string(path) {
            Ok(text) => (parse_tokens(&text), stamp),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::warn!(
                    role,
                    file = %path.display(),
                    "token file does not exist: role {role} is disabled until it does"
                );
                (Vec::new(), None)
            }
            Err(e) => {
                tracing::error!(
                    role,
                    file = %path.display(),
                    error = %e,
                    "cannot read the token file: role {role} is disabled until it can be read"
                );
                (Vec::new(), None)
            }
        };
        let mut loaded = self.lock();
        let changed = loaded.stamp != stamp || loaded.digests != digests;
        if stamp.is_some() && (changed || announce) {
            tracing::info!(role, file = %path.display(), tokens = digests.len(), "token file loaded");
        }
        *loaded = Loaded { stamp, digests };
    }

    /// Constant-time membership: every stored digest is compared in full.
    fn contains(&self, presented: &TokenDigest) -> bool {
        let loaded = self.lock();
        let mut found = 0u8;
        for d in &loaded.digests {
            found |= u8::from(digest_eq(d, presented));
        }
        found == 1
    }
}

/// Xor-fold over two equal-length digests: no early exit.
fn digest_eq(a: &TokenDigest, b: &TokenDigest) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn stamp_of(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// One token per line; blank lines and `#` comments are skipped.
fn parse_tokens(text: &str) -> Vec<TokenDigest> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|t| Sha256::digest(t.as_bytes()).into())
        .collect()
}

/// The bearer token of a request, if it carries one.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Check that the request may act as `needed`: 401 without a known token,
/// 403 with a known token of a lesser role.
pub fn authorize(tokens: &Tokens, headers: &HeaderMap, needed: Role) -> Result<Role, ApiError> {
    let Some(token) = bearer(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "an Authorization: Bearer token is required",
        ));
    };
    match tokens.role_of(token) {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown token",
        )),
        Some(role) if role < needed => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!(
                "this endpoint needs the {} role; the token has role {}",
                needed.as_str(),
                role.as_str()
            ),
        )),
        Some(role) => Ok(role),
    }
}

/// Middleware for the staff endpoints (staff or central tokens).
pub async fn require_staff(State(state): State<Shared>, req: Request, next: Next) -> Response {
    match authorize(&state.tokens, req.headers(), Role::Staff) {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

/// Middleware for the central endpoints (central tokens only).
pub async fn require_central(State(state): State<Shared>, req: Request, next: Next) -> Response {
    match authorize(&state.tokens, req.headers(), Role::Central) {
        Ok(_) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_files_skip_comments_and_blank_lines() {
        let parsed = parse_tokens("# staff\n\n  abc  \n#def\nxyz\n");
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed[0], <[u8; 32]>::from(Sha256::digest(b"abc")));
    }

    #[test]
    fn roles_are_checked_against_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let staff = dir.path().join("staff");
        let central = dir.path().join("central");
        std::fs::write(&staff, "s1\ns2\n").unwrap();
        std::fs::write(&central, "c1\n").unwrap();
        let tokens = Tokens::new(Some(staff.clone()), Some(central));
        assert_eq!(tokens.role_of("s2"), Some(Role::Staff));
        assert_eq!(tokens.role_of("c1"), Some(Role::Central));
        assert_eq!(tokens.role_of("s3"), None);
        assert_eq!(tokens.role_of(""), None);
        std::fs::remove_file(&staff).unwrap();
        assert_eq!(tokens.role_of("s2"), None);
    }

    #[test]
    fn missing_files_disable_roles() {
        let tokens = Tokens::new(None, Some(PathBuf::from("/nonexistent/central")));
        assert_eq!(tokens.role_of("anything"), None);
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, "bearer  t0k".parse().unwrap());
        assert_eq!(bearer(&h), Some("t0k"));
        h.insert(header::AUTHORIZATION, "Basic t0k".parse().unwrap());
        assert_eq!(bearer(&h), None);
    }
}
