//! The data catalog (数据目录): datasets, their data items and the code tables they use.
//!
//! `person` and `legal_entity` are built in ([`Catalog::builtin`]); any further dataset is
//! declared in a JSON or TOML file of the same shape ([`CatalogFile`]) and becomes a
//! first-class dataset: it loads, validates, indexes and versions exactly like the built-ins.
//! Catalog changes are committed as versions by the [`crate::store`]; [`diff`] says what changed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// Share type of a data item (共享类型): what a consumer must go through to get it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShareType {
    /// 无条件共享: granted on request.
    Unconditional,
    /// 有条件共享: granted after the providing department approves.
    Conditional,
    /// 不予共享: never granted; the item must first be reclassified through coordination.
    NotShared,
}

/// Open type of a data item (开放类型): release to the public.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OpenType {
    /// 无条件开放.
    Unconditional,
    /// 有条件开放.
    Conditional,
    /// 不予开放 (the default: nothing is public unless declared so).
    #[default]
    NotOpen,
}

impl OpenType {
    /// The open type as the catalog file spells it.
    pub fn label(self) -> &'static str {
        match self {
            OpenType::Unconditional => "unconditional",
            OpenType::Conditional => "conditional",
            OpenType::NotOpen => "not_open",
        }
    }
}

/// Sensitivity grade, L1 (public) to L4 (sensitive personal information).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Grade {
    /// Public.
    L1,
    /// Internal.
    L2,
    /// Personal information.
    L3,
    /// Sensitive personal information.
    L4,
}

/// The Arrow type a field is stored as, in a form a catalog file can spell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldType {
    /// `utf8`
    Utf8,
    /// `int64`
    Int64,
    /// `float64`
    Float64,
    /// `boolean`
    Boolean,
    /// `date32` (days since epoch); CSV as `YYYY-MM-DD` or `YYYYMMDD`.
    Date32,
    /// `timestamp` (microseconds, no time zone; Beijing time by convention).
    Timestamp,
    /// `decimal(p,s)`
    Decimal(u8, i8),
    /// `list_utf8`; CSV as values separated by `|`.
    ListUtf8,
}

impl FieldType {
    /// The Arrow data type.
    pub fn arrow(&self) -> DataType {
        match self {
            FieldType::Utf8 => DataType::Utf8,
            FieldType::Int64 => DataType::Int64,
            FieldType::Float64 => DataType::Float64,
            FieldType::Boolean => DataType::Boolean,
            FieldType::Date32 => DataType::Date32,
            FieldType::Timestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            FieldType::Decimal(p, s) => DataType::Decimal128(*p, *s),
            FieldType::ListUtf8 => {
                DataType::List(Arc::new(Field::new("item", DataType::Utf8, true)))
            }
        }
    }
}

impl std::fmt::Display for FieldType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldType::Utf8 => f.write_str("utf8"),
            FieldType::Int64 => f.write_str("int64"),
            FieldType::Float64 => f.write_str("float64"),
            FieldType::Boolean => f.write_str("boolean"),
            FieldType::Date32 => f.write_str("date32"),
            FieldType::Timestamp => f.write_str("timestamp"),
            FieldType::Decimal(p, s) => write!(f, "decimal({p},{s})"),
            FieldType::ListUtf8 => f.write_str("list_utf8"),
        }
    }
}

impl std::str::FromStr for FieldType {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "utf8" => FieldType::Utf8,
            "int64" => FieldType::Int64,
            "float64" => FieldType::Float64,
            "boolean" => FieldType::Boolean,
            "date32" => FieldType::Date32,
            "timestamp" => FieldType::Timestamp,
            "list_utf8" => FieldType::ListUtf8,
            _ => {
                let inner = s
                    .strip_prefix("decimal(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| Error::invalid(format!("unknown field type '{s}' (expected utf8, int64, float64, boolean, date32, timestamp, decimal(p,s) or list_utf8)")))?;
                let (p, sc) = inner.split_once(',').ok_or_else(|| {
                    Error::invalid(format!("decimal type '{s}' needs (precision,scale)"))
                })?;
                let p: u8 = p
                    .trim()
                    .parse()
                    .map_err(|_| Error::invalid(format!("bad precision in '{s}'")))?;
                let sc: i8 = sc
                    .trim()
                    .parse()
                    .map_err(|_| Error::invalid(format!("bad scale in '{s}'")))?;
                if !(1..=38).contains(&p) || sc < 0 || sc as u8 > p {
                    return Err(Error::invalid(format!(
                        "decimal '{s}': precision 1-38 and 0 <= scale <= precision"
                    )));
                }
                FieldType::Decimal(p, sc)
            }
        })
    }
}

