//! Where MedText keeps its data and finds its model packs.

use std::path::PathBuf;

use crate::{Error, Result};

/// Environment variable that overrides the data directory (database, logs, caches).
pub const DATA_DIR_ENV: &str = "MEDTEXT_DATA_DIR";
/// Environment variable that overrides the folder holding model packs.
pub const MODELS_DIR_ENV: &str = "MEDTEXT_MODELS_DIR";

/// The per-user data directory: `MEDTEXT_DATA_DIR`, else the platform's data
/// directory (`~/.local/share/MedText` on Linux, `%APPDATA%\MedText` on Windows,
/// `~/Library/Application Support/MedText` on macOS).
pub fn data_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    dirs::data_dir()
        .map(|d| d.join("MedText"))
        .ok_or(Error::NoDataDir)
}

/// Where logs go: `<MEDTEXT_DATA_DIR>/logs` when that is set (a test or a
/// portable install keeps everything in one place), else the platform's log
/// location: `~/.local/state/MedText/logs` on Linux,
/// `~/Library/Logs/MedText` on macOS, `%LOCALAPPDATA%\MedText\logs` on
/// Windows.
pub fn log_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV).filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir).join("logs"));
    }
    let platform = if cfg!(target_os = "macos") {
        dirs::home_dir().map(|h| h.join("Library/Logs/MedText"))
    } else if cfg!(windows) {
        dirs::data_local_dir().map(|d| d.join("MedText").join("logs"))
    } else {
        dirs::state_dir().map(|d| d.join("MedText").join("logs"))
    };
    match platform {
        Some(dir) => Ok(dir),
        None => data_dir().map(|d| d.join("logs")),
    }
}

/// The models directory: `MEDTEXT_MODELS_DIR` if set; else, in a
/// development build, the first of `candidates` that exists (the app passes
/// its bundled resources folder, the CLI the folder beside its executable),
/// or the last candidate so that the "pack not found" error names a
/// sensible place.
///
/// An installed MedText's bundled folder belongs to the system and cannot
/// take packs a user trains or imports, so a release build uses
/// `models/` in the user's data directory, where the bundled packs and
/// encoders are linked in (see [`link_bundled_models`]).
pub fn models_dir(candidates: &[PathBuf]) -> PathBuf {
    if let Some(dir) = std::env::var_os(MODELS_DIR_ENV).filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    let bundled = candidates
        .iter()
        .find(|c| c.is_dir())
        .or(candidates.last())
        .cloned()
        .unwrap_or_else(|| PathBuf::from("models"));
    if cfg!(debug_assertions) {
        return bundled;
    }
    data_dir()
        .map(|d| d.join("models"))
        .and_then(|user| link_bundled_models(&bundled, &user).map(|()| user))
        .unwrap_or(bundled)
}

/// Makes every pack and encoder of `bundled` available in `user`: a link
/// to each (a copy where links are not allowed), except where `user`
/// already has one of that name. Links to bundled packs that a newer
/// version no longer ships are removed.
pub fn link_bundled_models(bundled: &std::path::Path, user: &std::path::Path) -> Result<()> {
    ensure_private_dir(user)?;
    ensure_private_dir(&user.join("encoders"))?;
    for folder in [user.to_path_buf(), user.join("encoders")] {
        let entries = std::fs::read_dir(&folder).map_err(|e| Error::io(&folder, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            let dangling = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink())
                && !path.exists()
                && std::fs::read_link(&path).is_ok_and(|t| t.starts_with(bundled));
            if dangling {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    let mut wanted: Vec<(PathBuf, PathBuf)> = Vec::new();
    if let Ok(entries) = std::fs::read_dir(bundled) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.join("manifest.json").is_file() {
                wanted.push((path, user.join(entry.file_name())));
            }
        }
    }
    if let Ok(entries) = std::fs::read_dir(bundled.join("encoders")) {
        for entry in entries.flatten() {
            if entry.path().is_dir() {
                wanted.push((entry.path(), user.join("encoders").join(entry.file_name())));
            }
        }
    }
    for (source, target) in wanted {
        if std::fs::symlink_metadata(&target).is_err() {
            link_or_copy(&source, &target)?;
        }
    }
    Ok(())
}

fn link_or_copy(source: &std::path::Path, target: &std::path::Path) -> Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(source, target).map_err(|e| Error::io(target, e))
    }
    #[cfg(not(unix))]
    {
        copy_dir(source, target)
    }
}

