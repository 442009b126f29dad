//! Indexes over one data version: key → row id, and value → roaring bitmap of row ids.
//!
//! Row ids are dense `u32`s within a version (file ordinal + offset, see [`crate::store`]), so
//! 1.4 billion persons fit and every scope is a `RoaringBitmap`. Both index files end with a
//! blake3 digest of their body: a damaged index is an error on load, never a wrong answer.

use std::collections::BTreeMap;
use std::path::Path;

use roaring::RoaringBitmap;

use crate::error::{Error, IoContext, Result};

const KEY_MAGIC: &[u8; 8] = b"GSKEYIX1";
const BITMAP_MAGIC: &[u8; 8] = b"GSBMPIX1";

/// Sorted key → row id map for one version, held in two flat buffers for cache-friendly
/// binary search (a 1M-key index is ~26 MB and loads with one read).
#[derive(Debug, Clone, Default)]
pub struct KeyIndex {
    offsets: Vec<u32>,
    bytes: Vec<u8>,
    rows: Vec<u32>,
    /// The leading 16 bytes of every [`DIRECTORY_STEP`]-th key as a number (see [`prefix`]):
    /// a lookup first searches this small array (5 MB at 10M keys, mostly in cache), then a
    /// few keys in the buffers — a binary search over the whole index misses the cache twice
    /// (offset, then bytes) at each of its ~23 steps. Built on load, never stored.
    directory: Vec<u128>,
}

/// Keys per directory entry.
const DIRECTORY_STEP: usize = 32;

/// A key's first 16 bytes, zero-padded, read big-endian: `a <= b` implies
/// `prefix(a) <= prefix(b)`, so a strict inequality between prefixes orders the keys too.
pub(crate) fn prefix(key: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    let n = key.len().min(16);
    b[..n].copy_from_slice(&key[..n]);
    u128::from_be_bytes(b)
}

/// Unsorted `(key, row id)` pairs on their way to a [`KeyIndex`], in flat buffers: the keys
/// of a 10M-row load are three allocations, not ten million.
#[derive(Debug, Clone)]
pub struct KeyEntries {
    offsets: Vec<u32>,
    bytes: Vec<u8>,
    rows: Vec<u32>,
    /// More key bytes were pushed than `u32` offsets address; [`KeyIndex::build`] refuses.
    too_long: bool,
}

impl Default for KeyEntries {
    fn default() -> Self {
        KeyEntries {
            offsets: vec![0],
            bytes: Vec::new(),
            rows: Vec::new(),
            too_long: false,
        }
    }
}

impl KeyEntries {
    /// Room for `keys` keys of about `key_len` bytes.
    pub fn with_capacity(keys: usize, key_len: usize) -> Self {
        let mut e = KeyEntries::default();
        e.offsets.reserve(keys);
        e.rows.reserve(keys);
        e.bytes.reserve(keys.saturating_mul(key_len));
        e
    }

    /// Add one key and its row id.
    pub fn push(&mut self, key: &str, row: u32) {
        if self.bytes.len() + key.len() > u32::MAX as usize {
            self.too_long = true;
            return;
        }
        self.bytes.extend_from_slice(key.as_bytes());
        self.offsets.push(self.bytes.len() as u32);
        self.rows.push(row);
    }

    /// Move every pair of `other` in.
    pub fn append(&mut self, other: KeyEntries) {
        self.too_long |= other.too_long;
        if self.bytes.len() + other.bytes.len() > u32::MAX as usize {
            self.too_long = true;
            return;
        }
        let base = self.bytes.len() as u32;
        self.offsets
            .extend(other.offsets[1..].iter().map(|o| o + base));
        self.bytes.extend_from_slice(&other.bytes);
        self.rows.extend_from_slice(&other.rows);
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The pairs in the order pushed.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        // Every key was pushed as a `&str`.
        (0..self.rows.len()).map(|i| (std::str::from_utf8(self.key(i)).unwrap_or(""), self.rows[i]))
    }

    fn key(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }
}

impl<'a> FromIterator<(&'a str, u32)> for KeyEntries {
    fn from_iter<I: IntoIterator<Item = (&'a str, u32)>>(iter: I) -> Self {
        let mut e = KeyEntries::default();
        for (k, r) in iter {
            e.push(k, r);
        }
        e
    }
}

