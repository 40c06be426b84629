//! The stock ledger against a simple model: random interleavings of
//! sales, returns, receipts, adjustments, counts and baselines (late ones,
//! and ones including only part of the local events) always give on hand
//! equal to the model, and `rebuild` gives exactly the live projection.

use std::collections::BTreeMap;

use proptest::prelude::*;
use storegate::config::Durability;
use storegate::db::{self, Writer};
use storegate::domain::counts::{self, CountLine};
use storegate::domain::stock::{self, Baseline, BaselineItem};
use storegate::domain::{Projections, rebuild};
use storegate::event::{EventBody, NewEvent, SaleLine, StockReceipt, now_millis};

const SKUS: [&str; 3] = ["SKU-A", "SKU-B", "SKU-C"];

#[derive(Debug, Clone)]
enum Op {
    Sale {
        sku: usize,
        qty: i64,
    },
    Return {
        sku: usize,
        qty: i64,
    },
    Receipt {
        sku: usize,
        qty: i64,
    },
    Adjust {
        sku: usize,
        delta: i64,
    },
    Count {
        sku: usize,
        counted: i64,
    },
    /// Central's baseline: includes local events up to `upto` (a fraction
    /// of the head), version `version` (may be older than one already seen).
    Baseline {
        upto_permille: u32,
        version: i64,
        on_hand: [i64; 3],
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..3usize, 1..5i64).prop_map(|(sku, qty)| Op::Sale { sku, qty }),
        (0..3usize, 1..3i64).prop_map(|(sku, qty)| Op::Return { sku, qty }),
        (0..3usize, 1..30i64).prop_map(|(sku, qty)| Op::Receipt { sku, qty }),
        (0..3usize, -5..5i64).prop_map(|(sku, delta)| Op::Adjust { sku, delta }),
        (0..3usize, 0..40i64).prop_map(|(sku, counted)| Op::Count { sku, counted }),
        (0..=1000u32, 1..20i64, proptest::array::uniform3(0..50i64)).prop_map(
            |(upto_permille, version, on_hand)| Op::Baseline {
                upto_permille,
                version,
                on_hand
            }
        ),
    ]
}

/// The model: every stock move with its seq, and per SKU the baseline in force.
#[derive(Default)]
struct Model {
    moves: Vec<(i64, usize, i64)>,
    baselines: BTreeMap<usize, (i64, i64, i64)>, // sku -> (version, through_seq, on_hand)
}

impl Model {
    fn on_hand(&self, sku: usize) -> i64 {
        let (through, base) = self.baselines.get(&sku).map_or((0, 0), |b| (b.1, b.2));
        base + self
            .moves
            .iter()
            .filter(|m| m.1 == sku && m.0 > through)
            .map(|m| m.2)
            .sum::<i64>()
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("storegate.db");
        let conn = db::open_write(&path, Durability::Normal).unwrap();
        let (writer, thread) = Writer::spawn(conn, Box::new(Projections::default())).unwrap();
        let mut model = Model::default();
        let mut head = 0i64;
        for (i, op) in ops.into_iter().enumerate() {
            let sale = |sku: usize, qty: i64| SaleLine {
                receipt_id: format!("R{i}"),
                line: 1,
                sku: SKUS[sku].into(),
                gtin: None,
                qty,
                unit_price_minor: 100,
                currency: "EUR".into(),
                pos: "1".into(),
                member_hash: None,
            };
            let body = match op {
                Op::Sale { sku, qty } => Some((sku, -qty, EventBody::Sale(sale(sku, qty)))),
                Op::Return { sku, qty } => Some((sku, qty, EventBody::Return(sale(sku, qty)))),
                Op::Receipt { sku, qty } => Some((
                    sku,
                    qty,
                    EventBody::Receipt(StockReceipt {
                        delivery_id: format!("D{i}"),
                        sku: SKUS[sku].into(),
                        qty,
                    }),
                )),
                Op::Adjust { sku, delta } => Some((
                    sku,
                    delta,
                    EventBody::Adjustment(storegate::event::Adjustment {
                        sku: SKUS[sku].into(),
                        delta,
                        reason: "manual".into(),
                        by: None,
                    }),
                )),
                Op::Count { sku, counted } => {
                    let expected = model.on_hand(sku);
                    let results = writer
                        .transact(move |w| {
                            let session_id = format!("C{i}");
                            let session = counts::CountSession {
                                device: "api",
                                session_id: &session_id,
                                zone: "A1",
                                method: "scan",
                                apply: true,
                                by: None,
                            };
                            let line = CountLine {
                                sku: SKUS[sku].into(),
                                counted,
                            };
                            counts::record_count(w, &session, &[line])
                        })
                        .await
                        .unwrap();
                    prop_assert_eq!(results[0].expected, expected);
                    // The count itself and, if it differed, its adjustment.
                    head += 1;
                    if counted != expected {
                        head += 1;
                        model.moves.push((head, sku, counted - expected));
                    }
                    None
                }
                Op::Baseline {
                    upto_permille,
                    version,
                    on_hand,
                } => {
                    let through_seq = head * upto_permille as i64 / 1000;
                    let items: Vec<BaselineItem> = SKUS
                        .iter()
                        .zip(on_hand)
                        .map(|(s, n)| BaselineItem {
                            sku: s.to_string(),
                            on_hand: n,
                        })
                        .collect();
                    let b = Baseline {
                        version,
                        through_seq,
                        items,
                    };
                    writer
                        .transact(move |w| stock::apply_baseline(w.conn(), &b))
                        .await
                        .unwrap();
                    for (sku, &n) in on_hand.iter().enumerate() {
                        if model
                            .baselines
                            .get(&sku)
                            .is_none_or(|b| b.0 < version && b.1 <= through_seq)
                        {
                            model.baselines.insert(sku, (version, through_seq, n));
                        }
                    }
                    None
                }
            };
            if let Some((sku, delta, body)) = body {
                let a = writer
                    .append(vec![NewEvent::new(now_millis(), "pos-1", body)])
                    .await
                    .unwrap();
                // Derived events (alerts) take seqs too; read the true head.
                model.moves.push((a[0].seq, sku, delta));
            }
            head = writer
                .transact(|w| db::journal::head(w.conn()))
                .await
                .unwrap();
        }
        let live: Vec<(String, i64)> = writer
            .transact(|w| stock::all_on_hand(w.conn()))
            .await
            .unwrap();
        for (sku, name) in SKUS.iter().enumerate() {
            let got = live.iter().find(|(s, _)| s == name).map_or(0, |(_, n)| *n);
            prop_assert_eq!(got, model.on_hand(sku), "on hand of {}", name);
        }
        let rebuilt = writer
            .transact(|w| {
                rebuild(w.conn())?;
                stock::all_on_hand(w.conn())
            })
            .await
            .unwrap();
        prop_assert_eq!(&rebuilt, &live);
        drop(writer);
        thread.join();
        Ok::<(), TestCaseError>(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn on_hand_always_equals_the_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}

#[test]
fn an_older_baseline_arriving_late_is_ignored() {
    run(vec![
        Op::Receipt { sku: 0, qty: 10 },
        Op::Baseline {
            upto_permille: 1000,
            version: 5,
            on_hand: [7, 0, 0],
        },
        Op::Sale { sku: 0, qty: 2 },
        Op::Baseline {
            upto_permille: 0,
            version: 3,
            on_hand: [100, 100, 100],
        },
    ])
    .unwrap();
}
