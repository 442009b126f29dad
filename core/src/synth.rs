//! Deterministic synthetic base data: persons and legal entities with valid identifiers,
//! real GB/T 2260 region codes (a few populous counties, a long tail), plausible ages, sexes,
//! names and addresses. Entities' legal representatives are persons of the person table.
//!
//! Every row is drawn from its own ChaCha8 stream seeded by (seed, row, attempt), so the data
//! are the same on every machine and run for a given seed; an identifier that collides with an
//! earlier one is redrawn with the next attempt.

use std::collections::HashSet;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Builder, Decimal128Builder, ListBuilder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use chrono::NaiveDate;
use rand::distr::weighted::WeightedIndex;
use rand::prelude::*;
use rand_chacha::ChaCha8Rng;

use crate::catalog::Catalog;
use crate::ident::{USCC_ALPHABET, citizen_id_check, org_code_check, uscc_check};
use crate::regions::{self, Region};

const SURNAMES: &str = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤";
const GIVEN: &str = "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏辉建国文斌宇浩凯健俊帆帅旭宁龙林欣佳怡晨雪琳倩婷颖思雨梓涵子轩一诺然";
const STREETS: &str =
    "人民路 解放路 建设路 中山路 胜利街 和平路 文化路 新华街 朝阳路 东风路 青年路 幸福街";
const INDUSTRIES: [&str; 16] = [
    "A0111", "C1310", "C3911", "E4710", "F5124", "G5411", "H6110", "I6510", "K7010", "L7211",
    "M7320", "P8321", "Q8411", "R8710", "S9221", "F5261",
];
const SCOPES: [&str; 6] = [
    "技术开发、技术咨询、技术服务",
    "农产品种植、销售",
    "建筑工程施工",
    "日用百货零售",
    "餐饮服务",
    "货物进出口",
];
const ENTITY_TYPES: [(&str, u32); 6] = [
    ("有限责任公司", 55),
    ("个体工商户", 25),
    ("股份有限公司", 5),
    ("个人独资企业", 6),
    ("合伙企业", 4),
    ("农民专业合作社", 5),
];

