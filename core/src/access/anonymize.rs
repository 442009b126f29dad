//! De-identification for open data (开放, 001 §18, 002 §25-26): a k-anonymous release of a
//! dataset's rows by full-domain generalisation of its quasi-identifiers.
//!
//! Each quasi-identifier has a hierarchy, from exact to withheld ([`Hierarchy`]): a GB/T 2260
//! region is generalised county → city → province → withheld, a date day → year → decade →
//! withheld, a code value → withheld. A *generalisation* picks one level per quasi-identifier
//! (a node of the lattice of level combinations — at most 4 × 4 × 2 = 32 nodes for the
//! person base database); a row whose generalised group holds fewer than `k` rows is
//! suppressed (left out, and counted).
//!
//! Every node is evaluated — the lattice is small — and the one that loses least is chosen
//! among those suppressing at most the allowed share of rows. Loss is Iyengar's loss metric:
//! a value generalised to a class of `m` of the `M` distinct values seen loses
//! `(m − 1) / (M − 1)`, a withheld value or a suppressed row loses 1 per quasi-identifier; the
//! node's loss is the mean over rows and quasi-identifiers (0 = released as is, 1 = nothing
//! left). Ties go to fewer suppressed rows, then to the less generalised node. Group counts
//! are computed once for the exact values and each coarser node's from a finer one's, so the
//! search costs a few passes over the distinct combinations, not over the rows.
//!
//! Released rows are ordered by group, and within a group by a keyed hash of their position:
//! the stored order (clustered by region, sorted by key — and a citizen ID's digits hold the
//! birth date) must not say more than the generalised values do.
//!
//! What k-anonymity does not give: it hides which of `k` rows is a person's, not what all `k`
//! share (a group whose rows all hold the same unconditional value discloses it for each —
//! homogeneity), and it holds only over the declared quasi-identifiers: an item released as
//! is is assumed not to identify in combination (the catalog's open type says so).

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringBuilder};
use arrow::datatypes::{DataType, Date32Type, Field, Schema, SchemaRef};
use chrono::Datelike;
use serde::Serialize;

use crate::catalog::{FieldDef, FieldType, Standard};
use crate::error::{Error, Result};

/// How a quasi-identifier is generalised, level by level, from exact to withheld.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Hierarchy {
    /// A GB/T 2260 region code: county → city (`xxxx00`) → province (`xx0000`) → withheld.
    Region,
    /// A date: day → year (`1987`) → decade (`1980-1989`) → withheld.
    Date,
    /// A code-table value: value → withheld.
    Code,
}

impl Hierarchy {
    /// The hierarchy of a field by its type and standard; `None` when it has none (a field
    /// without one cannot be generalised, so cannot be a quasi-identifier).
    pub fn of(f: &FieldDef) -> Option<Hierarchy> {
        match (&f.standard, f.data_type) {
            (Standard::RegionCode, FieldType::Utf8) => Some(Hierarchy::Region),
            (_, FieldType::Date32) => Some(Hierarchy::Date),
            (Standard::CodeTable(_), FieldType::Utf8) => Some(Hierarchy::Code),
            _ => None,
        }
    }

