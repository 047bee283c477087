use std::fmt;
use std::sync::Arc;
use zeroize::Zeroizing;

/// Shortest accepted secret, in bytes (`tandem keygen` writes 64 hex characters).
pub const MIN_SECRET_LEN: usize = 32;

/// The cluster's shared secret: it keys the heartbeat MAC, the sync session's HKDF and nothing else, and never
/// appears on the wire. `Debug` shows only its length; the bytes are zeroised when the last clone is dropped.
/// Cloning is cheap (shared).
#[derive(Clone)]
pub struct Secret(Arc<Zeroizing<Vec<u8>>>);

/// A secret shorter than [`MIN_SECRET_LEN`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SecretTooShort(pub usize);

impl fmt::Display for SecretTooShort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the shared secret is {} bytes long; at least {MIN_SECRET_LEN} are required (`tandem keygen` makes a good one)",
            self.0
        )
    }
}

impl std::error::Error for SecretTooShort {}

impl Secret {
    /// Wraps raw secret bytes (at least [`MIN_SECRET_LEN`]).
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretTooShort> {
        let bytes = Zeroizing::new(bytes.into());
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretTooShort(bytes.len()));
        }
        Ok(Self(Arc::new(bytes)))
    }

    /// The secret in a secret file's contents: surrounding ASCII whitespace (a trailing newline left by an
    /// editor) is not part of it.
    pub fn from_file_contents(contents: &[u8]) -> Result<Self, SecretTooShort> {
        Self::new(contents.trim_ascii())
    }

    /// The key bytes, for the MAC and key-derivation code only.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for Secret {
    /// Constant-time in the length of the shorter secret is not needed here (both sides are ours); equality is
    /// for tests and for noticing a changed secret file.
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for Secret {}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({} bytes, redacted)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secret_is_refused() {
        assert_eq!(
            Secret::new(b"short".to_vec()).err(),
            Some(SecretTooShort(5))
        );
        assert!(SecretTooShort(5).to_string().contains("at least 32"));
    }

    #[test]
    fn file_contents_are_trimmed_and_debug_redacts() {
        let key = "0123456789abcdef0123456789abcdef";
        let s = Secret::from_file_contents(format!("  {key}\n").as_bytes()).unwrap();
        assert_eq!(s.expose(), key.as_bytes());
        let shown = format!("{s:?}");
        assert_eq!(shown, "Secret(32 bytes, redacted)");
        assert!(!shown.contains("0123"));
        assert_eq!(s.clone(), s);
    }
}
