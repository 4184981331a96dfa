//! Anchors of the audit chain outside the database.
//!
//! The chain in [`crate::history::audit`] shows an edited, removed or reordered entry
//! only to someone who cannot recompute its hashes. The workstation's own
//! user can: the database key is in their keychain. Edited entries with
//! recomputed hashes would verify, and a cut tail (the newest entries gone,
//! with the records they audit) leaves a shorter chain that verifies too. So
//! does damage: a write-ahead log that is truncated, removed or has a bad
//! last frame after a crash silently drops transactions that were reported
//! committed.
//!
//! An *anchor* is the chain's head after a commit: the history's random id,
//! the newest entry's sequence number and its hash. It holds no text, no
//! record id and no label. Two copies are kept:
//!
//! - **the anchor file** beside the database (`history.db.anchor`), written
//!   after every audited commit and compared with the chain at every open:
//!   a history whose chain no longer reaches the anchored entry, or holds a
//!   different entry there, is refused instead of opened quietly. This
//!   catches accidents (a damaged log, a file put back from an older copy).
//!   The user can rewrite this file, so it does not stand against them.
//! - **the system log**: every anchor is also sent to syslog (the systemd
//!   journal on Linux), tagged `medtext`, from where IT collects it and
//!   where the user cannot rewrite what was already sent.
//!   `medtext audit verify --against-journal` or `--against FILE` (a log IT
//!   collected) checks the chain against every anchor of this history.
//!
//! Because every entry's hash covers the one before it, an anchor of entry
//! `n` vouches for entries `1..=n`: rewriting any of them changes entry
//! `n`'s hash, and cutting the chain below `n` removes the anchored entry.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::history::audit::Entry;
use crate::{Error, Result};

/// What every anchor line starts with, wherever it is logged.
pub const ANCHOR_TAG: &str = "medtext-audit-anchor";

/// The syslog tag (`SYSLOG_IDENTIFIER` in the journal) of anchor lines.
pub const SYSLOG_TAG: &str = "medtext";

/// Names another syslog socket, in debug builds only: tests collect what
/// is sent. A released MedText always writes to the system's `/dev/log`.
pub const SYSLOG_SOCKET_ENV: &str = "MEDTEXT_SYSLOG_SOCKET";

/// Longest anchor file read: a line is about 150 bytes.
const MAX_FILE_BYTES: u64 = 4096;

/// The head of one history's audit chain at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    /// The history's random id (a setting inside it): anchors of other
    /// histories on the same machine, or of a history a restore replaced,
    /// do not apply.
    pub history: String,
    pub seq: i64,
    pub hash: String,
}

impl Anchor {
    /// The line logged and kept in the anchor file.
    pub fn to_line(&self) -> String {
        format!(
            "{ANCHOR_TAG} v1 history={} seq={} hash={}",
            self.history, self.seq, self.hash
        )
    }

    /// The anchor in a log line (syslog, `journalctl`, the anchor file):
    /// whatever precedes [`ANCHOR_TAG`] (a time, a host, a tag) is skipped.
    /// `None` for a line that holds none or a malformed one.
    pub fn find_in(line: &str) -> Option<Self> {
        let rest = &line[line.find(ANCHOR_TAG)? + ANCHOR_TAG.len()..];
        let mut fields = rest.split_whitespace();
        if fields.next()? != "v1" {
            return None;
        }
        let mut value = |name: &str| fields.next()?.strip_prefix(name).map(str::to_string);
        let history = value("history=")?;
        let seq = value("seq=")?.parse().ok()?;
        let hash = value("hash=")?;
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        (hex(&history, 32) && hex(&hash, 64) && seq > 0).then_some(Self { history, seq, hash })
    }
}

/// A new random history id (128 bits, hex).
pub(crate) fn new_history_id() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| Error::Keychain {
        problem: format!("the system random source failed: {e}"),
    })?;
    Ok(hex::encode(bytes))
}

/// `history.db` → `history.db.anchor`.
pub fn file_for(db_path: &Path) -> PathBuf {
    let mut name = db_path.file_name().unwrap_or_default().to_os_string();
    name.push(".anchor");
    db_path.with_file_name(name)
}

