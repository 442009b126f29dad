//! Row validation against a dataset's catalog entry: types, standards, code tables, required
//! fields, key uniqueness — and the counts a data-quality report is made of.
//!
//! Input columns arrive as anything (CSV text, or typed Arrow/Parquet columns); each is turned
//! into the field's Arrow type, then checked. A row that fails any check is rejected with its
//! row number, the field and the rule; the rest pass through unchanged in content (citizen IDs
//! are normalised: upper-case `X`, legacy 15-digit numbers converted).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Date32Array, ListBuilder, RecordBatch, StringArray,
    StringBuilder, new_null_array,
};
use arrow::compute::{CastOptions, cast_with_options, filter_record_batch};
use arrow::datatypes::{DataType, Date32Type};
use chrono::NaiveDate;
use serde::Serialize;

use crate::catalog::{Catalog, DatasetDef, FieldDef, FieldType, Standard};
use crate::error::{Error, Result};
use crate::ident;

/// The column of an incremental load that says what to do with a row: `upsert` (or `U`, or
/// empty) or `delete` (or `D`). Delete rows need only the key.
pub const OP_COLUMN: &str = "_op";

/// One rejected value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reject {
    /// 1-based data row number in the input (the header is not counted).
    pub row: u64,
    /// Field name.
    pub field: String,
    /// The rule that failed. Never contains the value itself: rejects files travel.
    pub reason: String,
}

/// Per-field quality counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FieldQuality {
    /// Rows with a value.
    pub present: u64,
    /// Rows whose value passed type and standard checks.
    pub valid: u64,
}

/// Counts over every row validated (accepted or not): the data-quality report.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct QualityStats {
    /// Rows seen.
    pub rows: u64,
    /// Rows with at least one rejection.
    pub rows_rejected: u64,
    /// Per field.
    pub fields: BTreeMap<String, FieldQuality>,
    /// Field names in catalog order, for reports.
    pub order: Vec<String>,
    /// Rows whose key repeats an earlier row's key.
    pub duplicate_keys: u64,
    /// Citizen-ID consistency: rows whose ID's birth date differs from `birth_date`.
    pub birth_date_mismatch: u64,
    /// Rows whose ID's sequence parity differs from `sex_code` (1 odd / 2 even).
    pub sex_mismatch: u64,
}

impl QualityStats {
    /// Share of rows with a value, per field (1.0 when there are no rows).
    pub fn completeness(&self, field: &str) -> f64 {
        let f = self.fields.get(field).cloned().unwrap_or_default();
        if self.rows == 0 {
            1.0
        } else {
            f.present as f64 / self.rows as f64
        }
    }

    /// Share of present values that are valid, per field.
    pub fn validity(&self, field: &str) -> f64 {
        let f = self.fields.get(field).cloned().unwrap_or_default();
        if f.present == 0 {
            1.0
        } else {
            f.valid as f64 / f.present as f64
        }
    }
}

/// Result of validating one input batch.
#[derive(Debug)]
pub struct Checked {
    /// Accepted rows to upsert/insert, in the dataset's schema.
    pub rows: RecordBatch,
    /// Keys of accepted delete rows (incremental loads).
    pub deletes: Vec<(u64, String)>,
    /// Rejections, in row order.
    pub rejects: Vec<Reject>,
}

/// Hashes a key fingerprint by taking its low 64 bits: the fingerprint already is the output
/// of a randomly keyed hash, so hashing it again (SipHash, the map's default) is only cost.
#[derive(Debug, Clone, Copy, Default)]
struct Fingerprinted;

/// The hasher of [`Fingerprinted`].
#[derive(Debug, Default)]
struct FingerprintHasher(u64);

impl std::hash::Hasher for FingerprintHasher {
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is used by `u128` keys; anything else is folded in.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

impl BuildHasher for Fingerprinted {
    type Hasher = FingerprintHasher;