    /// The names of the levels, exact first, withheld last.
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Hierarchy::Region => &["county", "city", "province", "withheld"],
            Hierarchy::Date => &["day", "year", "decade", "withheld"],
            Hierarchy::Code => &["value", "withheld"],
        }
    }

    /// The label of `leaf`'s class at `level` (below the top, which is withheld).
    fn class(self, leaf: &Leaf, level: usize) -> String {
        match (self, leaf) {
            (Hierarchy::Date, Leaf::Day(d)) => {
                let date = chrono::NaiveDate::from_num_days_from_ce_opt(d + EPOCH_CE_DAYS);
                match (level, date) {
                    (0, Some(date)) => date.format("%Y-%m-%d").to_string(),
                    (1, Some(date)) => date.year().to_string(),
                    (_, Some(date)) => {
                        let from = date.year().div_euclid(10) * 10;
                        format!("{from}-{}", from + 9)
                    }
                    (_, None) => format!("day {d}"),
                }
            }
            (Hierarchy::Region, Leaf::Text(t)) => {
                // Validated codes are six digits; anything else is its own class at every level.
                let keep = match level {
                    0 => 6,
                    1 => 4,
                    _ => 2,
                };
                if t.len() == 6 && t.is_ascii() {
                    format!("{}{}", &t[..keep], "0".repeat(6 - keep))
                } else {
                    t.clone()
                }
            }
            (_, Leaf::Text(t)) => t.clone(),
            (_, Leaf::Day(d)) => d.to_string(),
        }
    }
}

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01, Arrow's day 0.
const EPOCH_CE_DAYS: i32 = 719_163;

/// At most this many quasi-identifiers: a group key packs one 32-bit id per identifier.
pub const MAX_QUASI_IDENTIFIERS: usize = 4;

/// A distinct exact value of a quasi-identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leaf {
    Text(String),
    Day(i32),
}

/// What a release must meet.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct KAnonymity {
    /// Every released group holds at least this many rows (≥ 2).
    pub k: u64,
    /// At most this share of the rows may be suppressed (0.0 ..= 0.5).
    pub max_suppression: f64,
}

/// One generalisation of the lattice, evaluated.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Generalisation {
    /// Per quasi-identifier, in the order given: the field and the level chosen.
    pub levels: Vec<(String, String)>,
    /// Mean loss per row and quasi-identifier, 0 to 1 (suppressed rows count 1).
    pub loss: f64,
    /// Rows left out because their group was smaller than `k`.
    pub suppressed: u64,
    /// Rows released.
    pub released: u64,
    /// Groups released.
    pub groups: u64,
    /// The smallest released group (the `k` actually reached; 0 when nothing is released).
    pub smallest_group: u64,
}

/// A k-anonymous release: the rows and how they were generalised.
#[derive(Debug, Clone)]
pub struct Anonymized {
    /// The released rows: the columns in the order asked, quasi-identifiers as text labels.
    pub batches: Vec<RecordBatch>,
    /// The schema of `batches`.
    pub schema: SchemaRef,
    /// The generalisation chosen.
    pub chosen: Generalisation,
    /// Every node of the lattice with its loss and suppression, in evaluation order.
    pub considered: Vec<Generalisation>,
}

/// One quasi-identifier: its exact values and, per level, the class of each.
struct Dim {
    name: String,
    hierarchy: Hierarchy,
    /// Distinct values; id `i + 1` is `leaves[i]`, id 0 is null.
    leaves: Vec<Leaf>,
    /// Ids by value: text looked up by `&str`, so a known value costs no allocation.
    texts: HashMap<String, u32>,
    days: HashMap<i32, u32>,
    /// Per level: id → the id representing its class (the class's first member; 0 for null
    /// below the top and for everything at the top). Classes nest, so applying a coarser
    /// level to a representative gives the coarser class of every member.
    class: Vec<Vec<u32>>,
    /// Per level: loss of a value of class `id` (indexed by representative id).
    loss: Vec<Vec<f64>>,
    /// Per level: label of class `id` (indexed by representative id; `None` = null).
    label: Vec<Vec<Option<String>>>,
}

impl Dim {
    fn new(name: &str, hierarchy: Hierarchy) -> Dim {
        Dim {
            name: name.to_string(),
            hierarchy,
            leaves: Vec::new(),
            texts: HashMap::new(),
            days: HashMap::new(),
            class: Vec::new(),
            loss: Vec::new(),
            label: Vec::new(),
        }
    }

    fn day_id(&mut self, day: i32) -> u32 {
        if let Some(id) = self.days.get(&day) {
            return *id;
        }
        self.leaves.push(Leaf::Day(day));
        let id = self.leaves.len() as u32;
        self.days.insert(day, id);
        id
    }

