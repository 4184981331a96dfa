//! Signed pack archives: how IT decides which model packs a machine accepts.
//!
//! A signature is a small JSON file beside the archive (`<archive>.sig`)
//! holding the signer's Ed25519 public key, the archive's SHA-256 and an
//! Ed25519 signature over that hash. A detached file keeps the archive format
//! unchanged, and an archive can be re-signed by a hospital's own key
//! without being rebuilt.
//!
//! When the machine policy lists signers, only an archive with a valid
//! signature from one of them is installed; otherwise a signature that is
//! present must still be valid (a broken one is never ignored).

use std::io::Read;
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::user_files::Limit;
use crate::{paths, Error, Result};

/// Most bytes of a signing key file: `medtext pack keygen` writes 65.
const SECRET_KEY_FILE: Limit = Limit {
    bytes: 4096,
    what: "a pack signing key file",
    advice: "give the file `medtext pack keygen` wrote",
};

/// What a signature file says it is; also the start of the signed message,
/// so a signature made for something else never verifies here.
const FORMAT: &str = "medtext-pack-signature/1";
const KEY_PREFIX: &str = "ed25519:";

/// A signer's public key, written `ed25519:<64 hex digits>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignerKey(VerifyingKey);

impl SignerKey {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        let hex_part = text.trim().strip_prefix(KEY_PREFIX).ok_or_else(|| {
            format!("a signer key starts with '{KEY_PREFIX}' followed by 64 hex digits")
        })?;
        let bytes: [u8; 32] = hex::decode(hex_part)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| "a signer key has exactly 64 hex digits after 'ed25519:'".to_string())?;
        VerifyingKey::from_bytes(&bytes)
            .map(SignerKey)
            .map_err(|_| "this is not a valid Ed25519 public key".to_string())
    }

    pub fn to_text(&self) -> String {
        format!("{KEY_PREFIX}{}", hex::encode(self.0.as_bytes()))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    format: String,
    signer: String,
    archive_sha256: String,
    signature: String,
}

/// Where the signature of `archive` is looked for.
pub fn signature_path(archive: &Path) -> PathBuf {
    let mut name = archive.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// Makes a new signing key, writes its secret to `secret_out` (owner-only,
/// never over an existing file) and returns the public key to put in the
/// policy's `allowed_signers`.
pub fn generate_key(secret_out: &Path) -> Result<SignerKey> {
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::fill(secret.as_mut_slice())
        .map_err(|e| sig_error(secret_out, format!("no randomness from the OS: {e}")))?;
    let key = SigningKey::from_bytes(&secret);
    let mut file = paths::create_new_private_file(secret_out)?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(secret.as_slice())));
    std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| Error::io(secret_out, e))?;
    Ok(SignerKey(key.verifying_key()))
}

/// Signs `archive` with the secret key in `secret_file`; writes and returns
/// the signature file's path.
pub fn sign_archive(archive: &Path, secret_file: &Path) -> Result<PathBuf> {
    let text = Zeroizing::new(
        String::from_utf8(SECRET_KEY_FILE.read_file(secret_file)?).map_err(|_| {
            sig_error(
                secret_file,
                "not a signing key: give the file `medtext pack keygen` wrote",
            )
        })?,
    );
    let secret: Zeroizing<[u8; 32]> = Zeroizing::new(
        hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                sig_error(
                    secret_file,
                    "not a signing key: expected the 64 hex digits `medtext pack keygen` wrote",
                )
            })?,
    );
    let key = SigningKey::from_bytes(&secret);
    let digest = archive_sha256(archive)?;
    let signature = key.sign(&signed_message(&digest));
    let file = SignatureFile {
        format: FORMAT.into(),
        signer: SignerKey(key.verifying_key()).to_text(),
        archive_sha256: hex::encode(digest),
        signature: hex::encode(signature.to_bytes()),
    };
    let out = signature_path(archive);
    let json = serde_json::to_string_pretty(&file)
        .map_err(|e| sig_error(&out, format!("cannot write: {e}")))?;
    std::fs::write(&out, json + "\n").map_err(|e| Error::io(&out, e))?;
    Ok(out)
}

/// Largest signature file read: one is about 300 bytes.
const MAX_SIGNATURE_BYTES: u64 = 64 << 10;

/// The text of the signature file beside `archive` (`<archive>.sig`), or
/// `None` when there is none.
pub fn read_signature(archive: &Path) -> Result<Option<String>> {
    let sig_path = signature_path(archive);
    let file = match std::fs::File::open(&sig_path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&sig_path, e)),
    };
    let mut text = String::new();
    file.take(MAX_SIGNATURE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(&sig_path, e))?;
    if text.len() as u64 > MAX_SIGNATURE_BYTES {
        return Err(sig_error(
            &sig_path,
            "not a MedText signature file (too large)",
        ));
    }
    Ok(Some(text))
}