    fn build_hasher(&self) -> FingerprintHasher {
        FingerprintHasher::default()
    }
}

/// Validates batches for one dataset; keeps key-uniqueness state across batches of one load.
pub struct Validator<'a> {
    def: &'a DatasetDef,
    catalog: &'a Catalog,
    today: NaiveDate,
    allow_ops: bool,
    /// 128-bit key fingerprints → first row: duplicates are found without keeping 10M strings.
    seen: HashMap<u128, u64, Fingerprinted>,
    hashers: (RandomState, RandomState),
    /// Counts for the quality report.
    pub stats: QualityStats,
}

impl<'a> Validator<'a> {
    /// A validator for `def`; `allow_ops` accepts an [`OP_COLUMN`] (incremental loads).
    pub fn new(
        catalog: &'a Catalog,
        def: &'a DatasetDef,
        today: NaiveDate,
        allow_ops: bool,
    ) -> Self {
        Validator {
            def,
            catalog,
            today,
            allow_ops,
            seen: HashMap::default(),
            hashers: (RandomState::new(), RandomState::new()),
            stats: QualityStats {
                fields: def
                    .fields
                    .iter()
                    .map(|f| (f.name.clone(), FieldQuality::default()))
                    .collect(),
                order: def.fields.iter().map(|f| f.name.clone()).collect(),
                ..Default::default()
            },
        }
    }