#[cfg(not(unix))]
fn copy_dir(source: &std::path::Path, target: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(target).map_err(|e| Error::io(target, e))?;
    for entry in std::fs::read_dir(source).map_err(|e| Error::io(source, e))? {
        let entry = entry.map_err(|e| Error::io(source, e))?;
        let to = target.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to)?;
        } else {
            std::fs::copy(entry.path(), &to).map_err(|e| Error::io(&to, e))?;
        }
    }
    Ok(())
}

/// Where the app writes exports: the user's Downloads folder, else
/// `exports/` in the data directory.
pub fn export_dir() -> Result<PathBuf> {
    match dirs::download_dir().filter(|d| d.is_dir()) {
        Some(dir) => Ok(dir),
        None => data_dir().map(|d| d.join("exports")),
    }
}

/// A file name in `folder` that does not exist yet:
/// `medtext-export-<unix ms>.<extension>`.
pub fn new_export_path(folder: &std::path::Path, extension: &str) -> Result<PathBuf> {
    ensure_private_dir_if_missing(folder)?;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    (0..100)
        .map(|n| match n {
            0 => folder.join(format!("medtext-export-{stamp}.{extension}")),
            n => folder.join(format!("medtext-export-{stamp}-{n}.{extension}")),
        })
        .find(|p| !p.exists())
        .ok_or_else(|| Error::io(folder, std::io::Error::other("no free export file name")))
}

/// Creates `dir` owner-only if it does not exist; an existing folder (the
/// user's Downloads) keeps its permissions.
fn ensure_private_dir_if_missing(dir: &std::path::Path) -> Result<()> {
    if dir.is_dir() {
        Ok(())
    } else {
        ensure_private_dir(dir)
    }
}

/// Opens `path` for writing, readable by the owner only, replacing what is
/// there.
pub fn create_private_file(path: &std::path::Path) -> Result<std::fs::File> {
    private_options()
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Opens `path` for reading and writing, readable by the owner only,
/// keeping what is there (created empty if missing).
pub fn open_private_file(path: &std::path::Path) -> Result<std::fs::File> {
    private_options()
        .read(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// [`create_private_file`], failing if `path` already exists. The handle
/// reads too, so a staged copy is read back through the handle that wrote
/// it, never by reopening its path.
pub fn create_new_private_file(path: &std::path::Path) -> Result<std::fs::File> {
    private_options()
        .read(true)
        .create_new(true)
        .open(path)
        .map_err(|e| Error::io(path, e))
}

/// Opens `path` for appending, creating it readable by the owner only.
pub fn open_private_append(path: &std::path::Path) -> Result<std::fs::File> {
    let mut options = private_options();
    options.create(true).append(true);
    options.open(path).map_err(|e| Error::io(path, e))
}

fn private_options() -> std::fs::OpenOptions {
    let mut options = std::fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options
}

/// Creates `dir` (and parents) readable by the owner only.
pub fn ensure_private_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundled_packs_and_encoders_appear_in_the_user_folder_which_stays_writable() {
        let dir = tempfile::tempdir().unwrap();
        let bundled = dir.path().join("bundled");
        for pack in ["abstracts", "icd"] {
            std::fs::create_dir_all(bundled.join(pack)).unwrap();
            std::fs::write(bundled.join(pack).join("manifest.json"), "{}").unwrap();
        }
        std::fs::create_dir_all(bundled.join("encoders/minilm")).unwrap();
        std::fs::create_dir_all(bundled.join("not-a-pack")).unwrap();
        let user = dir.path().join("user");
        // A pack the user trained keeps its place.
        std::fs::create_dir_all(user.join("mine")).unwrap();
        std::fs::write(user.join("mine/manifest.json"), "{\"name\":\"mine\"}").unwrap();

        link_bundled_models(&bundled, &user).unwrap();
        assert!(user.join("abstracts/manifest.json").is_file());
        assert!(user.join("encoders/minilm").is_dir());
        assert!(!user.join("not-a-pack").exists());
        assert_eq!(
            std::fs::read_to_string(user.join("mine/manifest.json")).unwrap(),
            "{\"name\":\"mine\"}"
        );

        // A newer version without "icd": its link goes; running again is harmless.
        std::fs::remove_dir_all(bundled.join("icd")).unwrap();
        link_bundled_models(&bundled, &user).unwrap();
        assert!(std::fs::symlink_metadata(user.join("icd")).is_err());
        assert!(user.join("abstracts/manifest.json").is_file());
        assert!(user.join("mine").is_dir());
    }
}
