//! Verify (核验): does a claimed value match the stored one? The answer is match / no match per
//! field — never a value — for the subjects a verify-mode decision covers.
//!
//! A claim is compared with the stored value after both are put in one canonical form, chosen
//! by the field's type and standard:
//!
//! | field | canonical form |
//! |---|---|
//! | citizen ID (`citizen_id` standard) | 18 characters, upper-case `X`; a legacy 15-digit number is converted |
//! | codes, region codes, USCCs (`code:*`, `region_code`, `industry_code`, `uscc`) | trimmed, ASCII upper-case |
//! | phone numbers (`mobile_phone`, `phone`) | digits only, a leading `86` country code dropped |
//! | other text (names, addresses) | full-width ASCII as half-width, all white space (the ideographic space included) removed, the middle-dot variants of ethnic-minority names (`•`, `・`, `．`, ...) as `·`, ASCII upper-case |
//! | lists of text (`former_names`) | matches when the claim matches any element |
//! | dates | `1990-03-07`, `19900307`, `1990/3/7`, `1990.3.7` and `1990年3月7日` read as the same day |
//! | numbers, booleans, timestamps | read as the field's type (Arrow's cast) and compared as values |
//!
//! A claim that cannot be read as the field's type matches nothing. A null claim is not
//! checked (null answer). A stored null matches no claim.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, BooleanBuilder, ListArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use roaring::RoaringBitmap;

use crate::access::policy::{DatasetAccess, VerifyTerms};
use crate::access::secured::scope_rows;
use crate::catalog::{FieldDef, Standard};
use crate::error::{Error, Result};
use crate::store::Snapshot;

/// How a claim and a stored value are compared (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// GB 11643 citizen IDs.
    CitizenId,
    /// Codes and code-like identifiers.
    Code,
    /// Mobile phone numbers.
    Phone,
    /// Free text: names, addresses.
    Text,
    /// Dates, numbers, booleans, timestamps: compared as values of the field's type.
    Typed,
}

impl Rule {
    /// The rule for a catalog field.
    pub fn of(f: &FieldDef) -> Rule {
        match (f.data_type.arrow(), &f.standard) {
            (DataType::Utf8, Standard::CitizenId) => Rule::CitizenId,
            (DataType::Utf8, Standard::MobilePhone | Standard::Phone) => Rule::Phone,
            (
                DataType::Utf8,
                Standard::CodeTable(_)
                | Standard::RegionCode
                | Standard::IndustryCode
                | Standard::Uscc,
            ) => Rule::Code,
            (DataType::Utf8, _) | (DataType::List(_), _) => Rule::Text,
            _ => Rule::Typed,
        }
    }

    /// `s` in this rule's canonical form (text rules only; typed values are compared by
    /// [`Rule::Typed`] through the field's type).
    pub fn canonical(self, s: &str) -> String {
        match self {
            Rule::CitizenId => {
                let t = s.trim();
                let far = chrono::NaiveDate::MAX;
                crate::ident::validate_citizen_id(t, far)
                    .map(|c| c.id)
                    .unwrap_or_else(|_| t.to_ascii_uppercase())
            }
            Rule::Code => s.trim().to_ascii_uppercase(),
            Rule::Phone => {
                let digits: String = s
                    .chars()
                    .map(half_width)
                    .filter(char::is_ascii_digit)
                    .collect();
                match digits.strip_prefix("86") {
                    Some(rest) if rest.len() == 11 => rest.to_string(),
                    _ => digits,
                }
            }
            Rule::Text => s
                .chars()
                .map(half_width)
                .filter(|c| !c.is_whitespace())
                .map(|c| match c {
                    '•' | '・' | '‧' | '∙' | '⋅' | '･' | '.' | '．' => '·',
                    c => c.to_ascii_uppercase(),
                })
                .collect(),
            Rule::Typed => date_text(s.trim()).unwrap_or_else(|| s.trim().to_string()),
        }
    }
}

