//! Sentence vectors computed once per text and encoder, kept on disk, so
//! training the same data again (another head, another seed) skips the
//! encoder, which is nearly all of the time.
//!
//! Entries are keyed by the sha256 of the text; the file is named by the
//! encoder's identity (the hashes of its files, the window size, the
//! pooling), so vectors from another encoder are never mixed in. The text
//! itself is never stored. The vectors are derived from the text, though,
//! so the cache lives in the private data directory (owner-only) and
//! `medtext train --no-cache` skips it.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::{paths, Error, Result};

const MAGIC: &[u8; 8] = b"MTEMB001";

pub struct EmbeddingCache {
    path: PathBuf,
    width: usize,
    vectors: HashMap<[u8; 32], Vec<f32>>,
    added: usize,
}

impl EmbeddingCache {
    /// Opens (or starts) the cache in `dir` for the encoder identified by
    /// `encoder_identity`, whose vectors are `width` wide. A damaged cache file
    /// is ignored and rewritten: it only costs time.
    pub fn open(dir: &Path, encoder_identity: &str, width: usize) -> Result<Self> {
        paths::ensure_private_dir(dir)?;
        let name = hex::encode(&Sha256::digest(encoder_identity.as_bytes())[..12]);
        let path = dir.join(format!("embeddings-{name}.bin"));
        let vectors = read(&path, width).unwrap_or_default();
        Ok(Self {
            path,
            width,
            vectors,
            added: 0,
        })
    }

    pub fn key(text: &str) -> [u8; 32] {
        Sha256::digest(text.as_bytes()).into()
    }

    pub fn get(&self, text: &str) -> Option<&Vec<f32>> {
        self.vectors.get(&Self::key(text))
    }

    pub fn insert(&mut self, text: &str, vector: Vec<f32>) {
        if vector.len() == self.width && self.vectors.insert(Self::key(text), vector).is_none() {
            self.added += 1;
        }
    }

    pub fn len(&self) -> usize {
        self.vectors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vectors.is_empty()
    }

    /// Writes the cache if anything was added: to a temporary file first,
    /// then renamed over the old one, so a crash leaves the old cache whole.
    pub fn save(&mut self) -> Result<()> {
        if self.added == 0 {
            return Ok(());
        }
        let tmp = self.path.with_extension("tmp");
        let mut out = Vec::with_capacity(16 + self.vectors.len() * (32 + 4 * self.width));
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.width as u64).to_le_bytes());
        for (key, vector) in &self.vectors {
            out.extend_from_slice(key);
            for v in vector {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let mut file = crate::paths::create_private_file(&tmp)?;
        file.write_all(&out).map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| Error::io(&self.path, e))?;
        self.added = 0;
        Ok(())
    }
}

/// The entries of a cache file, or `None` if it is missing or damaged.
fn read(path: &Path, width: usize) -> Option<HashMap<[u8; 32], Vec<f32>>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .ok()?
        .read_to_end(&mut bytes)
        .ok()?;
    let header = bytes.get(..16)?;
    if &header[..8] != MAGIC || u64::from_le_bytes(header[8..16].try_into().ok()?) != width as u64 {
        return None;
    }
    let record = 32 + 4 * width;
    let body = &bytes[16..];
    if body.len() % record != 0 {
        return None;
    }
    Some(
        body.chunks_exact(record)
            .map(|r| {
                let mut key = [0u8; 32];
                key.copy_from_slice(&r[..32]);
                let vector = r[32..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                (key, vector)
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_come_back_after_reopening_and_never_the_text() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EmbeddingCache::open(dir.path(), "encoder-a", 3).unwrap();
        assert!(cache.is_empty());
        cache.insert("secret note one", vec![1.0, 2.0, 3.0]);
        cache.insert("wrong width", vec![1.0]);
        cache.save().unwrap();
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        let path = files[0].as_ref().unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"secret"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        let again = EmbeddingCache::open(dir.path(), "encoder-a", 3).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again.get("secret note one"), Some(&vec![1.0, 2.0, 3.0]));
        // Another encoder does not see these vectors.
        let other = EmbeddingCache::open(dir.path(), "encoder-b", 3).unwrap();
        assert!(other.get("secret note one").is_none());
    }

    #[test]
    fn a_damaged_cache_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = EmbeddingCache::open(dir.path(), "e", 2).unwrap();
        cache.insert("x", vec![1.0, 2.0]);
        cache.save().unwrap();
        let path = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(EmbeddingCache::open(dir.path(), "e", 2).unwrap().is_empty());
    }
}
