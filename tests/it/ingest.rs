use govshare_core::Error;
use govshare_core::ingest::{Encoding, LoadMode, LoadOptions, Source};
use govshare_core::store::Operation;

use crate::common::*;

/// Replace one CSV data row's column (0-based row after the header).
fn edit(path: &std::path::Path, row: usize, col: usize, value: &str) {
    let text = std::fs::read_to_string(path).expect("read");
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    let mut cols: Vec<String> = lines[row + 1].split(',').map(String::from).collect();
    cols[col] = value.to_string();
    lines[row + 1] = cols.join(",");
    std::fs::write(path, lines.join("\n") + "\n").expect("write");
}

#[test]
fn gbk_csv_loads_with_chinese_text_intact() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::init_store(&dir.path().join("s"));
    let gbk = person_csv(dir.path(), 500, 3, Encoding::Gbk);
    let utf8 = person_csv(dir.path(), 500, 3, Encoding::Utf8);
    let raw = std::fs::read(&gbk).expect("read");
    assert!(
        std::str::from_utf8(&raw).is_err(),
        "the GBK file really is not UTF-8"
    );
    let r = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load("person", Source::from_path(&gbk), &opts())
        .expect("auto-detected GBK");
    assert_eq!(r.manifest.live_rows, 500);
    let names_gbk = strings(
        &store
            .snapshot("person")
            .expect("snap")
            .read(None, Some(&["name"]))
            .expect("read"),
        "name",
    );
    store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load("person", Source::from_path(&utf8), &opts())
        .expect("utf8");
    let names_utf8 = strings(
        &store
            .snapshot("person")
            .expect("snap")
            .read(None, Some(&["name"]))
            .expect("read"),
        "name",
    );
    assert_eq!(names_gbk, names_utf8);
    assert!(names_gbk.iter().all(|n| n.chars().all(|c| !c.is_ascii())));
    // Declaring UTF-8 for a GBK file is an error naming the byte, not garbage in the store.
    let err = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::Csv {
                path: gbk,
                encoding: Encoding::Utf8,
            },
            &opts(),
        )
        .expect_err("not UTF-8");
    assert!(err.to_string().contains("not valid UTF-8"), "{err}");
    assert_eq!(store.current_version("person").expect("v"), 2);
}

#[test]
fn bad_rows_are_rejected_with_row_field_reason_lenient_commits_strict_does_not() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::init_store(&dir.path().join("s"));
    let csv = person_csv(dir.path(), 200, 5, Encoding::Utf8);
    edit(&csv, 4, 0, "110105194912310021"); // check character
    edit(&csv, 9, 5, "1990-02-30"); // not a real date
    edit(&csv, 14, 3, "7"); // not a sex code
    edit(&csv, 19, 13, "12345"); // not a mobile number
    edit(&csv, 24, 1, ""); // required name missing
    edit(&csv, 29, 8, "990101"); // unknown province prefix

    let err = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::from_path(&csv),
            &LoadOptions {
                strict: true,
                ..opts()
            },
        )
        .expect_err("strict refuses");
    let Error::Rejected {
        rejected,
        total,
        rejects_file,
    } = err
    else {
        panic!("wrong error")
    };
    assert_eq!((rejected, total), (6, 200));
    assert_eq!(
        store.current_version("person").expect("v"),
        0,
        "strict load committed nothing"
    );
    assert!(rejects_file.exists());

    let r = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load("person", Source::from_path(&csv), &opts())
        .expect("lenient");
    assert_eq!(r.manifest.live_rows, 194);
    assert_eq!(r.manifest.handover.rows_rejected, 6);
    let rejects = std::fs::read_to_string(r.rejects_file.expect("rejects file")).expect("read");
    let lines: Vec<&str> = rejects.lines().collect();
    assert_eq!(lines[0], "row,field,reason");
    let expect = [
        ("5,citizen_id,", "check character is 1, expected X"),
        ("10,birth_date,", "not a real date"),
        ("15,sex_code,", "not a code of table 'sex'"),
        ("20,mobile_phone,", "11 digits"),
        ("25,name,", "required field is empty"),
        ("30,hukou_region_code,", "unknown province prefix"),
    ];
    for (prefix, reason) in expect {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(prefix) && l.contains(reason)),
            "missing {prefix} {reason} in\n{rejects}"
        );
    }
    // The rejects file names rules, never the offending values.
    assert!(!rejects.contains("110105194912310021") && !rejects.contains("12345"));
}