/// Sort `order` — items tagged with a prefix of their sort key — into the items' order:
/// by prefix, then each run sharing a prefix by `full`. Exact when prefixes agree with the
/// order (`a < b` implies `prefix(a) <= prefix(b)`, as [`prefix`] does); cheap when they
/// rarely tie.
pub(crate) fn sort_by_prefix<P: Ord + Copy>(
    order: &mut [(P, u32)],
    full: impl Fn(u32, u32) -> std::cmp::Ordering,
) {
    order.sort_unstable();
    let mut i = 0;
    while i < order.len() {
        let mut j = i + 1;
        while j < order.len() && order[j].0 == order[i].0 {
            j += 1;
        }
        if j - i > 1 {
            order[i..j].sort_unstable_by(|a, b| full(a.1, b.1));
        }
        i = j;
    }
}

impl KeyIndex {
    /// Build from unsorted `(key, row id)` pairs. Keys must be unique.
    pub fn build(entries: KeyEntries) -> Result<KeyIndex> {
        if entries.too_long {
            return Err(Error::invalid(
                "the keys of one dataset version exceed 4 GiB, the key index's limit; split the \
                 dataset",
            ));
        }
        let n = entries.len();
        // Sorted by each key's first 16 bytes as a number, then by the whole key where those
        // tie: comparing numbers in one array keeps a 10M-key sort in cache, where comparing
        // strings would follow two pointers per comparison.
        let mut order: Vec<(u128, u32)> =
            (0..n).map(|i| (prefix(entries.key(i)), i as u32)).collect();
        sort_by_prefix(&mut order, |a, b| {
            entries.key(a as usize).cmp(entries.key(b as usize))
        });
        if let Some(w) = order.windows(2).find(|w| {
            w[0].0 == w[1].0 && entries.key(w[0].1 as usize) == entries.key(w[1].1 as usize)
        }) {
            return Err(Error::Corrupt(format!(
                "key index would hold a duplicate key (rows {} and {})",
                entries.rows[w[0].1 as usize], entries.rows[w[1].1 as usize]
            )));
        }
        let mut idx = KeyIndex {
            offsets: Vec::with_capacity(n + 1),
            bytes: Vec::with_capacity(entries.bytes.len()),
            rows: Vec::with_capacity(n),
            directory: Vec::new(),
        };
        idx.offsets.push(0);
        for (_, i) in order {
            idx.bytes.extend_from_slice(entries.key(i as usize));
            idx.offsets.push(idx.bytes.len() as u32);
            idx.rows.push(entries.rows[i as usize]);
        }
        idx.directory = idx.build_directory();
        Ok(idx)
    }