/// Full-width ASCII forms (U+FF01-FF5E) as ASCII, the ideographic space as a space.
fn half_width(c: char) -> char {
    match c {
        '\u{3000}' => ' ',
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        c => c,
    }
}

/// A date written `19900307`, `1990/3/7`, `1990.3.7` or `1990年3月7日` as `1990-03-07`; `None`
/// when `s` is none of these (it is then read as it is).
fn date_text(s: &str) -> Option<String> {
    let s: String = s.chars().map(half_width).collect();
    if s.len() == 8 && s.bytes().all(|b| b.is_ascii_digit()) {
        return Some(format!("{}-{}-{}", &s[..4], &s[4..6], &s[6..]));
    }
    let parts: Vec<&str> = s
        .trim_end_matches('日')
        .split(['/', '.', '-', '年', '月'])
        .collect();
    if let [y, m, d] = parts[..]
        && y.len() == 4
        && [y, m, d]
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        && m.len() <= 2
        && d.len() <= 2
    {
        return Some(format!("{y}-{m:0>2}-{d:0>2}"));
    }
    None
}

/// The answer to a batch of claims, and the subjects it concerned.
#[derive(Debug)]
pub struct Checked {
    /// One row per claim row, in order: `found` (only when the grant discloses absence), then
    /// one Boolean column per claimed field — true (match), false (no match), null (not
    /// claimed, or no such subject when absence is disclosed).
    pub answer: RecordBatch,
    /// Row ids of the subjects found (in scope): the subjects whose data was compared.
    pub subjects: RoaringBitmap,
}

/// Per-row digests of one field's canonical values in one data version: a check compares the
/// claim's digest with its subject's, with no Parquet page decoded. Index = row id; 0 = no
/// value (null, or a deleted row). Digests are keyed by a random key drawn per cache, so they
/// mean nothing outside this process and cannot be precomputed.
#[derive(Debug)]
pub struct Digests {
    version: u64,
    values: Vec<u64>,
}

/// The engine's digests, per (dataset, field), for the newest version asked for: built on the
/// first verify of a field in a version (one pass over the column, on two threads), dropped
/// when a newer version replaces it. Data, not decisions: the same for every principal, and a
/// check still goes through the gate, the scope and the quota.
#[derive(Debug)]
pub struct DigestCache {
    state: std::hash::RandomState,
    map: std::sync::Mutex<std::collections::HashMap<(String, String), Arc<Digests>>>,
}

impl Default for DigestCache {
    fn default() -> Self {
        DigestCache {
            state: std::hash::RandomState::new(),
            map: Default::default(),
        }
    }
}

impl DigestCache {
    /// The digest of a canonical value (never 0).
    fn digest(&self, canonical: &str) -> u64 {
        use std::hash::BuildHasher;
        self.state.hash_one(canonical).max(1)
    }

    /// The digests of `field` in `snapshot`'s version, built on first use; `None` for fields
    /// compared another way (lists of text).
    fn get(&self, snapshot: &Snapshot, field: &FieldDef) -> Result<Option<Arc<Digests>>> {
        if matches!(field.data_type.arrow(), DataType::List(_)) {
            return Ok(None);
        }
        let key = (snapshot.dataset().name.clone(), field.name.clone());
        let lock = || {
            self.map
                .lock()
                .map_err(|_| Error::internal("verify digest cache poisoned"))
        };
        if let Some(d) = lock()?.get(&key)
            && d.version == snapshot.version()
        {
            return Ok(Some(d.clone()));
        }
        let built = Arc::new(self.build(snapshot, field)?);
        let mut map = lock()?;
        // Another thread may have built a newer version meanwhile: keep the newest.
        match map.get(&key) {
            Some(d) if d.version > built.version => {}
            _ => {
                map.insert(key, built.clone());
            }
        }
        Ok(Some(built))
    }

