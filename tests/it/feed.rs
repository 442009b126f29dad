//! The change feed (push): the inserts, updates and deletes since the subscriber's last
//! acknowledgement, through the grant's fields, masks and scope; delivered again until
//! acknowledged, once after; exactly once across a subscriber killed between read and ack.

use std::process::Command;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::{Field, Schema};
use govshare_core::access::policy::{AuthMethod, Login, Mode, Treatment};
use govshare_core::catalog::MaskKind;
use govshare_core::engine::Engine;
use govshare_core::ingest::{LoadMode, LoadOptions, Source};
use govshare_core::synth::Synth;
use govshare_core::{Error, Store};

use crate::access::{approve, request, small_store};

fn push_grant(store: &Store, county: &str) {
    let mut r = request(
        "A",
        "person",
        &[
            ("citizen_id", Treatment::Clear),
            ("name", Treatment::Masked(MaskKind::Name)),
            ("sex_code", Treatment::Clear),
            ("hukou_region_code", Treatment::Clear),
        ],
    );
    r.modes = vec![Mode::Push];
    r.scope = govshare_testkit::regions(&[county]);
    approve(store, r, "psb");
}

fn login() -> Login {
    // The citizen ID in clear is a sensitive item: a second factor.
    Login::new("a", "P", AuthMethod::SecondFactor)
}