    fn build_directory(&self) -> Vec<u128> {
        (0..self.rows.len())
            .step_by(DIRECTORY_STEP)
            .map(|i| prefix(self.key(i)))
            .collect()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    fn key(&self, i: usize) -> &[u8] {
        &self.bytes[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// Row id of `key`, if present.
    pub fn get(&self, key: &str) -> Option<u32> {
        let k = key.as_bytes();
        // The directory narrows the search to the keys between the last entry below the
        // key's prefix and the first entry above it (exact: see `prefix`).
        let p = prefix(k);
        let below = self.directory.partition_point(|d| *d < p);
        let above = self.directory.partition_point(|d| *d <= p);
        let mut lo = below.saturating_sub(1) * DIRECTORY_STEP;
        let mut hi = (above * DIRECTORY_STEP).min(self.rows.len());
        while lo < hi {
            let mid = (lo + hi) / 2;
            match self.key(mid).cmp(k) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(self.rows[mid]),
            }
        }
        None
    }

    /// All `(key, row id)` pairs in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, u32)> {
        (0..self.rows.len()).map(|i| {
            // Keys were &str when inserted and the file digest is checked on load.
            (std::str::from_utf8(self.key(i)).unwrap_or(""), self.rows[i])
        })
    }

    /// Serialise to `path` (written whole, then fsynced).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut body = Vec::with_capacity(
            16 + self.offsets.len() * 4 + self.bytes.len() + self.rows.len() * 4,
        );
        body.extend_from_slice(KEY_MAGIC);
        body.extend_from_slice(&(self.rows.len() as u64).to_le_bytes());
        for o in &self.offsets {
            body.extend_from_slice(&o.to_le_bytes());
        }
        for r in &self.rows {
            body.extend_from_slice(&r.to_le_bytes());
        }
        body.extend_from_slice(&self.bytes);
        write_with_digest(path, body)
    }

    /// Load from `path`, checking the digest and structure.
    pub fn read(path: &Path) -> Result<KeyIndex> {
        let body = read_with_digest(path, KEY_MAGIC)?;
        let corrupt = || Error::Corrupt(format!("key index {} is malformed", path.display()));
        let n = u64::from_le_bytes(body[8..16].try_into().map_err(|_| corrupt())?) as usize;
        let need = 16usize
            .checked_add(
                n.checked_add(1)
                    .ok_or_else(corrupt)?
                    .checked_mul(4)
                    .ok_or_else(corrupt)?,
            )
            .and_then(|x| x.checked_add(n * 4))
            .ok_or_else(corrupt)?;
        if body.len() < need {
            return Err(corrupt());
        }
        let words = |from: usize, count: usize| -> Vec<u32> {
            body[from..from + count * 4]
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        };
        let offsets = words(16, n + 1);
        let rows = words(16 + (n + 1) * 4, n);
        let bytes = body[need..].to_vec();
        if offsets.windows(2).any(|w| w[0] > w[1])
            || offsets.last().copied().unwrap_or(0) as usize != bytes.len()
        {
            return Err(corrupt());
        }
        let mut idx = KeyIndex {
            offsets,
            bytes,
            rows,
            directory: Vec::new(),
        };
        idx.directory = idx.build_directory();
        Ok(idx)
    }
}

/// Value → bitmap of row ids for one field of one version.
///
/// For region fields every county code also contributes to its city (4-digit) and province
/// (2-digit) prefix, so a scope at any level is one lookup.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BitmapIndex {
    /// Value (or region prefix) → rows holding it.
    pub bitmaps: BTreeMap<String, RoaringBitmap>,
}

impl BitmapIndex {
    /// Rows with this value (empty when none).
    pub fn get(&self, value: &str) -> RoaringBitmap {
        self.bitmaps.get(value).cloned().unwrap_or_default()
    }

    /// Serialise to `path`.
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut body = Vec::new();
        body.extend_from_slice(BITMAP_MAGIC);
        body.extend_from_slice(&(self.bitmaps.len() as u64).to_le_bytes());
        for (v, bm) in &self.bitmaps {
            body.extend_from_slice(&(v.len() as u32).to_le_bytes());
            body.extend_from_slice(v.as_bytes());
            body.extend_from_slice(&(bm.serialized_size() as u64).to_le_bytes());
            bm.serialize_into(&mut body).at(path)?;
        }
        write_with_digest(path, body)
    }

    /// Load from `path`, checking the digest.
    pub fn read(path: &Path) -> Result<BitmapIndex> {
        let body = read_with_digest(path, BITMAP_MAGIC)?;
        let corrupt = || Error::Corrupt(format!("bitmap index {} is malformed", path.display()));
        let mut pos = 8usize;
        let mut take = |n: usize| -> Result<&[u8]> {
            let s = body
                .get(pos..pos.checked_add(n).ok_or_else(corrupt)?)
                .ok_or_else(corrupt)?;
            pos += n;
            Ok(s)
        };
        let count = u64::from_le_bytes(take(8)?.try_into().map_err(|_| corrupt())?);
        let mut bitmaps = BTreeMap::new();
        for _ in 0..count {
            let len = u32::from_le_bytes(take(4)?.try_into().map_err(|_| corrupt())?) as usize;
            let value = std::str::from_utf8(take(len)?)
                .map_err(|_| corrupt())?
                .to_string();
            let blen = u64::from_le_bytes(take(8)?.try_into().map_err(|_| corrupt())?) as usize;
            let bm = RoaringBitmap::deserialize_from(take(blen)?).map_err(|_| corrupt())?;
            bitmaps.insert(value, bm);
        }
        Ok(BitmapIndex { bitmaps })
    }
}

fn write_with_digest(path: &Path, mut body: Vec<u8>) -> Result<()> {
    let digest = blake3::hash(&body);
    body.extend_from_slice(digest.as_bytes());
    crate::durable::write_durable(path, &body)
}