    fn build(&self, snapshot: &Snapshot, field: &FieldDef) -> Result<Digests> {
        let total = snapshot.manifest().total_rows() as usize;
        let rule = Rule::of(field);
        let files = snapshot.manifest().files.len();
        let col = [field.name.as_str()];
        // Each file's digests, on two threads (files are independent).
        let per_file = |i: usize| -> Result<(u32, Vec<u64>)> {
            let f = &snapshot.manifest().files[i];
            let local = snapshot.file_rows(i, None)?;
            let mut out = vec![0u64; f.rows as usize];
            let mut ids = local.iter();
            if let Some(reader) = snapshot.read_local(i, &local, Some(&col))? {
                for b in reader {
                    let b = b?;
                    let values = b.column(0);
                    let text: Option<StringArray> = (rule == Rule::Typed)
                        .then(|| utf8(values, &field.name))
                        .transpose()?;
                    let strings = values.as_any().downcast_ref::<StringArray>();
                    for row in 0..b.num_rows() {
                        let Some(id) = ids.next() else {
                            return Err(Error::internal("more values than live rows"));
                        };
                        if values.is_null(row) {
                            continue;
                        }
                        let canon = match (&text, strings) {
                            (Some(t), _) => t.value(row).to_string(),
                            (None, Some(s)) => rule.canonical(s.value(row)),
                            (None, None) => continue,
                        };
                        out[id as usize] = self.digest(&canon);
                    }
                }
            }
            Ok((f.row_base, out))
        };
        let results: Vec<Result<(u32, Vec<u64>)>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2)
                .map(|w| {
                    scope.spawn(move || (w..files).step_by(2).map(per_file).collect::<Vec<_>>())
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|h| {
                    h.join().unwrap_or_else(|_| {
                        vec![Err(Error::internal("verify digest thread failed"))]
                    })
                })
                .collect()
        });
        let mut values = vec![0u64; total];
        for r in results {
            let (base, digests) = r?;
            let base = base as usize;
            values
                .get_mut(base..base + digests.len())
                .ok_or_else(|| Error::Corrupt("a data file's rows lie beyond the version".into()))?
                .copy_from_slice(&digests);
        }
        Ok(Digests {
            version: snapshot.version(),
            values,
        })
    }
}

/// The claims a verify-mode decision lets a session check on one dataset version.
#[derive(Debug)]
pub struct Verifier {
    snapshot: Arc<Snapshot>,
    fields: Vec<String>,
    rows: Arc<RoaringBitmap>,
    terms: VerifyTerms,
    digests: Arc<DigestCache>,
}

impl Verifier {
    /// The verifier for `access`, a verify-mode decision on `snapshot`'s dataset, comparing
    /// through `digests` (the engine's cache).
    pub fn new(
        snapshot: Arc<Snapshot>,
        access: &DatasetAccess,
        digests: Arc<DigestCache>,
    ) -> Result<Verifier> {
        let terms = access.verify_terms().ok_or_else(|| {
            Error::AccessDenied(format!(
                "the grant on '{}' is not a verify grant",
                snapshot.dataset().name
            ))
        })?;
        let rows = scope_rows(&snapshot, access.scope())?;
        Ok(Verifier {
            fields: access.fields().iter().map(|(f, _)| f.clone()).collect(),
            snapshot,
            rows,
            terms,
            digests,
        })
    }

    /// The grant's limits.
    pub fn terms(&self) -> VerifyTerms {
        self.terms
    }

