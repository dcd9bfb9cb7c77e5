//! Files and folders Kith creates: private to its user from the moment they
//! exist (folders 0700, files 0600 — never created open and narrowed later),
//! and replaced atomically (temporary file, fsync, rename, fsync the folder),
//! so a power cut leaves the old content or the new, never a torn file.
//!
//! The data folder holds SCRAM keys, FAST token hashes, the upload signing
//! secret and the TLS key: nothing in it is for other local users.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode of every folder Kith creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file Kith creates.
pub const FILE_MODE: u32 = 0o600;

/// Create `path` and any missing parents as private folders. An existing
/// `path` that others may read (an older Kith made it 0755) is narrowed to
/// 0700, with a log line.
pub fn private_dir(path: &Path) -> std::io::Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(path)?;
    let meta = std::fs::metadata(path)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "the folder was open to other users; made it private (0700)");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(DIR_MODE))?;
    }
    Ok(())
}

/// Open `path` for writing, creating it private if it does not exist; an
/// existing file keeps its content.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(path)
}

/// Replace `path` with `data` atomically and durably: a private temporary file
/// in the same folder, fsync, rename over `path`, fsync the folder.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic_with(path, data, |_| Ok(()))
}

/// [`write_atomic`], calling `before_rename` with the temporary file once it
/// is durable and not yet renamed: to give it its owner, or (tests) to stop
/// the process in the window a power cut may hit. An error there leaves
/// `path` as it was.
pub fn write_atomic_with(
    path: &Path,
    data: &[u8],
    before_rename: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file path"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        before_rename(&tmp)?;
        std::fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).expect("exists").permissions().mode() & 0o777
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("kith-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn folders_and_files_are_private_whatever_the_umask() {
        let d = scratch("modes");
        private_dir(&d.join("a/b")).expect("created");
        assert_eq!(mode(&d.join("a")), 0o700);
        assert_eq!(mode(&d.join("a/b")), 0o700);
        drop(create_private(&d.join("a/db")).expect("file"));
        assert_eq!(mode(&d.join("a/db")), 0o600);
        write_atomic(&d.join("a/key.pem"), b"secret").expect("written");
        assert_eq!(mode(&d.join("a/key.pem")), 0o600);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_open_folder_is_narrowed() {
        let d = scratch("narrow");
        std::fs::create_dir_all(&d).expect("made");
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        private_dir(&d).expect("narrowed");
        assert_eq!(mode(&d), 0o700);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn atomic_writes_replace_whole_and_leave_no_temporary() {
        let d = scratch("atomic");
        private_dir(&d).expect("made");
        let p = d.join("settings.toml");
        write_atomic(&p, b"old").expect("first");
        write_atomic(&p, b"new content").expect("second");
        assert_eq!(std::fs::read(&p).expect("read"), b"new content");
        let names: Vec<_> = std::fs::read_dir(&d)
            .expect("list")
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn an_error_before_the_rename_leaves_the_old_content_whole() {
        let d = scratch("interrupted");
        private_dir(&d).expect("made");
        let p = d.join("settings.toml");
        write_atomic(&p, b"old").expect("first");
        let seen = std::cell::Cell::new(false);
        let e = write_atomic_with(&p, b"new", |tmp| {
            seen.set(std::fs::read(tmp).map(|b| b == b"new").unwrap_or(false));
            Err(std::io::Error::other("power cut"))
        });
        assert!(e.is_err() && seen.get());
        assert_eq!(std::fs::read(&p).expect("read"), b"old");
        assert_eq!(std::fs::read_dir(&d).expect("list").count(), 1);
        let _ = std::fs::remove_dir_all(&d);
    }
}