fn read_with_digest(path: &Path, magic: &[u8; 8]) -> Result<Vec<u8>> {
    let mut data = std::fs::read(path).at(path)?;
    if data.len() < 16 + 32 || &data[..8] != magic {
        return Err(Error::Corrupt(format!(
            "{} is not a govshare index file",
            path.display()
        )));
    }
    let split = data.len() - 32;
    if blake3::hash(&data[..split]).as_bytes() != &data[split..] {
        return Err(Error::Corrupt(format!(
            "index {} fails its checksum",
            path.display()
        )));
    }
    data.truncate(split);
    Ok(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_index_round_trip_and_lookup() {
        let dir = tempfile::tempdir().expect("tmp");
        let idx =
            KeyIndex::build([("b", 2), ("a", 1), ("ccc", 7)].into_iter().collect()).expect("build");
        let p = dir.path().join("k.idx");
        idx.write(&p).expect("write");
        let back = KeyIndex::read(&p).expect("read");
        assert_eq!(back.get("a"), Some(1));
        assert_eq!(back.get("ccc"), Some(7));
        assert_eq!(back.get("cc"), None);
        assert_eq!(
            back.iter().map(|(k, _)| k.to_string()).collect::<Vec<_>>(),
            ["a", "b", "ccc"]
        );
        assert!(KeyIndex::build([("a", 1), ("a", 2)].into_iter().collect()).is_err());
    }

    /// The directory only narrows where a binary search looks: every key is found and no
    /// other string is — keys longer than the directory's 16 bytes sharing them, shorter
    /// ones, prefixes of others, NUL bytes — whether read back or just built.
    #[test]
    fn every_key_and_nothing_else_is_found_through_the_directory() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let mut keys = std::collections::BTreeSet::new();
        let alphabet = ['0', '1', '9', 'X', '\0', '省'];
        while keys.len() < 5000 {
            // Many keys share their first 16 characters, as citizen IDs of one county and
            // birth date do.
            let len = rng.random_range(0..24);
            let mut k: String = if rng.random_bool(0.5) {
                "4301021990010100".into()
            } else {
                String::new()
            };
            for _ in 0..len {
                k.push(alphabet[rng.random_range(0..alphabet.len())]);
            }
            keys.insert(k);
        }
        // Pushed out of order: the build sorts.
        let entries: KeyEntries = keys
            .iter()
            .enumerate()
            .rev()
            .map(|(i, k)| (k.as_str(), i as u32 * 3))
            .collect();
        let built = KeyIndex::build(entries).expect("build");
        let dir = tempfile::tempdir().expect("tmp");
        let p = dir.path().join("k.idx");
        built.write(&p).expect("write");
        let read = KeyIndex::read(&p).expect("read");
        for idx in [&built, &read] {
            for (i, k) in keys.iter().enumerate() {
                assert_eq!(idx.get(k), Some(i as u32 * 3), "{k:?}");
                for other in [
                    format!("{k}0"),
                    format!("{k}\0"),
                    k.chars().skip(1).collect(),
                ] {
                    assert_eq!(
                        idx.get(&other).is_some(),
                        keys.contains(&other),
                        "{other:?}"
                    );
                }
            }
            assert_eq!(idx.get("\u{10FFFF}"), None);
        }
        assert_eq!(
            KeyIndex::build(KeyEntries::default())
                .expect("empty")
                .get(""),
            None
        );
    }

    #[test]
    fn damaged_index_is_an_error() {
        let dir = tempfile::tempdir().expect("tmp");
        let mut bi = BitmapIndex::default();
        bi.bitmaps.insert("43".into(), (0..100).collect());
        let p = dir.path().join("f.bm");
        bi.write(&p).expect("write");
        assert_eq!(BitmapIndex::read(&p).expect("read"), bi);
        let mut bytes = std::fs::read(&p).expect("read");
        bytes[20] ^= 1;
        std::fs::write(&p, &bytes).expect("write");
        assert!(matches!(BitmapIndex::read(&p), Err(Error::Corrupt(_))));
        std::fs::write(&p, b"short").expect("write");
        assert!(matches!(BitmapIndex::read(&p), Err(Error::Corrupt(_))));
    }
}
