//! Verification: walk the chain across segments and archives and name the first record that
//! is altered, missing, reordered or truncated, also against an externally kept checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::segment::{read_anchor, read_segment_into, segments};
use super::{Checkpoint, Record, ZERO};

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// The whole chain is intact (and contains the checkpoint, when one was given).
    Intact {
        /// Records checked.
        records: u64,
        /// The head.
        head: Checkpoint,
    },
    /// The first problem, with where it is.
    Broken {
        /// Segment file.
        segment: PathBuf,
        /// Line number within it (1-based).
        line: u64,
        /// Sequence number expected there.
        seq: u64,
        /// What is wrong.
        problem: String,
    },
}

/// The fields of a record that chaining needs, borrowed from the line (hex hashes and kinds
/// need no unescaping; a record whose `prev` or `kind` would need it is not well-formed).
#[derive(Deserialize)]
struct LinkJson<'a> {
    seq: u64,
    prev: &'a str,
    kind: &'a str,
}

/// [`LinkJson`] as bytes, as the check compares them.
struct Link<'a> {
    seq: u64,
    prev: &'a [u8],
    kind: &'a [u8],
}

impl<'a> Link<'a> {
    /// The link of a record's JSON. Records are written with `seq`, `time`, `prev` and `kind`
    /// first, in that order, with nothing to unescape (the commit writes them so): read there
    /// by position, which is most of the cost of verifying saved. Anything else — a record
    /// laid out otherwise — is parsed in full. The hash still covers every byte.
    fn of(json: &'a [u8]) -> Option<Link<'a>> {
        Self::positional(json).or_else(|| {
            let l: LinkJson<'a> = serde_json::from_slice(json).ok()?;
            Some(Link {
                seq: l.seq,
                prev: l.prev.as_bytes(),
                kind: l.kind.as_bytes(),
            })
        })
    }

    fn positional(json: &'a [u8]) -> Option<Link<'a>> {
        let rest = json.strip_prefix(b"{\"seq\":")?;
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 19 || (digits > 1 && rest[0] == b'0') {
            return None;
        }
        let seq = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        let rest = rest[digits..].strip_prefix(b",\"time\":\"")?;
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        let rest = rest[end..].strip_prefix(b"\",\"prev\":\"")?;
        let prev = rest.get(..64)?;
        let rest = rest[64..].strip_prefix(b"\",\"kind\":\"")?;
        let end = memchr::memchr2(b'"', b'\\', rest)?;
        if rest[end] != b'"' {
            return None;
        }
        Some(Link {
            seq,
            prev,
            kind: &rest[..end],
        })
    }
}

/// What one segment's check found: its head and whether it holds the purge record backing
/// the anchor, or the first problem in it.
enum SegmentCheck {
    Ok {
        last_hash: String,
        last_seq: u64,
        lines: u64,
        backs_anchor: bool,
    },
    Broken(Verdict),
}

/// Check a run of whole lines on its own, given the sequence number and hash its first record
/// must follow (`first`: the number the segment's name says it starts at, for the run that
/// opens a segment). Every line carries the hash the next one chains to, so runs are
/// independent once those are known: [`verify`] cuts each segment into one run per thread and
/// reports the first problem in chain order. Line numbers in a `Broken` verdict count from
/// the run's start.
#[allow(clippy::too_many_arguments)]
fn check_lines(
    chain: super::ChainHash,
    path: &Path,
    first: Option<u64>,
    data: &[u8],
    prev: String,
    mut expect: u64,
    checkpoint: Option<&Checkpoint>,
    anchor: Option<&Checkpoint>,
) -> SegmentCheck {
    let mut prev = prev.into_bytes();
    let broken = |line: u64, seq: u64, problem: String| {
        SegmentCheck::Broken(Verdict::Broken {
            segment: path.to_path_buf(),
            line,
            seq,
            problem,
        })
    };
    if let Some(first) = first
        && first != expect
    {
        return broken(
            1,
            expect,
            format!(
                "segment starts at record {first}; records {expect}..{} are missing",
                first.saturating_sub(1)
            ),
        );
    }
    let mut backs_anchor = false;
    let mut line_no = 0u64;
    let mut rest = data;
    while !rest.is_empty() {
        line_no += 1;
        let Some(end) = memchr::memchr(b'\n', rest) else {
            return broken(
                line_no,
                expect,
                "the file is truncated inside this record (torn tail)".into(),
            );
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let hash = line.get(..64);
        let json = line.get(65..).filter(|_| line.get(64) == Some(&b' '));
        let (Some(hash), Some(json)) = (hash, json) else {
            return broken(
                line_no,
                expect,
                "record is not well-formed (altered)".into(),
            );
        };
        let Some(link) = Link::of(json) else {
            return broken(
                line_no,
                expect,
                "record is not well-formed (altered)".into(),
            );
        };
        if link.seq != expect {
            let what = if link.seq > expect {
                "missing (deleted)"
            } else {
                "out of order (reordered or duplicated)"
            };
            return broken(
                line_no,
                expect,
                format!(
                    "found record {} where {expect} belongs: record {expect} is {what}",
                    link.seq
                ),
            );
        }
        if link.prev != prev {
            return broken(
                line_no,
                expect,
                "does not chain to the previous record (reordered or altered)".into(),
            );
        }
        // Hashed and hex-encoded on the stack: no allocation per record.
        let computed = chain.hex(&prev, json);
        if computed != hash {
            let problem = if hash.iter().all(u8::is_ascii_hexdigit) {
                "content does not match its hash (altered)"
            } else {
                "record is not well-formed (altered)"
            };
            return broken(line_no, expect, problem.into());
        }
        if let Some(cp) = checkpoint
            && cp.seq == link.seq
            && cp.hash.as_bytes() != computed
        {
            return broken(
                line_no,
                expect,
                "differs from the kept checkpoint (rewritten)".into(),
            );
        }
        // Only a purge record needs its body: parse it in full then.
        if let Some(a) = anchor
            && link.kind == b"purge"
            && let Ok(rec) = serde_json::from_slice::<Record>(json)
            && rec.body["through_seq"] == a.seq
            && rec.body["through_hash"] == a.hash.as_str()
        {
            backs_anchor = true;
        }
        prev.clear();
        prev.extend_from_slice(&computed);
        expect += 1;
    }
    SegmentCheck::Ok {
        // Hex digits (or the start's own hash when no line followed it): UTF-8.
        last_hash: String::from_utf8_lossy(&prev).into_owned(),
        last_seq: expect.wrapping_sub(1),
        lines: line_no,
        backs_anchor,
    }
}

/// Cut `data` into up to `parts` runs of whole lines of about equal size (none empty).
fn runs(data: &[u8], parts: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for k in 1..parts {
        let target = (data.len() * k / parts).max(start);
        let cut = match data.get(target..).and_then(|r| memchr::memchr(b'\n', r)) {
            Some(p) => target + p + 1,
            None => break,
        };
        if cut > start && cut < data.len() {
            out.push(start..cut);
            start = cut;
        }
    }
    out.push(start..data.len());
    out
}

/// The hash and sequence number on the last complete line of a segment (what the next
/// segment must follow); `None` when there is none or it does not parse, in which case that
/// segment's own check reports why.
fn last_link(data: &[u8]) -> Option<(String, u64)> {
    let complete = data.iter().rposition(|&b| b == b'\n')?;
    let start = data[..complete]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let hash = String::from_utf8_lossy(data.get(start..start + 64)?).into_owned();
    let link = Link::of(data.get(start + 65..complete)?)?;
    Some((hash, link.seq))
}

/// Walk the chain in `dir` and report the first altered, missing, reordered or truncated
/// record; with `checkpoint`, also that the chain reaches it with the same hash. Segments are
/// checked on up to two threads; the first problem in chain order is reported.
pub fn verify(dir: &Path, checkpoint: Option<&Checkpoint>) -> Result<Verdict> {
    verify_with_progress(dir, checkpoint, &mut |_, _| {})
}

/// [`verify`], calling `progress(segments checked, segments)` as it goes (a long trail takes
/// a while: the command line shows a bar).
pub fn verify_with_progress(
    dir: &Path,
    checkpoint: Option<&Checkpoint>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Verdict> {
    let anchor = read_anchor(dir)?;
    let chain = super::ChainHash::of_dir(dir)?;
    let segs = segments(dir)?;
    let total = segs.len() as u64;
    let mut done = 0u64;
    progress(0, total);
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    // Where the next segment must start: after the anchor (or the beginning), then after the
    // previous segment's last record as that segment claims it.
    let mut prev = anchor
        .as_ref()
        .map_or_else(|| ZERO.to_string(), |a| a.hash.clone());
    let mut expect = anchor.as_ref().map_or(1, |a| a.seq + 1);
    let mut records = anchor.as_ref().map_or(0, |a| a.seq);
    let mut head_hash = prev.clone();
    let mut anchor_backed = anchor.is_none();
    let mut last_seg = PathBuf::new();
    let mut last_line = 0;
    // One segment in memory at a time, in one buffer reused for all of them: memory stays at
    // one segment however long the trail is, and the pages are touched once.
    let mut data = Vec::new();
    for (first, path) in &segs {
        read_segment_into(path, &mut data)?;
        // Small segments are not worth a thread.
        let parts = if data.len() < 1 << 18 { 1 } else { workers };
        let pieces = runs(&data, parts);
        // Each run follows the last line before it, as that line claims; an unreadable line
        // there is the previous run's own problem, found by its check.
        let starts: Vec<(String, u64)> = pieces
            .iter()
            .enumerate()
            .map(|(k, r)| {
                if k == 0 {
                    (prev.clone(), expect)
                } else {
                    last_link(&data[..r.start]).map_or((String::new(), 0), |(h, s)| (h, s + 1))
                }
            })
            .collect();
        let check = |k: usize| {
            check_lines(
                chain,
                path,
                (k == 0).then_some(*first),
                &data[pieces[k].clone()],
                starts[k].0.clone(),
                starts[k].1,
                checkpoint,
                anchor.as_ref(),
            )
        };
        let checks: Vec<SegmentCheck> = if pieces.len() == 1 {
            vec![check(0)]
        } else {
            std::thread::scope(|scope| {
                let handles: Vec<_> = (1..pieces.len())
                    .map(|k| scope.spawn(move || check(k)))
                    .collect();
                let mut out = vec![check(0)];
                out.extend(handles.into_iter().map(|h| {
                    h.join().unwrap_or_else(|_| {
                        SegmentCheck::Broken(Verdict::Broken {
                            segment: path.clone(),
                            line: 0,
                            seq: 0,
                            problem: "verification thread failed".into(),
                        })
                    })
                }));
                out
            })
        };
        let mut lines_before = 0;
        for (check, piece) in checks.into_iter().zip(&pieces) {
            match check {
                SegmentCheck::Broken(Verdict::Broken {
                    segment,
                    line,
                    seq,
                    problem,
                }) => {
                    // Line numbers count from the run's start; make them the segment's.
                    let before = memchr::memchr_iter(b'\n', &data[..piece.start]).count() as u64;
                    return Ok(Verdict::Broken {
                        segment,
                        line: line + before,
                        seq,
                        problem,
                    });
                }
                SegmentCheck::Broken(v) => return Ok(v),
                SegmentCheck::Ok {
                    last_hash,
                    last_seq,
                    lines,
                    backs_anchor,
                } => {
                    if lines > 0 {
                        records = last_seq;
                        head_hash = last_hash;
                        (prev, expect) = (head_hash.clone(), last_seq + 1);
                    }
                    anchor_backed |= backs_anchor;
                    lines_before += lines;
                }
            }
        }
        last_seg = path.clone();
        last_line = lines_before;
        done += 1;
        progress(done, total);
    }
    if !anchor_backed {
        return Ok(Verdict::Broken {
            segment: dir.join("ANCHOR"),
            line: 1,
            seq: anchor.as_ref().map_or(1, |a| a.seq + 1),
            problem: "the trail starts after a purge anchor that no purge record backs \
                      (records were deleted outside the retention rules)"
                .into(),
        });
    }
    if let Some(cp) = checkpoint
        && cp.seq > records
    {
        return Ok(Verdict::Broken {
            segment: last_seg,
            line: last_line + 1,
            seq: records + 1,
            problem: format!(
                "the trail ends at record {records} but the kept checkpoint is at {} (truncated)",
                cp.seq
            ),
        });
    }
    Ok(Verdict::Intact {
        records,
        head: Checkpoint {
            seq: records,
            hash: head_hash,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::{Link, LinkJson};

    /// The positional read of a record's link agrees with the full parse on what the commit
    /// writes, and anything laid out otherwise is parsed in full rather than misread.
    #[test]
    fn a_link_read_by_position_equals_the_parsed_one() {
        let h = "ab".repeat(32);
        let canonical = format!(
            r#"{{"seq":42,"time":"2026-11-27T10:00:00.123Z","prev":"{h}","kind":"query","actor":"u","body":{{}}}}"#
        );
        let reordered = format!(
            r#"{{"time":"2026-11-27T10:00:00Z","seq":42,"kind":"query","prev":"{h}","actor":"u","body":{{}}}}"#
        );
        let escaped = format!(
            r#"{{"seq":42,"time":"2026\u002d11-27T10:00:00Z","prev":"{h}","kind":"query","body":{{}}}}"#
        );
        for json in [&canonical, &reordered, &escaped] {
            let full: LinkJson<'_> = serde_json::from_str(json).expect("parses");
            let link = Link::of(json.as_bytes()).expect("link");
            assert_eq!(link.seq, full.seq, "{json}");
            assert_eq!(link.prev, full.prev.as_bytes(), "{json}");
            assert_eq!(link.kind, full.kind.as_bytes(), "{json}");
        }
        assert!(Link::positional(canonical.as_bytes()).is_some());
        assert!(Link::positional(reordered.as_bytes()).is_none());
        assert!(Link::positional(escaped.as_bytes()).is_none());
        // A kind that needs unescaping is not the commit's writing either way.
        let kind = format!(r#"{{"seq":42,"time":"t","prev":"{h}","kind":"qu\u0065ry"}}"#);
        assert!(Link::of(kind.as_bytes()).is_none());
        // A leading zero or a number past u64 is not the commit's writing.
        for bad in [r#"{"seq":042,"#, r#"{"seq":99999999999999999999,"#] {
            assert!(Link::positional(bad.as_bytes()).is_none(), "{bad}");
        }
    }
}