#[test]
fn incremental_upsert_and_delete_visible_in_next_version_absent_from_previous() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = person_store(&dir.path().join("s"), 3000);
    let v1 = store.snapshot("person").expect("v1");
    let keys_v1 = keys(&v1);
    let (upd, del) = (keys_v1[10].clone(), keys_v1[20].clone());
    // A brand-new person from another seed.
    let extra = govshare_core::synth::Synth::new(99, 1, 0)
        .persons(1)
        .next()
        .expect("one");
    let new_key = strings(std::slice::from_ref(&extra), "citizen_id")[0].clone();
    let old_row = v1
        .read(
            Some(
                &[v1.lookup(&upd).expect("l").expect("present")]
                    .into_iter()
                    .collect(),
            ),
            None,
        )
        .expect("read");
    let mut changed = old_row[0].clone();
    let addr_idx = changed.schema().index_of("hukou_address").expect("col");
    let mut cols = changed.columns().to_vec();
    cols[addr_idx] = std::sync::Arc::new(arrow::array::StringArray::from(vec![
        "湖南省岳阳市华容县新地址1号",
    ]));
    changed = arrow::array::RecordBatch::try_new(changed.schema(), cols).expect("batch");
    let upserts =
        arrow::compute::concat_batches(&changed.schema(), &[changed, extra]).expect("concat");
    // Deletes ride in the same load through the `_op` column.
    let with_op = |b: &arrow::array::RecordBatch, op: &str| {
        let mut fields = vec![arrow::datatypes::Field::new(
            "_op",
            arrow::datatypes::DataType::Utf8,
            false,
        )];
        fields.extend(
            b.schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone().with_nullable(true)),
        );
        let mut cols: Vec<arrow::array::ArrayRef> = vec![std::sync::Arc::new(
            arrow::array::StringArray::from(vec![op; b.num_rows()]),
        )];
        cols.extend(b.columns().iter().cloned());
        arrow::array::RecordBatch::try_new(
            std::sync::Arc::new(arrow::datatypes::Schema::new(fields)),
            cols,
        )
        .expect("op batch")
    };
    let del_row = v1
        .read(
            Some(
                &[v1.lookup(&del).expect("l").expect("present")]
                    .into_iter()
                    .collect(),
            ),
            None,
        )
        .expect("read");
    let input = vec![with_op(&upserts, "upsert"), with_op(&del_row[0], "delete")];
    let r = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::Batches(input),
            &LoadOptions {
                mode: LoadMode::Incremental,
                ..opts()
            },
        )
        .expect("incremental");
    assert_eq!(r.manifest.operation, Operation::Incremental);
    assert_eq!(
        (
            r.manifest.handover.rows_accepted,
            r.manifest.handover.rows_deleted
        ),
        (2, 1)
    );
    assert_eq!(r.manifest.live_rows, 3000 + 1 - 1);
    // Only a delta file was written; the version-1 files are shared, masked by deletion vectors.
    let v1_files: Vec<_> = v1.manifest().files.iter().map(|f| f.path.clone()).collect();
    assert!(
        v1_files
            .iter()
            .all(|p| r.manifest.files.iter().any(|f| &f.path == p))
    );
    assert_eq!(
        r.manifest.files.iter().map(|f| f.deleted).sum::<u64>(),
        2,
        "old row of the upsert + the delete"
    );

    let v2 = store.snapshot("person").expect("v2");
    let v1_again = store.snapshot_at("person", 1).expect("v1 still readable");
    let addr = |s: &govshare_core::Snapshot, k: &str| {
        let id = s.lookup(k).expect("lookup").expect("present");
        strings(
            &s.read(Some(&[id].into_iter().collect()), Some(&["hukou_address"]))
                .expect("read"),
            "hukou_address",
        )[0]
        .clone()
    };
    assert_eq!(addr(&v2, &upd), "湖南省岳阳市华容县新地址1号");
    assert_ne!(addr(&v1_again, &upd), "湖南省岳阳市华容县新地址1号");
    assert_eq!(v2.lookup(&del).expect("l"), None);
    assert!(v1_again.lookup(&del).expect("l").is_some());
    assert!(v2.lookup(&new_key).expect("l").is_some());
    assert_eq!(v1_again.lookup(&new_key).expect("l"), None);
    // Scans agree with the key index: the deleted key is gone, the upserted one appears once.
    let k2 = keys(&v2);
    assert_eq!(k2.len(), 3000);
    assert!(!k2.contains(&del));
    assert_eq!(k2.iter().filter(|k| **k == upd).count(), 1);
    assert_eq!(keys(&v1_again), keys_v1);
    // Bitmap indexes of v2 exclude replaced/deleted rows and include the new ones.
    let all_sex = &v2.scope("sex_code", "1").expect("s") | &v2.scope("sex_code", "2").expect("s");
    assert_eq!(all_sex, v2.live_rows().expect("live"));

    // Deleting a key that does not exist is a rejection, and strict mode then commits nothing.
    let missing = with_op(&del_row[0], "delete");
    let err = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::Batches(vec![missing]),
            &LoadOptions {
                mode: LoadMode::Incremental,
                strict: true,
                ..opts()
            },
        )
        .expect_err("no such key any more");
    assert!(matches!(err, Error::Rejected { rejected: 1, .. }));
    assert_eq!(store.current_version("person").expect("v"), 2);

    // Compaction folds deletion vectors into new clustered files with identical content.
    let m = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .compact("person")
        .expect("compact");
    assert!(m.files.iter().all(|f| f.deletes.is_none()));
    let v3 = store.snapshot("person").expect("v3");
    assert_eq!(keys(&v3), k2);
    assert_eq!(addr(&v3, &upd), "湖南省岳阳市华容县新地址1号");

    // Vacuum keeps the newest version and removes what only older ones used.
    let report = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .vacuum("person", 1)
        .expect("vacuum");
    assert_eq!(report.versions_removed, vec![1, 2]);
    assert!(report.files_removed > 0);
    assert!(matches!(
        store.snapshot_at("person", 1),
        Err(Error::NotFound(_))
    ));
    assert_eq!(keys(&store.snapshot("person").expect("v3")), k2);
}

