//! The journal writer against a real SQLite database on disk.

use std::collections::BTreeMap;

use storegate::config::Durability;
use storegate::db::{self, StoreError, Writer, journal, writer::NoProjections};
use storegate::event::{EventBody, NewEvent, Reading, StockReceipt, now_millis};

fn reading(device: &str, n: usize) -> NewEvent {
    NewEvent::new(
        now_millis(),
        device,
        EventBody::Reading(Reading {
            name: format!("n{n}"),
            value: n as f64,
            unit: "x".into(),
        }),
    )
}

fn start(dir: &tempfile::TempDir) -> (Writer, db::WriterThread, std::path::PathBuf) {
    let path = dir.path().join("storegate.db");
    let conn = db::open_write(&path, Durability::Full).unwrap();
    let (w, t) = Writer::spawn(conn, Box::new(NoProjections)).unwrap();
    (w, t, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_producers_get_gapless_ordered_seqs_matching_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, thread, path) = start(&dir);
    let mut tasks = Vec::new();
    for p in 0..32 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..100 {
                let batch: Vec<NewEvent> = (0..1 + i % 3)
                    .map(|k| reading(&format!("p{p}"), i * 10 + k))
                    .collect();
                let appended = writer.append(batch.clone()).await.unwrap();
                assert_eq!(appended.len(), batch.len());
                for (e, a) in batch.into_iter().zip(appended) {
                    assert!(!a.duplicate);
                    mine.push((a.seq, e));
                }
            }
            mine
        }));
    }
    let mut expected = BTreeMap::new();
    for t in tasks {
        let mine = t.await.unwrap();
        // Each producer's events keep the order it submitted them in.
        assert!(mine.windows(2).all(|w| w[0].0 < w[1].0));
        for (seq, e) in mine {
            assert!(
                expected.insert(seq, e).is_none(),
                "seq {seq} handed out twice"
            );
        }
    }
    drop(writer);
    thread.join();

    let conn = db::open_read(&path).unwrap();
    let stored = journal::events_after(&conn, 0, 1_000_000).unwrap();
    assert_eq!(stored.len(), expected.len());
    for (i, (event, (seq, sent))) in stored.iter().zip(&expected).enumerate() {
        assert_eq!(event.seq, i as i64 + 1, "no gaps");
        assert_eq!(event.seq, *seq);
        assert_eq!(event, &sent.clone().with_seq(*seq));
    }
    assert_eq!(journal::head(&conn).unwrap(), expected.len() as i64);
}

#[tokio::test]
async fn redelivered_events_are_journaled_once() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, thread, path) = start(&dir);
    let receipt = NewEvent::new(
        now_millis(),
        "api",
        EventBody::Receipt(StockReceipt {
            delivery_id: "D-77".into(),
            sku: "SKU-1001".into(),
            qty: 24,
        }),
    );
    let first = writer.append(vec![receipt.clone()]).await.unwrap();
    let again = writer
        .append(vec![receipt.clone(), reading("x", 1)])
        .await
        .unwrap();
    assert!(!first[0].duplicate);
    assert!(again[0].duplicate);
    assert_eq!(again[0].seq, first[0].seq);
    assert_eq!(again[1].seq, first[0].seq + 1, "a duplicate takes no seq");
    drop(writer);
    thread.join();
    let conn = db::open_read(&path).unwrap();
    assert_eq!(journal::events_after(&conn, 0, 100).unwrap().len(), 2);
}

#[tokio::test]
async fn a_failing_job_is_rolled_back_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, thread, path) = start(&dir);
    // Many jobs in flight so that they share commit groups.
    let mut tasks = Vec::new();
    for i in 0..200 {
        let writer = writer.clone();
        tasks.push(tokio::spawn(async move {
            writer
                .transact(move |w| {
                    w.append(reading("t", i))?;
                    if i % 2 == 1 {
                        return Err(StoreError::Rejected(format!("job {i} refuses")));
                    }
                    Ok(i)
                })
                .await
        }));
    }
    let mut ok = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(v) => {
                assert_eq!(v, i);
                ok += 1;
            }
            Err(e) => assert_eq!(e.to_string(), format!("job {i} refuses")),
        }
    }
    drop(writer);
    thread.join();
    assert_gapless(&path, ok, "rolled-back jobs leave no gap");
}