    /// The data version checked against.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Check the shape of a claims batch — the key column first (named as the dataset's key),
    /// then one column per claimed field the grant covers — and return the claimed field names
    /// and the canonical keys. Nothing is read.
    pub fn prepare(&self, claims: &RecordBatch) -> Result<(Vec<String>, Vec<Option<String>>)> {
        let def = self.snapshot.dataset();
        let schema = claims.schema();
        let first = schema.fields().first().ok_or_else(|| {
            Error::invalid(format!(
                "a verify request needs the key column '{}' and at least one claimed field",
                def.key
            ))
        })?;
        if first.name() != &def.key {
            return Err(Error::invalid(format!(
                "the first column of a verify request must be the key '{}' of '{}', not '{}'",
                def.key,
                def.name,
                first.name()
            )));
        }
        let mut claimed: Vec<String> = Vec::new();
        for f in schema.fields().iter().skip(1) {
            let name = f.name();
            let field = def
                .field(name)
                .ok_or_else(|| Error::invalid(format!("'{}' has no field '{name}'", def.name)))?;
            if name == &def.key {
                return Err(Error::invalid(format!(
                    "the key '{name}' identifies the subject; it is not a claim"
                )));
            }
            if claimed.contains(name) {
                return Err(Error::invalid(format!("field '{name}' is claimed twice")));
            }
            if !self.fields.contains(name) {
                return Err(Error::AccessDenied(format!(
                    "{}.{name} is not covered by this verify grant; {}",
                    def.name,
                    crate::access::policy::how_to_obtain(field.share)
                )));
            }
            claimed.push(name.clone());
        }
        if claimed.is_empty() {
            return Err(Error::invalid(
                "a verify request claims at least one field besides the key",
            ));
        }
        let key_rule = def.field(&def.key).map_or(Rule::Code, Rule::of);
        let keys = utf8(claims.column(0), &def.key)?;
        let keys = keys
            .iter()
            .map(|k| k.map(|k| key_rule.canonical(k)))
            .collect();
        Ok((claimed, keys))
    }

    /// Answer `claims` (shaped as [`Verifier::prepare`] checks, with its results): each claim
    /// against its subject's digest of the field (built once per field and version), or by
    /// reading the stored values for fields without digests (lists).
    pub fn check(
        &self,
        claims: &RecordBatch,
        claimed: &[String],
        keys: &[Option<String>],
    ) -> Result<Checked> {
        self.answer(claims, claimed, keys, true)
    }

    /// [`Verifier::check`] reading the claimed fields' stored values for every field — the
    /// reference the digests must agree with (tests compare the two).
    pub fn check_by_reading(
        &self,
        claims: &RecordBatch,
        claimed: &[String],
        keys: &[Option<String>],
    ) -> Result<Checked> {
        self.answer(claims, claimed, keys, false)
    }

