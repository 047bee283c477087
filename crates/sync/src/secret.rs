//! The shared secret, kept out of logs and `Debug` output.

use std::fmt;
use std::sync::Arc;

/// Shortest secret accepted (bytes, after trimming surrounding whitespace).
pub const MIN_SECRET_LEN: usize = 16;

/// The cluster's shared secret. It never appears on the wire: it only keys HKDF.
#[derive(Clone)]
pub struct Secret(Arc<[u8]>);

/// A secret that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the shared secret is {0} bytes long; at least {MIN_SECRET_LEN} are required")]
    TooShort(usize),
}

impl Secret {
    /// Wraps raw secret bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, SecretError> {
        let bytes: Vec<u8> = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort(bytes.len()));
        }
        Ok(Self(bytes.into()))
    }

    /// Builds the secret from the contents of a secret file: surrounding ASCII whitespace (a
    /// trailing newline left by an editor) is not part of the secret.
    pub fn from_file_contents(contents: &[u8]) -> Result<Self, SecretError> {
        Self::new(contents.trim_ascii())
    }

    pub(crate) fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(<{} bytes redacted>)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_secret_is_refused_and_debug_redacts() {
        assert_eq!(
            Secret::new(b"short".to_vec()).err(),
            Some(SecretError::TooShort(5))
        );
        let s = Secret::from_file_contents(b"  0123456789abcdef0123\n").unwrap();
        assert_eq!(s.expose(), b"0123456789abcdef0123");
        assert!(!format!("{s:?}").contains("0123"));
    }
}
