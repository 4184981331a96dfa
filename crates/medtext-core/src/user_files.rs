//! Files the user names: read with a ceiling, written only as new files.
//!
//! Reading: a file's size cannot be trusted before it is read. `/dev/zero`,
//! a FIFO or standard input report a length of 0, and a file may grow while
//! it is read, so every read of user input goes through a [`Limit`], which
//! stops one byte past its ceiling and refuses, instead of reading until the
//! memory or the disk is full.
//!
//! Writing: whatever is at the path the user gave, or beside it, is
//! someone's. A [`NewFile`] never replaces a file, and the only file it ever
//! removes is the partial one it created itself (with `create_new`, under a
//! random name), so an export that fails leaves everything as it was.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use crate::{paths, Error, Result};

/// The most MedText reads of one kind of input, and how the refusal names
/// the input and says what to do instead.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub bytes: u64,
    /// What the input is, as in "the most {what} may be".
    pub what: &'static str,
    /// What to do instead, shown after the refusal.
    pub advice: &'static str,
}

/// A passphrase or recovery key typed or piped on standard input: one line.
pub const SECRET_LINE: Limit = Limit {
    bytes: 1024,
    what: "a passphrase or recovery key",
    advice: "give it alone, on one line",
};

impl Limit {
    /// All of `reader`, refused once it passes the limit (`source` names it
    /// in the error: a path, or "standard input").
    pub fn read(&self, reader: impl Read, source: &Path) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        reader
            .take(self.bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|e| Error::io(source, e))?;
        self.check(bytes.len() as u64, source)?;
        Ok(bytes)
    }

    /// All of the file at `path`.
    pub fn read_file(&self, path: &Path) -> Result<Vec<u8>> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        self.read(file, path)
    }

    /// The first line of `reader` (without its line ending) as UTF-8 text,
    /// refused if it is longer than the limit.
    pub fn read_line(&self, reader: impl BufRead, source: &Path) -> Result<String> {
        let mut line = Vec::new();
        // Room for the line and a "\r\n" after it.
        reader
            .take(self.bytes.saturating_add(2))
            .read_until(b'\n', &mut line)
            .map_err(|e| Error::io(source, e))?;
        if line.last() == Some(&b'\n') {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
        }
        self.check(line.len() as u64, source)?;
        crate::text::validation::decode_utf8(line)
    }

    /// Copies all of `reader` into `to` (at `destination`), refusing, with
    /// `to` then partly written, once it passes the limit. Returns the bytes
    /// copied.
    pub fn copy(
        &self,
        reader: impl Read,
        source: &Path,
        to: &mut impl Write,
        destination: &Path,
    ) -> Result<u64> {
        let copied = copy_at_most(reader, source, to, destination, self.bytes, |_| {})?;
        self.check(copied, source)?;
        Ok(copied)
    }

    /// Refuses `bytes` over the limit, naming `source`.
    pub fn check(&self, bytes: u64, source: &Path) -> Result<()> {
        if bytes > self.bytes {
            return Err(Error::InputTooLarge {
                input: source.to_path_buf(),
                limit: size_for_message(self.bytes),
                what: self.what,
                advice: self.advice,
            });
        }
        Ok(())
    }
}

/// Copies `reader` into `to` until it ends or `limit` bytes and one more
/// have passed (the caller tells "too large" by the count), handing every
/// piece to `observe` too (a hash, say). Returns the bytes copied.
pub(crate) fn copy_at_most(
    reader: impl Read,
    source: &Path,
    to: &mut impl Write,
    destination: &Path,
    limit: u64,
    mut observe: impl FnMut(&[u8]),
) -> Result<u64> {
    let mut limited = reader.take(limit.saturating_add(1));
    let mut buffer = vec![0u8; 1 << 20];
    let mut copied = 0u64;
    loop {
        let n = match limited.read(&mut buffer) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Error::io(source, e)),
        };
        observe(&buffer[..n]);
        to.write_all(&buffer[..n])
            .map_err(|e| Error::io(destination, e))?;
        copied += n as u64;
    }
}

/// "16 GB", "256 MB" or "400,000 bytes" (binary units: a limit is a whole
/// number of them, or is given in bytes).
fn size_for_message(bytes: u64) -> String {
    const MB: u64 = 1 << 20;
    const GB: u64 = 1 << 30;
    match bytes {
        b if b >= GB && b % GB == 0 => format!("{} GB", b / GB),
        b if b >= MB && b % MB == 0 => format!("{} MB", b / MB),
        b => {
            let digits = b.to_string();
            let mut grouped = String::new();
            for (i, c) in digits.chars().enumerate() {
                if i > 0 && (digits.len() - i) % 3 == 0 {
                    grouped.push(',');
                }
                grouped.push(c);
            }
            format!("{grouped} bytes")
        }
    }
}