impl Serialize for FieldType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FieldType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.to_string()))
    }
}

/// The standard a field's values must meet; checked on every load.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Standard {
    /// No check beyond the type.
    #[default]
    None,
    /// GB 11643 citizen ID (normalised on load).
    CitizenId,
    /// GB 32100 unified social credit code.
    Uscc,
    /// GB/T 2260 region code format.
    RegionCode,
    /// Mainland mobile number: 11 digits starting with 1.
    MobilePhone,
    /// Any phone number: 7-20 characters of digits, `-`, `+`, space; at least 7 digits.
    Phone,
    /// GB/T 4754 industry code: a section letter A-T, optionally 2-4 digits.
    IndustryCode,
    /// A real date not in the future.
    PastDate,
    /// A value of the named code table.
    CodeTable(String),
}

impl std::fmt::Display for Standard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Standard::None => f.write_str("none"),
            Standard::CitizenId => f.write_str("citizen_id"),
            Standard::Uscc => f.write_str("uscc"),
            Standard::RegionCode => f.write_str("region_code"),
            Standard::MobilePhone => f.write_str("mobile_phone"),
            Standard::Phone => f.write_str("phone"),
            Standard::IndustryCode => f.write_str("industry_code"),
            Standard::PastDate => f.write_str("past_date"),
            Standard::CodeTable(t) => write!(f, "code:{t}"),
        }
    }
}

impl std::str::FromStr for Standard {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "none" | "" => Standard::None,
            "citizen_id" => Standard::CitizenId,
            "uscc" => Standard::Uscc,
            "region_code" => Standard::RegionCode,
            "mobile_phone" => Standard::MobilePhone,
            "phone" => Standard::Phone,
            "industry_code" => Standard::IndustryCode,
            "past_date" => Standard::PastDate,
            _ => match s.strip_prefix("code:") {
                Some(t) if !t.is_empty() => Standard::CodeTable(t.to_string()),
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown standard '{s}' (expected citizen_id, uscc, region_code, mobile_phone, phone, industry_code, past_date or code:<table>)"
                    )));
                }
            },
        })
    }
}

impl Serialize for Standard {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Standard {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse()
            .map_err(|e: Error| serde::de::Error::custom(e.to_string()))
    }
}

/// A named masking treatment; which one applies is policy, declared per field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MaskKind {
    /// Shown as stored.
    #[default]
    Clear,
    /// First 6 + last 4 characters: `110105********1234`.
    CitizenId,
    /// Surname + `*`: `张*`.
    Name,
    /// `138****1234`.
    Phone,
    /// Kept down to the county level.
    Address,
    /// A date reduced to its year.
    DateToYear,
    /// Always null.
    Nullify,
    /// Keyed hash, a distinct key per consumer department.
    Pseudonym,
}

/// Which bitmap index a field gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum IndexKind {
    /// No bitmap index.
    #[default]
    None,
    /// One bitmap per distinct value (for low-cardinality fields).
    Values,
    /// A GB/T 2260 code: bitmaps per province (2), city (4) and county (6) prefix.
    Region,
}

/// Lifecycle status of a dataset or field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// In use.
    #[default]
    Active,
    /// Still readable, no longer maintained.
    Deprecated,
}

fn yes() -> bool {
    true
}