    fn text_id(&mut self, text: &str) -> u32 {
        if let Some(id) = self.texts.get(text) {
            return *id;
        }
        self.leaves.push(Leaf::Text(text.to_string()));
        let id = self.leaves.len() as u32;
        self.texts.insert(text.to_string(), id);
        id
    }

    /// The ids of one column of a batch, appended to `out` (one per row).
    fn encode(&mut self, col: &ArrayRef, out: &mut Vec<u32>) -> Result<()> {
        match self.hierarchy {
            Hierarchy::Date => {
                let a = col.as_primitive_opt::<Date32Type>().ok_or_else(|| {
                    Error::Internal(format!("quasi-identifier '{}' is not a date", self.name))
                })?;
                for i in 0..a.len() {
                    out.push(if a.is_null(i) {
                        0
                    } else {
                        self.day_id(a.value(i))
                    });
                }
            }
            Hierarchy::Region | Hierarchy::Code => {
                let a = col.as_string_opt::<i32>().ok_or_else(|| {
                    Error::Internal(format!("quasi-identifier '{}' is not text", self.name))
                })?;
                // Runs of equal values are common (rows are clustered by region).
                let mut last: Option<(usize, u32)> = None;
                for i in 0..a.len() {
                    if a.is_null(i) {
                        out.push(0);
                        continue;
                    }
                    let v = a.value(i);
                    if let Some((j, id)) = last
                        && a.value(j) == v
                    {
                        out.push(id);
                        continue;
                    }
                    let id = self.text_id(v);
                    last = Some((i, id));
                    out.push(id);
                }
            }
        }
        Ok(())
    }

    /// Build the per-level tables once every value is known.
    fn finish(&mut self) {
        let top = self.hierarchy.levels().len() - 1;
        let n = self.leaves.len();
        let spread = (n.max(2) - 1) as f64;
        for level in 0..=top {
            let mut class = vec![0u32; n + 1];
            let mut loss = vec![0f64; n + 1];
            let mut label = vec![None; n + 1];
            if level == top {
                loss[0] = 1.0;
            } else {
                let mut reps: HashMap<String, (u32, u64)> = HashMap::new();
                for (i, leaf) in self.leaves.iter().enumerate() {
                    let id = i as u32 + 1;
                    let e = reps
                        .entry(self.hierarchy.class(leaf, level))
                        .or_insert((id, 0));
                    e.1 += 1;
                    class[id as usize] = e.0;
                }
                for (text, (rep, members)) in reps {
                    loss[rep as usize] = if n > 1 {
                        (members - 1) as f64 / spread
                    } else {
                        0.0
                    };
                    label[rep as usize] = Some(text);
                }
            }
            self.class.push(class);
            self.loss.push(loss);
            self.label.push(label);
        }
    }
}

fn part(key: u128, d: usize) -> u32 {
    (key >> (32 * d)) as u32
}

fn with_part(key: u128, d: usize, id: u32) -> u128 {
    (key & !(u128::from(u32::MAX) << (32 * d))) | (u128::from(id) << (32 * d))
}

