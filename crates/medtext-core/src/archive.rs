//! Model packs as single archive files, for IT to hand around and for the
//! app to import.
//!
//! A pack archive is an uncompressed tar (weights barely compress) with
//! ```text
//! pack/manifest.json
//! pack/<head files>
//! encoders/<name>/{config.json, model.safetensors, tokenizer.json}   optional
//! ```
//! where the manifest's encoder path is `../encoders/<name>` (an encoder
//! shared through the models directory) or a folder inside `pack/`.
//!
//! Import trusts nothing in the file: only regular files and folders, only
//! relative paths that stay inside the two roots, bounded sizes and counts;
//! every hash is verified and every head is loaded on its encoder before
//! anything is moved into the models directory, so a broken archive leaves
//! the installed packs exactly as they were.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use crate::pack::{is_safe_name, Manifest, Pack};
use crate::{Classifier, Error, Result};

/// Largest archive member: the biggest BERT-base weights are about 440 MB.
pub const MAX_MEMBER_BYTES: u64 = 2 << 30;
/// Largest total of all members.
pub const MAX_TOTAL_BYTES: u64 = 4 << 30;
/// Most members an archive may have.
pub const MAX_MEMBERS: usize = 256;

/// Writes `pack` as an archive at `out`, with its shared encoder when
/// `with_encoder` (needed on a machine that does not have it yet).
pub fn write_archive(pack: &Pack, out: &Path, with_encoder: bool) -> Result<()> {
    let file = File::create(out).map_err(|e| Error::io(out, e))?;
    let mut builder = tar::Builder::new(file);
    // A Hugging Face checkpoint pack is its own encoder: its weights are
    // both the head file and an encoder file, and go in once.
    let mut added = std::collections::BTreeSet::new();
    let mut add = |builder: &mut tar::Builder<File>, source: &Path, name: &str| {
        let name = name.replace("/./", "/");
        if !added.insert(name.clone()) {
            return Ok(());
        }
        builder
            .append_path_with_name(source, &name)
            .map_err(|e| Error::io(source, e))
    };
    add(
        &mut builder,
        &pack.dir.join("manifest.json"),
        "pack/manifest.json",
    )?;
    for (file, _) in pack.manifest.pack_files() {
        let name = format!("pack/{}", slash_path(file));
        add(&mut builder, &pack.dir.join(file), &name)?;
    }
    let encoder_prefix = match pack.manifest.shared_encoder() {
        Some(name) if with_encoder => Some(format!("encoders/{name}")),
        Some(_) => None,
        None => Some(format!("pack/{}", slash_path(&pack.manifest.encoder.path))),
    };
    if let Some(prefix) = encoder_prefix {
        for file in pack.manifest.encoder.sha256.keys() {
            add(
                &mut builder,
                &pack.encoder_dir().join(file),
                &format!("{prefix}/{file}"),
            )?;
        }
    }
    let mut file = builder.into_inner().map_err(|e| Error::io(out, e))?;
    file.flush().map_err(|e| Error::io(out, e))?;
    file.sync_all().map_err(|e| Error::io(out, e))
}

