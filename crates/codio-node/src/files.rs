//! Safe local files: every file the node writes goes through a temporary file created
//! exclusively (`O_EXCL`) without following symbolic links (`O_NOFOLLOW`), owner-only, synced
//! before it takes its final name; the data directory is locked so that two nodes never share
//! it; leftovers of a crash are removed at start.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use anyhow::Context;

/// Marker in the names of temporary files (`.<name>.tmp-<pid>-<random>`).
const TMP_MARKER: &str = ".tmp-";
/// The lock file inside the data directory.
pub(crate) const LOCK_FILE: &str = "lock";

/// Opens options for a new file: exclusive, no symlink followed, owner-only.
fn new_file_options() -> OpenOptions {
    let mut options = OpenOptions::new();
    options
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
    options
}

/// Creates `path`, which must not exist (a symbolic link there counts as existing).
pub(crate) fn create_new(path: &Path) -> io::Result<File> {
    new_file_options().open(path)
}

/// `n` random bytes from the operating system.
pub(crate) fn random_bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut bytes = [0u8; N];
    let mut filled = 0;
    // getrandom returns at most the bytes asked; a short read is retried (bounded by N).
    while filled < N {
        let n =
            rustix::rand::getrandom(&mut bytes[filled..], rustix::rand::GetRandomFlags::empty())?;
        filled += n;
    }
    Ok(bytes)
}

/// A fresh temporary path next to `path` (`.<name>.tmp-<pid>-<random>`: what
/// [`remove_temps`] removes).
pub(crate) fn temp_path(path: &Path) -> io::Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
        .to_string_lossy();
    let nonce = u64::from_le_bytes(random_bytes::<8>()?);
    Ok(path.with_file_name(format!(
        ".{name}{TMP_MARKER}{}-{nonce:016x}",
        std::process::id()
    )))
}

/// Writes `bytes` to a new temporary file next to `path` and syncs it.
fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<PathBuf> {
    let tmp = temp_path(path)?;
    let mut file = create_new(&tmp)?;
    let written = file.write_all(bytes).and_then(|()| file.sync_all());
    if let Err(error) = written {
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    Ok(tmp)
}

/// Syncs the directory holding `path` so a rename or link in it is durable.
fn sync_parent(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Gives the complete file `from` its final name `to`, durably, without ever replacing a
/// file (or link) there: `AlreadyExists` then.
pub(crate) fn link_new(from: &Path, to: &Path) -> io::Result<()> {
    // A hard link fails when the target exists: no replace, unlike rename.
    fs::hard_link(from, to)?;
    sync_parent(to)
}

/// Writes a new file at `path` atomically: it appears complete or not at all, and an
/// existing file (or link) there is never replaced (`AlreadyExists`).
pub(crate) fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    let linked = link_new(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked
}

/// Replaces the file at `path` atomically with `bytes` (a crash leaves the old or the new).
pub(crate) fn write_replace(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    if let Err(error) = fs::rename(&tmp, path) {
        let _ = fs::remove_file(&tmp);
        return Err(error);
    }
    sync_parent(path)
}

/// Removes the temporary files a crash left in `dir`; returns how many.
pub(crate) fn remove_temps(dir: &Path) -> usize {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            let name = e.file_name();
            let name = name.to_string_lossy();
            name.starts_with('.') && name.contains(TMP_MARKER)
        })
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter(|e| fs::remove_file(e.path()).is_ok())
        .count()
}

/// The data directory's lock, held while the node runs (released when dropped or when the
/// process ends, however it ends).
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

/// Another process holds the data directory.
#[derive(Debug)]
pub(crate) struct DirInUse(pub(crate) String);

impl std::error::Error for DirInUse {}

impl std::fmt::Display for DirInUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl DirLock {
    /// Locks `dir` (created if missing) for this process.
    ///
    /// # Errors
    ///
    /// [`DirInUse`] (in the chain) when another node holds it; I/O errors otherwise.
    pub(crate) fn acquire(dir: &Path) -> anyhow::Result<Self> {
        fs::create_dir_all(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
        let path = dir.join(LOCK_FILE);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let operation = rustix::fs::FlockOperation::NonBlockingLockExclusive;
        if let Err(error) = rustix::fs::flock(&file, operation) {
            if error == rustix::io::Errno::WOULDBLOCK {
                let holder = fs::read_to_string(&path).unwrap_or_default();
                return Err(DirInUse(format!(
                    "the data directory {} is in use by another codio-node (pid {}); \
                     give each node its own --data-dir",
                    dir.display(),
                    holder.trim()
                ))
                .into());
            }
            return Err(io::Error::from(error))
                .with_context(|| format!("locking {}", path.display()));
        }
        file.set_len(0)?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("codio-files-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn write_new_never_replaces_and_leaves_no_temporary() {
        let dir = temp_dir("new");
        let path = dir.join("key");
        write_new(&path, b"first").unwrap();
        let err = write_new(&path, b"second").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"first");
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 1, "no temporary left");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn symbolic_links_are_not_followed() {
        let dir = temp_dir("link");
        let victim = dir.join("victim");
        fs::write(&victim, b"keep").unwrap();
        let link = dir.join("book");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        assert!(create_new(&link).is_err(), "a link is an existing file");
        assert!(write_new(&link, b"x").is_err());
        // Replacing swaps the link itself for a file; the target is untouched.
        write_replace(&link, b"new").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep");
        assert!(
            !fs::symlink_metadata(&link)
                .unwrap()
                .file_type()
                .is_symlink()
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn crash_leftovers_are_removed() {
        let dir = temp_dir("left");
        fs::write(dir.join(".identity.key.tmp-1-00"), b"half").unwrap();
        fs::write(dir.join("peers.json"), b"{}").unwrap();
        assert_eq!(remove_temps(&dir), 1);
        assert!(dir.join("peers.json").exists());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_second_lock_on_one_directory_fails_until_the_first_is_dropped() {
        let dir = temp_dir("lock");
        let first = DirLock::acquire(&dir).unwrap();
        let second = DirLock::acquire(&dir).unwrap_err();
        assert!(second.downcast_ref::<DirInUse>().is_some(), "{second:#}");
        assert!(second.to_string().contains("in use by another codio-node"));
        drop(first);
        DirLock::acquire(&dir).unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }
}