/// The anchor kept beside the database at `db_path`, if there is one.
pub(crate) fn read_file(db_path: &Path) -> Result<Option<Anchor>> {
    let path = file_for(db_path);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(&path, e)),
    };
    let mut text = String::new();
    file.take(MAX_FILE_BYTES)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(&path, e))?;
    if text.trim().is_empty() {
        // Made, but not yet written (a process stopped in between).
        return Ok(None);
    }
    Anchor::find_in(&text)
        .map(Some)
        .ok_or_else(|| Error::Damaged {
            path: path.clone(),
            problem: "the audit anchor file does not hold an anchor".into(),
        })
}

/// Writes the chain's head, as `head` reads it, to the anchor file of
/// `db_path`, and returns it. The file is locked while `head` is read and
/// written, so of two processes committing at once the later head is the
/// one kept: the file never names a head older than one it named before
/// (short of a restore, which gives the history a new id). Written in place
/// with one small write and flushed to disk, so a crash leaves the old
/// anchor or the new one.
pub(crate) fn write_file(
    db_path: &Path,
    head: impl FnOnce() -> Result<Option<Anchor>>,
) -> Result<Option<Anchor>> {
    let path = file_for(db_path);
    let mut file = crate::paths::open_private_file(&path)?;
    file.lock().map_err(|e| Error::io(&path, e))?;
    let Some(anchor) = head()? else {
        return Ok(None);
    };
    let mut line = anchor.to_line();
    line.push('\n');
    let io = |e| Error::io(&path, e);
    file.seek(SeekFrom::Start(0)).map_err(io)?;
    file.write_all(line.as_bytes()).map_err(io)?;
    file.set_len(line.len() as u64).map_err(io)?;
    file.sync_data().map_err(io)?;
    Ok(Some(anchor))
}

/// Sends `anchor` to the system log. Best effort: the commit it anchors is
/// already on disk and cannot be undone, so a log that cannot be reached
/// is recorded (without anything of the text) and verification against the
/// log later names the entries it lacks.
pub(crate) fn send_to_system_log(anchor: &Anchor) {
    #[cfg(unix)]
    if let Err(e) = send_to(&syslog_socket(), anchor) {
        tracing::warn!(
            event = "audit_anchor_not_logged",
            seq = anchor.seq,
            error = e.kind().to_string()
        );
    }
    #[cfg(not(unix))]
    let _ = anchor;
}

/// The syslog socket: `/dev/log`, or in debug builds the one a test names.
#[cfg(unix)]
pub fn syslog_socket() -> PathBuf {
    if cfg!(debug_assertions) {
        if let Some(path) = std::env::var_os(SYSLOG_SOCKET_ENV).filter(|v| !v.is_empty()) {
            return PathBuf::from(path);
        }
    }
    PathBuf::from("/dev/log")
}

/// Sends one syslog datagram (RFC 3164 form, which journald and rsyslog
/// read) to the Unix socket at `socket`: facility authpriv (security
/// messages kept from other users), severity info.
#[cfg(unix)]
pub(crate) fn send_to(socket: &Path, anchor: &Anchor) -> std::io::Result<()> {
    const AUTHPRIV_INFO: u8 = (10 << 3) | 6;
    let message = format!(
        "<{AUTHPRIV_INFO}>{SYSLOG_TAG}[{}]: {}",
        std::process::id(),
        anchor.to_line()
    );
    let sender = std::os::unix::net::UnixDatagram::unbound()?;
    sender.send_to(message.as_bytes(), socket)?;
    Ok(())
}

/// What [`verify_against`] found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AnchorCheck {
    /// Anchors of this history found in the log.
    pub anchors: usize,
    /// The newest entry the log vouches for.
    pub anchored_up_to: Option<i64>,
    /// Empty when every anchor matches and the whole chain is anchored.
    pub problems: Vec<String>,
}