#[test]
fn handover_record_and_digest_describe_the_input() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::init_store(&dir.path().join("s"));
    let csv = person_csv(dir.path(), 100, 8, Encoding::Utf8);
    let o = LoadOptions {
        handover: govshare_core::ingest::HandoverInfo {
            provider_dept: "省公安厅".into(),
            handover_person: "李明".into(),
            receiver: "王芳".into(),
            method: "sftp".into(),
            ..Default::default()
        },
        ..opts()
    };
    let r = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load("person", Source::from_path(&csv), &o)
        .expect("load");
    let h = &store.versions("person").expect("versions")[0].handover;
    assert_eq!(h, &r.manifest.handover);
    assert_eq!(
        (
            h.handover_person.as_str(),
            h.receiver.as_str(),
            h.method.as_str()
        ),
        ("李明", "王芳", "sftp")
    );
    assert_eq!(
        h.input_digest,
        blake3::hash(&std::fs::read(&csv).expect("read"))
            .to_hex()
            .to_string()
    );
    assert_eq!(
        (h.rows_read, h.rows_accepted, h.rows_rejected),
        (100, 100, 0)
    );
    assert!(h.completed_at >= h.started_at);
}

#[test]
fn parquet_input_and_wrong_columns() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::init_store(&dir.path().join("s"));
    let p = dir.path().join("p.parquet");
    let batches: Vec<_> = govshare_core::synth::Synth::new(4, 300, 0)
        .persons(100)
        .collect();
    let mut w = parquet::arrow::ArrowWriter::try_new(
        std::fs::File::create(&p).expect("f"),
        batches[0].schema(),
        None,
    )
    .expect("w");
    for b in &batches {
        w.write(b).expect("write");
    }
    w.close().expect("close");
    let r = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load("person", Source::from_path(&p), &opts())
        .expect("parquet");
    assert_eq!(r.manifest.live_rows, 300);

    // A misspelt column fails the whole load with a message naming it; nothing is committed.
    let csv = dir.path().join("typo.csv");
    std::fs::write(&csv, "citizen_id,nmae\n11010519491231002X,张三\n").expect("write");
    let err = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load("person", Source::from_path(&csv), &opts())
        .expect_err("typo");
    assert!(err.to_string().contains("'nmae' is not a field"), "{err}");
    assert_eq!(store.current_version("person").expect("v"), 1);
    // A dataset that does not exist.
    let err = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load("persons", Source::from_path(&csv), &opts())
        .expect_err("unknown");
    assert!(matches!(err, Error::NotFound(_)));
    // Incremental before any full load.
    let err = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "legal_entity",
            Source::from_path(&csv),
            &LoadOptions {
                mode: LoadMode::Incremental,
                ..opts()
            },
        )
        .expect_err("needs a base");
    assert!(
        err.to_string().contains("first load must be a full load"),
        "{err}"
    );
}