/// (op, citizen_id) of every change, sorted.
fn ops(b: &[RecordBatch]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = b
        .iter()
        .flat_map(|b| {
            let op = b
                .column(0)
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("op");
            let id = b
                .column_by_name("citizen_id")
                .expect("id")
                .as_any()
                .downcast_ref::<StringArray>()
                .expect("id")
                .clone();
            (0..b.num_rows())
                .map(|i| (op.value(i).to_string(), id.value(i).to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort();
    out
}

/// All columns of the rows with these keys, with an `_op` column first and `edit` applied to
/// (column name, values).
fn rows_with_op(
    store: &Store,
    keys: &[&str],
    op: &str,
    edit: &dyn Fn(&str, ArrayRef) -> ArrayRef,
) -> RecordBatch {
    let snap = store.snapshot("person").expect("snap");
    let ids: roaring::RoaringBitmap = keys
        .iter()
        .map(|k| snap.lookup(k).expect("l").expect("present"))
        .collect();
    let b = snap.read(Some(&ids), None).expect("read");
    let b = arrow::compute::concat_batches(&b[0].schema(), &b).expect("concat");
    with_op(&b, op, edit)
}

fn with_op(b: &RecordBatch, op: &str, edit: &dyn Fn(&str, ArrayRef) -> ArrayRef) -> RecordBatch {
    let mut fields = vec![Field::new("_op", arrow::datatypes::DataType::Utf8, false)];
    let mut cols: Vec<ArrayRef> = vec![Arc::new(StringArray::from(vec![op; b.num_rows()]))];
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        fields.push(f.as_ref().clone());
        cols.push(edit(f.name(), c.clone()));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("batch")
}

fn load(store: &Store, batches: Vec<RecordBatch>) {
    store
        .writer(govshare_testkit::OPS)
        .expect("w")
        .load(
            "person",
            Source::Batches(batches),
            &LoadOptions {
                mode: LoadMode::Incremental,
                ..crate::common::opts()
            },
        )
        .expect("incremental load");
}

/// The first read delivers the scope as inserts, again and again until acknowledged, then
/// nothing; after a load, exactly its effect on the grant's view: an update, a delete, a
/// subject that left the scope as a delete, a new subject as an insert — not a change outside
/// the scope, nor one a mask hides; a subscription must see its key as itself.
#[test]
fn changes_are_what_the_grant_sees_change_and_come_until_acknowledged() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let county = govshare_testkit::largest_county(&store);
    push_grant(&store, &county);
    let snap = store.snapshot("person").expect("snap");
    let inside_rows = snap.scope("hukou_region_code", &county).expect("scope");
    let keys = govshare_testkit::strings(&snap.read(None, Some(&["citizen_id"])).expect("k"), 0);
    let index = snap.key_index().expect("index");
    let (inside, outside): (Vec<&String>, Vec<&String>) = keys
        .iter()
        .partition(|k| inside_rows.contains(index.get(k).expect("row")));
    let engine = Engine::open(store.root()).expect("engine");
    let a = engine.session_as(&login()).expect("a");
    let first = a.changes("person").expect("changes");
    assert_eq!((first.from, first.to), (0, snap.version()));
    assert_eq!(first.result.num_rows(), inside.len(), "the whole scope");
    assert!(
        ops(&first.result.batches)
            .iter()
            .all(|(op, _)| op == "insert")
    );
    assert_eq!(first.result.schema.field(0).name(), "_op");
    // Not acknowledged: the same changes again.
    let again = a.changes("person").expect("again");
    assert_eq!(ops(&again.result.batches), ops(&first.result.batches));
    assert_eq!(again.to, first.to);
    a.ack("person", first.to).expect("ack");
    let none = a.changes("person").expect("none");
    assert_eq!((none.from, none.result.num_rows()), (first.to, 0));
    // A load: rename one subject inside (new surname: the masked name changes), delete one,
    // move one to another county, add one, rename one outside, and change one inside only
    // where the mask hides it (same surname).
    let (renamed, deleted, moved, hidden) = (inside[0], inside[1], inside[2], inside[3]);
    let elsewhere = outside[0];
    let other_county = {
        let b = store
            .snapshot("person")
            .expect("s")
            .read(
                Some(&[index.get(elsewhere).expect("r")].into_iter().collect()),
                Some(&["hukou_region_code"]),
            )
            .expect("r");
        govshare_testkit::strings(&b, 0)[0].clone()
    };
    let set = |col: &'static str, value: String| {
        move |name: &str, c: ArrayRef| -> ArrayRef {
            if name == col {
                Arc::new(StringArray::from(vec![value.clone(); c.len()]))
            } else {
                c
            }
        }
    };
    let keep = |_: &str, c: ArrayRef| c;
    let same_surname = {
        let b = snap
            .read(
                Some(&[index.get(hidden).expect("r")].into_iter().collect()),
                Some(&["name"]),
            )
            .expect("r");
        let n = govshare_testkit::strings(&b, 0)[0].clone();
        // The same surname and length: the masked name (surname and stars) stays the same.
        let surname: String = n.chars().take(1).collect();
        let rest = "某".repeat(n.chars().count() - 1);
        assert_ne!(format!("{surname}{rest}"), n);
        format!("{surname}{rest}")
    };
    let newcomer = {
        let b = Synth::new(4242, 1, 0).persons(1).next().expect("one");
        let b = arrow::compute::concat_batches(&b.schema(), &[b]).expect("c");
        with_op(&b, "upsert", &set("hukou_region_code", county.clone()))
    };
    let newcomer_id = newcomer
        .column_by_name("citizen_id")
        .expect("id")
        .as_any()
        .downcast_ref::<StringArray>()
        .expect("s")
        .value(0)
        .to_string();
    load(
        &store,
        vec![
            rows_with_op(&store, &[renamed], "upsert", &set("name", "司马懿".into())),
            rows_with_op(&store, &[deleted], "delete", &keep),
            rows_with_op(
                &store,
                &[moved],
                "upsert",
                &set("hukou_region_code", other_county),
            ),
            rows_with_op(
                &store,
                &[elsewhere],
                "upsert",
                &set("name", "司马昭".into()),
            ),
            rows_with_op(&store, &[hidden], "upsert", &set("name", same_surname)),
            newcomer,
        ],
    );
    let after = a.changes("person").expect("after the load");
    assert_eq!(after.from, first.to);
    let mut want = vec![
        ("delete".to_string(), deleted.clone()),
        ("delete".to_string(), moved.clone()),
        ("insert".to_string(), newcomer_id),
        ("update".to_string(), renamed.clone()),
    ];
    want.sort();
    assert_eq!(ops(&after.result.batches), want);
    a.ack("person", after.to).expect("ack");
    assert_eq!(a.changes("person").expect("none").result.num_rows(), 0);
    // A compaction rewrites every file: the same rows, so no change.
    engine
        .compact(govshare_testkit::OPS, "person")
        .expect("compact");
    let compacted = a.changes("person").expect("after compaction");
    assert!(compacted.to > after.to);
    assert_eq!(compacted.result.num_rows(), 0, "a rewrite is no change");
    a.ack("person", compacted.to).expect("ack");
    // An old token changes nothing; a token from the future is refused.
    a.ack("person", first.to).expect("old token");
    assert!(matches!(
        a.ack("person", after.to + 5),
        Err(Error::InvalidInput(_))
    ));
    // Who-accessed shows the delivery of the renamed subject.
    let delivered = engine
        .who_accessed("aud", renamed)
        .expect("who")
        .into_iter()
        .filter(|x| x.sql.starts_with("changes of person"))
        .count();
    assert!(
        delivered >= 2,
        "the first delivery and the update: {delivered}"
    );
}

/// A grant whose key is masked cannot subscribe (changes are matched by key); a query grant
/// does not read changes; both refusals recorded.
#[test]
fn a_subscription_needs_a_push_grant_with_its_key() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(dir.path());
    let mut r = request(
        "A",
        "person",
        &[
            ("citizen_id", Treatment::Masked(MaskKind::CitizenId)),
            ("sex_code", Treatment::Clear),
        ],
    );
    r.modes = vec![Mode::Push];
    approve(&store, r, "psb");
    approve(
        &store,
        request("B", "person", &[("sex_code", Treatment::Clear)]),
        "psb",
    );
    let engine = Engine::open(store.root()).expect("engine");
    let e = engine
        .session("a", "P")
        .expect("a")
        .changes("person")
        .expect_err("masked key");
    assert!(
        matches!(e, Error::AccessDenied(ref m) if m.contains("pseudonym")),
        "{e}"
    );
    let e = engine
        .session("b", "P")
        .expect("b")
        .changes("person")
        .expect_err("query grant");
    assert!(
        matches!(e, Error::AccessDenied(ref m) if m.contains("Push")),
        "{e}"
    );
}

/// Exactly once across a subscriber killed between reading and acknowledging: the command-line
/// subscriber has written the changes and is stopped just before its acknowledgement, where
/// this test kills it with SIGKILL; the next run delivers the same changes (same token) and
/// acknowledges them; the run after that delivers nothing.
#[test]
fn a_subscriber_killed_before_its_ack_gets_the_same_changes_once_more_and_then_none() {
    let dir = tempfile::tempdir().expect("tmp");
    let store = small_store(&dir.path().join("store"));
    let county = govshare_testkit::largest_county(&store);
    push_grant(&store, &county);
    let command = |out: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_govshare"));
        c.arg("--store")
            .arg(dir.path().join("store"))
            .args([
                "changes",
                "--user",
                "a",
                "--purpose",
                "P",
                "--auth",
                "second-factor",
                "person",
                "--ack",
                "--out",
            ])
            .arg(dir.path().join(out));
        c
    };
    let run = |out: &str| command(out).output().expect("run govshare");
    let paused = dir.path().join("at-ack");
    let mut victim = command("one.csv")
        .env(
            "GOVSHARE_FAILPOINT",
            format!("feed_before_ack:pause={}", paused.display()),
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn govshare");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !paused.exists() {
        if let Some(status) = victim.try_wait().expect("poll") {
            panic!("the subscriber ended ({status}) before reaching its acknowledgement");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriber never reached its acknowledgement"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    victim.kill().expect("SIGKILL"); // std's kill is SIGKILL on Unix
    let status = victim.wait().expect("reap");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by SIGKILL"
    );
    let first = std::fs::read_to_string(dir.path().join("one.csv")).expect("read before the kill");
    let second = run("two.csv");
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let redelivered = std::fs::read_to_string(dir.path().join("two.csv")).expect("two");
    assert_eq!(first, redelivered, "the same changes again");
    assert!(first.lines().count() > 1);
    let third = run("three.csv");
    assert!(third.status.success());
    let none = std::fs::read_to_string(dir.path().join("three.csv")).expect("three");
    assert_eq!(none.lines().count(), 1, "only the header: delivered once");
    // The trail: one acknowledgement recorded.
    let engine = Engine::open(dir.path().join("store")).expect("engine");
    let acks = engine
        .audit()
        .records()
        .expect("records")
        .iter()
        .filter(|r| r.kind == "feed_ack" && r.body["outcome"] == "allowed")
        .count();
    assert_eq!(acks, 1);
}
