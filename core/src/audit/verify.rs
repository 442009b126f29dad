//! Verification: walk the chain across segments and archives and name the first record that
//! is altered, missing, reordered or truncated, also against an externally kept checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Result;

use super::segment::{read_anchor, read_segment, segments};
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
struct Link<'a> {
    seq: u64,
    prev: &'a str,
    kind: &'a str,
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

/// Check one segment on its own, given the sequence number and hash its first record must
/// follow. Segments are independent once those are known, so [`verify`] checks them in
/// parallel and reports the first problem in chain order.
#[allow(clippy::too_many_arguments)]
fn check_segment(
    chain: super::ChainHash,
    path: &Path,
    first: u64,
    data: &[u8],
    mut prev: String,
    mut expect: u64,
    checkpoint: Option<&Checkpoint>,
    anchor: Option<&Checkpoint>,
) -> SegmentCheck {
    let broken = |line: u64, seq: u64, problem: String| {
        SegmentCheck::Broken(Verdict::Broken {
            segment: path.to_path_buf(),
            line,
            seq,
            problem,
        })
    };
    if first != expect {
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
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return broken(
                line_no,
                expect,
                "the file is truncated inside this record (torn tail)".into(),
            );
        };
        let line = &rest[..end];
        rest = &rest[end + 1..];
        let hash = line
            .get(..64)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit));
        let json = line.get(65..).filter(|_| line.get(64) == Some(&b' '));
        let (Some(hash), Some(json)) = (hash, json) else {
            return broken(
                line_no,
                expect,
                "record is not well-formed (altered)".into(),
            );
        };
        let Ok(link) = serde_json::from_slice::<Link<'_>>(json) else {
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
        let digits = chain.hex(prev.as_bytes(), json);
        // Hex digits are ASCII: always UTF-8.
        let computed = std::str::from_utf8(&digits).unwrap_or_default();
        if computed.as_bytes() != hash {
            return broken(
                line_no,
                expect,
                "content does not match its hash (altered)".into(),
            );
        }
        if let Some(cp) = checkpoint
            && cp.seq == link.seq
            && cp.hash != computed
        {
            return broken(
                line_no,
                expect,
                "differs from the kept checkpoint (rewritten)".into(),
            );
        }
        // Only a purge record needs its body: parse it in full then.
        if let Some(a) = anchor
            && link.kind == "purge"
            && let Ok(rec) = serde_json::from_slice::<Record>(json)
            && rec.body["through_seq"] == a.seq
            && rec.body["through_hash"] == a.hash.as_str()
        {
            backs_anchor = true;
        }
        prev.clear();
        prev.push_str(computed);
        expect += 1;
    }
    SegmentCheck::Ok {
        last_hash: prev,
        last_seq: expect - 1,
        lines: line_no,
        backs_anchor,
    }
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
    let link: Link<'_> = serde_json::from_slice(data.get(start + 65..complete)?).ok()?;
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
        .clamp(1, 2);
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
    // A window of segments at a time, one thread each: memory stays at `workers` segments
    // however long the trail is.
    for window in segs.chunks(workers) {
        let mut jobs = Vec::with_capacity(window.len());
        for (first, path) in window {
            let data = read_segment(path)?;
            let start = (prev.clone(), expect);
            // An empty segment passes the chain on unchanged; an unreadable last line is that
            // segment's own problem, found by its check (the next one then starts anywhere).
            if !data.is_empty() {
                (prev, expect) = last_link(&data).map_or((String::new(), 0), |(h, s)| (h, s + 1));
            }
            jobs.push((*first, path, start.0, start.1, data));
        }
        let checks: Vec<SegmentCheck> = std::thread::scope(|scope| {
            let handles: Vec<_> = jobs
                .iter()
                .map(|(first, path, start_prev, start_seq, data)| {
                    let anchor = anchor.as_ref();
                    scope.spawn(move || {
                        check_segment(
                            chain,
                            path,
                            *first,
                            data,
                            start_prev.clone(),
                            *start_seq,
                            checkpoint,
                            anchor,
                        )
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        SegmentCheck::Broken(Verdict::Broken {
                            segment: dir.to_path_buf(),
                            line: 0,
                            seq: 0,
                            problem: "verification thread failed".into(),
                        })
                    })
                })
                .collect()
        });
        for (check, (_, path)) in checks.into_iter().zip(window) {
            match check {
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
                    }
                    anchor_backed |= backs_anchor;
                    last_seg = path.clone();
                    last_line = lines;
                }
            }
        }
        done += window.len() as u64;
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