#[test]
fn legal_entities_load_and_reference_persons() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::init_store(&dir.path().join("s"));
    let s = govshare_core::synth::Synth::new(11, 2000, 300);
    store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::Batches(s.persons(1000).collect()),
            &opts(),
        )
        .expect("persons");
    store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "legal_entity",
            Source::Batches(s.entities(100).collect()),
            &opts(),
        )
        .expect("entities");
    let persons = store.snapshot("person").expect("p");
    let ents = store.snapshot("legal_entity").expect("e");
    assert_eq!(ents.manifest().live_rows, 300);
    for rep in strings(
        &ents.read(None, Some(&["legal_rep_id"])).expect("read"),
        "legal_rep_id",
    ) {
        assert!(
            persons.lookup(&rep).expect("lookup").is_some(),
            "legal rep {rep} is a person"
        );
    }
    let code = strings(
        &ents
            .read(Some(&[0u32].into_iter().collect()), Some(&["uscc"]))
            .expect("r"),
        "uscc",
    )[0]
    .clone();
    assert_eq!(ents.lookup(&code).expect("l"), Some(0));
}

/// A full load with no valid row — a header-only file, or one whose every row is rejected —
/// commits nothing unless an empty dataset is asked for: a bad delivery never wipes a base
/// database, in lenient or strict mode.
#[test]
fn a_full_load_with_no_valid_row_commits_nothing_unless_asked() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = person_store(&dir.path().join("store"), 300);
    let good = person_csv(dir.path(), 20, 4, Encoding::Utf8);
    let text = std::fs::read_to_string(&good).expect("csv");
    let header = text.lines().next().expect("header").to_string();
    let header_only = dir.path().join("header-only.csv");
    std::fs::write(&header_only, format!("{header}\n")).expect("write");
    // Every row's citizen ID broken (the first column is the key).
    let all_bad = dir.path().join("all-bad.csv");
    let broken: String = text
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == 0 {
                format!("{l}\n")
            } else {
                let rest = l.split_once(',').map_or("", |(_, r)| r);
                format!("not-an-id,{rest}\n")
            }
        })
        .collect();
    std::fs::write(&all_bad, broken).expect("write");
    for (file, strict) in [
        (&header_only, false),
        (&header_only, true),
        (&all_bad, false),
    ] {
        let r = store.writer(govshare_testkit::OPS).expect("w").load(
            "person",
            Source::from_path(file),
            &LoadOptions { strict, ..opts() },
        );
        assert!(
            matches!(&r, Err(Error::InvalidInput(m)) if m.contains("empty")),
            "{file:?} strict={strict}: {r:?}"
        );
        assert_eq!(store.current_version("person").expect("v"), 1);
        assert_eq!(
            store.snapshot("person").expect("s").manifest().live_rows,
            300
        );
    }
    // Asked for, the dataset is emptied as a new version.
    let r = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::from_path(&header_only),
            &LoadOptions {
                allow_empty: true,
                ..opts()
            },
        )
        .expect("empty on purpose");
    assert_eq!(r.manifest.live_rows, 0);
    assert_eq!(store.current_version("person").expect("v"), 2);
}

