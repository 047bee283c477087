//! The generation number of the accepted `cluster.toml`, persisted in `state_dir/generation`
//! next to the digest it belongs to: a new digest increments it, the same digest keeps it.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// File name inside `state_dir`.
pub const FILE_NAME: &str = "generation";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationRecord {
    pub generation: u64,
    /// SHA-256 hex digest of the canonical cluster.toml this generation belongs to.
    pub digest: String,
}

pub fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// The recorded generation, `None` when nothing was recorded yet.
pub fn read(state_dir: &Path) -> io::Result<Option<GenerationRecord>> {
    let p = path(state_dir);
    let text = match fs::read_to_string(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let bad = |why: &str| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", p.display()),
        )
    };
    let table: toml::Table = text.parse().map_err(|_| bad("not a generation record"))?;
    let generation = table
        .get("generation")
        .and_then(toml::Value::as_integer)
        .and_then(|g| u64::try_from(g).ok())
        .ok_or_else(|| bad("missing or bad `generation`"))?;
    let digest = table
        .get("digest")
        .and_then(toml::Value::as_str)
        .filter(|d| d.len() == 64 && d.chars().all(|c| c.is_ascii_hexdigit()))
        .ok_or_else(|| bad("missing or bad `digest`"))?
        .to_ascii_lowercase();
    Ok(Some(GenerationRecord { generation, digest }))
}

/// The generation `digest` would get, without writing anything (for `tandem check`).
pub fn peek(state_dir: &Path, digest: &str) -> io::Result<u64> {
    Ok(next(read(state_dir)?.as_ref(), digest))
}

fn next(current: Option<&GenerationRecord>, digest: &str) -> u64 {
    match current {
        Some(r) if r.digest == digest => r.generation,
        Some(r) => r.generation.saturating_add(1),
        None => 1,
    }
}

/// Records `digest` as accepted: same digest keeps the generation, a new one increments it.
/// Creates `state_dir` when missing.
pub fn record(state_dir: &Path, digest: &str) -> io::Result<u64> {
    let current = read(state_dir)?;
    let generation = next(current.as_ref(), digest);
    if current.as_ref().map(|r| (r.generation, r.digest.as_str())) != Some((generation, digest)) {
        write(state_dir, generation, digest)?;
    }
    Ok(generation)
}

/// Takes over the peer's generation with its configuration (the secondary accepting a push),
/// so both nodes report the same number for the same digest.
pub fn adopt(state_dir: &Path, generation: u64, digest: &str) -> io::Result<()> {
    write(state_dir, generation, digest)
}

fn write(state_dir: &Path, generation: u64, digest: &str) -> io::Result<()> {
    fs::create_dir_all(state_dir)?;
    let tmp = state_dir.join(format!(".{FILE_NAME}.tmp"));
    {
        let mut f = fs::File::create(&tmp)?;
        write!(f, "generation = {generation}\ndigest = \"{digest}\"\n")?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path(state_dir))?;
    // Make the rename durable.
    if let Ok(dir) = fs::File::open(state_dir) {
        let _ = dir.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    #[test]
    fn new_digest_increments_same_digest_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert_eq!(peek(&state, A).unwrap(), 1);
        assert!(!state.exists(), "peek must not write");
        assert_eq!(record(&state, A).unwrap(), 1);
        assert_eq!(record(&state, A).unwrap(), 1);
        assert_eq!(peek(&state, B).unwrap(), 2);
        assert_eq!(record(&state, B).unwrap(), 2);
        assert_eq!(
            record(&state, A).unwrap(),
            3,
            "going back is a new generation"
        );
        assert_eq!(
            read(&state).unwrap(),
            Some(GenerationRecord {
                generation: 3,
                digest: A.to_string()
            })
        );
        adopt(&state, 17, B).unwrap();
        assert_eq!(record(&state, B).unwrap(), 17);
    }

    #[test]
    fn corrupt_record_is_an_error_not_a_reset() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(path(dir.path()), "garbage = [").unwrap();
        assert!(record(dir.path(), A).is_err());
        fs::write(path(dir.path()), "generation = -1\ndigest = \"x\"\n").unwrap();
        assert!(read(dir.path()).is_err());
    }
}