/// The journal holds `count` events with seqs 1..=count.
fn assert_gapless(path: &std::path::Path, count: usize, why: &str) {
    let conn = db::open_read(path).unwrap();
    let stored = journal::events_after(&conn, 0, 1000).unwrap();
    assert_eq!(stored.len(), count);
    assert!(
        stored
            .iter()
            .enumerate()
            .all(|(i, e)| e.seq == i as i64 + 1),
        "{why}"
    );
}

/// Appends queued together share one savepoint; one refused append among
/// them must still be refused alone, the others committed without a gap.
#[tokio::test]
async fn a_refused_append_among_many_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, thread, path) = start(&dir);
    // Hold the writer so that every append below waits in one group.
    let (release, hold) = std::sync::mpsc::channel::<()>();
    let holder = writer.clone();
    let holding = tokio::spawn(async move {
        holder
            .transact(move |_| {
                let _ = hold.recv();
                Ok(())
            })
            .await
    });
    let mut tasks = Vec::new();
    for i in 0..100 {
        let writer = writer.clone();
        let mut event = reading("t", i);
        if i % 10 == 7 {
            // Over the bounds: the writer refuses it.
            event.body = EventBody::Reading(Reading {
                name: format!("n{i}"),
                value: f64::NAN,
                unit: "x".into(),
            });
        }
        tasks.push(tokio::spawn(async move {
            writer.append(vec![reading("t", 1000 + i), event]).await
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    release.send(()).unwrap();
    holding.await.unwrap().unwrap();
    let mut ok = 0;
    for (i, t) in tasks.into_iter().enumerate() {
        match t.await.unwrap() {
            Ok(appended) => {
                assert_ne!(i % 10, 7, "append {i} with a NaN reading was journaled");
                assert_eq!(appended.len(), 2);
                ok += 2;
            }
            Err(e) => {
                assert_eq!(i % 10, 7, "append {i} refused: {e}");
                assert!(matches!(e, StoreError::Rejected(_)), "{e}");
            }
        }
    }
    assert_eq!(ok, 180);
    drop(writer);
    thread.join();
    assert_gapless(&path, ok, "a refused append leaves no gap");
}

#[tokio::test]
async fn seqs_continue_after_restart_even_when_the_head_was_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, thread, path) = start(&dir);
    writer
        .append(vec![reading("a", 1), reading("a", 2)])
        .await
        .unwrap();
    writer
        .transact(|w| {
            w.conn()
                .execute("DELETE FROM journal", [])
                .map_err(|source| StoreError::Sqlite {
                    context: "test",
                    source,
                })?;
            Ok(())
        })
        .await
        .unwrap();
    drop(writer);
    thread.join();
    let conn = db::open_write(&path, Durability::Full).unwrap();
    let (writer, thread) = Writer::spawn(conn, Box::new(NoProjections)).unwrap();
    let a = writer.append(vec![reading("a", 3)]).await.unwrap();
    assert_eq!(a[0].seq, 3);
    drop(writer);
    thread.join();
}

#[tokio::test]
async fn quarantine_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (writer, thread, path) = start(&dir);
    let max = storegate::db::writer::QUARANTINE_MAX_ROWS as usize;
    writer
        .transact(move |w| {
            for i in 0..max + 500 {
                w.quarantine("m100", "bad checksum", &[0xBB, i as u8])?;
            }
            Ok(())
        })
        .await
        .unwrap();
    drop(writer);
    thread.join();
    let conn = db::open_read(&path).unwrap();
    let n = journal::quarantined(&conn).unwrap() as usize;
    assert!(n <= max && n >= max - 100, "{n} rows kept");
}
