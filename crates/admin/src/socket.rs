//! The local CLI's UNIX socket file (`[admin] socket`): created by the daemon with mode 0660 and
//! group `tandem` when that group exists (else 0600), owned by the daemon's user. Whoever can open
//! it is an operator, as with HAProxy's `stats socket ... mode 600 level admin`. A stale socket
//! left by a crash is replaced; a live one (another daemon answers on it) is an error.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use tokio::net::UnixListener;

/// The group whose members may use the socket.
pub const SOCKET_GROUP: &str = "tandem";

/// The gid of `name`, when the group exists.
pub fn group_id(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    let mut group = std::mem::MaybeUninit::<libc::group>::uninit();
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut found: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; getgrnam_r writes only into `group` and
    // `buffer` (of the length given) and sets `found` to `group` or null.
    let result = unsafe {
        libc::getgrnam_r(
            name.as_ptr(),
            group.as_mut_ptr(),
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if result != 0 || found.is_null() {
        return None;
    }
    // SAFETY: `found` is non-null, so getgrnam_r filled `group`.
    Some(unsafe { group.assume_init() }.gr_gid)
}

/// Binds the socket at `path` (creating its directory, 0755, when missing) and sets its owner
/// and mode. Returns the listener and the mode it got.
pub fn bind_socket(path: &Path) -> io::Result<(UnixListener, u32)> {
    bind_socket_for_group(path, group_id(SOCKET_GROUP))
}

/// [`bind_socket`] with the group given: `Some(gid)` gives 0660 to that group, `None` 0600.
pub fn bind_socket_for_group(path: &Path, group: Option<u32>) -> io::Result<(UnixListener, u32)> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "{}: another daemon answers on this socket; give each node on this machine its own [admin] socket",
                        path.display()
                    ),
                ));
            }
            // Left by a crash: nobody listens.
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    // Until the mode is set the socket has the umask's mode: at worst 0755, and connecting
    // needs write permission, so nobody but the owner gets in meanwhile.
    let listener = UnixListener::bind(path)?;
    let mode = match group {
        Some(gid) => {
            let c_path = CString::new(path.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in socket path"))?;
            // SAFETY: a valid NUL-terminated path; -1 (as uid_t) keeps the owner.
            let result = unsafe { libc::chown(c_path.as_ptr(), u32::MAX, gid) };
            if result == 0 { 0o660 } else { 0o600 }
        }
        None => 0o600,
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
    Ok((listener, mode))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn stale_socket_is_replaced_and_live_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/admin.sock");
        let (listener, mode) = bind_socket_for_group(&path, None).unwrap();
        assert_eq!(mode, 0o600);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let error = bind_socket_for_group(&path, None).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::AddrInUse, "{error}");
        drop(listener);
        // The file stays behind, as after a crash.
        assert!(path.exists());
        let (_listener, _) = bind_socket_for_group(&path, None).unwrap();
        let (_listener, mode) = bind_socket_for_group(&dir.path().join("g.sock"), Some(0)).unwrap();
        assert_eq!(mode, 0o660);
        assert!(group_id("root").is_some());
        assert!(group_id("no-such-group-here").is_none());
    }
}