/// A data item (数据项) of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDef {
    /// snake_case name, the column name.
    pub name: String,
    /// Chinese label.
    pub label: String,
    /// Stored type.
    #[serde(rename = "type")]
    pub data_type: FieldType,
    /// Standard or code table values must meet.
    #[serde(default)]
    pub standard: Standard,
    /// Whether the value may be missing.
    #[serde(default = "yes")]
    pub nullable: bool,
    /// Share type.
    pub share: ShareType,
    /// Open type.
    #[serde(default)]
    pub open: OpenType,
    /// Sensitivity grade.
    pub grade: Grade,
    /// Providing department when it differs from the dataset's (一数一源: one source per item).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// Update frequency when it differs from the dataset's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update_frequency: Option<String>,
    /// Mask applied by default to a grant on request.
    #[serde(default)]
    pub mask: MaskKind,
    /// Bitmap index kind.
    #[serde(default)]
    pub index: IndexKind,
    /// Free-text description.
    #[serde(default)]
    pub description: String,
    /// Longest text accepted, in characters (text fields; default
    /// [`crate::validate::DEFAULT_MAX_TEXT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    /// Lifecycle status.
    #[serde(default)]
    pub status: Status,
}

/// A dataset (数据资源) and its data items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetDef {
    /// snake_case name, the table name in SQL.
    pub name: String,
    /// Chinese label.
    pub label: String,
    /// Free-text description.
    #[serde(default)]
    pub description: String,
    /// The field whose value identifies a row (unique, non-null).
    pub key: String,
    /// A region-code field rows are physically clustered by, so region scopes read few row
    /// groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster_field: Option<String>,
    /// Providing department, by its department code (approvers are matched by code, never by
    /// a free-text name).
    pub provider: String,
    /// How often the provider updates it.
    #[serde(default)]
    pub update_frequency: String,
    /// Working days the provider has to decide an application (default
    /// [`DEFAULT_APPROVAL_DAYS`]; the regulations give 3, 5 or 7).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval_days: Option<u32>,
    /// Working days the provider has to answer an objection (default
    /// [`DEFAULT_OBJECTION_DAYS`]; the regulations give 5 or 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objection_days: Option<u32>,
    /// Lifecycle status.
    #[serde(default)]
    pub status: Status,
    /// The data items, in column order.
    pub fields: Vec<FieldDef>,
}

/// Working days to decide an application when the catalog does not say (Hebi §15, Huarong
/// §21).
pub const DEFAULT_APPROVAL_DAYS: u32 = 5;
/// Working days to answer an objection when the catalog does not say (Hunan §21(4)).
pub const DEFAULT_OBJECTION_DAYS: u32 = 5;

impl DatasetDef {
    /// Working days the provider has to decide an application.
    pub fn approval_days(&self) -> u32 {
        self.approval_days.unwrap_or(DEFAULT_APPROVAL_DAYS)
    }

    /// Working days the provider has to answer an objection.
    pub fn objection_days(&self) -> u32 {
        self.objection_days.unwrap_or(DEFAULT_OBJECTION_DAYS)
    }

    /// The department authoritative for `field` (一数一源): the field's own provider, or the
    /// dataset's.
    pub fn source_of<'a>(&'a self, field: &'a FieldDef) -> &'a str {
        field.provider.as_deref().unwrap_or(&self.provider)
    }

    /// The field with this name.
    pub fn field(&self, name: &str) -> Option<&FieldDef> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// The field with this name, or a [`Error::NotFound`] listing the fields there are.
    pub fn require_field(&self, name: &str) -> Result<&FieldDef> {
        self.field(name).ok_or_else(|| {
            Error::NotFound(format!(
                "dataset '{}' has no field '{name}' (fields: {})",
                self.name,
                self.fields
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    /// The Arrow schema data files of this dataset are written with.
    pub fn arrow_schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.fields
                .iter()
                .map(|f| Field::new(&f.name, f.data_type.arrow(), f.nullable))
                .collect::<Vec<_>>(),
        ))
    }
}

/// What a catalog file declares: datasets and code tables.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogFile {
    /// Datasets to add (or replace, when the name exists).
    #[serde(default)]
    pub datasets: Vec<DatasetDef>,
    /// Code tables: table → code → label.
    #[serde(default)]
    pub code_tables: BTreeMap<String, BTreeMap<String, String>>,
}

impl CatalogFile {
    /// Read a catalog file; `.toml` is TOML, anything else JSON.
    pub fn read(path: &Path) -> Result<CatalogFile> {
        let text = std::fs::read_to_string(path).at(path)?;
        let is_toml = path.extension().is_some_and(|e| e == "toml");
        Self::parse(&text, is_toml, &path.display().to_string())
    }