fn slash_path(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Imports the pack archive at `archive` into `models_dir` and returns the
/// installed pack. Refuses a pack whose name is already installed.
pub fn import_archive(archive: &Path, models_dir: &Path) -> Result<Pack> {
    std::fs::create_dir_all(models_dir).map_err(|e| Error::io(models_dir, e))?;
    let staging = Staging::new(models_dir)?;
    extract(archive, &staging.dir)?;
    let staged_pack = staging.dir.join("pack");
    let manifest = Manifest::read(&staged_pack)?;
    // A pack from elsewhere may only point at an encoder it brings or one
    // shared through the models directory, never at any other folder.
    if !manifest.encoder_inside() && manifest.shared_encoder().is_none() {
        return Err(Error::pack(
            archive,
            format!(
                "encoder.path {} must be the pack itself (.), a folder inside it, or ../encoders/<name>",
                manifest.encoder.path.display()
            ),
        ));
    }
    let installed = models_dir.join(&manifest.name);
    if installed.exists() {
        return Err(Error::pack(
            &installed,
            format!(
                "a pack named '{}' is already installed; remove it first to replace it",
                manifest.name
            ),
        ));
    }
    // Where the encoder will come from: the archive, or the models directory.
    let shared = manifest.shared_encoder().map(str::to_owned);
    let staged_encoder = shared
        .as_ref()
        .map(|name| staging.dir.join("encoders").join(name))
        .filter(|dir| dir.is_dir());
    let encoder_dir = match (&shared, &staged_encoder) {
        (Some(_), Some(staged)) => Some(staged.clone()),
        (Some(name), None) => Some(models_dir.join("encoders").join(name)),
        (None, _) => None,
    };
    let pack = Pack::open_with_encoder(&staged_pack, encoder_dir.as_deref())?;
    // Loads the encoder and every head: shapes and label counts must fit.
    Classifier::from_pack(pack, None)?;
    if let (Some(name), Some(staged)) = (&shared, &staged_encoder) {
        install_encoder(staged, &models_dir.join("encoders").join(name), &manifest)?;
    }
    std::fs::rename(&staged_pack, &installed).map_err(|e| Error::io(&installed, e))?;
    Pack::open(&installed)
}

/// Largest pack archive the app takes as one file (a pack with a BERT-base
/// encoder inside is about 440 MB).
pub const MAX_ARCHIVE_BYTES: usize = 1 << 30;

/// Installs a pack archive handed over as bytes (the app's "Import a pack"),
/// with its detached signature file's text if there is one: the archive is
/// kept owner-only in `scratch` while the signature is checked against the
/// machine policy (see [`crate::signing::verify_archive`]) and the pack is
/// imported, then removed. Returns the pack and who signed it.
pub fn import_bytes(
    bytes: &[u8],
    signature: Option<&str>,
    scratch: &Path,
    models_dir: &Path,
    policy: &crate::policy::Policy,
) -> Result<(Pack, Option<crate::signing::SignerKey>)> {
    let staged = crate::training::StagedFile::write_limited(
        scratch,
        "tar",
        bytes,
        MAX_ARCHIVE_BYTES,
        "pack archives",
    )?;
    let sig_path = crate::signing::signature_path(staged.path());
    let outcome = (|| {
        if let Some(text) = signature {
            let mut file = crate::paths::create_new_private_file(&sig_path)?;
            file.write_all(text.as_bytes())
                .map_err(|e| Error::io(&sig_path, e))?;
        }
        let signer =
            crate::signing::verify_archive(staged.path(), policy.allowed_pack_signers.as_deref())?;
        Ok((import_archive(staged.path(), models_dir)?, signer))
    })();
    let _ = std::fs::remove_file(&sig_path);
    outcome
}

/// Moves a staged encoder into place, or, when one of that name is already
/// installed, checks that it is the same encoder (the pack's hashes).
fn install_encoder(staged: &Path, target: &Path, manifest: &Manifest) -> Result<()> {
    if target.exists() {
        for (file, expected) in &manifest.encoder.sha256 {
            let actual = crate::pack::sha256_file(&target.join(file))?;
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(Error::pack(
                    target,
                    format!("an encoder of this name with a different {file} is already installed; the archive's encoder was not installed"),
                ));
            }
        }
        return Ok(());
    }
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    std::fs::rename(staged, target).map_err(|e| Error::io(target, e))
}

/// Unpacks `archive` into the empty folder `into`, refusing anything that is
/// not a plain file or folder under `pack/` or `encoders/<name>/`.
fn extract(archive: &Path, into: &Path) -> Result<()> {
    let refuse = |problem: String| Error::pack(archive, problem);
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut tar = tar::Archive::new(file);
    let entries = tar
        .entries()
        .map_err(|e| refuse(format!("not a pack archive (tar): {e}")))?;
    let (mut members, mut total) = (0usize, 0u64);
    for entry in entries {
        let mut entry = entry.map_err(|e| refuse(format!("damaged archive: {e}")))?;
        members += 1;
        if members > MAX_MEMBERS {
            return Err(refuse(format!("more than {MAX_MEMBERS} members")));
        }
        let raw_path = entry
            .path()
            .map_err(|e| refuse(format!("a member has an unreadable name: {e}")))?
            .into_owned();
        let shown = raw_path.display().to_string();
        let relative = member_path(&raw_path)
            .ok_or_else(|| refuse(format!("member '{shown}' is outside pack/ and encoders/<name>/ (absolute, '..' or an odd name)")))?;
        let kind = entry.header().entry_type();
        let target = into.join(&relative);
        if kind.is_dir() {
            std::fs::create_dir_all(&target).map_err(|e| Error::io(&target, e))?;
            continue;
        }
        if !kind.is_file() {
            return Err(refuse(format!(
                "member '{shown}' is a link or special file; packs hold only plain files"
            )));
        }
        let size = entry
            .header()
            .size()
            .map_err(|e| refuse(format!("member '{shown}' has no readable size: {e}")))?;
        total = total.saturating_add(size);
        if size > MAX_MEMBER_BYTES || total > MAX_TOTAL_BYTES {
            return Err(refuse(format!(
                "member '{shown}' makes the archive larger than a pack may be"
            )));
        }
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut out = File::create_new(&target)
            .map_err(|_| refuse(format!("member '{shown}' appears twice")))?;
        let copied = std::io::copy(&mut (&mut entry).take(size), &mut out)
            .map_err(|e| Error::io(&target, e))?;
        if copied != size {
            return Err(refuse(format!("member '{shown}' is truncated")));
        }
        out.sync_all().map_err(|e| Error::io(&target, e))?;
    }
    if !into.join("pack/manifest.json").is_file() {
        return Err(refuse("the archive has no pack/manifest.json".into()));
    }
    Ok(())
}

