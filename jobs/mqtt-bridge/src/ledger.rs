//! The bridge's ledger: the recent messages it sent to Kafka, kept in a file so that a restart
//! after a crash knows which of them Kafka has.
//!
//! A message is known by its fingerprint: a 64-bit FNV-1a hash of its MQTT topic and payload,
//! and the payload's length. The file is a ring of fixed slots, one per message: written
//! *sent* before the message goes to Kafka, rewritten *done* with its Kafka partition and
//! offset once Kafka acknowledged it, and only then is the message acknowledged to MQTT. The
//! writes go to the page cache (no fsync per message: a SIGKILL does not lose them; the file
//! is synced every second and at a clean stop, so a machine crash loses at most that second,
//! which can duplicate but never lose).
//!
//! After a crash the slots still *sent* are the uncertain ones: Kafka may have stored them
//! without the bridge hearing of it. The bridge reads the Kafka topic after the newest *done*
//! offset of each partition for records carrying its client id and these fingerprints
//! ([`crate::recover`]), and marks those it finds as done. Then every message the broker sends
//! again is told apart: a fingerprint the ledger knows is acknowledged without a second copy
//! in Kafka. The same test drops a device's own resend of a message (its QoS 1 retry after a
//! lost connection reaches the broker as a new message) while it is in the ring.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// Bytes of one slot: seq u64 | hash u64 | len u32 | partition i32 | offset i64 | state u8 | pad.
const SLOT: usize = 40;

/// Slots of the ring by default: one per possible MQTT packet id, the most the broker can have
/// unacknowledged.
pub const SLOTS: usize = 65_536;

/// Records read back from the end of a partition where the ledger has no offset of its own.
pub const TAIL_WITHOUT_MARK: i64 = 100_000;

/// A slot's state byte.
const EMPTY: u8 = 0;
const SENT: u8 = 1;
const DONE: u8 = 2;

/// A message's fingerprint: FNV-1a 64 of topic, a separator and payload; and the payload's
/// length.
pub type Fingerprint = (u64, u32);

/// The fingerprint of a message.
pub fn fingerprint(topic: &str, payload: &[u8]) -> Fingerprint {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in topic
        .as_bytes()
        .iter()
        .chain(std::iter::once(&0xff))
        .chain(payload)
    {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h, payload.len() as u32)
}

/// The text form of a fingerprint (the `mqtt_fp` Kafka header).
pub fn fingerprint_text(fp: &Fingerprint) -> String {
    format!("{:016x}{:08x}", fp.0, fp.1)
}