/// Checks the chain `entries` (oldest first) of history `history` against
/// `anchors` from a log (other histories' anchors are skipped). Finds an
/// entry rewritten, removed, inserted or reordered at or below an anchor
/// (its hash differs), a cut tail (an anchored entry is gone), and entries
/// newer than the newest anchor, which the log does not vouch for.
pub fn verify_against(entries: &[Entry], history: &str, anchors: &[Anchor]) -> AnchorCheck {
    let mut mine: Vec<&Anchor> = anchors.iter().filter(|a| a.history == history).collect();
    mine.sort_by_key(|a| a.seq);
    mine.dedup();
    let mut problems = Vec::new();
    let last = entries.last().map_or(0, |e| e.seq);
    let mut rewritten_from: Option<i64> = None;
    let mut cut_at: Option<i64> = None;
    for anchor in &mine {
        match entries.iter().find(|e| e.seq == anchor.seq) {
            Some(entry) if entry.hash == anchor.hash => {}
            Some(_) => {
                rewritten_from.get_or_insert(anchor.seq);
            }
            None if anchor.seq > last => {
                cut_at.get_or_insert(anchor.seq);
            }
            None => {
                rewritten_from.get_or_insert(anchor.seq);
            }
        }
    }
    if let Some(seq) = rewritten_from {
        problems.push(format!(
            "entry {seq} is not the one anchored in the log: the audit trail was rewritten at or before entry {seq} (entries edited, removed, inserted or reordered with their hashes recomputed)"
        ));
    }
    if let Some(seq) = cut_at {
        problems.push(format!(
            "the audit trail ends at entry {last}, but the log anchored entry {seq}: entries {} to {} were cut off",
            last + 1,
            mine.last().map_or(seq, |a| a.seq)
        ));
    }
    let anchored_up_to = mine.last().map(|a| a.seq);
    match anchored_up_to {
        None if last > 0 => problems.push(
            "the log holds no anchor of this history: it was not collected from this machine, or the system log was unreachable"
                .into(),
        ),
        Some(top) if top < last => problems.push(format!(
            "entries {} to {last} are not anchored in the log: collect a newer log, or they were written while the system log was unreachable",
            top + 1
        )),
        _ => {}
    }
    AnchorCheck {
        anchors: mine.len(),
        anchored_up_to,
        problems,
    }
}

/// Most bytes of a log [`read_anchors`] reads: a year of a busy
/// workstation's anchors is far less, and `/dev/zero` must not fill memory.
pub const MAX_LOG_BYTES: u64 = 1 << 30;