    /// Check the input's column names once, before reading rows: unknown columns (typos) and
    /// missing required fields fail the whole load with a message naming them.
    pub fn check_columns(&self, names: &[String]) -> Result<()> {
        for n in names {
            if n == OP_COLUMN {
                if !self.allow_ops {
                    return Err(Error::invalid(format!(
                        "column '{OP_COLUMN}' (upsert/delete) is only allowed in an incremental load"
                    )));
                }
                continue;
            }
            if self.def.field(n).is_none() {
                return Err(Error::invalid(format!(
                    "input column '{n}' is not a field of dataset '{}' (fields: {})",
                    self.def.name,
                    self.def
                        .fields
                        .iter()
                        .map(|f| f.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let has_ops = names.iter().any(|n| n == OP_COLUMN);
        for f in &self.def.fields {
            // With an op column, delete rows carry only the key; required fields are then
            // checked per upsert row instead.
            if !f.nullable && !has_ops && !names.iter().any(|n| n == &f.name) {
                return Err(Error::invalid(format!(
                    "input has no column '{}', a required field of dataset '{}'",
                    f.name, self.def.name
                )));
            }
        }
        if !names.iter().any(|n| n == &self.def.key) {
            return Err(Error::invalid(format!(
                "input has no key column '{}'",
                self.def.key
            )));
        }
        Ok(())
    }

    /// Validate `batch`, whose first row is input row `first_row` (1-based).
    pub fn check(&mut self, batch: &RecordBatch, first_row: u64) -> Result<Checked> {
        let names: Vec<String> = batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        self.check_columns(&names)?;
        let n = batch.num_rows();
        let mut rejects: Vec<Reject> = Vec::new();
        let mut ok = vec![true; n];
        let is_delete: Vec<bool> = match batch.column_by_name(OP_COLUMN) {
            None => vec![false; n],
            Some(col) => {
                let col = cast_with_options(col, &DataType::Utf8, &CastOptions::default())?;
                let col = col.as_string::<i32>();
                (0..n)
                    .map(|i| {
                        let v = if col.is_null(i) {
                            ""
                        } else {
                            col.value(i).trim()
                        };
                        match v {
                            "" | "upsert" | "U" | "u" => false,
                            "delete" | "D" | "d" => true,
                            _ => {
                                ok[i] = false;
                                rejects.push(Reject {
                                    row: first_row + i as u64,
                                    field: OP_COLUMN.into(),
                                    reason: "operation must be 'upsert' or 'delete'".into(),
                                });
                                false
                            }
                        }
                    })
                    .collect()
            }
        };
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.def.fields.len());
        let mut key_col: Option<ArrayRef> = None;
        let converted = self.convert_all(batch)?;
        for (field, (col, errs)) in self.def.fields.iter().zip(converted) {
            let q = self.stats.fields.entry(field.name.clone()).or_default();
            if errs.is_empty() && col.null_count() == 0 {
                // Every value present and valid: nothing to look at row by row.
                q.present += n as u64;
                q.valid += n as u64;
                if field.name == self.def.key {
                    key_col = Some(col.clone());
                }
                columns.push(col);
                continue;
            }
            let mut bad = vec![false; n];
            for (i, reason) in errs {
                bad[i] = true;
                if !is_delete[i] || field.name == self.def.key {
                    ok[i] = false;
                    rejects.push(Reject {
                        row: first_row + i as u64,
                        field: field.name.clone(),
                        reason,
                    });
                }
            }
            for i in 0..n {
                let present = col.is_valid(i) || bad[i];
                if present {
                    q.present += 1;
                    if !bad[i] {
                        q.valid += 1;
                    }
                } else if !field.nullable && !is_delete[i] {
                    ok[i] = false;
                    rejects.push(Reject {
                        row: first_row + i as u64,
                        field: field.name.clone(),
                        reason: "required field is empty".into(),
                    });
                }
            }
            if field.name == self.def.key {
                key_col = Some(col.clone());
            }
            columns.push(col);
        }
        // Key uniqueness within the load: the second and later occurrences are rejected.
        let keys = key_col.ok_or_else(|| Error::invalid("key column missing"))?;
        let keys = keys.as_string::<i32>();
        for (i, accepted) in ok.iter_mut().enumerate() {
            if !keys.is_valid(i) {
                continue;
            }
            let k = keys.value(i);
            let fp = (u128::from(self.hashers.0.hash_one(k)) << 64)
                | u128::from(self.hashers.1.hash_one(k));
            let row = first_row + i as u64;
            if let Some(first) = self.seen.get(&fp) {
                self.stats.duplicate_keys += 1;
                if *accepted {
                    *accepted = false;
                    rejects.push(Reject {
                        row,
                        field: self.def.key.clone(),
                        reason: format!(
                            "duplicate key: the same {} appears at row {first}",
                            self.def.key
                        ),
                    });
                }
            } else if *accepted {
                self.seen.insert(fp, row);
            }
        }
        self.consistency(&columns, n);
        rejects.sort_by_key(|r| r.row);
        self.stats.rows += n as u64;
        self.stats.rows_rejected += ok.iter().filter(|o| !**o).count() as u64;
        let deletes: Vec<(u64, String)> = (0..n)
            .filter(|&i| ok[i] && is_delete[i])
            .map(|i| (first_row + i as u64, keys.value(i).to_string()))
            .collect();
        let keep = BooleanArray::from((0..n).map(|i| ok[i] && !is_delete[i]).collect::<Vec<_>>());
        let typed = RecordBatch::try_new(self.def.arrow_schema_nullable(), columns)?;
        let rows = filter_record_batch(&typed, &keep)?;
        // Back to the declared nullability: every required field was checked above.
        let rows = RecordBatch::try_new(self.def.arrow_schema(), rows.columns().to_vec())?;
        Ok(Checked {
            rows,
            deletes,
            rejects,
        })
    }

    /// Citizen-ID consistency with `birth_date` and `sex_code` (quality report only).
    fn consistency(&mut self, columns: &[ArrayRef], n: usize) {
        let idx = |name: &str| self.def.fields.iter().position(|f| f.name == name);
        let (Some(ci), Some(bi), Some(si)) =
            (idx("citizen_id"), idx("birth_date"), idx("sex_code"))
        else {
            return;
        };
        let ids = columns[ci].as_string::<i32>();
        let births = columns[bi].as_primitive::<Date32Type>();
        let sexes = columns[si].as_string::<i32>();
        for i in 0..n {
            // The column holds validated, normalised IDs (null where invalid): their date
            // and sequence digit are read, not validated again.
            if !ids.is_valid(i) {
                continue;
            }
            let id = ids.value(i).as_bytes();
            let Some(birth) = ident::citizen_id_birth_date(id) else {
                continue;
            };
            if births.is_valid(i) && births.value_as_date(i) != Some(birth) {
                self.stats.birth_date_mismatch += 1;
            }
            let sex = if id.get(16).is_some_and(|d| d % 2 == 1) {
                "1"
            } else {
                "2"
            };
            if sexes.is_valid(i) && matches!(sexes.value(i), "1" | "2") && sexes.value(i) != sex {
                self.stats.sex_mismatch += 1;
            }
        }
    }

    /// Every field's column of `batch` converted and checked ([`Validator::convert`]), on
    /// two threads: columns are independent, and parsing and checking values is most of a
    /// load's work.
    #[allow(clippy::type_complexity)]
    fn convert_all(&self, batch: &RecordBatch) -> Result<Vec<(ArrayRef, Vec<(usize, String)>)>> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let n = batch.num_rows();
        let fields = &self.def.fields;
        let next = AtomicUsize::new(0);
        let work = || {
            let mut done = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(field) = fields.get(i) else {
                    return done;
                };
                let r = match batch.column_by_name(&field.name) {
                    Some(c) => self.convert(field, c),
                    None => Ok((new_null_array(&field.data_type.arrow(), n), Vec::new())),
                };
                done.push((i, r));
            }
        };
        let mut results: Vec<_> = std::thread::scope(|s| {
            let other = s.spawn(work);
            let mut mine = work();
            mine.extend(other.join().unwrap_or_default());
            mine
        });
        if results.len() != fields.len() {
            return Err(Error::internal("a validation thread stopped early"));
        }
        results.sort_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }

    /// Convert one input column to the field's type and check its standard.
    /// Returns the typed column (null where invalid) and the rejections by row index.
    fn convert(
        &self,
        field: &FieldDef,
        col: &ArrayRef,
    ) -> Result<(ArrayRef, Vec<(usize, String)>)> {
        let target = field.data_type.arrow();
        let mut errs = Vec::new();
        let typed: ArrayRef = if col.data_type() == &target {
            col.clone()
        } else if matches!(
            col.data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            let text = cast_with_options(col, &DataType::Utf8, &CastOptions::default())?;
            self.parse_text(field, text.as_string::<i32>(), &mut errs)?
        } else {
            // Typed input is converted only where nothing can change meaning: wider integers,
            // decimals, dates to dates. An int64 is not a date, a number is not a code.
            if !lossless(col.data_type(), &field.data_type) {
                return Err(Error::invalid(format!(
                    "column '{}' is {} in the input, and the catalog declares {}: govshare converts text, or a type that becomes {} without changing its meaning — convert the column first",
                    field.name,
                    col.data_type(),
                    field.data_type,
                    field.data_type
                )));
            }
            let safe = CastOptions {
                safe: true,
                ..Default::default()
            };
            let out = cast_with_options(col, &target, &safe).map_err(|e| {
                Error::invalid(format!(
                    "column '{}' has type {} which cannot become {}: {e}",
                    field.name,
                    col.data_type(),
                    field.data_type
                ))
            })?;
            for i in 0..col.len() {
                if col.is_valid(i) && out.is_null(i) {
                    errs.push((i, format!("value does not fit type {}", field.data_type)));
                }
            }
            out
        };
        let checked = self.check_standard(field, typed, &mut errs)?;
        let checked = check_text(field, checked, &mut errs)?;
        Ok((checked, errs))
    }

    /// Parse CSV-style text into the field's type; empty or blank text is null.
    fn parse_text(
        &self,
        field: &FieldDef,
        text: &StringArray,
        errs: &mut Vec<(usize, String)>,
    ) -> Result<ArrayRef> {
        let n = text.len();
        let get = |i: usize| -> Option<&str> {
            if text.is_null(i) {
                return None;
            }
            let v = text.value(i).trim();
            (!v.is_empty()).then_some(v)
        };
        Ok(match field.data_type {
            FieldType::Utf8 => {
                // Trimmed, blanks as null; no copy when nothing changes.
                if (0..n).all(|i| {
                    text.is_null(i) || {
                        let v = text.value(i);
                        !v.is_empty() && v.trim().len() == v.len()
                    }
                }) {
                    Arc::new(text.clone())
                } else {
                    Arc::new((0..n).map(get).collect::<StringArray>())
                }
            }
            FieldType::Date32 => {
                let v: Date32Array = (0..n)
                    .map(|i| {
                        let s = get(i)?;
                        let d = iso_date(s).or_else(|| {
                            NaiveDate::parse_from_str(s, "%Y-%m-%d")
                                .or_else(|_| NaiveDate::parse_from_str(s, "%Y%m%d"))
                                .ok()
                        });
                        if d.is_none() {
                            errs.push((
                                i,
                                "not a real date (expected YYYY-MM-DD or YYYYMMDD)".into(),
                            ));
                        }
                        d.map(Date32Type::from_naive_date)
                    })
                    .collect();
                Arc::new(v)
            }
            FieldType::ListUtf8 => {
                let mut b = ListBuilder::new(StringBuilder::new());
                for i in 0..n {
                    match get(i) {
                        None => b.append_null(),
                        Some(s) => {
                            for part in s.split('|').map(str::trim).filter(|p| !p.is_empty()) {
                                b.values().append_value(part);
                            }
                            b.append(true);
                        }
                    }
                }
                Arc::new(b.finish())
            }
            other => {
                let cleaned: StringArray = (0..n).map(get).collect();
                let safe = CastOptions {
                    safe: true,
                    ..Default::default()
                };
                let out = cast_with_options(&cleaned, &other.arrow(), &safe)?;
                for i in 0..n {
                    if cleaned.is_valid(i) && out.is_null(i) {
                        errs.push((i, format!("not a valid {other}")));
                    }
                }
                out
            }
        })
    }

    fn check_standard(
        &self,
        field: &FieldDef,
        col: ArrayRef,
        errs: &mut Vec<(usize, String)>,
    ) -> Result<ArrayRef> {
        let today = self.today;
        let failed: std::collections::HashSet<usize> = errs.iter().map(|e| e.0).collect();
        match &field.standard {
            Standard::None => Ok(col),
            Standard::PastDate => {
                let d = col.as_primitive::<Date32Type>();
                for i in 0..d.len() {
                    if let Some(date) = d.is_valid(i).then(|| d.value_as_date(i)).flatten()
                        && ident::validate_past_date(date, today).is_err()
                    {
                        errs.push((i, "date is in the future".into()));
                    }
                }
                Ok(col)
            }
            Standard::CitizenId => {
                let s = col.as_string::<i32>();
                // Checked without allocating; the column is kept as it is unless an ID was
                // rejected or changed by normalisation (a lower-case x, a 15-digit number).
                let mut ids: Vec<Option<[u8; 18]>> = Vec::with_capacity(s.len());
                let mut same = failed.is_empty();
                for i in 0..s.len() {
                    if s.is_null(i) || failed.contains(&i) {
                        ids.push(None);
                        continue;
                    }
                    match ident::normalize_citizen_id(s.value(i), today) {
                        Ok((id, _)) => {
                            same &= id.as_slice() == s.value(i).as_bytes();
                            ids.push(Some(id));
                        }
                        Err(e) => {
                            errs.push((i, format!("citizen ID: {e}")));
                            same = false;
                            ids.push(None);
                        }
                    }
                }
                if same {
                    return Ok(col);
                }
                let mut out = StringBuilder::with_capacity(s.len(), s.len() * 18);
                for id in ids {
                    match id.as_ref().map(|id| std::str::from_utf8(id)) {
                        Some(Ok(id)) => out.append_value(id),
                        _ => out.append_null(),
                    }
                }
                Ok(Arc::new(out.finish()))
            }
            Standard::CodeTable(t) => {
                // The table is found once per column, and a value equal to the previous
                // row's (codes repeat) is not looked up again.
                let table = self.catalog.code_tables.get(t);
                let s = col.as_string::<i32>();
                let mut last_ok: Option<&str> = None;
                for i in 0..s.len() {
                    if s.is_null(i) || failed.contains(&i) {
                        continue;
                    }
                    let v = s.value(i);
                    if last_ok == Some(v) {
                        continue;
                    }
                    if table.is_some_and(|tab| tab.contains_key(v)) {
                        last_ok = Some(v);
                    } else {
                        errs.push((i, format!("not a code of table '{t}'")));
                    }
                }
                Ok(col)
            }
            std_ => {
                let s = col.as_string::<i32>();
                for i in 0..s.len() {
                    if s.is_null(i) || failed.contains(&i) {
                        continue;
                    }
                    let v = s.value(i);
                    let res: std::result::Result<(), String> = match std_ {
                        Standard::Uscc => ident::validate_uscc(v).map_err(|e| format!("USCC: {e}")),
                        Standard::RegionCode => {
                            ident::validate_region_code(v).map_err(|e| format!("region code: {e}"))
                        }
                        Standard::MobilePhone => (v.len() == 11
                            && v.starts_with('1')
                            && v.bytes().all(|b| b.is_ascii_digit()))
                        .then_some(())
                        .ok_or_else(|| "mobile number must be 11 digits starting with 1".into()),
                        Standard::Phone => {
                            let digits = v.bytes().filter(u8::is_ascii_digit).count();
                            ((7..=20).contains(&v.len())
                                && digits >= 7
                                && v.bytes().all(|b| b.is_ascii_digit() || b"-+ ".contains(&b)))
                            .then_some(())
                            .ok_or_else(|| {
                                "phone number must be 7-20 digits, '-', '+' or spaces".into()
                            })
                        }
                        Standard::IndustryCode => {
                            let b = v.as_bytes();
                            (!b.is_empty()
                                && (b'A'..=b'T').contains(&b[0])
                                && matches!(b.len(), 1 | 3 | 4 | 5)
                                && b[1..].iter().all(u8::is_ascii_digit))
                            .then_some(())
                            .ok_or_else(|| "industry code must be a GB/T 4754 section letter A-T with 0, 2, 3 or 4 digits".into())
                        }
                        _ => Ok(()),
                    };
                    if let Err(reason) = res {
                        errs.push((i, reason));
                    }
                }
                Ok(col)
            }
        }
    }
}

impl DatasetDef {
    /// The schema with every field nullable: the shape of a batch before required fields are
    /// confirmed present.
    pub(crate) fn arrow_schema_nullable(&self) -> arrow::datatypes::SchemaRef {
        Arc::new(arrow::datatypes::Schema::new(
            self.arrow_schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true))
                .collect::<Vec<_>>(),
        ))
    }
}

/// A `YYYY-MM-DD` date read digit by digit — the common shape of a CSV date, ten million of
/// them in a load — or `None` for anything else, which chrono's parser then decides.
fn iso_date(s: &str) -> Option<NaiveDate> {
    let b = s.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<u32> {
        b[r].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)
}

/// The longest text a field takes unless its catalog entry says otherwise (`max_length`).
pub const DEFAULT_MAX_TEXT: usize = 4096;

/// Text values carry no control characters (C0, DEL, C1: they break CSV exports, terminals
/// and logs, and hide content) and no more characters than the field allows. Offending values
/// are rejected with the rule, never echoed.
fn check_text(
    field: &FieldDef,
    col: ArrayRef,
    errs: &mut Vec<(usize, String)>,
) -> Result<ArrayRef> {
    if !matches!(field.data_type, FieldType::Utf8) {
        return Ok(col);
    }
    let max = field.max_length.map_or(DEFAULT_MAX_TEXT, |m| m as usize);
    let s = col.as_string::<i32>();
    // Most columns are clean: one pass over all their bytes decides that, and only a column
    // with a suspect byte or a long value is looked at value by value. (Control characters
    // are U+0000-U+001F and U+007F as one byte, U+0080-U+009F as 0xC2 and a second byte
    // 0x80-0x9F; the scan may also see bytes between values of a sliced array, which can
    // only send it to the slow path.)
    let offsets = s.value_offsets();
    let (first, last) = (offsets[0] as usize, offsets[s.len()] as usize);
    let bytes = &s.value_data()[first..last];
    let suspect = bytes.iter().any(|&b| b < 0x20 || b == 0x7F)
        || memchr::memchr_iter(0xC2, bytes)
            .any(|at| bytes.get(at + 1).is_some_and(|b| (0x80..=0x9F).contains(b)));
    if !suspect && offsets.windows(2).all(|w| ((w[1] - w[0]) as usize) <= max) {
        return Ok(col);
    }
    let mut bad = Vec::new();
    for i in 0..s.len() {
        if s.is_null(i) {
            continue;
        }
        let v = s.value(i);
        if v.chars().any(char::is_control) {
            errs.push((
                i,
                "text contains a control character (U+0000-U+001F, U+007F-U+009F)".into(),
            ));
            bad.push(i);
        } else if v.len() > max && v.chars().count() > max {
            errs.push((i, format!("text longer than {max} characters")));
            bad.push(i);
        }
    }
    if bad.is_empty() {
        return Ok(col);
    }
    let out: StringArray = (0..s.len())
        .map(|i| (!s.is_null(i) && !bad.contains(&i)).then(|| s.value(i)))
        .collect();
    Ok(Arc::new(out))
}

/// Whether a typed input column of type `from` becomes `to` without changing what it means.
fn lossless(from: &DataType, to: &FieldType) -> bool {
    use DataType as D;
    let int = |t: &DataType| {
        matches!(
            t,
            D::Int8 | D::Int16 | D::Int32 | D::Int64 | D::UInt8 | D::UInt16 | D::UInt32
        )
    };
    match to {
        FieldType::Utf8 => matches!(from, D::Utf8 | D::LargeUtf8 | D::Utf8View),
        FieldType::Int64 => int(from),
        FieldType::Float64 => {
            matches!(
                from,
                D::Float16 | D::Float32 | D::Float64 | D::Int8 | D::Int16 | D::Int32
            )
        }
        FieldType::Boolean => matches!(from, D::Boolean),
        FieldType::Date32 => matches!(from, D::Date32 | D::Date64),
        FieldType::Timestamp => matches!(from, D::Timestamp(_, None)),
        FieldType::Decimal(..) => {
            int(from) || matches!(from, D::Decimal128(..) | D::Decimal256(..))
        }
        FieldType::ListUtf8 => match from {
            D::List(f) | D::LargeList(f) => matches!(f.data_type(), D::Utf8 | D::LargeUtf8),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Datelike;

    /// The digit-by-digit date is chrono's date for every `YYYY-MM-DD` of 1900-2100 and for
    /// the non-dates and other shapes around them, which it leaves to chrono.
    #[test]
    fn iso_dates_are_read_as_chrono_parses_them() {
        let mut day = NaiveDate::from_ymd_opt(1900, 1, 1).expect("date");
        let mut texts = Vec::new();
        while day.year() <= 2100 {
            texts.push(day.format("%Y-%m-%d").to_string());
            day = day.succ_opt().expect("next day");
        }
        for t in [
            "1900-02-29",
            "2000-02-29",
            "2023-13-01",
            "2023-00-10",
            "2023-01-00",
            "2023-01-32",
            "2023-1-05",
            "2023/01/05",
            "20230105",
            "+2023-01-0",
            "２０２３-01-05",
        ] {
            texts.push(t.into());
        }
        for t in texts {
            let chrono = NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok();
            match iso_date(&t) {
                Some(d) => assert_eq!(Some(d), chrono, "{t}"),
                None => assert!(t.len() != 10 || chrono.is_none(), "{t}"),
            }
        }
    }

    /// `first17` with its check character: a valid citizen ID.
    fn with_check(first17: &str) -> String {
        format!("{first17}{}", ident::citizen_id_check(first17.as_bytes()))
    }

    /// Validate persons with these IDs, every other required field valid, and this birth date.
    fn check_persons(ids: Vec<String>, birth_date: &str) -> Checked {
        let catalog = Catalog::builtin();
        let def = catalog.dataset("person").expect("person").clone();
        let today = NaiveDate::from_ymd_opt(2026, 11, 27).expect("date");
        let n = ids.len();
        let text = |v: &str| Arc::new(StringArray::from(vec![v; n])) as ArrayRef;
        let batch = RecordBatch::try_from_iter([
            ("citizen_id", Arc::new(StringArray::from(ids)) as ArrayRef),
            ("name", text("张三")),
            ("sex_code", text("1")),
            ("birth_date", text(birth_date)),
            ("hukou_region_code", text("110105")),
            ("person_status", text("正常")),
        ])
        .expect("batch");
        Validator::new(&catalog, &def, today, false)
            .check(&batch, 1)
            .expect("check")
    }

    /// IDs are stored normalised — a lower-case `x` upper-cased, a 15-digit number converted
    /// — an invalid one is rejected, and a column of normalised IDs passes unchanged.
    #[test]
    fn citizen_ids_are_normalised_and_invalid_ones_rejected() {
        let x_id = (0..1000)
            .map(|n| with_check(&format!("11010519900101{n:03}")))
            .find(|id| id.ends_with('X'))
            .expect("an ID with check character X");
        let plain = with_check("11010519800101001");
        let mut wrong = with_check("11010519800101005");
        let last = if wrong.ends_with('1') { "2" } else { "1" };
        wrong.replace_range(17.., last);
        let check = |ids: Vec<String>| {
            let out = check_persons(ids, "1980-01-01");
            let ids = out
                .rows
                .column_by_name("citizen_id")
                .expect("column")
                .as_string::<i32>()
                .iter()
                .map(|v| v.unwrap_or_default().to_string())
                .collect::<Vec<_>>();
            (ids, out.rejects)
        };
        let (ids, rejects) = check(vec![
            plain.clone(),
            x_id.to_lowercase(),
            "110105800101003".into(),
            wrong,
        ]);
        assert_eq!(
            ids,
            [plain.clone(), x_id.clone(), with_check("11010519800101003")]
        );
        assert_eq!(rejects.len(), 1);
        assert_eq!(
            (rejects[0].row, rejects[0].field.as_str()),
            (4, "citizen_id")
        );
        // Normalised where nothing is rejected too.
        let (ids, rejects) = check(vec![x_id.to_lowercase(), "110105800101003".into()]);
        assert_eq!(ids, [x_id.clone(), with_check("11010519800101003")]);
        assert!(rejects.is_empty());
        let (ids, rejects) = check(vec![plain.clone(), x_id.clone()]);
        assert_eq!(ids, [plain, x_id]);
        assert!(rejects.is_empty());
    }

    /// Reasons name the rule, never the value: an ID whose date is not a real date, an ID
    /// and a birth date in the future.
    #[test]
    fn date_reasons_carry_no_digits_of_the_value() {
        let out = check_persons(
            vec![
                with_check("11010519490230001"),
                with_check("11010520301231003"),
            ],
            "2031-07-19",
        );
        let reasons: Vec<&str> = out.rejects.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(out.rejects.len(), 4, "{reasons:?}");
        for r in &reasons {
            for digits in ["19490230", "20301231", "2031", "0719"] {
                assert!(!r.contains(digits), "{r}");
            }
        }
    }

    /// Every control character (C0, DEL, C1) is rejected, whether the column is scanned whole
    /// or value by value, and nothing else is: non-control characters sharing the C1 lead byte
    /// 0xC2, Chinese text, a sliced array whose neighbouring values hold control characters.
    #[test]
    fn control_characters_are_found_and_nothing_else_is() {
        let catalog = Catalog::builtin();
        let field = catalog
            .dataset("person")
            .expect("person")
            .field("hukou_address")
            .expect("field")
            .clone();
        let rejected = |values: &[Option<&str>]| -> Vec<usize> {
            let col: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
            let mut errs = Vec::new();
            check_text(&field, col, &mut errs).expect("check");
            errs.into_iter().map(|(i, _)| i).collect()
        };
        for c in ['\u{0}', '\u{1f}', '\u{7f}', '\u{80}', '\u{85}', '\u{9f}'] {
            let bad = format!("北京{c}市");
            assert_eq!(
                rejected(&[Some("东城区"), Some(&bad), None]),
                [1],
                "{:?}",
                c as u32
            );
        }
        for fine in ["\u{a0}", "\u{a2}é", "北京市东城区", "", "\u{c0}"] {
            assert!(rejected(&[Some(fine)]).is_empty(), "{fine:?}");
        }
        // A slice between two values with control characters is clean.
        let all = StringArray::from(vec!["a\u{7}", "北京", "b\u{85}"]);
        let mut errs = Vec::new();
        check_text(&field, Arc::new(all.slice(1, 1)), &mut errs).expect("check");
        assert!(errs.is_empty());
        let mut errs = Vec::new();
        check_text(&field, Arc::new(all.slice(0, 2)), &mut errs).expect("check");
        assert_eq!(errs.len(), 1);
    }
}