/// Release `batches` (one dataset's live rows) k-anonymously: `columns` in order, those
/// named in `quasi` generalised by their hierarchy, the rest as they are. `seed` keys the
/// order within groups.
pub fn anonymize(
    batches: &[RecordBatch],
    columns: &[String],
    quasi: &[(String, Hierarchy)],
    rule: KAnonymity,
    seed: u64,
) -> Result<Anonymized> {
    if rule.k < 2 {
        return Err(Error::invalid("k-anonymity needs k of at least 2"));
    }
    if !(0.0..=0.5).contains(&rule.max_suppression) {
        return Err(Error::invalid(
            "the share of rows that may be suppressed is between 0 and 0.5",
        ));
    }
    if quasi.len() > MAX_QUASI_IDENTIFIERS {
        return Err(Error::invalid(format!(
            "at most {MAX_QUASI_IDENTIFIERS} quasi-identifiers per release"
        )));
    }
    let schema = match batches.first() {
        Some(b) => b.schema(),
        None => Arc::new(Schema::empty()),
    };
    let position = |name: &str| {
        schema
            .index_of(name)
            .map_err(|_| Error::invalid(format!("the rows to release have no column '{name}'")))
    };
    let mut dims: Vec<Dim> = quasi.iter().map(|(n, h)| Dim::new(n, *h)).collect();
    let quasi_cols = quasi
        .iter()
        .map(|(n, _)| position(n))
        .collect::<Result<Vec<_>>>()?;
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();

    // Each row's exact group key: one id per quasi-identifier.
    let mut keys = vec![0u128; rows];
    let mut ids = Vec::new();
    for (d, (dim, &col)) in dims.iter_mut().zip(&quasi_cols).enumerate() {
        ids.clear();
        for b in batches {
            dim.encode(b.column(col), &mut ids)?;
        }
        for (k, id) in keys.iter_mut().zip(&ids) {
            *k |= u128::from(*id) << (32 * d);
        }
    }
    dims.iter_mut().for_each(Dim::finish);

    let mut exact = Groups::default();
    for k in &keys {
        *exact.entry(*k).or_default() += 1;
    }
    let (chosen_node, considered, chosen) = search(&dims, exact, rows as u64, rule)?;

    // The released rows, ordered by group, then by a keyed hash of their position.
    let generalise = |key: u128| {
        (0..dims.len()).fold(key, |k, d| {
            with_part(k, d, dims[d].class[chosen_node[d]][part(k, d) as usize])
        })
    };
    let mut groups = Groups::default();
    for k in &keys {
        *groups.entry(generalise(*k)).or_default() += 1;
    }
    let mut kept: Vec<(u128, u64, u32)> = keys
        .iter()
        .enumerate()
        .filter_map(|(i, k)| {
            let g = generalise(*k);
            (groups.get(&g).copied().unwrap_or(0) >= rule.k)
                .then(|| (g, mix(seed ^ i as u64), i as u32))
        })
        .collect();
    drop(keys);
    kept.sort_unstable();

    let out_schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| {
                let f = schema.field(position(c)?);
                Ok(if quasi.iter().any(|(n, _)| n == c) {
                    Field::new(c, DataType::Utf8, true)
                } else {
                    f.as_ref().clone()
                })
            })
            .collect::<Result<Vec<_>>>()?,
    ));
    // Global row → (batch, row in batch), for the gather.
    let mut starts = Vec::with_capacity(batches.len());
    let mut at = 0usize;
    for b in batches {
        starts.push(at);
        at += b.num_rows();
    }
    let locate = |row: u32| {
        let b = starts.partition_point(|s| *s <= row as usize) - 1;
        (b, row as usize - starts[b])
    };
    const CHUNK: usize = 65_536;
    let mut out = Vec::new();
    for chunk in kept.chunks(CHUNK) {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(columns.len());
        for c in columns {
            if let Some(d) = quasi.iter().position(|(n, _)| n == c) {
                let dim = &dims[d];
                let labels = &dim.label[chosen_node[d]];
                let mut b = StringBuilder::with_capacity(chunk.len(), chunk.len() * 8);
                for (g, _, _) in chunk {
                    b.append_option(labels[part(*g, d) as usize].as_deref());
                }
                cols.push(Arc::new(b.finish()));
            } else {
                let idx = position(c)?;
                let sources: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(idx).as_ref()).collect();
                let picks: Vec<(usize, usize)> = chunk.iter().map(|(_, _, r)| locate(*r)).collect();
                cols.push(arrow::compute::interleave(&sources, &picks)?);
            }
        }
        out.push(RecordBatch::try_new(out_schema.clone(), cols)?);
    }
    Ok(Anonymized {
        batches: out,
        schema: out_schema,
        chosen,
        considered,
    })
}