/// Every anchor in a log, read line by line (a line that is not UTF-8 is
/// read as well as it can be: anchor lines are ASCII). Refuses a log over
/// [`MAX_LOG_BYTES`].
pub fn read_anchors(log: impl Read) -> std::io::Result<Vec<Anchor>> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(log.take(MAX_LOG_BYTES + 1));
    let (mut anchors, mut line, mut total) = (Vec::new(), Vec::new(), 0u64);
    loop {
        line.clear();
        // A long line is read in pieces: an anchor line is short.
        let n = reader
            .by_ref()
            .take(64 << 10)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(anchors);
        }
        total += n as u64;
        if total > MAX_LOG_BYTES {
            return Err(std::io::Error::other(format!(
                "the log is over {} MB: give the part that covers this history",
                MAX_LOG_BYTES >> 20
            )));
        }
        anchors.extend(Anchor::find_in(&String::from_utf8_lossy(&line)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::audit::tests::chain_of;

    const ID: &str = "00112233445566778899aabbccddeeff";

    fn anchors_of(entries: &[Entry]) -> Vec<Anchor> {
        entries
            .iter()
            .map(|e| Anchor {
                history: ID.into(),
                seq: e.seq,
                hash: e.hash.clone(),
            })
            .collect()
    }

    #[test]
    fn an_anchor_line_reads_back_from_any_log_format() {
        let anchor = Anchor {
            history: ID.into(),
            seq: 42,
            hash: "ab".repeat(32),
        };
        let line = anchor.to_line();
        assert_eq!(Anchor::find_in(&line), Some(anchor.clone()));
        let syslog = format!("Dec  7 21:10:22 ward-pc medtext[4242]: {line}");
        assert_eq!(Anchor::find_in(&syslog), Some(anchor));
        for bad in [
            "medtext-audit-anchor v2 history=00112233445566778899aabbccddeeff seq=1 hash=ab",
            "medtext-audit-anchor v1 history=xyz seq=1 hash=abab",
            "an unrelated line",
            "medtext-audit-anchor v1 history=00112233445566778899aabbccddeeff seq=-1",
        ] {
            assert_eq!(Anchor::find_in(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_whole_anchored_chain_passes() {
        let entries = chain_of(5);
        let check = verify_against(&entries, ID, &anchors_of(&entries));
        assert!(check.problems.is_empty(), "{:?}", check.problems);
        assert_eq!((check.anchors, check.anchored_up_to), (5, Some(5)));
        // One anchor of the head vouches for all of it.
        let head = &anchors_of(&entries)[4..];
        assert!(verify_against(&entries, ID, head).problems.is_empty());
    }

    #[test]
    fn an_entry_edited_with_its_hashes_recomputed_is_found() {
        let entries = chain_of(5);
        let anchors = anchors_of(&entries);
        let mut edited = entries.clone();
        edited[1].detail = Some("tampered".into());
        crate::history::audit::tests::rehash(&mut edited);
        // The chain alone cannot tell: every hash was recomputed.
        assert!(crate::history::audit::verify(&edited).problems.is_empty());
        let check = verify_against(&edited, ID, &anchors);
        assert_eq!(check.problems.len(), 1, "{:?}", check.problems);
        assert!(check.problems[0].starts_with("entry 2 is not the one anchored"));
        // Only the head was anchored: the edit still shows there.
        let check = verify_against(&edited, ID, &anchors[4..]);
        assert!(check.problems[0].starts_with("entry 5 is not the one anchored"));
    }

    #[test]
    fn removed_and_reordered_entries_with_hashes_recomputed_are_found() {
        let entries = chain_of(5);
        let anchors = anchors_of(&entries);
        let mut removed: Vec<Entry> = entries.iter().filter(|e| e.seq != 3).cloned().collect();
        crate::history::audit::tests::rehash(&mut removed);
        assert!(crate::history::audit::verify(&removed).problems.is_empty());
        let check = verify_against(&removed, ID, &anchors);
        assert!(
            check.problems[0].starts_with("entry 3 is not the one anchored"),
            "{:?}",
            check.problems
        );
        let mut reordered = entries.clone();
        reordered.swap(1, 2);
        crate::history::audit::tests::rehash(&mut reordered);
        assert!(crate::history::audit::verify(&reordered)
            .problems
            .is_empty());
        let check = verify_against(&reordered, ID, &anchors);
        assert!(check.problems[0].starts_with("entry 2 is not the one anchored"));
    }

    #[test]
    fn a_cut_tail_and_an_unanchored_tail_are_named() {
        let entries = chain_of(5);
        let anchors = anchors_of(&entries);
        let check = verify_against(&entries[..3], ID, &anchors);
        assert_eq!(
            check.problems,
            ["the audit trail ends at entry 3, but the log anchored entry 4: entries 4 to 5 were cut off"]
        );
        let check = verify_against(&entries, ID, &anchors[..3]);
        assert_eq!(
            check.problems,
            ["entries 4 to 5 are not anchored in the log: collect a newer log, or they were written while the system log was unreachable"]
        );
    }

    #[test]
    fn anchors_of_other_histories_do_not_count() {
        let entries = chain_of(2);
        let mut others = anchors_of(&entries);
        for a in &mut others {
            a.history = "ff".repeat(16);
            a.hash = "00".repeat(32);
        }
        let check = verify_against(&entries, ID, &others);
        assert_eq!(check.anchors, 0);
        assert!(check.problems[0].starts_with("the log holds no anchor"));
    }

    #[test]
    fn the_anchor_file_keeps_the_newest_head_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("history.db");
        assert_eq!(read_file(&db).unwrap(), None);
        let anchor = |seq| Anchor {
            history: ID.into(),
            seq,
            hash: format!("{seq:064}"),
        };
        write_file(&db, || Ok(Some(anchor(12)))).unwrap();
        write_file(&db, || Ok(Some(anchor(3)))).unwrap();
        // A shorter line does not leave the end of a longer one behind.
        assert_eq!(read_file(&db).unwrap(), Some(anchor(3)));
        std::fs::write(file_for(&db), "garbage").unwrap();
        assert!(matches!(read_file(&db), Err(Error::Damaged { .. })));
    }

    #[cfg(unix)]
    #[test]
    fn an_anchor_goes_to_the_syslog_socket_as_one_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("log");
        let collector = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
        let anchor = Anchor {
            history: ID.into(),
            seq: 7,
            hash: "cd".repeat(32),
        };
        send_to(&socket, &anchor).unwrap();
        let mut buf = [0u8; 512];
        let n = collector.recv(&mut buf).unwrap();
        let line = std::str::from_utf8(&buf[..n]).unwrap();
        assert!(line.starts_with("<86>medtext["), "{line}");
        let log = format!("unrelated\n{line}\n\u{0}\u{ff}binary\n");
        assert_eq!(read_anchors(log.as_bytes()).unwrap(), [anchor]);
    }
}