/// The member's path if it is `pack/...` or `encoders/<name>/...` made of
/// plain components only.
fn member_path(path: &Path) -> Option<PathBuf> {
    let parts: Vec<&str> = path
        .components()
        .map(|c| match c {
            Component::Normal(part) => part.to_str().filter(|p| !p.is_empty()),
            Component::CurDir => Some("."),
            _ => None,
        })
        .collect::<Option<Vec<_>>>()?
        .into_iter()
        .filter(|p| *p != ".")
        .collect();
    let allowed = match parts.as_slice() {
        ["pack", ..] => true,
        ["encoders", name, ..] => is_safe_name(name),
        _ => false,
    };
    allowed.then(|| parts.iter().collect())
}

/// A private folder inside the models directory (same file system, so the
/// final moves are renames), removed with whatever is left in it.
pub(crate) struct Staging {
    pub(crate) dir: PathBuf,
}

impl Staging {
    pub(crate) fn new(models_dir: &Path) -> Result<Self> {
        let mut random = [0u8; 8];
        getrandom::fill(&mut random)
            .map_err(|e| Error::Engine(format!("no randomness for a staging folder: {e}")))?;
        let dir = models_dir.join(format!(".staging-{}", hex::encode(random)));
        std::fs::create_dir(&dir).map_err(|e| Error::io(&dir, e))?;
        Ok(Self { dir })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::tests::write_tiny_pack;

    /// A tiny pack and its archive (with the encoder), in a fresh folder.
    fn tiny_archive(dir: &Path) -> PathBuf {
        let source = dir.join("source");
        write_tiny_pack(&source);
        let pack = Pack::find(&source, "tiny-pack").unwrap();
        let archive = dir.join("tiny.medtext-pack");
        write_archive(&pack, &archive, true).unwrap();
        archive
    }

    fn models_listing(models: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(models)
            .map(|d| {
                d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
    }

    #[test]
    fn an_archive_round_trips_into_an_empty_models_folder() {
        let dir = tempfile::tempdir().unwrap();
        let archive = tiny_archive(dir.path());
        let models = dir.path().join("models");
        let pack = import_archive(&archive, &models).unwrap();
        assert_eq!(pack.manifest.name, "tiny-pack");
        assert_eq!(models_listing(&models), ["encoders", "tiny-pack"]);
        let c = Classifier::load(&models, "tiny-pack", None).unwrap();
        assert_eq!(
            c.classify("fever and cough").unwrap().probabilities.len(),
            3
        );
        // The same name again is refused and changes nothing.
        let again = import_archive(&archive, &models).err().unwrap();
        assert!(again.to_string().contains("already installed"), "{again}");
        assert_eq!(models_listing(&models), ["encoders", "tiny-pack"]);
    }

    #[test]
    fn an_archive_without_its_encoder_uses_the_installed_one_or_says_it_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        write_tiny_pack(&source);
        let pack = Pack::find(&source, "tiny-pack").unwrap();
        let archive = dir.path().join("heads-only.tar");
        write_archive(&pack, &archive, false).unwrap();

        let empty = dir.path().join("empty");
        let err = import_archive(&archive, &empty).err().unwrap();
        assert!(err.to_string().contains("missing"), "{err}");
        assert_eq!(models_listing(&empty), Vec::<String>::new());

        let with_encoder = dir.path().join("with-encoder");
        std::fs::create_dir_all(with_encoder.join("encoders")).unwrap();
        std::fs::rename(
            source.join("encoders/tiny"),
            with_encoder.join("encoders/tiny"),
        )
        .unwrap();
        import_archive(&archive, &with_encoder).unwrap();
    }

    /// An archive member as an attacker writes it: name, kind, bytes.
    type Member<'a> = (&'a str, tar::EntryType, &'a [u8]);

    /// Writes an archive of raw members.
    fn crafted(path: &Path, members: &[Member]) {
        let mut b = tar::Builder::new(File::create(path).unwrap());
        for (name, kind, bytes) in members {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(bytes.len() as u64);
            h.set_mode(0o644);
            if kind.is_symlink() {
                h.set_link_name("/etc/passwd").unwrap();
            }
            // set_path refuses "..": write the name bytes directly, as an
            // attacker would.
            let field = &mut h.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            h.set_cksum();
            b.append(&h, *bytes).unwrap();
        }
        b.finish().unwrap();
    }

    #[test]
    fn crafted_archives_are_refused_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let cases: [(&str, Vec<Member>, &str); 5] = [
            (
                "traversal",
                vec![("pack/../../evil", tar::EntryType::Regular, b"x")],
                "outside",
            ),
            (
                "absolute",
                vec![("/tmp/evil", tar::EntryType::Regular, b"x")],
                "outside",
            ),
            (
                "symlink",
                vec![("pack/manifest.json", tar::EntryType::Symlink, b"")],
                "link",
            ),
            (
                "elsewhere",
                vec![("other/file", tar::EntryType::Regular, b"x")],
                "outside",
            ),
            (
                "no-manifest",
                vec![("pack/head.safetensors", tar::EntryType::Regular, b"x")],
                "manifest",
            ),
        ];
        for (name, members, expected) in cases {
            let path = dir.path().join(format!("{name}.tar"));
            crafted(&path, &members);
            let err = import_archive(&path, &models).err().unwrap();
            assert!(err.to_string().contains(expected), "{name}: {err}");
            assert_eq!(models_listing(&models), Vec::<String>::new(), "{name}");
        }
        assert!(!dir.path().join("evil").exists());
    }

    #[test]
    fn a_damaged_member_is_refused_before_anything_is_installed() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let pack_dir = write_tiny_pack(&source);
        let pack = Pack::find(&source, "tiny-pack").unwrap();
        // Damage the head after the manifest recorded its hash.
        let head = pack_dir.join(&pack.manifest.heads[0].file);
        let mut bytes = std::fs::read(&head).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&head, &bytes).unwrap();
        let archive = dir.path().join("damaged.tar");
        write_archive(&pack, &archive, true).unwrap();
        let models = dir.path().join("models");
        let err = import_archive(&archive, &models).err().unwrap();
        assert!(err.to_string().contains("sha256"), "{err}");
        assert_eq!(models_listing(&models), Vec::<String>::new());
        // Not a tar at all.
        std::fs::write(&archive, b"definitely not a tar file").unwrap();
        assert!(import_archive(&archive, &models).is_err());
        assert_eq!(models_listing(&models), Vec::<String>::new());
    }

    #[test]
    fn a_pack_pointing_at_an_encoder_elsewhere_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        let pack_dir = write_tiny_pack(&source);
        let manifest = std::fs::read_to_string(pack_dir.join("manifest.json"))
            .unwrap()
            .replace("../encoders/tiny", "../../../home/someone/encoder");
        let head = std::fs::read(pack_dir.join("head.safetensors")).unwrap();
        let archive = dir.path().join("escape.tar");
        crafted(
            &archive,
            &[
                (
                    "pack/manifest.json",
                    tar::EntryType::Regular,
                    manifest.as_bytes(),
                ),
                ("pack/head.safetensors", tar::EntryType::Regular, &head),
            ],
        );
        let models = dir.path().join("models");
        let err = import_archive(&archive, &models).err().unwrap();
        assert!(err.to_string().contains("encoder.path"), "{err}");
        assert_eq!(models_listing(&models), Vec::<String>::new());
    }

    #[test]
    fn bytes_from_the_app_install_only_with_the_signature_the_policy_asks_for() {
        let dir = tempfile::tempdir().unwrap();
        let archive = tiny_archive(dir.path());
        let bytes = std::fs::read(&archive).unwrap();
        let key = crate::signing::generate_key(&dir.path().join("it.key")).unwrap();
        let sig = crate::signing::sign_archive(&archive, &dir.path().join("it.key")).unwrap();
        let signature = std::fs::read_to_string(&sig).unwrap();
        let policy = crate::policy::Policy::parse(
            &format!("[packs]\nallowed_signers = [\"{}\"]\n", key.to_text()),
            Path::new("policy.toml"),
        )
        .unwrap();
        let scratch = dir.path().join("scratch");
        let models = dir.path().join("models");

        let unsigned = import_bytes(&bytes, None, &scratch, &models, &policy).unwrap_err();
        assert!(unsigned.to_string().contains("missing"), "{unsigned}");
        assert_eq!(models_listing(&models), Vec::<String>::new());

        let (pack, signer) =
            import_bytes(&bytes, Some(&signature), &scratch, &models, &policy).unwrap();
        assert_eq!(pack.manifest.name, "tiny-pack");
        assert_eq!(signer, Some(key));
        // Nothing of the upload is left behind.
        assert_eq!(std::fs::read_dir(&scratch).unwrap().count(), 0);
    }

    #[test]
    fn member_paths_must_stay_in_their_roots() {
        assert!(member_path(Path::new("pack/manifest.json")).is_some());
        assert!(member_path(Path::new("./pack/heads/a.safetensors")).is_some());
        assert!(member_path(Path::new("encoders/minilm/config.json")).is_some());
        for bad in [
            "pack/../x",
            "/pack/x",
            "encoders/../x",
            "encoders/.hidden/x",
            "models/x",
            "..",
        ] {
            assert!(member_path(Path::new(bad)).is_none(), "{bad}");
        }
    }
}