/// [`fingerprint_text`] read back.
pub fn parse_fingerprint(text: &str) -> Option<Fingerprint> {
    if text.len() != 24 {
        return None;
    }
    Some((
        u64::from_str_radix(&text[..16], 16).ok()?,
        u32::from_str_radix(&text[16..], 16).ok()?,
    ))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Slot {
    seq: u64,
    fp: Fingerprint,
    partition: i32,
    offset: i64,
    state: u8,
}

impl Slot {
    fn encode(&self) -> [u8; SLOT] {
        let mut b = [0u8; SLOT];
        b[0..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.fp.0.to_le_bytes());
        b[16..20].copy_from_slice(&self.fp.1.to_le_bytes());
        b[20..24].copy_from_slice(&self.partition.to_le_bytes());
        b[24..32].copy_from_slice(&self.offset.to_le_bytes());
        b[32] = self.state;
        b
    }

    fn decode(b: &[u8]) -> Slot {
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Slot {
            seq: u64_at(0),
            fp: (
                u64_at(8),
                u32::from_le_bytes(b[16..20].try_into().expect("4 bytes")),
            ),
            partition: i32::from_le_bytes(b[20..24].try_into().expect("4 bytes")),
            offset: u64_at(24) as i64,
            state: b[32],
        }
    }
}

/// Where a message stands in the ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry(u64);

/// The ledger of one bridge session (one client id).
pub struct Ledger {
    file: File,
    path: PathBuf,
    slots: Vec<Slot>,
    /// The sequence number of the next entry.
    next: u64,
    /// Fingerprints of the slots sent or done, with how many slots hold each.
    known: HashMap<Fingerprint, u32>,
}

impl Ledger {
    /// Opens (or creates) the ledger at `path` with `slots` slots; a file of another size is
    /// started afresh (with a warning: what it knew may go to Kafka again).
    pub fn open(path: &Path, slots: usize) -> io::Result<Ledger> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let size = (slots * SLOT) as u64;
        let empty = Slot {
            seq: 0,
            fp: (0, 0),
            partition: 0,
            offset: 0,
            state: EMPTY,
        };
        let mut ledger = Ledger {
            file,
            path: path.to_path_buf(),
            slots: vec![empty; slots],
            next: 1,
            known: HashMap::new(),
        };
        let len = ledger.file.metadata()?.len();
        if len != size {
            if len != 0 {
                tracing::warn!(
                    path = %path.display(),
                    "the MQTT bridge's ledger has {len} bytes, not {size}: starting it afresh"
                );
            }
            ledger.file.set_len(0)?;
            ledger.file.set_len(size)?;
            ledger.file.sync_all()?;
            return Ok(ledger);
        }
        let mut bytes = vec![0u8; slots * SLOT];
        ledger.file.read_exact_at(&mut bytes, 0)?;
        let mut newest = 0u64;
        for (i, b) in bytes.chunks_exact(SLOT).enumerate() {
            let s = Slot::decode(b);
            if s.seq == 0 || s.state == EMPTY {
                continue;
            }
            newest = newest.max(s.seq);
            *ledger.known.entry(s.fp).or_default() += 1;
            ledger.slots[i] = s;
        }
        ledger.next = newest + 1;
        Ok(ledger)
    }

    /// Where the ledger lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a message with this fingerprint is among the recent ones sent.
    pub fn contains(&self, fp: &Fingerprint) -> bool {
        self.known.contains_key(fp)
    }

    /// The messages sent whose Kafka acknowledgement never came (a crash in between).
    pub fn uncertain(&self) -> Vec<Fingerprint> {
        self.slots
            .iter()
            .filter(|s| s.state == SENT)
            .map(|s| s.fp)
            .collect()
    }

    /// Per Kafka partition, the newest offset acknowledged: an uncertain message, if Kafka has
    /// it, lies after it.
    pub fn newest_done(&self) -> BTreeMap<i32, i64> {
        let mut out = BTreeMap::new();
        for s in self.slots.iter().filter(|s| s.state == DONE) {
            let o = out.entry(s.partition).or_insert(s.offset);
            *o = (*o).max(s.offset);
        }
        out
    }

    /// Settles the uncertain messages after a crash: those in `found` (Kafka has them) are
    /// done, the others were never stored and are forgotten (they will be sent again).
    pub fn settle(&mut self, found: &HashMap<Fingerprint, (i32, i64)>) -> io::Result<()> {
        for i in 0..self.slots.len() {
            let s = self.slots[i];
            if s.state != SENT {
                continue;
            }
            match found.get(&s.fp) {
                Some(&(partition, offset)) => self.write(
                    i,
                    Slot {
                        partition,
                        offset,
                        state: DONE,
                        ..s
                    },
                )?,
                None => {
                    self.forget(&s.fp);
                    self.write(i, Slot { state: EMPTY, ..s })?;
                }
            }
        }
        self.sync()
    }

    /// Records that the message `fp` is about to be sent to Kafka.
    pub fn sent(&mut self, fp: Fingerprint) -> io::Result<Entry> {
        let seq = self.next;
        self.next += 1;
        let i = self.index(seq);
        let old = self.slots[i];
        if old.state != EMPTY {
            self.forget(&old.fp);
        }
        *self.known.entry(fp).or_default() += 1;
        self.write(
            i,
            Slot {
                seq,
                fp,
                partition: -1,
                offset: -1,
                state: SENT,
            },
        )?;
        Ok(Entry(seq))
    }

    /// Records that Kafka acknowledged `entry` at `partition` / `offset`.
    pub fn done(&mut self, entry: Entry, partition: i32, offset: i64) -> io::Result<()> {
        let i = self.index(entry.0);
        let s = self.slots[i];
        if s.seq != entry.0 {
            // Overwritten by newer messages already (a ring smaller than the window in use).
            return Ok(());
        }
        self.write(
            i,
            Slot {
                partition,
                offset,
                state: DONE,
                ..s
            },
        )
    }

    /// Flushes the file to disk.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn index(&self, seq: u64) -> usize {
        (seq % self.slots.len() as u64) as usize
    }

    fn forget(&mut self, fp: &Fingerprint) {
        if let Some(n) = self.known.get_mut(fp) {
            *n -= 1;
            if *n == 0 {
                self.known.remove(fp);
            }
        }
    }

    fn write(&mut self, i: usize, s: Slot) -> io::Result<()> {
        self.slots[i] = s;
        self.file.write_all_at(&s.encode(), (i * SLOT) as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path() -> PathBuf {
        std::env::temp_dir()
            .join(format!(
                "iotflow-ledger-{}-{}",
                std::process::id(),
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos()
            ))
            .join("c.forwarded")
    }

    fn fp(i: u32) -> Fingerprint {
        fingerprint("t/a", format!("{{\"n\":{i}}}").as_bytes())
    }

    #[test]
    fn a_reopened_ledger_knows_what_was_done_and_what_is_uncertain() {
        let path = path();
        {
            let mut l = Ledger::open(&path, 8).unwrap();
            for i in 0..5 {
                let e = l.sent(fp(i)).unwrap();
                if i < 3 {
                    l.done(e, (i % 2) as i32, 100 + i as i64).unwrap();
                }
            }
            assert!(l.contains(&fp(4)), "a message in flight is known");
            assert!(!l.contains(&fp(5)));
            // No sync: what a SIGKILL leaves behind.
        }
        let mut l = Ledger::open(&path, 8).unwrap();
        assert_eq!(l.uncertain(), vec![fp(3), fp(4)]);
        assert_eq!(l.newest_done(), BTreeMap::from([(0, 102), (1, 101)]));
        // Kafka has 3 and not 4: 3 is done, 4 is forgotten (to be sent again).
        l.settle(&HashMap::from([(fp(3), (1, 103))])).unwrap();
        assert!(l.contains(&fp(3)));
        assert!(!l.contains(&fp(4)));
        assert!(l.uncertain().is_empty());
        // The ring of 8 wraps: the oldest slots go.
        for i in 10..17 {
            let e = l.sent(fp(i)).unwrap();
            l.done(e, 0, i as i64).unwrap();
        }
        let l = Ledger::open(&path, 8).unwrap();
        for i in 0..4 {
            assert!(!l.contains(&fp(i)), "{i} was overwritten");
        }
        for i in 10..17 {
            assert!(l.contains(&fp(i)), "{i}");
        }
        // A ledger of another size starts afresh.
        let l = Ledger::open(&path, 16).unwrap();
        assert!(!l.contains(&fp(16)));
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn fingerprints_tell_topic_and_payload_apart_and_read_back() {
        assert_ne!(fingerprint("a", b"bc"), fingerprint("ab", b"c"));
        assert_ne!(fingerprint("a", b"x"), fingerprint("a", b"y"));
        assert_eq!(fingerprint("a", b"x"), fingerprint("a", b"x"));
        let f = fingerprint("a", b"xyz");
        assert_eq!(parse_fingerprint(&fingerprint_text(&f)), Some(f));
        assert_eq!(parse_fingerprint("zz"), None);
    }
}