/// Refuses to write to `path` if anything is there (a file, a folder, a
/// link, even a dangling one).
pub fn refuse_existing(path: &Path) -> Result<()> {
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(Error::OutputExists {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// A file being written at a path the user chose (an export, a backup, an
/// archive). It is written under a name of its own beside the target,
/// owner-only (it may hold patient data), and appears at the target whole
/// with [`NewFile::place`], or not at all: dropped unplaced, it is removed.
pub struct NewFile {
    target: PathBuf,
    partial: PathBuf,
    file: std::fs::File,
    placed: bool,
}

impl NewFile {
    /// Refuses a `target` that exists, then creates the partial file beside
    /// it: `<name>.<random>.partial`, made with `create_new` so that it is
    /// this process's own.
    pub fn create(target: &Path) -> Result<Self> {
        refuse_existing(target)?;
        let name = target.file_name().ok_or_else(|| {
            Error::io(
                target,
                std::io::Error::other("this names a folder, not a file: give a file name"),
            )
        })?;
        // Another file may hold a random name already: draw again, a few
        // times (with 64 random bits, a second draw is already unheard of).
        let mut taken = None;
        for _ in 0..4 {
            let mut random = [0u8; 8];
            getrandom::fill(&mut random).map_err(|e| {
                Error::io(
                    target,
                    std::io::Error::other(format!("no randomness for a file name: {e}")),
                )
            })?;
            let mut partial_name = name.to_os_string();
            partial_name.push(format!(".{}.partial", hex::encode(random)));
            let partial = target.with_file_name(partial_name);
            match paths::create_new_private_file(&partial) {
                Ok(file) => {
                    return Ok(Self {
                        target: target.to_path_buf(),
                        partial,
                        file,
                        placed: false,
                    })
                }
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    taken = Some(Error::io(partial, source));
                }
                Err(e) => return Err(e),
            }
        }
        Err(taken.unwrap_or(Error::OutputExists {
            path: target.to_path_buf(),
        }))
    }

    /// The partial file, for writers that open a path themselves (SQLite,
    /// tar). It exists and is empty.
    pub fn path(&self) -> &Path {
        &self.partial
    }

    /// Writes all of `bytes` to the partial file.
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<()> {
        self.file
            .write_all(bytes)
            .map_err(|e| Error::io(&self.partial, e))
    }

    /// Makes the finished file durable and puts it at the target, unless
    /// something appeared there meanwhile. A hard link cannot replace a
    /// file; where the file system has no hard links (FAT), a rename does,
    /// after a last check.
    pub fn place(mut self) -> Result<()> {
        self.file
            .sync_all()
            .map_err(|e| Error::io(&self.partial, e))?;
        match std::fs::hard_link(&self.partial, &self.target) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::OutputExists {
                    path: self.target.clone(),
                })
            }
            Err(_) => {
                refuse_existing(&self.target)?;
                std::fs::rename(&self.partial, &self.target)
                    .map_err(|e| Error::io(&self.target, e))?;
            }
        }
        self.placed = true;
        // The target is in place; a second name left behind by a failure
        // here is the same finished file.
        let _ = std::fs::remove_file(&self.partial);
        Ok(())
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.placed {
            // Half an export is still patient data: none is left behind.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: Limit = Limit {
        bytes: 10,
        what: "a test input",
        advice: "make it shorter",
    };

    #[test]
    fn input_is_read_up_to_the_limit_and_no_further() {
        let source = Path::new("standard input");
        assert_eq!(TINY.read(&b"0123456789"[..], source).unwrap().len(), 10);
        // Endless: the read must stop on its own.
        let err = TINY
            .read(std::io::repeat(0), source)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "standard input is larger than 10 bytes, the most a test input may be: make it shorter"
        );
        let mut to = Vec::new();
        let err = TINY.copy(std::io::repeat(0), source, &mut to, Path::new("copy"));
        assert!(matches!(err, Err(Error::InputTooLarge { .. })));
        assert_eq!(to.len(), 11, "the copy stops one byte past the limit");
        assert_eq!(
            TINY.copy(&b"abc"[..], source, &mut Vec::new(), Path::new("copy"))
                .unwrap(),
            3
        );
    }

    #[test]
    fn a_line_is_read_without_its_ending_up_to_the_limit() {
        let source = Path::new("standard input");
        assert_eq!(
            TINY.read_line(&b"0123456789\r\nmore"[..], source).unwrap(),
            "0123456789"
        );
        assert_eq!(TINY.read_line(&b""[..], source).unwrap(), "");
        assert!(TINY.read_line(&b"0123456789a\n"[..], source).is_err());
        let endless = std::io::BufReader::new(std::io::repeat(0));
        assert!(matches!(
            TINY.read_line(endless, source),
            Err(Error::InputTooLarge { .. })
        ));
    }

    #[test]
    fn sizes_are_named_in_the_unit_the_limit_is_a_whole_number_of() {
        assert_eq!(size_for_message(16 << 30), "16 GB");
        assert_eq!(size_for_message(256 << 20), "256 MB");
        assert_eq!(size_for_message(400_000), "400,000 bytes");
        assert_eq!(size_for_message(1024), "1,024 bytes");
        assert_eq!(size_for_message(999), "999 bytes");
    }

    #[test]
    fn a_new_file_never_replaces_nor_removes_what_it_did_not_make() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("notes.csv");
        let beside = dir.path().join("notes.partial");
        std::fs::write(&beside, "someone's").unwrap();

        // Dropped before it is placed: nothing is left, nothing is touched.
        let mut unplaced = NewFile::create(&target).unwrap();
        unplaced.write_all(b"half").unwrap();
        let partial = unplaced.path().to_path_buf();
        assert!(partial.is_file());
        drop(unplaced);
        assert!(!partial.exists() && !target.exists());

        let mut new = NewFile::create(&target).unwrap();
        new.write_all(b"id,text\n").unwrap();
        new.place().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"id,text\n");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&target).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }

        // The target exists now: refused at once.
        assert!(matches!(
            NewFile::create(&target),
            Err(Error::OutputExists { .. })
        ));
        // Or when it appears while the file is written.
        let other = dir.path().join("other.csv");
        let mut late = NewFile::create(&other).unwrap();
        late.write_all(b"mine").unwrap();
        std::fs::write(&other, "theirs").unwrap();
        assert!(matches!(late.place(), Err(Error::OutputExists { .. })));
        assert_eq!(std::fs::read(&other).unwrap(), b"theirs");

        assert_eq!(std::fs::read(&beside).unwrap(), b"someone's");
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["notes.csv", "notes.partial", "other.csv"]);
    }
}