    fn answer(
        &self,
        claims: &RecordBatch,
        claimed: &[String],
        keys: &[Option<String>],
        use_digests: bool,
    ) -> Result<Checked> {
        let def = self.snapshot.dataset();
        let index = self.snapshot.key_index()?;
        // Row id of each claim's subject, when it exists in scope. A key lookup is a binary
        // search through a large index (cache misses, not arithmetic): a large batch splits
        // its lookups over two threads.
        let find = |keys: &[Option<String>]| -> Vec<Option<u32>> {
            keys.iter()
                .map(|k| {
                    k.as_deref()
                        .and_then(|k| index.get(k))
                        .filter(|id| self.rows.contains(*id))
                })
                .collect()
        };
        let ids: Vec<Option<u32>> = if keys.len() >= 4096 {
            let (a, b) = keys.split_at(keys.len() / 2);
            std::thread::scope(|s| {
                let second = s.spawn(|| find(b));
                let mut ids = find(a);
                ids.extend(
                    second
                        .join()
                        .map_err(|_| Error::internal("verify key lookup thread failed"))?,
                );
                Ok::<_, Error>(ids)
            })?
        } else {
            find(keys)
        };
        let subjects: RoaringBitmap = ids.iter().flatten().copied().collect();
        let mut digests = Vec::new();
        let mut read: Vec<&str> = Vec::new();
        for name in claimed {
            let f = def.require_field(name)?;
            let d = if use_digests {
                self.digests.get(&self.snapshot, f)?
            } else {
                None
            };
            if d.is_none() {
                read.push(name.as_str());
            }
            digests.push(d);
        }
        // The stored values of the fields compared by reading, for the subjects found only.
        let stored = if read.is_empty() {
            None
        } else {
            let schema = def.arrow_schema();
            let stored = arrow::compute::concat_batches(
                &Arc::new(schema.project(&indices(&schema, &read)?)?),
                &self.snapshot.read(Some(&subjects), Some(&read))?,
            )?;
            if stored.num_rows() as u64 != subjects.len() {
                return Err(Error::internal(
                    "verify read a different number of subjects than it found",
                ));
            }
            Some(stored)
        };
        let mut fields = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        if self.terms.disclose_absence {
            fields.push(Field::new("found", DataType::Boolean, false));
            columns.push(Arc::new(BooleanArray::from(
                ids.iter().map(|i| Some(i.is_some())).collect::<Vec<_>>(),
            )));
        }
        for (i, name) in claimed.iter().enumerate() {
            let f = def.require_field(name)?;
            let rule = Rule::of(f);
            let claim = utf8(claims.column(i + 1), name)?;
            let stored_type = f.data_type.arrow();
            let canon_claims = canonical_claims(rule, &claim, &stored_type)?;
            let values = match (&digests[i], &stored) {
                (Some(_), _) => None,
                (None, Some(stored)) => {
                    let at = read
                        .iter()
                        .position(|r| r == name)
                        .ok_or_else(|| Error::internal("a field to read was not read"))?;
                    Some(stored.column(at))
                }
                (None, None) => {
                    return Err(Error::internal("a field has neither digests nor values"));
                }
            };
            let mut out = BooleanBuilder::with_capacity(ids.len());
            for (row, id) in ids.iter().enumerate() {
                let Some(c) = canon_claims.get(row).cloned().flatten() else {
                    out.append_null();
                    continue;
                };
                let Some(id) = id else {
                    // Absent (or out of scope): "no match", unless the grant may say so.
                    if self.terms.disclose_absence {
                        out.append_null();
                    } else {
                        out.append_value(false);
                    }
                    continue;
                };
                let matched = match (&digests[i], values) {
                    (Some(d), _) => c.is_some_and(|c| {
                        d.values
                            .get(*id as usize)
                            .is_some_and(|v| *v == self.digests.digest(&c))
                    }),
                    // Output rows of the read are in row-id order: the subject's position is
                    // its rank among the subjects found.
                    (None, Some(values)) => {
                        let at = subjects.rank(*id) as usize - 1;
                        stored_matches(rule, values, at, &c)?
                    }
                    (None, None) => false,
                };
                out.append_value(matched);
            }
            fields.push(Field::new(name, DataType::Boolean, true));
            columns.push(Arc::new(out.finish()));
        }
        let answer = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?;
        Ok(Checked { answer, subjects })
    }
}

fn indices(schema: &Schema, cols: &[&str]) -> Result<Vec<usize>> {
    cols.iter()
        .map(|c| {
            schema
                .index_of(c)
                .map_err(|_| Error::NotFound(format!("field '{c}' in this data version")))
        })
        .collect()
}

/// A claims column as text (claims may come typed: a date column is read as its ISO text).
fn utf8(col: &ArrayRef, name: &str) -> Result<StringArray> {
    let text = cast(col, &DataType::Utf8).map_err(|_| {
        Error::invalid(format!(
            "claims of '{name}' must be text or a type that converts to text, not {}",
            col.data_type()
        ))
    })?;
    text.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| Error::internal("cast to Utf8 gave another type"))
}