/// Epoch day of a date, for Date32 columns.
fn days(d: NaiveDate) -> i32 {
    (d - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days() as i32
}

/// Generator of a synthetic person table of `persons` rows and an entity table of `entities`.
#[derive(Debug, Clone)]
pub struct Synth {
    seed: u64,
    persons: usize,
    entities: usize,
    regions: Arc<Vec<&'static Region>>,
    weights: Arc<WeightedIndex<f64>>,
}

/// The identity part of a person, drawn first so representatives can be found cheaply.
struct Identity {
    id: String,
    region: &'static Region,
    birth: NaiveDate,
    male: bool,
}

impl Synth {
    /// A generator for `persons` persons and `entities` entities from `seed`.
    pub fn new(seed: u64, persons: usize, entities: usize) -> Synth {
        let regions: Vec<&'static Region> = regions::all().iter().collect();
        // Zipf-like weights over a seed-shuffled order: a few populous counties, a long tail.
        let mut order: Vec<usize> = (0..regions.len()).collect();
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
        let mut w = vec![0.0; regions.len()];
        for (rank, &i) in order.iter().enumerate() {
            w[i] = 1.0 / ((rank + 1) as f64).powf(0.6);
        }
        let weights = WeightedIndex::new(&w)
            .unwrap_or_else(|_| WeightedIndex::new([1.0]).expect("one weight"));
        Synth {
            seed,
            persons,
            entities,
            regions: Arc::new(regions),
            weights: Arc::new(weights),
        }
    }

    fn rng(&self, table: u64, row: usize, attempt: u32) -> ChaCha8Rng {
        let mut s = self.seed ^ table.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        s = s.wrapping_add((row as u64).wrapping_mul(0xBF58_476D_1CE4_E5B9));
        s ^= u64::from(attempt).wrapping_mul(0x94D0_49BB_1331_11EB);
        ChaCha8Rng::seed_from_u64(s)
    }

    fn identity(&self, rng: &mut ChaCha8Rng) -> Identity {
        let region = self.regions[self.weights.sample(rng)];
        let birth = NaiveDate::from_ymd_opt(1930, 1, 1).unwrap_or_default()
            + chrono::Days::new(rng.random_range(0..365 * 95));
        let seq: u32 = rng.random_range(0..1000);
        let mut id = format!("{}{}{seq:03}", region.code, birth.format("%Y%m%d"));
        id.push(citizen_id_check(id.as_bytes()));
        Identity {
            id,
            region,
            birth,
            male: seq % 2 == 1,
        }
    }

    /// The final citizen IDs of every person, in row order (collisions resolved), and the
    /// attempt each row needed.
    fn identities(&self) -> Vec<(String, u32)> {
        let mut seen = HashSet::with_capacity(self.persons);
        (0..self.persons)
            .map(|i| {
                let mut attempt = 0;
                loop {
                    let ident = self.identity(&mut self.rng(1, i, attempt));
                    if seen.insert(ident.id.clone()) {
                        return (ident.id, attempt);
                    }
                    attempt += 1;
                }
            })
            .collect()
    }

    fn name(rng: &mut ChaCha8Rng) -> String {
        let s: Vec<char> = SURNAMES.chars().collect();
        let g: Vec<char> = GIVEN.chars().collect();
        let mut n = String::new();
        n.push(s[rng.random_range(0..s.len())]);
        for _ in 0..rng.random_range(1..=2) {
            n.push(g[rng.random_range(0..g.len())]);
        }
        n
    }

    fn address(region: &Region, rng: &mut ChaCha8Rng) -> String {
        let streets: Vec<&str> = STREETS.split(' ').collect();
        format!(
            "{}{}{}号",
            region.address_prefix(),
            streets[rng.random_range(0..streets.len())],
            rng.random_range(1..300)
        )
    }

    fn mobile(rng: &mut ChaCha8Rng) -> String {
        format!(
            "1{}{:09}",
            rng.random_range(3..10),
            rng.random_range(0..1_000_000_000u32)
        )
    }

    /// The person table in batches of `batch_size` rows.
    pub fn persons(&self, batch_size: usize) -> impl Iterator<Item = RecordBatch> + '_ {
        let ids = self.identities();
        let batch_size = batch_size.max(1);
        let schema = Catalog::builtin()
            .dataset("person")
            .map(|d| d.arrow_schema())
            .ok();
        (0..self.persons)
            .step_by(batch_size)
            .filter_map(move |start| {
                let end = (start + batch_size).min(self.persons);
                self.person_batch(start..end, &ids, schema.clone()?)
            })
    }

    fn person_batch(
        &self,
        rows: std::ops::Range<usize>,
        ids: &[(String, u32)],
        schema: arrow::datatypes::SchemaRef,
    ) -> Option<RecordBatch> {
        let n = rows.len();
        let mut cid = StringBuilder::with_capacity(n, n * 18);
        let mut name = StringBuilder::new();
        let mut former = ListBuilder::new(StringBuilder::new());
        let mut sex = StringBuilder::new();
        let mut eth = StringBuilder::new();
        let mut birth = Date32Builder::with_capacity(n);
        let mut bplace = StringBuilder::new();
        let mut nat = StringBuilder::new();
        let mut hukou = StringBuilder::new();
        let mut haddr = StringBuilder::new();
        let mut raddr = StringBuilder::new();
        let mut marital = StringBuilder::new();
        let mut edu = StringBuilder::new();
        let mut phone = StringBuilder::new();
        let mut status = StringBuilder::new();
        let mut death = Date32Builder::with_capacity(n);
        let mut src = StringBuilder::new();
        let mut upd = TimestampMicrosecondBuilder::with_capacity(n);
        let base_ts = 1_735_660_800_000_000i64; // 2025-01-01T00:00:00
        for i in rows {
            let mut rng = self.rng(1, i, ids[i].1);
            let ident = self.identity(&mut rng);
            let nm = Self::name(&mut rng);
            // Most people live where they were born; a fifth moved their hukou.
            let home: &Region = if rng.random_bool(0.8) {
                ident.region
            } else {
                self.regions[self.weights.sample(&mut rng)]
            };
            cid.append_value(&ident.id);
            name.append_value(&nm);
            if rng.random_bool(0.05) {
                former.values().append_value(Self::name(&mut rng));
                former.append(true);
            } else {
                former.append_null();
            }
            sex.append_value(if ident.male { "1" } else { "2" });
            eth.append_value(if rng.random_bool(0.91) {
                "01".to_string()
            } else {
                format!("{:02}", rng.random_range(2..=56))
            });
            birth.append_value(days(ident.birth));
            bplace.append_value(ident.region.code);
            nat.append_value("CHN");
            hukou.append_value(home.code);
            let ha = Self::address(home, &mut rng);
            let ra = if rng.random_bool(0.7) {
                ha.clone()
            } else {
                Self::address(self.regions[self.weights.sample(&mut rng)], &mut rng)
            };
            haddr.append_value(&ha);
            raddr.append_value(&ra);
            let age = 2026 - chrono::Datelike::year(&ident.birth);
            marital.append_value(if age < 22 {
                "10"
            } else {
                ["10", "20", "20", "20", "30", "40"][rng.random_range(0..6)]
            });
            edu.append_value(
                ["10", "20", "30", "40", "60", "70", "80", "90"][rng.random_range(0..8)],
            );
            phone.append_value(Self::mobile(&mut rng));
            let p: f64 = rng.random();
            let (st, dd) = if p < 0.95 {
                ("正常", None)
            } else if p < 0.98 {
                let lo = days(ident.birth).max(days(
                    NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default(),
                ));
                (
                    "死亡",
                    Some(
                        rng.random_range(
                            lo..=days(NaiveDate::from_ymd_opt(2025, 12, 31).unwrap_or_default())
                                .max(lo),
                        ),
                    ),
                )
            } else if p < 0.99 {
                ("迁出", None)
            } else {
                ("注销", None)
            };
            status.append_value(st);
            death.append_option(dd);
            src.append_value("省公安厅");
            upd.append_value(base_ts + rng.random_range(0..31_536_000_000_000i64));
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(cid.finish()),
            Arc::new(name.finish()),
            Arc::new(former.finish()),
            Arc::new(sex.finish()),
            Arc::new(eth.finish()),
            Arc::new(birth.finish()),
            Arc::new(bplace.finish()),
            Arc::new(nat.finish()),
            Arc::new(hukou.finish()),
            Arc::new(haddr.finish()),
            Arc::new(raddr.finish()),
            Arc::new(marital.finish()),
            Arc::new(edu.finish()),
            Arc::new(phone.finish()),
            Arc::new(status.finish()),
            Arc::new(death.finish()),
            Arc::new(src.finish()),
            Arc::new(upd.finish()),
        ];
        RecordBatch::try_new(schema, cols).ok()
    }

    /// The legal-entity table in batches of `batch_size` rows. Representatives are persons of
    /// [`Synth::persons`] (same seed): their citizen ID and name match that table.
    pub fn entities(&self, batch_size: usize) -> impl Iterator<Item = RecordBatch> + '_ {
        let ids = if self.persons > 0 {
            self.identities()
        } else {
            Vec::new()
        };
        let schema = Catalog::builtin()
            .dataset("legal_entity")
            .map(|d| d.arrow_schema())
            .ok();
        let mut seen = HashSet::with_capacity(self.entities);
        let batch_size = batch_size.max(1);
        (0..self.entities)
            .step_by(batch_size)
            .filter_map(move |start| {
                let end = (start + batch_size).min(self.entities);
                self.entity_batch(start..end, &ids, &mut seen, schema.clone()?)
            })
    }

    fn entity_batch(
        &self,
        rows: std::ops::Range<usize>,
        ids: &[(String, u32)],
        seen: &mut HashSet<String>,
        schema: arrow::datatypes::SchemaRef,
    ) -> Option<RecordBatch> {
        let n = rows.len();
        let mut uscc = StringBuilder::with_capacity(n, n * 18);
        let mut org = StringBuilder::new();
        let mut etype = StringBuilder::new();
        let mut rep_name = StringBuilder::new();
        let mut rep_id = StringBuilder::new();
        let mut capital = Decimal128Builder::with_capacity(n)
            .with_precision_and_scale(18, 4)
            .ok()?;
        let mut est = Date32Builder::with_capacity(n);
        let mut auth = StringBuilder::new();
        let mut scope = StringBuilder::new();
        let mut dom = StringBuilder::new();
        let mut dom_code = StringBuilder::new();
        let mut industry = StringBuilder::new();
        let mut status = StringBuilder::new();
        let mut cancel = Date32Builder::with_capacity(n);
        let mut phone = StringBuilder::new();
        let type_w = WeightedIndex::new(ENTITY_TYPES.iter().map(|t| t.1)).ok()?;
        for j in rows {
            let mut attempt = 0;
            let (code, mut rng) = loop {
                let mut rng = self.rng(2, j, attempt);
                let region = self.regions[self.weights.sample(&mut rng)];
                let mut body: Vec<u8> = (0..8)
                    .map(|_| USCC_ALPHABET[rng.random_range(0..31)])
                    .collect();
                let etype_i = type_w.sample(&mut rng);
                let cat = if ENTITY_TYPES[etype_i].0 == "个体工商户" {
                    b'2'
                } else if ENTITY_TYPES[etype_i].0 == "农民专业合作社" {
                    b'3'
                } else {
                    b'1'
                };
                let mut code = vec![b'9', cat];
                code.extend_from_slice(region.code.as_bytes());
                let check = org_code_check(&body)?;
                body.push(check as u8);
                code.extend_from_slice(&body);
                let c18 = uscc_check(&code)?;
                code.push(c18 as u8);
                let code = String::from_utf8(code).ok()?;
                if seen.insert(code.clone()) {
                    etype.append_value(ENTITY_TYPES[etype_i].0);
                    dom_code.append_value(region.code);
                    dom.append_value(Self::address(region, &mut rng));
                    auth.append_value(format!("{}市场监督管理局", region.county));
                    org.append_value(format!(
                        "{}{}{}",
                        region.county.trim_end_matches(['县', '区', '市']),
                        [
                            "华信", "宏达", "鑫源", "恒通", "瑞丰", "永兴", "金桥", "新禾"
                        ][rng.random_range(0..8)],
                        [
                            "科技有限公司",
                            "商贸有限公司",
                            "建筑工程有限公司",
                            "农业发展有限公司",
                            "餐饮店",
                            "实业股份有限公司"
                        ][rng.random_range(0..6)]
                    ));
                    break (code, rng);
                }
                attempt += 1;
            };
            uscc.append_value(&code);
            if ids.is_empty() {
                rep_name.append_null();
                rep_id.append_null();
            } else {
                let k = rng.random_range(0..ids.len());
                let mut prng = self.rng(1, k, ids[k].1);
                let _ = self.identity(&mut prng);
                rep_name.append_value(Self::name(&mut prng));
                rep_id.append_value(&ids[k].0);
            }
            capital.append_value(i128::from(rng.random_range(1..1_000_000i64)) * 100);
            let e = rng.random_range(
                days(NaiveDate::from_ymd_opt(1990, 1, 1).unwrap_or_default())
                    ..days(NaiveDate::from_ymd_opt(2025, 12, 31).unwrap_or_default()),
            );
            est.append_value(e);
            scope.append_value(SCOPES[rng.random_range(0..SCOPES.len())]);
            industry.append_value(INDUSTRIES[rng.random_range(0..INDUSTRIES.len())]);
            let p: f64 = rng.random();
            let st = if p < 0.85 {
                "存续"
            } else if p < 0.90 {
                "吊销"
            } else if p < 0.98 {
                "注销"
            } else {
                "迁出"
            };
            status.append_value(st);
            let end = days(NaiveDate::from_ymd_opt(2026, 6, 30).unwrap_or_default());
            cancel.append_option(
                matches!(st, "吊销" | "注销").then(|| rng.random_range(e..end.max(e + 1))),
            );
            phone.append_value(Self::mobile(&mut rng));
        }
        let cols: Vec<ArrayRef> = vec![
            Arc::new(uscc.finish()),
            Arc::new(org.finish()),
            Arc::new(etype.finish()),
            Arc::new(rep_name.finish()),
            Arc::new(rep_id.finish()),
            Arc::new(capital.finish()),
            Arc::new(est.finish()),
            Arc::new(auth.finish()),
            Arc::new(scope.finish()),
            Arc::new(dom.finish()),
            Arc::new(dom_code.finish()),
            Arc::new(industry.finish()),
            Arc::new(status.finish()),
            Arc::new(cancel.finish()),
            Arc::new(phone.finish()),
        ];
        RecordBatch::try_new(schema, cols).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;

    #[test]
    fn deterministic_valid_and_linked() {
        let s = Synth::new(7, 3000, 300);
        let a: Vec<RecordBatch> = s.persons(1000).collect();
        let b: Vec<RecordBatch> = Synth::new(7, 3000, 300).persons(1000).collect();
        assert_eq!(a, b);
        assert_ne!(
            a,
            Synth::new(8, 3000, 300).persons(1000).collect::<Vec<_>>()
        );
        let today = NaiveDate::from_ymd_opt(2026, 11, 22).expect("d");
        let mut person_names = std::collections::HashMap::new();
        for batch in &a {
            let ids = batch.column(0).as_string::<i32>();
            let names = batch.column(1).as_string::<i32>();
            for i in 0..batch.num_rows() {
                crate::ident::validate_citizen_id(ids.value(i), today).expect("valid id");
                person_names.insert(ids.value(i).to_string(), names.value(i).to_string());
            }
        }
        assert_eq!(person_names.len(), 3000, "IDs are unique");
        let ents: Vec<RecordBatch> = s.entities(100).collect();
        for batch in &ents {
            let codes = batch.column(0).as_string::<i32>();
            let rep_name = batch.column(3).as_string::<i32>();
            let rep_id = batch.column(4).as_string::<i32>();
            for i in 0..batch.num_rows() {
                crate::ident::validate_uscc(codes.value(i)).expect("valid uscc");
                assert_eq!(
                    person_names.get(rep_id.value(i)).map(String::as_str),
                    Some(rep_name.value(i))
                );
            }
        }
    }
}