/// Checks `signature` (a signature file's text, `None` when the archive
/// came without one) against the SHA-256 of the archive's bytes. Taking the
/// digest, not a path, lets the caller hash exactly the bytes it then
/// installs. With `allowed` signers (the machine policy), a valid signature
/// by one of them is required; without, a signature is optional but must be
/// valid if present. `sig_name` names the signature in errors. Returns the
/// signer.
pub fn verify(
    digest: &[u8; 32],
    signature: Option<&str>,
    sig_name: &Path,
    allowed: Option<&[SignerKey]>,
) -> Result<Option<SignerKey>> {
    let Some(text) = signature else {
        return match allowed {
            None => Ok(None),
            Some(_) => Err(sig_error(
                sig_name,
                "missing: this machine's policy only accepts packs signed by a key IT allowed; ask for the signed archive and its .sig file",
            )),
        };
    };
    // serde's messages may quote what they failed on: Error shows problems
    // escaped (text::printable).
    let file: SignatureFile = serde_json::from_str(text)
        .map_err(|e| sig_error(sig_name, format!("not a MedText signature file ({e})")))?;
    if file.format != FORMAT {
        return Err(sig_error(
            sig_name,
            format!("unknown format {:?}", file.format),
        ));
    }
    let signer = SignerKey::parse(&file.signer).map_err(|p| sig_error(sig_name, p))?;
    if hex::encode(digest) != file.archive_sha256 {
        return Err(sig_error(
            sig_name,
            "it was made for a different archive: the archive changed after it was signed",
        ));
    }
    let signature = hex::decode(&file.signature)
        .ok()
        .and_then(|b| <[u8; 64]>::try_from(b).ok())
        .map(|b| Signature::from_bytes(&b))
        .ok_or_else(|| sig_error(sig_name, "the signature is not 128 hex digits"))?;
    signer
        .0
        .verify(&signed_message(digest), &signature)
        .map_err(|_| sig_error(sig_name, "the signature does not match the archive"))?;
    if let Some(allowed) = allowed {
        if !allowed.contains(&signer) {
            return Err(sig_error(
                sig_name,
                format!(
                    "signed by {}, which is not among the signers this machine's policy allows",
                    signer.to_text()
                ),
            ));
        }
    }
    Ok(Some(signer))
}

fn signed_message(digest: &[u8; 32]) -> Vec<u8> {
    let mut message = Vec::with_capacity(FORMAT.len() + 1 + digest.len());
    message.extend_from_slice(FORMAT.as_bytes());
    message.push(b'\n');
    message.extend_from_slice(digest);
    message
}

fn archive_sha256(archive: &Path) -> Result<[u8; 32]> {
    let mut file = std::fs::File::open(archive).map_err(|e| Error::io(archive, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(|e| Error::io(archive, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

fn sig_error(path: &Path, problem: impl Into<String>) -> Error {
    Error::Signature {
        path: path.to_path_buf(),
        problem: problem.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The check an import makes, on an archive file and the signature
    /// beside it.
    fn verify_archive(archive: &Path, allowed: Option<&[SignerKey]>) -> Result<Option<SignerKey>> {
        let signature = read_signature(archive)?;
        let digest = archive_sha256(archive)?;
        verify(
            &digest,
            signature.as_deref(),
            &signature_path(archive),
            allowed,
        )
    }

    fn signed_archive(dir: &Path) -> (PathBuf, SignerKey) {
        let archive = dir.join("pack.tar");
        std::fs::write(&archive, b"pretend archive bytes").unwrap();
        let key = generate_key(&dir.join("it.key")).unwrap();
        sign_archive(&archive, &dir.join("it.key")).unwrap();
        (archive, key)
    }

    #[test]
    fn a_signature_by_an_allowed_key_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, key) = signed_archive(dir.path());
        let parsed = SignerKey::parse(&key.to_text()).unwrap();
        assert_eq!(parsed, key);
        let signer = verify_archive(&archive, Some(std::slice::from_ref(&key))).unwrap();
        assert_eq!(signer, Some(key));
        // The secret never exists twice: keygen refuses to overwrite.
        assert!(generate_key(&dir.path().join("it.key")).is_err());
    }

    #[test]
    fn changed_archives_foreign_keys_and_missing_signatures_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (archive, key) = signed_archive(dir.path());
        let other = generate_key(&dir.path().join("other.key")).unwrap();

        let foreign = verify_archive(&archive, Some(std::slice::from_ref(&other)))
            .unwrap_err()
            .to_string();
        assert!(foreign.contains("not among the signers"), "{foreign}");

        std::fs::write(&archive, b"pretend archive bytes, changed").unwrap();
        let changed = verify_archive(&archive, None).unwrap_err().to_string();
        assert!(changed.contains("different archive"), "{changed}");

        // A signature file edited to match the new bytes fails the check.
        let sig = signature_path(&archive);
        let mut file: SignatureFile =
            serde_json::from_str(&std::fs::read_to_string(&sig).unwrap()).unwrap();
        file.archive_sha256 = hex::encode(archive_sha256(&archive).unwrap());
        std::fs::write(&sig, serde_json::to_string(&file).unwrap()).unwrap();
        let forged = verify_archive(&archive, None).unwrap_err().to_string();
        assert!(forged.contains("does not match"), "{forged}");

        std::fs::remove_file(&sig).unwrap();
        assert_eq!(verify_archive(&archive, None).unwrap(), None);
        let missing = verify_archive(&archive, Some(&[key]))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("missing"), "{missing}");
    }

    #[test]
    fn malformed_keys_are_named() {
        for bad in [
            "",
            "ed25519:",
            "ed25519:zz",
            "rsa:00",
            &format!("ed25519:{}", "0".repeat(63)),
        ] {
            assert!(SignerKey::parse(bad).is_err(), "{bad}");
        }
    }
}