/// Each claim in canonical form: for text rules the rule's text; for typed fields the claim
/// read as the stored type and written back as text (`None` when it does not read: it
/// matches nothing, which `Some("")`-free text cannot be confused with).
fn canonical_claims(
    rule: Rule,
    claims: &StringArray,
    stored: &DataType,
) -> Result<Vec<Option<Option<String>>>> {
    if rule != Rule::Typed {
        return Ok(claims
            .iter()
            .map(|c| c.map(|c| Some(rule.canonical(c))))
            .collect());
    }
    let texts: StringArray = claims
        .iter()
        .map(|c| c.map(|c| rule.canonical(c)))
        .collect();
    let typed = cast(&(Arc::new(texts) as ArrayRef), stored)?;
    let back = cast(&typed, &DataType::Utf8)?;
    let back = back
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::internal("cast to Utf8 gave another type"))?;
    Ok(claims
        .iter()
        .enumerate()
        .map(|(i, c)| c.map(|_| back.is_valid(i).then(|| back.value(i).to_string())))
        .collect())
}

/// Whether the stored value at `at` matches the canonical claim `claim` (`None`: a claim that
/// did not read as the field's type, which matches nothing).
fn stored_matches(
    rule: Rule,
    values: &ArrayRef,
    at: usize,
    claim: &Option<String>,
) -> Result<bool> {
    let Some(claim) = claim else {
        return Ok(false);
    };
    if values.is_null(at) {
        return Ok(false);
    }
    if let Some(list) = values.as_any().downcast_ref::<ListArray>() {
        let items = list.value(at);
        let items = utf8(&items, "list")?;
        return Ok(items.iter().flatten().any(|v| rule.canonical(v) == *claim));
    }
    if let Some(s) = values.as_any().downcast_ref::<StringArray>() {
        return Ok(rule.canonical(s.value(at)) == *claim);
    }
    let one = values.slice(at, 1);
    let text = utf8(&one, "value")?;
    Ok(text.value(0) == claim)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules_equate_what_people_write_differently_and_nothing_else() {
        let t = Rule::Text;
        assert_eq!(t.canonical(" 张 三 "), t.canonical("张三"));
        assert_eq!(t.canonical("张\u{3000}三"), t.canonical("张三"));
        assert_eq!(t.canonical("阿卜杜•热合曼"), t.canonical("阿卜杜·热合曼"));
        assert_eq!(t.canonical("阿卜杜・热合曼"), t.canonical("阿卜杜．热合曼"));
        assert_eq!(t.canonical("ＡＢＣ１２"), t.canonical("abc12"));
        assert_ne!(t.canonical("张三"), t.canonical("张山"));
        assert_ne!(t.canonical("张三"), t.canonical("张三丰"));
        let c = Rule::Code;
        assert_eq!(c.canonical(" 430623 "), "430623");
        assert_eq!(c.canonical("91350100m000100y43"), "91350100M000100Y43");
        let p = Rule::Phone;
        assert_eq!(p.canonical("+86 138-0013-8000"), "13800138000");
        assert_eq!(p.canonical("13800138000"), "13800138000");
        assert_ne!(p.canonical("13800138001"), p.canonical("13800138000"));
        let id = Rule::CitizenId;
        // A legacy 15-digit number is the same person as its 18-character form.
        let long = crate::ident::validate_citizen_id("110105491231002", chrono::NaiveDate::MAX)
            .expect("legacy id")
            .id;
        assert_eq!(id.canonical("110105491231002"), long);
        assert_eq!(id.canonical("11010519491231002x"), "11010519491231002X");
    }

    #[test]
    fn dates_written_the_usual_ways_read_as_the_same_day() {
        for s in [
            "1990-03-07",
            "19900307",
            "1990/3/7",
            "1990.03.07",
            "1990年3月7日",
            "１９９０年３月７日",
        ] {
            assert_eq!(Rule::Typed.canonical(s), "1990-03-07", "{s}");
        }
        let claims = StringArray::from(vec![Some("1990年3月7日"), Some("1990-02-30"), None]);
        let c = canonical_claims(Rule::Typed, &claims, &DataType::Date32).expect("claims");
        assert_eq!(c[0], Some(Some("1990-03-07".into())));
        assert_eq!(c[1], Some(None), "not a day: matches nothing");
        assert_eq!(c[2], None, "not claimed");
    }
}