    /// Parse catalog text (TOML or JSON); `what` names the source in errors.
    pub fn parse(text: &str, toml: bool, what: &str) -> Result<CatalogFile> {
        if toml {
            toml::from_str(text).map_err(|e| Error::invalid(format!("catalog file {what}: {e}")))
        } else {
            serde_json::from_str(text)
                .map_err(|e| Error::invalid(format!("catalog file {what}: {e}")))
        }
    }
}

/// The whole catalog at one version.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    /// Datasets by name.
    pub datasets: BTreeMap<String, DatasetDef>,
    /// Code tables: table → code → label.
    pub code_tables: BTreeMap<String, BTreeMap<String, String>>,
}

const BUILTIN: &str = include_str!("../../data/builtin_catalog.toml");

impl Catalog {
    /// The built-in catalog: `person` and `legal_entity` with their code tables.
    pub fn builtin() -> Catalog {
        // The built-in file is part of the binary and covered by a unit test; failing to parse
        // it is a build defect, so an empty catalog (which then fails every lookup) is safe.
        let file = CatalogFile::parse(BUILTIN, true, "builtin").unwrap_or_default();
        let mut c = Catalog::default();
        c.apply(file).unwrap_or_default();
        c
    }

    /// The dataset with this name, or [`Error::NotFound`] listing those there are.
    pub fn dataset(&self, name: &str) -> Result<&DatasetDef> {
        self.datasets.get(name).ok_or_else(|| {
            Error::NotFound(format!(
                "no dataset '{name}' in the catalog (datasets: {})",
                self.datasets.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })
    }

    /// Add or replace the datasets and code tables of `file`, then check the result.
    /// On error the catalog is unchanged. Returns a line per change.
    pub fn apply(&mut self, file: CatalogFile) -> Result<Vec<String>> {
        let mut next = self.clone();
        for (name, table) in file.code_tables {
            next.code_tables.insert(name, table);
        }
        for ds in file.datasets {
            next.datasets.insert(ds.name.clone(), ds);
        }
        next.check()?;
        let changes = diff(self, &next);
        *self = next;
        Ok(changes)
    }

    /// Check every dataset: names, key, cluster field, standards against types, code tables.
    pub fn check(&self) -> Result<()> {
        for (name, ds) in &self.datasets {
            let bad = |m: String| Err(Error::invalid(format!("dataset '{name}': {m}")));
            if !is_snake(name) || name != &ds.name {
                return bad(
                    "name must be snake_case ASCII (a-z, 0-9, _), starting with a letter".into(),
                );
            }
            if ds.fields.is_empty() {
                return bad("has no fields".into());
            }
            for (what, days) in [
                ("approval_days", ds.approval_days),
                ("objection_days", ds.objection_days),
            ] {
                if days.is_some_and(|d| !(1..=30).contains(&d)) {
                    return bad(format!("{what} must be 1 to 30 working days"));
                }
            }
            let mut seen = BTreeSet::new();
            for f in &ds.fields {
                if !is_snake(&f.name) {
                    return bad(format!("field '{}' must be snake_case ASCII", f.name));
                }
                if !seen.insert(f.name.as_str()) {
                    return bad(format!("field '{}' is declared twice", f.name));
                }
                let needs_text = matches!(
                    f.standard,
                    Standard::CitizenId
                        | Standard::Uscc
                        | Standard::RegionCode
                        | Standard::MobilePhone
                        | Standard::Phone
                        | Standard::IndustryCode
                        | Standard::CodeTable(_)
                );
                if needs_text && f.data_type != FieldType::Utf8 {
                    return bad(format!(
                        "field '{}': standard {} needs type utf8",
                        f.name, f.standard
                    ));
                }
                if f.standard == Standard::PastDate && f.data_type != FieldType::Date32 {
                    return bad(format!(
                        "field '{}': standard past_date needs type date32",
                        f.name
                    ));
                }
                if let Standard::CodeTable(t) = &f.standard
                    && !self.code_tables.contains_key(t)
                {
                    return bad(format!(
                        "field '{}': code table '{t}' is not declared",
                        f.name
                    ));
                }
                if f.index != IndexKind::None && f.data_type != FieldType::Utf8 {
                    return bad(format!("field '{}': bitmap indexes need type utf8", f.name));
                }
                if f.index == IndexKind::Region && f.standard != Standard::RegionCode {
                    return bad(format!(
                        "field '{}': a region index needs standard region_code",
                        f.name
                    ));
                }
            }
            let key = ds.require_field(&ds.key)?;
            if key.nullable || key.data_type != FieldType::Utf8 {
                return bad(format!(
                    "key '{}' must be a non-nullable utf8 field",
                    ds.key
                ));
            }
            if let Some(c) = &ds.cluster_field {
                let cf = ds.require_field(c)?;
                if cf.standard != Standard::RegionCode {
                    return bad(format!(
                        "cluster field '{c}' must have standard region_code"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Check that `name` can be a dataset name — what the catalog accepts when a dataset is
/// declared (lower-case letters, digits and underscores, starting with a letter). Every path
/// that turns a dataset name into a directory checks it first, so no name reaches outside the
/// store (`../x`, `/etc`, `a/b`).
pub fn check_dataset_name(name: &str) -> Result<()> {
    if is_snake(name) {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "'{}' is not a dataset name: lower-case letters, digits and underscores, starting with a letter",
            name.escape_debug()
        )))
    }
}

fn is_snake(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_lowercase())
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Items (`dataset.field`) whose share type differs from `old` to `new`: the coordinator's
/// act (002 §21), never a side effect of an ordinary catalog change.
pub fn reclassified(old: &Catalog, new: &Catalog) -> Vec<String> {
    let mut out = Vec::new();
    for (name, ds) in &new.datasets {
        let Some(prev) = old.datasets.get(name) else {
            continue;
        };
        for f in &ds.fields {
            if let Some(p) = prev.field(&f.name)
                && p.share != f.share
            {
                out.push(format!("{name}.{}", f.name));
            }
        }
    }
    out
}

/// Datasets added, changed or removed from `old` to `new`.
pub fn changed_datasets(old: &Catalog, new: &Catalog) -> Vec<String> {
    let mut out: Vec<String> = new
        .datasets
        .iter()
        .filter(|(n, d)| old.datasets.get(*n) != Some(*d))
        .map(|(n, _)| n.clone())
        .collect();
    out.extend(
        old.datasets
            .keys()
            .filter(|n| !new.datasets.contains_key(*n))
            .cloned(),
    );
    out
}

/// What changed from `old` to `new`, one line per dataset, field or code table.
pub fn diff(old: &Catalog, new: &Catalog) -> Vec<String> {
    let mut out = Vec::new();
    for (name, ds) in &new.datasets {
        match old.datasets.get(name) {
            None => out.push(format!("+ dataset {name} ({} fields)", ds.fields.len())),
            Some(prev) if prev != ds => {
                for f in &ds.fields {
                    match prev.field(&f.name) {
                        None => out.push(format!("+ field {name}.{}", f.name)),
                        Some(p) if p != f => out.push(format!("~ field {name}.{}", f.name)),
                        _ => {}
                    }
                }
                for p in &prev.fields {
                    if ds.field(&p.name).is_none() {
                        out.push(format!("- field {name}.{}", p.name));
                    }
                }
                let (mut a, mut b) = (prev.clone(), ds.clone());
                a.fields.clear();
                b.fields.clear();
                if a != b {
                    out.push(format!("~ dataset {name} attributes"));
                }
            }
            _ => {}
        }
    }
    for name in old.datasets.keys() {
        if !new.datasets.contains_key(name) {
            out.push(format!("- dataset {name}"));
        }
    }
    for (name, t) in &new.code_tables {
        match old.code_tables.get(name) {
            None => out.push(format!("+ code table {name} ({} codes)", t.len())),
            Some(p) if p != t => out.push(format!("~ code table {name}")),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests;