/// Types are converted only where the catalog says so: a typed column whose values would
/// change meaning on the way (an int64 read as days since 1970, a number as a code) refuses
/// the load with the column, the input type and the declared type.
#[test]
fn a_typed_column_is_never_reinterpreted() {
    use arrow::array::{Array, Int64Array, RecordBatch};
    use arrow::datatypes::{DataType, Field, Schema};
    use std::sync::Arc;
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::init_store(&dir.path().join("s"));
    let batch = govshare_core::synth::Synth::new(4, 50, 0)
        .persons(50)
        .next()
        .expect("batch");
    let swap = |name: &str, col: Arc<dyn Array>, ty: DataType| {
        let schema = batch.schema();
        let idx = schema.index_of(name).expect("column");
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        fields[idx] = Field::new(name, ty, true);
        let mut cols = batch.columns().to_vec();
        cols[idx] = col;
        RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("batch")
    };
    let days: Int64Array = (0..50).map(|i| Some(7_000 + i)).collect();
    let as_int = swap("birth_date", Arc::new(days), DataType::Int64);
    let err = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load("person", Source::Batches(vec![as_int]), &opts())
        .expect_err("an int64 is not a date");
    match err {
        Error::InvalidInput(m) => {
            assert!(
                m.contains("'birth_date' is Int64") && m.contains("date32"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    let codes: Int64Array = (0..50).map(|_| Some(430_623)).collect();
    let as_int = swap("hukou_region_code", Arc::new(codes), DataType::Int64);
    assert!(matches!(
        store.writer(govshare_testkit::OPS).expect("w").load(
            "person",
            Source::Batches(vec![as_int]),
            &opts()
        ),
        Err(Error::InvalidInput(_))
    ));
    assert_eq!(
        store.current_version("person").expect("v"),
        0,
        "nothing committed"
    );
}

/// Control characters and oversize text are rejected row by row with the rule (and the value
/// never appears in the message or the rejects file).
#[test]
fn control_characters_and_oversize_text_are_rejected_with_the_rule() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::init_store(&dir.path().join("s"));
    let csv = person_csv(dir.path(), 40, 9, Encoding::Utf8);
    let header = std::fs::read_to_string(&csv).expect("csv");
    let cols: Vec<&str> = header.lines().next().expect("header").split(',').collect();
    let name = cols.iter().position(|c| *c == "name").expect("name");
    let addr = cols
        .iter()
        .position(|c| *c == "hukou_address")
        .expect("address");
    edit(&csv, 3, name, "张\u{7}三");
    edit(&csv, 5, addr, &"长".repeat(5000));
    let r = store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load("person", Source::from_path(&csv), &opts())
        .expect("lenient load");
    assert_eq!(r.manifest.handover.rows_rejected, 2);
    let rejects = std::fs::read_to_string(r.rejects_file.expect("rejects")).expect("read");
    assert!(rejects.contains("control character"), "{rejects}");
    assert!(rejects.contains("longer than 4096 characters"), "{rejects}");
    assert!(
        !rejects.contains('\u{7}') && !rejects.contains("长长"),
        "{rejects}"
    );
}

/// Data files are laid out for reading one subject: identifier and name columns in small
/// pages (a write batch of 1024 rows or two) with an offset index, so a key lookup decodes one
/// small page per column, and without a dictionary — an overflowed dictionary page would have
/// to be decoded first by every read of the column chunk. Code columns keep their dictionary
/// and long pages (what makes scans fast).
/// The data file of a version with the most rows.
fn largest_file(snap: &govshare_core::Snapshot) -> &govshare_core::store::DataFile {
    snap.manifest()
        .files
        .iter()
        .max_by_key(|f| f.rows)
        .expect("a file")
}

#[test]
fn files_have_small_indexed_pages_and_no_dictionary_for_identifiers() {
    use datafusion::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
    use datafusion::parquet::file::metadata::PageIndexPolicy;
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::generated_store(dir.path(), 3, 25_000, 0, 4096);
    let snap = store.snapshot("person").expect("snap");
    let f = largest_file(&snap);
    assert!(f.rows > 1024, "a file of several pages");
    let file = std::fs::File::open(dir.path().join("datasets/person").join(&f.path)).expect("open");
    let options = ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
    let meta = ArrowReaderMetadata::load(&file, options).expect("metadata with page index");
    let md = meta.metadata();
    let offsets = md.offset_index().expect("an offset index");
    let column = |name: &str| {
        md.file_metadata()
            .schema_descr()
            .columns()
            .iter()
            .position(|c| c.name() == name)
            .expect("column")
    };
    for (g, group) in md.row_groups().iter().enumerate() {
        let page_rows = |name: &str| {
            let pages = offsets[g][column(name)].page_locations();
            let mut firsts: Vec<i64> = pages.iter().map(|p| p.first_row_index).collect();
            firsts.push(group.num_rows());
            firsts.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
        };
        for name in ["citizen_id", "name", "mobile_phone"] {
            assert!(page_rows(name) <= 2048, "{name}: small pages");
        }
        assert_eq!(
            page_rows("sex_code"),
            group.num_rows(),
            "a code column's row group is one page"
        );
        for name in ["citizen_id", "name", "mobile_phone"] {
            assert!(
                group
                    .column(column(name))
                    .dictionary_page_offset()
                    .is_none(),
                "{name}: no dictionary page"
            );
        }
        assert!(
            group
                .column(column("sex_code"))
                .dictionary_page_offset()
                .is_some(),
            "a code column keeps its dictionary"
        );
    }
}

/// A point read (a few rows of a file) comes from the file's row blocks and equals what the
/// Parquet scan holds for those rows, for every column type of both datasets, in any column
/// order, with deleted rows left out; a damaged row-block file is an error, never a row.
#[test]
fn point_reads_from_row_blocks_equal_the_scan_and_fail_closed_when_damaged() {
    use arrow::array::UInt32Array;
    let dir = tempfile::tempdir().expect("tmp");
    let store = govshare_testkit::generated_store(dir.path(), 5, 4000, 3000, 1024);
    // A fixed xorshift sequence: the same picks every run.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut below = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    for dataset in ["person", "legal_entity"] {
        let snap = store.snapshot(dataset).expect("snap");
        assert!(
            snap.manifest().files.iter().all(|f| f.row_blocks.is_some()),
            "every data file of {dataset} has row blocks"
        );
        let full = arrow::compute::concat_batches(
            &snap.dataset().arrow_schema(),
            &snap.read(None, None).expect("scan"),
        )
        .expect("concat");
        let live: Vec<u32> = snap.live_rows().expect("live").iter().collect();
        let names: Vec<String> = snap
            .dataset()
            .fields
            .iter()
            .map(|f| f.name.clone())
            .collect();
        for round in 0..40 {
            let n = 1 + below(64);
            let picks: std::collections::BTreeSet<usize> =
                (0..n).map(|_| below(live.len())).collect();
            let ids: roaring::RoaringBitmap = picks.iter().map(|&i| live[i]).collect();
            // Columns in a shuffled order, sometimes repeated, sometimes all.
            let cols: Vec<&str> = if round % 4 == 0 {
                names.iter().map(String::as_str).collect()
            } else {
                (0..1 + below(5))
                    .map(|_| names[below(names.len())].as_str())
                    .collect()
            };
            let got = snap.read(Some(&ids), Some(&cols)).expect("point read");
            let got = arrow::compute::concat_batches(&got[0].schema(), &got).expect("concat");
            let idx = UInt32Array::from(picks.iter().map(|&i| i as u32).collect::<Vec<_>>());
            let positions: Vec<usize> = cols
                .iter()
                .map(|c| names.iter().position(|n| n == c).expect("col"))
                .collect();
            let want = arrow::compute::take_record_batch(&full, &idx)
                .expect("take")
                .project(&positions)
                .expect("project");
            assert_eq!(got, want, "{dataset} round {round}");
        }
    }
    // Damage one byte inside the first block of the largest person file: the point read of a
    // row in it fails as corrupt; a scan (Parquet, for more than a few rows) still reads.
    let snap = store.snapshot("person").expect("snap");
    let f = largest_file(&snap);
    assert!(f.rows > 64);
    let wide: roaring::RoaringBitmap = (f.row_base..f.row_base + f.rows as u32).collect();
    let path = dir
        .path()
        .join("datasets/person")
        .join(f.row_blocks.as_ref().expect("blocks"));
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[12] ^= 0x20;
    std::fs::write(&path, &bytes).expect("write");
    let fresh = store.snapshot("person").expect("fresh snapshot");
    let first: roaring::RoaringBitmap = [f.row_base].into_iter().collect();
    assert!(matches!(
        fresh.read(Some(&first), None),
        Err(Error::Corrupt(_))
    ));
    assert_eq!(
        fresh
            .read(Some(&wide), Some(&["citizen_id"]))
            .expect("scan")
            .iter()
            .map(|b| b.num_rows())
            .sum::<usize>(),
        f.rows as usize
    );
}
