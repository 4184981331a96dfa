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
//! Import trusts nothing in the file. It reads the archive once, into a
//! private copy (bounded), and checks the signature against the hash of
//! exactly those bytes. Then only the manifest and the files it lists with
//! their sha256 are unpacked: regular files, relative paths inside the two
//! roots, each checked against its hash. Every head is loaded on its
//! encoder before anything is moved into the models directory, so a broken
//! archive leaves the installed packs exactly as they were.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::pack::manifest::{is_safe_name, Manifest, Pack};
use crate::pack::signing::{self, SignerKey};
use crate::{inference::classifier::Classifier, Error, Result};

/// Largest pack archive imported: one with a BERT-base encoder inside is
/// about 440 MB. Members need no limit of their own: sparse members are
/// refused, so every byte written comes from the archive.
pub const MAX_ARCHIVE_BYTES: u64 = 1 << 30;
/// Most members an archive may have.
pub const MAX_MEMBERS: usize = 256;
/// Largest manifest: the ICD-10-CM chapter pack's is 38 KB.
const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Writes `pack` as an archive at `out`, with its shared encoder when
/// `with_encoder` (needed on a machine that does not have it yet).
///
/// The bytes depend on the pack's files alone, so exporting a pack again
/// (on this machine or another) gives the same archive, the same hash and
/// the same signature: the manifest comes first (a reader meets what
/// describes the rest before it), then every other member sorted by name,
/// each with the fixed header of [`append_member`].
pub fn write_archive(pack: &Pack, out: &Path, with_encoder: bool) -> Result<()> {
    // A Hugging Face checkpoint pack is its own encoder: its weights are
    // both the head file and an encoder file, and go in once.
    let mut members = std::collections::BTreeMap::new();
    let mut add = |name: String, source: PathBuf| {
        members.entry(name.replace("/./", "/")).or_insert(source);
    };
    for (file, _) in pack.manifest.pack_files() {
        add(format!("pack/{}", slash_path(file)), pack.dir.join(file));
    }
    let encoder_prefix = match pack.manifest.shared_encoder() {
        Some(name) if with_encoder => Some(format!("encoders/{name}")),
        Some(_) => None,
        None => Some(format!("pack/{}", slash_path(&pack.manifest.encoder.path))),
    };
    if let Some(prefix) = encoder_prefix {
        for file in pack.manifest.encoder.sha256.keys() {
            add(format!("{prefix}/{file}"), pack.encoder_dir().join(file));
        }
    }
    let file = File::create(out).map_err(|e| Error::io(out, e))?;
    let mut builder = tar::Builder::new(file);
    append_member(
        &mut builder,
        &pack.dir.join("manifest.json"),
        MANIFEST_MEMBER,
    )?;
    for (name, source) in members.iter().filter(|(n, _)| *n != MANIFEST_MEMBER) {
        append_member(&mut builder, source, name)?;
    }
    let mut file = builder.into_inner().map_err(|e| Error::io(out, e))?;
    file.flush().map_err(|e| Error::io(out, e))?;
    file.sync_all().map_err(|e| Error::io(out, e))
}

/// Adds the file at `source` as the member `name`, with a header that says
/// nothing of where or when it was exported: no modification time (0), no
/// owner (uid and gid 0, no user or group name), mode 0644. What tar would
/// copy from the file system instead changes with every checkout, copy or
/// user, and with it the archive's hash and signature.
fn append_member(builder: &mut tar::Builder<File>, source: &Path, name: &str) -> Result<()> {
    let file = File::open(source).map_err(|e| Error::io(source, e))?;
    let size = file.metadata().map_err(|e| Error::io(source, e))?.len();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_uid(0);
    header.set_gid(0);
    // At most the size the header states: a file that grew meanwhile
    // cannot shift the members after it (its hash check then refuses it).
    builder
        .append_data(&mut header, name, file.take(size))
        .map_err(|e| Error::io(source, e))
}