/// Group counts by packed key.
type Groups = HashMap<u128, u64, std::hash::BuildHasherDefault<KeyHasher>>;

/// A hasher for packed group keys: they are small ids, not attacker-chosen, so SipHash's
/// defence against flooding buys nothing, and it was a sixth of a 10M-row release. Each
/// 64-bit half goes through [`mix`].
#[derive(Default)]
struct KeyHasher(u64);

impl std::hash::Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.0 = mix(self.0 ^ u64::from_le_bytes(word));
        }
    }

    fn write_u128(&mut self, i: u128) {
        self.0 = mix(mix(self.0 ^ i as u64) ^ (i >> 64) as u64);
    }
}

/// SplitMix64's finaliser: a well-spread 64-bit hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

type Node = Vec<usize>;

/// Evaluate every node of the lattice: the chosen node, every evaluation, the chosen one.
fn search(
    dims: &[Dim],
    exact: Groups,
    rows: u64,
    rule: KAnonymity,
) -> Result<(Node, Vec<Generalisation>, Generalisation)> {
    let tops: Vec<usize> = dims.iter().map(|d| d.class.len() - 1).collect();
    // Every node, by height, so a node's finer neighbour is counted before it.
    let mut nodes: Vec<Node> = vec![Vec::new()];
    for top in &tops {
        nodes = nodes
            .into_iter()
            .flat_map(|n| {
                (0..=*top).map(move |l| {
                    let mut m = n.clone();
                    m.push(l);
                    m
                })
            })
            .collect();
    }
    nodes.sort_by_key(|n| (n.iter().sum::<usize>(), n.clone()));
    let allowed = (rule.max_suppression * rows as f64).floor() as u64;
    let mut counts: HashMap<Node, Vec<(u128, u64)>> = HashMap::new();
    counts.insert(nodes[0].clone(), exact.into_iter().collect());
    let mut considered = Vec::with_capacity(nodes.len());
    let mut best: Option<(usize, f64, u64)> = None;
    for (i, node) in nodes.iter().enumerate() {
        if !counts.contains_key(node) {
            // One level finer in one identifier: classes nest, so its groups merge into this
            // node's. Of the finer neighbours (all counted: they are one height below), the
            // one with the fewest groups is the cheapest to merge.
            let (d, from) = (0..node.len())
                .filter(|d| node[*d] > 0)
                .filter_map(|d| {
                    let mut finer = node.clone();
                    finer[d] -= 1;
                    counts.get(&finer).map(|c| (d, c))
                })
                .min_by_key(|(_, c)| c.len())
                .ok_or_else(|| Error::Internal("lattice node counted out of order".into()))?;
            let class = &dims[d].class[node[d]];
            let mut merged = Groups::with_capacity_and_hasher(from.len() / 2, Default::default());
            for (k, c) in from {
                *merged
                    .entry(with_part(*k, d, class[part(*k, d) as usize]))
                    .or_default() += c;
            }
            counts.insert(node.clone(), merged.into_iter().collect());
        }
        let groups = &counts[node];
        let (mut suppressed, mut released_groups, mut smallest, mut lost) = (0, 0, 0, 0.0);
        for (k, c) in groups {
            if *c < rule.k {
                suppressed += c;
                continue;
            }
            released_groups += 1;
            smallest = if smallest == 0 { *c } else { smallest.min(*c) };
            let per_row: f64 = (0..dims.len())
                .map(|d| dims[d].loss[node[d]][part(*k, d) as usize])
                .sum();
            lost += per_row * *c as f64;
        }
        let loss = if dims.is_empty() || rows == 0 {
            0.0
        } else {
            (lost + suppressed as f64 * dims.len() as f64) / (rows as f64 * dims.len() as f64)
        };
        considered.push(Generalisation {
            levels: dims
                .iter()
                .zip(node)
                .map(|(d, l)| (d.name.clone(), d.hierarchy.levels()[*l].to_string()))
                .collect(),
            loss,
            suppressed,
            released: rows - suppressed,
            groups: released_groups,
            smallest_group: smallest,
        });
        let better = match best {
            None => true,
            // Strictly less loss, or as little with fewer suppressed; ties otherwise keep the
            // earlier (less generalised) node.
            Some((_, l, s)) => loss < l - 1e-12 || (loss <= l + 1e-12 && suppressed < s),
        };
        if suppressed <= allowed && better {
            best = Some((i, loss, suppressed));
        }
        // Finer nodes are only needed by nodes one level coarser: drop what no later node
        // derives from (keeps at most two heights of counts).
        let height: usize = node.iter().sum();
        counts.retain(|n, _| n.iter().sum::<usize>() + 1 >= height);
    }
    let (i, _, _) = best.ok_or_else(|| {
        Error::invalid(format!(
            "no generalisation reaches k = {} with at most {allowed} of {rows} rows suppressed: allow more suppression or a smaller k",
            rule.k
        ))
    })?;
    let chosen = considered[i].clone();
    Ok((nodes[i].clone(), considered, chosen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Date32Array, StringArray};

    fn day(y: i32, m: u32, d: u32) -> i32 {
        chrono::NaiveDate::from_ymd_opt(y, m, d)
            .expect("date")
            .num_days_from_ce()
            - EPOCH_CE_DAYS
    }

    fn batch(rows: &[(&str, i32, &str, &str)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("region", DataType::Utf8, true),
            Field::new("born", DataType::Date32, true),
            Field::new("sex", DataType::Utf8, true),
            Field::new("note", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
                Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
            ],
        )
        .expect("batch")
    }

    fn quasi() -> Vec<(String, Hierarchy)> {
        vec![
            ("region".into(), Hierarchy::Region),
            ("born".into(), Hierarchy::Date),
            ("sex".into(), Hierarchy::Code),
        ]
    }

    fn columns() -> Vec<String> {
        ["region", "born", "sex", "note"].map(String::from).to_vec()
    }

    /// Two cities of two counties each, two persons per county, everyone born on a different
    /// day of 1990 and of one sex. With k = 4 and nothing suppressed, counties are too small
    /// and days too fine: the least loss is city and year, not province or decade — and its
    /// loss is the metric's (a city is 2 of 4 counties: 1/3; a year all 8 days: 1; one sex: 0).
    #[test]
    fn the_least_generalisation_that_reaches_k_is_chosen() {
        let counties = ["430102", "430103", "430202", "430203"];
        let rows: Vec<(&str, i32, &str, &str)> = (0..8)
            .map(|i| (counties[i / 2], day(1990, 1 + i as u32, 3), "1", "x"))
            .collect();
        let rule = KAnonymity {
            k: 4,
            max_suppression: 0.0,
        };
        let a = anonymize(&[batch(&rows)], &columns(), &quasi(), rule, 7).expect("release");
        let levels: Vec<&str> = a.chosen.levels.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(levels, ["city", "year", "value"]);
        assert_eq!((a.chosen.released, a.chosen.suppressed), (8, 0));
        assert_eq!((a.chosen.groups, a.chosen.smallest_group), (2, 4));
        assert!((a.chosen.loss - (1.0 / 3.0 + 1.0) / 3.0).abs() < 1e-9);
        let b = &a.batches[0];
        let region = b.column(0).as_string::<i32>();
        let born = b.column(1).as_string::<i32>();
        let mut cities: Vec<&str> = (0..8).map(|i| region.value(i)).collect();
        cities.dedup();
        assert_eq!(cities, ["430100", "430200"], "rows ordered by group");
        assert!((0..8).all(|i| born.value(i) == "1990"));
        // Every other feasible node loses more, or as much while generalising further (a
        // decade holds the same 8 days as the year 1990).
        let height = |g: &Generalisation| {
            g.levels
                .iter()
                .zip(quasi())
                .map(|((_, l), (_, h))| h.levels().iter().position(|x| x == l).expect("level"))
                .sum::<usize>()
        };
        for g in a.considered.iter().filter(|g| g.suppressed == 0) {
            if g.levels != a.chosen.levels {
                assert!(
                    g.loss > a.chosen.loss + 1e-9
                        || (g.loss >= a.chosen.loss - 1e-9 && height(g) > height(&a.chosen)),
                    "{g:?}"
                );
            }
        }
    }

    /// Allowed suppression is used where it loses less than generalising: one person alone in
    /// a city is left out (and counted) rather than withholding everyone's region.
    #[test]
    fn a_lone_row_is_suppressed_when_that_loses_least() {
        let mut rows: Vec<(&str, i32, &str, &str)> = (0..12)
            .map(|_| ("430102", day(1985, 5, 5), "2", "a"))
            .collect();
        rows.push(("440305", day(1985, 5, 5), "2", "b"));
        let rule = KAnonymity {
            k: 3,
            max_suppression: 0.1,
        };
        let a = anonymize(&[batch(&rows)], &columns(), &quasi(), rule, 7).expect("release");
        let levels: Vec<&str> = a.chosen.levels.iter().map(|(_, l)| l.as_str()).collect();
        assert_eq!(levels, ["county", "day", "value"]);
        assert_eq!((a.chosen.released, a.chosen.suppressed), (12, 1));
        let notes = a.batches[0].column(3).as_string::<i32>();
        assert!(
            (0..12).all(|i| notes.value(i) == "a"),
            "the lone row is gone"
        );
        // Without suppression, the regions must be withheld (two provinces, 12 and 1).
        let rule = KAnonymity {
            k: 3,
            max_suppression: 0.0,
        };
        let a = anonymize(&[batch(&rows)], &columns(), &quasi(), rule, 7).expect("release");
        assert_eq!(a.chosen.levels[0].1, "withheld");
        assert_eq!(a.chosen.released, 13);
        assert!(a.batches[0].column(0).is_null(0));
    }

    /// Fewer rows than k with nothing to suppress is a refusal, never a release of small
    /// groups; k below 2 and too much suppression are refused too.
    #[test]
    fn an_unreachable_or_meaningless_rule_is_refused() {
        let rows = [("430102", day(2000, 1, 1), "1", "x"); 3];
        let rule = |k, max_suppression| KAnonymity { k, max_suppression };
        for (k, s) in [(4, 0.0), (1, 0.0), (2, 0.6)] {
            let err = anonymize(&[batch(&rows)], &columns(), &quasi(), rule(k, s), 7)
                .expect_err("refused");
            assert!(matches!(err, Error::InvalidInput(_)), "{err}");
        }
    }

    /// The order of released rows within a group does not follow the stored order.
    #[test]
    fn rows_within_a_group_are_not_in_stored_order() {
        let notes: Vec<String> = (0..64).map(|i| format!("{i:02}")).collect();
        let rows: Vec<(&str, i32, &str, &str)> = notes
            .iter()
            .map(|n| ("430102", day(1970, 1, 1), "1", n.as_str()))
            .collect();
        let rule = KAnonymity {
            k: 2,
            max_suppression: 0.0,
        };
        let a = anonymize(&[batch(&rows)], &columns(), &quasi(), rule, 7).expect("release");
        let got: Vec<&str> = {
            let c = a.batches[0].column(3).as_string::<i32>();
            (0..64).map(|i| c.value(i)).collect()
        };
        let mut sorted = got.clone();
        sorted.sort();
        assert_eq!(sorted, notes, "every row, once");
        assert_ne!(got, sorted, "not in stored order");
    }
}
