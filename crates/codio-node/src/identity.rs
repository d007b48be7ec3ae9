//! The node's persistent identity: an Ed25519 key in the data directory.
//!
//! Created on first start (file mode 0600 on Unix) and reused afterwards, so the peer id is
//! stable across restarts. A file that exists but does not hold a valid key is an error: it
//! is never silently replaced, since that would change the node's identity. The key is
//! written atomically (temporary file, synced, linked into place), so a crash while it is
//! written leaves either no key (the next start creates one) or the whole key.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use anyhow::{Context, bail};
use codio_network::Keypair;

/// File name of the key inside the data directory.
pub(crate) const KEY_FILE: &str = "identity.key";

/// Loads the key from `dir`, or creates and stores a new one when there is none.
pub(crate) fn load_or_create(dir: &Path) -> anyhow::Result<(Keypair, bool)> {
    let path = dir.join(KEY_FILE);
    match fs::read(&path) {
        Ok(bytes) => {
            let keypair = Keypair::from_protobuf_encoding(&bytes).with_context(|| {
                format!(
                    "{} exists but holds no valid key; refusing to replace it (move it away to \
                     create a new identity)",
                    path.display()
                )
            })?;
            check_permissions(&path)?;
            Ok((keypair, false))
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)
                .with_context(|| format!("creating the data directory {}", dir.display()))?;
            let keypair = Keypair::generate_ed25519();
            let bytes = keypair
                .to_protobuf_encoding()
                .context("encoding the new identity key")?;
            write_private(&path, &bytes)?;
            Ok((keypair, true))
        }
        Err(error) => Err(error).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `bytes` to a new file readable by the owner only, atomically (a crash leaves no
/// key or the whole key, never part of one); fails if the file exists.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    crate::files::write_new(path, bytes).with_context(|| format!("creating {}", path.display()))
}

#[cfg(unix)]
fn check_permissions(path: &PathBuf) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path)
        .with_context(|| format!("reading the permissions of {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by others (mode {:o}); run `chmod 600` on it",
            path.display(),
            mode & 0o777
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_permissions(_: &PathBuf) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("codio-identity-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn created_once_then_reused_with_owner_only_permissions() {
        let dir = temp_dir("reuse");
        let (first, created) = load_or_create(&dir).unwrap();
        assert!(created);
        let (second, created) = load_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    /// A crash between the steps of writing the key leaves at most a temporary file: the
    /// next start removes it (the node does, `files::remove_temps`) and creates a key; a
    /// crash after the link leaves the whole key, which the next start reuses.
    #[test]
    fn a_crash_between_key_write_steps_leaves_a_node_that_starts() {
        let dir = temp_dir("crash");
        fs::create_dir_all(&dir).unwrap();
        // Crashed after writing part of the temporary file: no key yet.
        fs::write(
            dir.join(".identity.key.tmp-42-0123456789abcdef"),
            b"\x08\x01\x12",
        )
        .unwrap();
        assert_eq!(crate::files::remove_temps(&dir), 1);
        let (first, created) = load_or_create(&dir).unwrap();
        assert!(created);
        // Crashed after the link, before the temporary was removed: the key is whole.
        let bytes = fs::read(dir.join(KEY_FILE)).unwrap();
        fs::write(dir.join(".identity.key.tmp-43-0123456789abcdef"), &bytes).unwrap();
        assert_eq!(crate::files::remove_temps(&dir), 1);
        let (again, created) = load_or_create(&dir).unwrap();
        assert!(!created);
        assert_eq!(first.public().to_peer_id(), again.public().to_peer_id());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn corrupt_key_is_an_error_and_is_not_replaced() {
        let dir = temp_dir("corrupt");
        fs::create_dir_all(&dir).unwrap();
        write_private(&dir.join(KEY_FILE), b"not a key").unwrap();
        let err = load_or_create(&dir).unwrap_err();
        assert!(err.to_string().contains("refusing to replace"), "{err:#}");
        assert_eq!(fs::read(dir.join(KEY_FILE)).unwrap(), b"not a key");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn world_readable_key_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("perm");
        load_or_create(&dir).unwrap();
        fs::set_permissions(dir.join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&dir).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err:#}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