fn slash_path(path: &Path) -> String {
    path.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// Installs the pack archive at `archive` (a file, or a pipe) and returns
/// the pack and who signed it; see [`import`]. The signature is the
/// `<archive>.sig` beside it, if there is one.
pub fn import_file(
    archive: &Path,
    models_dir: &Path,
    allowed_signers: Option<&[SignerKey]>,
) -> Result<(Pack, Option<SignerKey>)> {
    let file = File::open(archive).map_err(|e| Error::io(archive, e))?;
    // A plain file's size is known: one too large is refused unread.
    let metadata = file.metadata().map_err(|e| Error::io(archive, e))?;
    if metadata.is_file() && metadata.len() > MAX_ARCHIVE_BYTES {
        return Err(too_large(archive, MAX_ARCHIVE_BYTES));
    }
    let signature = signing::read_signature(archive)?;
    import(
        file,
        archive,
        signature.as_deref(),
        models_dir,
        allowed_signers,
    )
}

/// Installs the pack archive read from `source` into `models_dir` and
/// returns the pack and who signed it; the one way the CLI and the app
/// install a pack. `signature` is the text of its `.sig` file, if it came
/// with one; `origin` names the archive in messages. With
/// `allowed_signers` (the machine policy's), only an archive one of them
/// signed installs; a signature that is present is always checked.
///
/// The source is read exactly once, into an owner-only copy in the models
/// directory, hashing it on the way (at most [`MAX_ARCHIVE_BYTES`], so an
/// endless pipe is refused): the signature is checked against that hash,
/// and that copy, read back through the same handle, is what is unpacked.
/// Reading the archive once to check it and again to install it would let
/// a pipe, or a file replaced in between, install bytes nobody checked.
/// Every file is checked against the manifest and every head loaded before
/// anything is moved into place; a pack whose name is installed is refused.
pub fn import(
    source: impl Read,
    origin: &Path,
    signature: Option<&str>,
    models_dir: &Path,
    allowed_signers: Option<&[SignerKey]>,
) -> Result<(Pack, Option<SignerKey>)> {
    std::fs::create_dir_all(models_dir).map_err(|e| Error::io(models_dir, e))?;
    let staging = Staging::new(models_dir)?;
    let (mut copy, digest) = stage(
        source,
        origin,
        &staging.dir.join("archive.tar"),
        MAX_ARCHIVE_BYTES,
    )?;
    let signer = signing::verify(
        &digest,
        signature,
        &signing::signature_path(origin),
        allowed_signers,
    )?;
    let manifest = extract(&mut copy, origin, &staging.dir)?;
    drop(copy);
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
    let staged_pack = staging.dir.join("pack");
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
    Ok((Pack::open(&installed)?, signer))
}

fn too_large(origin: &Path, limit: u64) -> Error {
    Error::pack(
        origin,
        format!(
            "the archive is larger than {} MB, the most a pack archive may be (one with a BERT-base encoder is about 440 MB); nothing was installed",
            limit >> 20
        ),
    )
}

/// Copies at most `limit` bytes of `source` into a new owner-only file at
/// `path`; returns the file (readable) and the SHA-256 of its bytes.
fn stage(source: impl Read, origin: &Path, path: &Path, limit: u64) -> Result<(File, [u8; 32])> {
    let mut file = crate::paths::create_new_private_file(path)?;
    let (copied, digest) = copy_hashed(source, origin, &mut file, path, limit)?;
    if copied > limit {
        return Err(too_large(origin, limit));
    }
    file.sync_all().map_err(|e| Error::io(path, e))?;
    Ok((file, digest))
}

/// Copies `from` into `to`, at most `limit` bytes (and one more, to show
/// there were more), hashing them: returns how many and their SHA-256.
fn copy_hashed(
    from: impl Read,
    from_name: &Path,
    to: &mut File,
    to_name: &Path,
    limit: u64,
) -> Result<(u64, [u8; 32])> {
    let mut hasher = Sha256::new();
    let copied = crate::user_files::copy_at_most(from, from_name, to, to_name, limit, |piece| {
        hasher.update(piece)
    })?;
    Ok((copied, hasher.finalize().into()))
}

/// Moves a staged encoder into place, or, when one of that name is already
/// installed, checks that it is the same encoder (the pack's hashes).
fn install_encoder(staged: &Path, target: &Path, manifest: &Manifest) -> Result<()> {
    if target.exists() {
        for (file, expected) in &manifest.encoder.sha256 {
            let actual = crate::pack::manifest::sha256_file(&target.join(file))?;
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

/// Unpacks the archive in `file` into the empty folder `into` and returns
/// its manifest. Only the manifest and the files it lists with their
/// sha256 (its own and its encoder's) are written, each checked against
/// its hash as it is written; any other member is refused, since no hash
/// covers it (and it could be any size). So are links and special files
/// (sparse files among them) and paths outside `pack/` and
/// `encoders/<name>/`.
fn extract(file: &mut File, origin: &Path, into: &Path) -> Result<Manifest> {
    let refuse = |problem: String| Error::pack(origin, problem);
    // First pass: the manifest says what else the archive may hold.
    let mut manifest_bytes = None;
    for_each_member(file, origin, |name, entry| {
        if name == Path::new(MANIFEST_MEMBER) && manifest_bytes.is_none() {
            let mut bytes = Vec::new();
            entry
                .take(MAX_MANIFEST_BYTES + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| Error::io(origin, e))?;
            if bytes.len() as u64 > MAX_MANIFEST_BYTES {
                return Err(refuse(format!(
                    "{MANIFEST_MEMBER} is larger than {} MB, more than a manifest may be",
                    MAX_MANIFEST_BYTES >> 20
                )));
            }
            manifest_bytes = Some(bytes);
        }
        Ok(())
    })?;
    let manifest_bytes =
        manifest_bytes.ok_or_else(|| refuse(format!("the archive has no {MANIFEST_MEMBER}")))?;
    let text = std::str::from_utf8(&manifest_bytes)
        .map_err(|_| refuse(format!("{MANIFEST_MEMBER} is not UTF-8 text")))?;
    let manifest = Manifest::parse(text, &origin.join(MANIFEST_MEMBER))?;
    let listed = listed_members(&manifest, origin)?;
    for_each_member(file, origin, |name, entry| {
        let expected = listed.get(&name).copied();
        if expected.is_none() && name != Path::new(MANIFEST_MEMBER) {
            return Err(refuse(format!(
                "member {name:?} is not listed in the manifest: a pack archive holds only the manifest and the files it names with their sha256"
            )));
        }
        let target = into.join(&name);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
        }
        let mut out = File::create_new(&target)
            .map_err(|_| refuse(format!("member {name:?} appears twice")))?;
        let size = entry.size();
        let (copied, digest) = copy_hashed(entry, origin, &mut out, &target, size)?;
        if copied != size {
            return Err(refuse(format!("member {name:?} is truncated")));
        }
        if let Some(expected) = expected {
            let actual = hex::encode(digest);
            if !actual.eq_ignore_ascii_case(expected) {
                return Err(refuse(format!(
                    "member {name:?}: sha256 mismatch: the manifest expects {expected:?}, the member has {actual}; the archive is damaged or was changed"
                )));
            }
        }
        out.sync_all().map_err(|e| Error::io(&target, e))
    })?;
    Ok(manifest)
}

/// Where the manifest is in an archive.
const MANIFEST_MEMBER: &str = "pack/manifest.json";

/// Every member the manifest allows besides itself, with its sha256: the
/// pack's files under `pack/`, and the encoder's under `encoders/<name>/`
/// (a shared encoder) or inside `pack/`.
fn listed_members<'m>(
    manifest: &'m Manifest,
    origin: &Path,
) -> Result<std::collections::BTreeMap<PathBuf, &'m str>> {
    // A pack from elsewhere may only point at an encoder it brings or one
    // shared through the models directory, never at any other folder.
    let encoder_root = match manifest.shared_encoder() {
        Some(name) => Path::new("encoders").join(name),
        None if manifest.encoder_inside() => Path::new("pack").join(&manifest.encoder.path),
        None => {
            return Err(Error::pack(
                origin,
                format!(
                    "encoder.path {:?} must be the pack itself (.), a folder inside it, or ../encoders/<name>",
                    manifest.encoder.path
                ),
            ))
        }
    };
    let pack_files = manifest
        .pack_files()
        .map(|(file, sha256)| (Path::new("pack").join(file), sha256));
    let encoder_files = manifest
        .encoder
        .sha256
        .iter()
        .map(|(file, sha256)| (encoder_root.join(file), sha256.as_str()));
    Ok(pack_files.chain(encoder_files).collect())
}

/// Calls `visit` with each plain file of the archive in `file` (from its
/// start) and its path inside the archive, refusing members outside the two
/// roots, links and special files, and more than [`MAX_MEMBERS`] members.
fn for_each_member(
    file: &mut File,
    origin: &Path,
    mut visit: impl FnMut(PathBuf, &mut tar::Entry<&File>) -> Result<()>,
) -> Result<()> {
    let refuse = |problem: String| Error::pack(origin, problem);
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(origin, e))?;
    let mut tar = tar::Archive::new(&*file);
    let entries = tar
        .entries()
        .map_err(|e| refuse(format!("not a pack archive (tar): {e}")))?;
    for (index, entry) in entries.enumerate() {
        if index >= MAX_MEMBERS {
            return Err(refuse(format!("more than {MAX_MEMBERS} members")));
        }
        let mut entry = entry.map_err(|e| refuse(format!("damaged archive: {e}")))?;
        let raw_path = entry
            .path()
            .map_err(|e| refuse(format!("a member has an unreadable name: {e}")))?
            .into_owned();
        let name = member_path(&raw_path).ok_or_else(|| {
            refuse(format!(
                "member {raw_path:?} is outside pack/ and encoders/<name>/ (absolute, '..' or an odd name)"
            ))
        })?;
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            continue;
        }
        if !kind.is_file() {
            return Err(refuse(format!(
                "member {raw_path:?} is a link or special file; packs hold only plain files"
            )));
        }
        visit(name, &mut entry)?;
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
    use crate::pack::manifest::tests::write_tiny_pack;

    /// An import without a signature or a policy asking for one.
    fn import_archive(archive: &Path, models: &Path) -> Result<Pack> {
        import_file(archive, models, None).map(|(pack, _)| pack)
    }

    /// A tiny pack and its archive (with the encoder), in a fresh folder.
    fn tiny_archive(dir: &Path) -> PathBuf {
        let source = dir.join("source");
        write_tiny_pack(&source);
        let pack = Pack::find(&source, "tiny-pack").unwrap();
        let archive = dir.join("tiny.medtext-pack");
        write_archive(&pack, &archive, true).unwrap();
        archive
    }

    #[test]
    fn exporting_again_gives_the_same_bytes_and_signature_whatever_the_files_times_and_owners() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let first = tiny_archive(dir.path());
        let key = dir.path().join("it.key");
        crate::pack::signing::generate_key(&key).unwrap();
        let first_sig = crate::pack::signing::sign_archive(&first, &key).unwrap();
        // The same files, as a later checkout or another user would have
        // them: other times, modes and owners.
        let source = dir.path().join("source");
        for file in [
            "tiny-pack/manifest.json",
            "tiny-pack/head.safetensors",
            "encoders/tiny/config.json",
        ] {
            let path = source.join(file);
            File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(
                    std::time::SystemTime::UNIX_EPOCH
                        + std::time::Duration::from_secs(1_234_567_890),
                )
                .unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            // Root (as in CI) can give the file away; elsewhere it stays ours.
            let _ = std::os::unix::fs::chown(&path, Some(4321), Some(4321));
        }
        let pack = Pack::find(&source, "tiny-pack").unwrap();
        let second = dir.path().join("again.medtext-pack");
        write_archive(&pack, &second, true).unwrap();
        assert!(std::fs::read(&first).unwrap() == std::fs::read(&second).unwrap());
        let second_sig = crate::pack::signing::sign_archive(&second, &key).unwrap();
        assert_eq!(
            std::fs::read_to_string(first_sig).unwrap(),
            std::fs::read_to_string(second_sig).unwrap()
        );

        let mut archive = tar::Archive::new(File::open(&second).unwrap());
        let mut names = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            let h = entry.header();
            assert_eq!(
                (
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                    h.gid().unwrap(),
                    h.mode().unwrap()
                ),
                (0, 0, 0, 0o644)
            );
            assert_eq!(
                (h.username_bytes(), h.groupname_bytes()),
                (Some(&b""[..]), Some(&b""[..]))
            );
            names.push(entry.path().unwrap().to_string_lossy().into_owned());
        }
        assert_eq!(
            names,
            [
                "pack/manifest.json",
                "encoders/tiny/config.json",
                "encoders/tiny/model.safetensors",
                "encoders/tiny/tokenizer.json",
                "pack/head.safetensors",
                "pack/urgency.safetensors",
            ]
        );
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

    /// The members `write_archive` makes of the tiny pack with its encoder,
    /// the manifest's JSON edited by `edit`, as an attacker could rewrite
    /// them.
    fn tiny_members(dir: &Path, edit: impl Fn(&mut serde_json::Value)) -> Vec<(String, Vec<u8>)> {
        let source = dir.join("source");
        let pack_dir = write_tiny_pack(&source);
        let text = std::fs::read_to_string(pack_dir.join("manifest.json")).unwrap();
        let mut manifest: serde_json::Value = serde_json::from_str(&text).unwrap();
        edit(&mut manifest);
        let mut members = vec![(
            "pack/manifest.json".to_string(),
            manifest.to_string().into_bytes(),
        )];
        for file in ["head.safetensors", "urgency.safetensors"] {
            members.push((
                format!("pack/{file}"),
                std::fs::read(pack_dir.join(file)).unwrap(),
            ));
        }
        for file in ["config.json", "model.safetensors", "tokenizer.json"] {
            let bytes = std::fs::read(source.join("encoders/tiny").join(file)).unwrap();
            members.push((format!("encoders/tiny/{file}"), bytes));
        }
        members
    }

    /// Writes `members` as plain files of an archive at `path`.
    fn crafted_files(path: &Path, members: &[(String, Vec<u8>)]) {
        let members: Vec<Member> = members
            .iter()
            .map(|(name, bytes)| (name.as_str(), tar::EntryType::Regular, bytes.as_slice()))
            .collect();
        crafted(path, &members);
    }

    #[test]
    fn members_the_manifest_does_not_list_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let members = tiny_members(dir.path(), |_| {});
        // The untouched members install: the refusals below are the extras'.
        let good = dir.path().join("good.tar");
        crafted_files(&good, &members);
        import_archive(&good, &dir.path().join("elsewhere")).unwrap();
        for extra in [
            "pack/extra.bin",
            "pack/notes/readme.txt",
            "encoders/tiny/vocab.txt",
            "encoders/other/model.safetensors",
        ] {
            let mut with_extra = members.clone();
            with_extra.push((extra.to_string(), vec![0u8; 1 << 20]));
            let archive = dir.path().join("extra.tar");
            crafted_files(&archive, &with_extra);
            let err = import_archive(&archive, &models).err().unwrap().to_string();
            assert!(
                err.contains(&format!("{extra:?}")) && err.contains("not listed in the manifest"),
                "{extra}: {err}"
            );
            assert_eq!(models_listing(&models), Vec::<String>::new(), "{extra}");
        }
    }

    #[test]
    fn an_encoder_hash_entry_outside_the_archive_is_refused_at_import() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, b"not the pack's").unwrap();
        let sha = crate::pack::manifest::sha256_file(&outside).unwrap();
        let entry = outside.to_string_lossy().into_owned();
        let members = tiny_members(dir.path(), |m| {
            m["encoder"]["sha256"][&entry] = serde_json::json!(sha);
        });
        let archive = dir.path().join("outside.tar");
        crafted_files(&archive, &members);
        let models = dir.path().join("models");
        let err = import_archive(&archive, &models).err().unwrap().to_string();
        assert!(err.contains(&format!("{entry:?}")), "{err}");
        assert_eq!(models_listing(&models), Vec::<String>::new());
    }

    #[test]
    fn names_from_an_archive_are_escaped_in_messages() {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().join("models");
        let mut members = tiny_members(dir.path(), |_| {});
        for name in [
            "other/\u{1b}[2Jevil",
            "pack/\u{1b}]0;title\u{7}",
            "pack/\u{9b}31m",
        ] {
            members.push((name.to_string(), b"x".to_vec()));
            let archive = dir.path().join("escape.tar");
            crafted_files(&archive, &members);
            members.pop();
            let err = import_archive(&archive, &models).err().unwrap().to_string();
            assert!(err.contains(&format!("{name:?}")), "{err:?}");
            assert!(!err.contains(['\u{1b}', '\u{7}', '\u{9b}']), "{err:?}");
        }
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
        let key = crate::pack::signing::generate_key(&dir.path().join("it.key")).unwrap();
        let sig = crate::pack::signing::sign_archive(&archive, &dir.path().join("it.key")).unwrap();
        let signature = std::fs::read_to_string(&sig).unwrap();
        let allowed = Some(std::slice::from_ref(&key));
        let models = dir.path().join("models");
        let upload = Path::new("upload.tar");

        let unsigned = import(&bytes[..], upload, None, &models, allowed).unwrap_err();
        assert!(unsigned.to_string().contains("missing"), "{unsigned}");
        assert_eq!(models_listing(&models), Vec::<String>::new());
        // The signature covers these bytes only.
        let mut changed = bytes.clone();
        changed.extend_from_slice(&[0u8; 512]);
        let err = import(&changed[..], upload, Some(&signature), &models, allowed).unwrap_err();
        assert!(err.to_string().contains("different archive"), "{err}");
        assert_eq!(models_listing(&models), Vec::<String>::new());

        let (pack, signer) =
            import(&bytes[..], upload, Some(&signature), &models, allowed).unwrap();
        assert_eq!(pack.manifest.name, "tiny-pack");
        assert_eq!(signer, Some(key));
        // Nothing of the upload is left behind.
        assert_eq!(models_listing(&models), ["encoders", "tiny-pack"]);
    }

    #[test]
    fn an_endless_source_is_refused_at_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let origin = Path::new("endless");
        let err = stage(std::io::repeat(7), origin, &dir.path().join("a"), 1 << 20)
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than 1 MB"), "{err}");
        let exactly = vec![7u8; 1 << 20];
        let (mut copy, digest) =
            stage(&exactly[..], origin, &dir.path().join("b"), 1 << 20).unwrap();
        assert_eq!(digest, <[u8; 32]>::from(Sha256::digest(&exactly)));
        let mut back = Vec::new();
        copy.seek(SeekFrom::Start(0)).unwrap();
        copy.read_to_end(&mut back).unwrap();
        assert!(back == exactly);
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
