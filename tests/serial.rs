//! The serial transport against real pseudo-terminals (socat pty pairs):
//! the agent opens one end as its serial port, the test plays the device
//! on the other. Covers the M100 RFID codec and the ESC/POS receipt codec
//! end to end (bytes on the line -> journal / quarantine), and a port that
//! disappears and comes back (a USB reader unplugged and replugged).

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{PtyPair, Store, wait_for_async};
use storegate::codecs::m100::{MULTI_POLL, STOP, frame};
use storegate::event::{Event, EventBody, SaleLine, TagTransition};
use tokio::task::JoinHandle;

/// The M100 sample tag notice (`samples/m100-tag-notice.bin`).
const M100_SAMPLE: &[u8] = &[
    0xBB, 0x02, 0x22, 0x00, 0x11, 0xC4, 0x30, 0x00, 0x30, 0x74, 0x25, 0x7B, 0xF7, 0x19, 0x4E, 0x40,
    0x00, 0x00, 0x1A, 0x85, 0x12, 0x34, 0xF0, 0x7E,
];
/// Its EPC: an SGTIN-96.
const SAMPLE_EPC: &str = "3074257BF7194E4000001A85";

/// The module's answer when a poll round found no tag.
const NO_TAG: &[u8] = &[0xBB, 0x01, 0xFF, 0x00, 0x01, 0x15, 0x16, 0x7E];

/// The ESC/POS sample receipt (`samples/escpos-receipt.bin`): receipt
/// 000123 with SKU-1001 2 x 2.49 and SKU-1002 1 x 3.10, an EAN-13 barcode,
/// feed and cut.
const ESCPOS_SAMPLE: &[u8] = &[
    0x1b, 0x45, 0x01, 0x1b, 0x61, 0x01, 0x1b, 0x74, 0x00, 0x53, 0x54, 0x4f, 0x52, 0x45, 0x20, 0x30,
    0x30, 0x34, 0x32, 0x0a, 0x1b, 0x45, 0x00, 0x1b, 0x61, 0x00, 0x52, 0x45, 0x43, 0x45, 0x49, 0x50,
    0x54, 0x20, 0x30, 0x30, 0x30, 0x31, 0x32, 0x33, 0x20, 0x20, 0x50, 0x4f, 0x53, 0x20, 0x31, 0x0a,
    0x53, 0x4b, 0x55, 0x2d, 0x31, 0x30, 0x30, 0x31, 0x20, 0x4f, 0x61, 0x74, 0x20, 0x6d, 0x69, 0x6c,
    0x6b, 0x20, 0x31, 0x4c, 0x20, 0x20, 0x20, 0x20, 0x20, 0x20, 0x32, 0x20, 0x78, 0x20, 0x32, 0x2e,
    0x34, 0x39, 0x20, 0x20, 0x20, 0x34, 0x2e, 0x39, 0x38, 0x0a, 0x53, 0x4b, 0x55, 0x2d, 0x31, 0x30,
    0x30, 0x32, 0x20, 0x52, 0x79, 0x65, 0x20, 0x62, 0x72, 0x65, 0x61, 0x64, 0x20, 0x20, 0x20, 0x20,
    0x20, 0x20, 0x20, 0x20, 0x31, 0x20, 0x78, 0x20, 0x33, 0x2e, 0x31, 0x30, 0x20, 0x20, 0x20, 0x33,
    0x2e, 0x31, 0x30, 0x0a, 0x54, 0x4f, 0x54, 0x41, 0x4c, 0x20, 0x38, 0x2e, 0x30, 0x38, 0x0a, 0x1b,
    0x61, 0x01, 0x1d, 0x68, 0x40, 0x1d, 0x77, 0x03, 0x1d, 0x66, 0x00, 0x1d, 0x48, 0x02, 0x1d, 0x6b,
    0x02, 0x34, 0x30, 0x30, 0x36, 0x33, 0x38, 0x31, 0x33, 0x33, 0x33, 0x39, 0x33, 0x31, 0x00, 0x1b,
    0x64, 0x06, 0x1d, 0x56, 0x00,
];

/// The device end of a pty pair, played by the test: bytes written here
/// reach the agent, and a thread collects what the agent sends.
struct DeviceEnd {
    file: File,
    received: Arc<Mutex<Vec<u8>>>,
}

impl DeviceEnd {
    fn open(pty: &PtyPair) -> DeviceEnd {
        let file = pty.open_device();
        let mut reader = file.try_clone().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let sink = received.clone();
        // A blocking read on its own thread; it ends when socat is killed
        // (the read then fails), so it never outlives the test for long.
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        DeviceEnd { file, received }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.file.write_all(bytes).unwrap();
    }

    /// Everything the agent sent so far.
    fn received(&self) -> Vec<u8> {
        self.received.lock().unwrap().clone()
    }
}

/// A store with one serial device running against a pty pair.
struct Rig {
    store: Store,
    /// `None` while the "USB reader" is unplugged.
    pty: Option<PtyPair>,
    device: DeviceEnd,
    id: &'static str,
    task: JoinHandle<()>,
}

impl Rig {
    /// Start device `id` with `profile` on a fresh pty pair. The device end
    /// is opened before the agent, so nothing the agent sends is missed.
    fn start(id: &'static str, profile: &str) -> Rig {
        let store = Store::new();
        let pty = PtyPair::new(store.dir.path(), id);
        let device = DeviceEnd::open(&pty);
        let spec = store.device(
            &format!(
                "id = \"{id}\"\nprofile = \"{profile}\"\ntransport = \"serial\"\nport = \"{}\"\n",
                pty.agent.display()
            ),
            None,
        );
        let task = tokio::spawn(storegate::devices::run_device(
            spec,
            store.ingest.clone(),
            None,
            store.shutdown.clone(),
        ));
        Rig {
            store,
            pty: Some(pty),
            device,
            id,
            task,
        }
    }

    /// Unplug the reader: the port's path goes away first, as /dev/ttyUSB0
    /// does, so a reopen can never follow a stale link to a pty number
    /// already reused by another test; then the pty itself dies.
    fn unplug(&mut self) {
        if let Some(pty) = self.pty.take() {
            std::fs::remove_file(&pty.agent).unwrap();
            std::fs::remove_file(&pty.device).unwrap();
            drop(pty);
        }
    }

    /// Plug the reader back in: a new pty pair at the same paths.
    fn plug(&mut self) {
        let pty = PtyPair::new(self.store.dir.path(), self.id);
        self.device = DeviceEnd::open(&pty);
        self.pty = Some(pty);
    }

    async fn wait_up(&self, up: bool) {
        wait_for_async(&format!("device up == {up}"), || {
            self.store
                .health
                .get(self.id)
                .filter(|h| h.up == up)
                .map(|_| ())
        })
        .await;
    }

    /// Wait until `pred` holds for the journal.
    async fn wait_events(&self, what: &str, pred: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        wait_for_async(what, || {
            let events = self.store.events();
            pred(&events).then_some(events)
        })
        .await
    }

    /// Wait until a tag_arrived event for `epc` is journaled.
    async fn wait_tag(&self, epc: &str) -> Vec<Event> {
        self.wait_events(&format!("tag_arrived {epc}"), |e| {
            arrivals(e).iter().any(|t| t.epc == epc)
        })
        .await
    }

    /// Trigger shutdown and wait for the device task to end by itself.
    async fn stop(&mut self) {
        self.store.stop();
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("device task did not stop on shutdown")
            .unwrap();
    }
}

/// Every tag_arrived event.
fn arrivals(events: &[Event]) -> Vec<TagTransition> {
    events
        .iter()
        .filter_map(|e| match &e.body {
            EventBody::TagArrived(t) => Some(t.clone()),
            _ => None,
        })
        .collect()
}

/// Every sale event.
fn sales(events: &[Event]) -> Vec<&Event> {
    events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Sale(_)))
        .collect()
}

fn sale_line(e: &Event) -> &SaleLine {
    match &e.body {
        EventBody::Sale(l) => l,
        other => panic!("not a sale: {other:?}"),
    }
}

/// A tag notice frame for `epc` (whole 16-bit words).
fn notice(epc: &[u8]) -> Vec<u8> {
    let pc = ((epc.len() / 2) as u16) << 11;
    let mut payload = vec![0xC4];
    payload.extend_from_slice(&pc.to_be_bytes());
    payload.extend_from_slice(epc);
    payload.extend_from_slice(&[0x12, 0x34]);
    frame(0x02, 0x22, &payload)
}

/// Non-SGTIN EPCs for tests that need several tags.
const EPC_A: [u8; 12] = [
    0xE2, 0, 0, 0x17, 0x22, 0x0B, 0x01, 0x23, 0x45, 0x67, 0x89, 0x01,
];
const EPC_B: [u8; 12] = [
    0xE2, 0, 0, 0x17, 0x22, 0x0B, 0x01, 0x23, 0x45, 0x67, 0x89, 0x02,
];
const EPC_C: [u8; 12] = [
    0xE2, 0, 0, 0x17, 0x22, 0x0B, 0x01, 0x23, 0x45, 0x67, 0x89, 0x03,
];

fn epc_hex(epc: &[u8]) -> String {
    epc.iter().map(|b| format!("{b:02X}")).collect()
}

// ---------------------------------------------------------------------------
// M100 RFID modules

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m100_polls_on_connect_reads_whole_and_split_frames_and_stops_on_shutdown() {
    let mut rig = Rig::start("uhf", "uhf-m100-serial");
    rig.wait_up(true).await;
    // The module is told to poll as soon as the port is open.
    let sent = wait_for_async("multi-poll command", || {
        let r = rig.device.received();
        (r.len() >= MULTI_POLL.len()).then_some(r)
    })
    .await;
    assert_eq!(sent[..MULTI_POLL.len()], MULTI_POLL);

    // A whole frame: the SGTIN-96 sample, decoded to GTIN and serial.
    rig.device.send(M100_SAMPLE);
    let events = rig.wait_tag(SAMPLE_EPC).await;
    let tags = arrivals(&events);
    assert_eq!(tags.len(), 1);
    let t = &tags[0];
    assert_eq!(t.gtin.as_deref(), Some("80614141123458"));
    assert_eq!(t.serial.as_deref(), Some("6789"));
    assert_eq!(t.zone, "uhf");
    assert_eq!(t.reader, "uhf");
    assert_eq!(events[0].device, "uhf");

    // A frame split across two writes with a pause: the halves arrive in
    // separate reads and are joined by the decoder.
    let split = notice(&EPC_A);
    rig.device.send(&split[..7]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    rig.device.send(&split[7..]);
    let events = rig.wait_tag(&epc_hex(&EPC_A)).await;
    assert_eq!(arrivals(&events).len(), 2);
    assert!(rig.store.quarantine().is_empty());

    rig.stop().await;
    // On shutdown the module is told to stop polling.
    wait_for_async("stop command", || {
        rig.device.received().ends_with(&STOP).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m100_garbage_between_frames_is_quarantined_and_the_frames_still_read() {
    let mut rig = Rig::start("uhf", "uhf-m100-serial");
    rig.wait_up(true).await;
    let garbage = b"\x00\x11line noise\x7e\x42".to_vec();
    let mut input = notice(&EPC_A);
    input.extend_from_slice(&garbage);
    input.extend(notice(&EPC_B));
    rig.device.send(&input);

    let events = rig
        .wait_events("both tags", |e| arrivals(e).len() == 2)
        .await;
    let epcs: Vec<String> = arrivals(&events).into_iter().map(|t| t.epc).collect();
    assert_eq!(epcs, [epc_hex(&EPC_A), epc_hex(&EPC_B)]);
    // The garbage is kept, byte for byte, under this device's name (it
    // may have been split between reads, hence the concatenation).
    let q = rig.store.quarantine();
    assert!(!q.is_empty());
    assert!(q.iter().all(|(device, _, _)| device == "uhf"), "{q:?}");
    let raw: Vec<u8> = q.iter().flat_map(|(_, _, raw)| raw.clone()).collect();
    assert_eq!(raw, garbage);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m100_bad_checksum_is_quarantined_with_its_bytes() {
    let mut rig = Rig::start("uhf", "uhf-m100-serial");
    rig.wait_up(true).await;
    let mut broken = M100_SAMPLE.to_vec();
    let n = broken.len();
    broken[n - 2] ^= 0x01;
    rig.device.send(&broken);
    // A good frame after it shows the broken one was handled before it.
    rig.device.send(&notice(&EPC_A));
    let events = rig.wait_tag(&epc_hex(&EPC_A)).await;

    assert!(
        arrivals(&events).iter().all(|t| t.epc != SAMPLE_EPC),
        "a corrupted frame must not become a read: {events:?}"
    );
    let q = rig.store.quarantine();
    assert_eq!(q.len(), 1, "{q:?}");
    let (device, reason, raw) = &q[0];
    assert_eq!(device, "uhf");
    assert!(reason.contains("checksum"), "{reason}");
    assert_eq!(raw, &broken);
    assert_eq!(rig.store.health.get("uhf").unwrap().frames_bad, 1);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m100_each_distinct_epc_arrives_once_and_repeats_are_not_journaled() {
    let mut rig = Rig::start("uhf", "uhf-m100-serial");
    rig.wait_up(true).await;
    // Several tags in one read, then the same tags again over several
    // writes, as a module polling a shelf reports them every round.
    let mut round = notice(&EPC_A);
    round.extend(notice(&EPC_B));
    round.extend_from_slice(M100_SAMPLE);
    rig.device.send(&round);
    rig.wait_events("three tags", |e| arrivals(e).len() == 3)
        .await;
    for _ in 0..3 {
        rig.device.send(&round);
        rig.device.send(M100_SAMPLE);
    }
    // A new tag after the repeats: once it is journaled, every repeat
    // before it has been processed too.
    rig.device.send(&notice(&EPC_C));
    let events = rig.wait_tag(&epc_hex(&EPC_C)).await;

    let mut epcs: Vec<String> = arrivals(&events).into_iter().map(|t| t.epc).collect();
    epcs.sort();
    let mut expected = vec![
        epc_hex(&EPC_A),
        epc_hex(&EPC_B),
        epc_hex(&EPC_C),
        SAMPLE_EPC.to_string(),
    ];
    expected.sort();
    assert_eq!(epcs, expected);
    assert_eq!(events.len(), 4, "{events:?}");
    assert!(rig.store.quarantine().is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn m100_no_tag_error_frame_is_neither_an_event_nor_quarantined() {
    let mut rig = Rig::start("uhf", "uhf-m100-serial");
    rig.wait_up(true).await;
    rig.device.send(NO_TAG);
    rig.device.send(NO_TAG);
    rig.device.send(M100_SAMPLE);
    let events = rig.wait_tag(SAMPLE_EPC).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(rig.store.quarantine().is_empty());
    assert_eq!(rig.store.health.get("uhf").unwrap().frames_bad, 0);
    rig.stop().await;
}

// ---------------------------------------------------------------------------
// ESC/POS receipt printer tap

/// A plain receipt in the `pos-escpos-journal` layout, ended by a cut.
fn receipt(id: &str, items: &[&str], total: &str) -> Vec<u8> {
    let mut out = format!("\x1b@RECEIPT {id}\n").into_bytes();
    for item in items {
        out.extend_from_slice(item.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(format!("TOTAL {total}\n").as_bytes());
    out.extend_from_slice(b"\x1dV\x00");
    out
}

/// Assert that `sales` are exactly receipt 000123 of the sample, from
/// device `pos`.
fn assert_sample_sales(sales: &[&Event], receipt_id: &str) {
    assert_eq!(sales.len(), 2, "{sales:?}");
    let expected = [(1, "SKU-1001", 2, 249), (2, "SKU-1002", 1, 310)];
    for (e, (line, sku, qty, price)) in sales.iter().zip(expected) {
        let l = sale_line(e);
        assert_eq!(e.device, "pos");
        assert_eq!(l.receipt_id, receipt_id);
        assert_eq!(l.line, line);
        assert_eq!(l.sku, sku);
        assert_eq!(l.qty, qty);
        assert_eq!(l.unit_price_minor, price);
        assert_eq!(l.currency, "EUR");
        assert_eq!(l.pos, "pos");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escpos_sample_receipt_gives_two_sales_journaled_together() {
    let mut rig = Rig::start("pos", "pos-escpos-journal");
    rig.wait_up(true).await;
    rig.device.send(ESCPOS_SAMPLE);
    let events = rig.wait_events("two sales", |e| !sales(e).is_empty()).await;
    // Whenever any line of the receipt is visible, all of it is: one
    // transaction, consecutive seqs, one timestamp.
    let s = sales(&events);
    assert_sample_sales(&s, "000123");
    assert_eq!(s[1].seq, s[0].seq + 1);
    assert_eq!(s[0].ts, s[1].ts);
    assert!(rig.store.quarantine().is_empty());
    // Nothing is sent to a printer.
    assert!(rig.device.received().is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escpos_receipt_with_raster_image_and_barcodes() {
    let mut rig = Rig::start("pos", "pos-escpos-journal");
    rig.wait_up(true).await;
    // Image and barcode data deliberately contain line feeds and text that
    // would break the receipt if it were read as printed lines.
    let mut input = b"\x1b@\x1ba\x01".to_vec();
    // GS v 0: raster image, 12 bytes per row, 1 row.
    input.extend_from_slice(&[0x1D, 0x76, 0x30, 0x00, 12, 0, 1, 0]);
    input.extend_from_slice(b"\nTOTAL 9.99\n");
    input.extend_from_slice(b"\x1ba\x00RECEIPT R-IMG\n");
    input.extend_from_slice(b"SKU-1001 Oat milk 1L      2 x 2.49   4.98\n");
    input.extend_from_slice(b"SKU-1002 Rye bread        1 x 3.10   3.10\n");
    input.extend_from_slice(b"TOTAL 8.08\n");
    // GS k 2: EAN-13, NUL-terminated.
    input.extend_from_slice(b"\x1dh\x40\x1dw\x03\x1dk\x024006381333931\x00");
    // GS k 73: CODE128 with a length byte.
    input.extend_from_slice(b"\x1dk\x49\x0c{BRECEIPT X\n");
    // Feed, then a partial cut with feed (GS V 66 n).
    input.extend_from_slice(b"\x1bd\x03\x1dV\x42\x03");
    rig.device.send(&input);

    let events = rig
        .wait_events("sales of R-IMG", |e| !sales(e).is_empty())
        .await;
    assert_sample_sales(&sales(&events), "R-IMG");
    assert!(rig.store.quarantine().is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escpos_total_that_does_not_add_up_quarantines_the_whole_receipt() {
    let mut rig = Rig::start("pos", "pos-escpos-journal");
    rig.wait_up(true).await;
    let bad = receipt(
        "R-BAD",
        &[
            "SKU-1001 Oat milk 1L      2 x 2.49   4.98",
            "SKU-1002 Rye bread        1 x 3.10   3.10",
        ],
        "9.08",
    );
    rig.device.send(&bad);
    // The next receipt is read normally.
    rig.device.send(ESCPOS_SAMPLE);
    let events = rig
        .wait_events("sales of the next receipt", |e| !sales(e).is_empty())
        .await;
    assert_sample_sales(&sales(&events), "000123");
    assert_eq!(events.len(), 2, "nothing of R-BAD is journaled: {events:?}");

    let q = rig.store.quarantine();
    assert_eq!(q.len(), 1, "{q:?}");
    let (device, reason, raw) = &q[0];
    assert_eq!(device, "pos");
    assert!(
        reason.contains("R-BAD") && reason.contains("total"),
        "{reason}"
    );
    assert_eq!(raw, &bad);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escpos_replayed_receipt_is_journaled_once() {
    let mut rig = Rig::start("pos", "pos-escpos-journal");
    rig.wait_up(true).await;
    rig.device.send(ESCPOS_SAMPLE);
    rig.wait_events("first copy", |e| sales(e).len() == 2).await;
    // The POS prints the same receipt again (a reprint, or a replayed
    // stream after a crash), then a new one.
    rig.device.send(ESCPOS_SAMPLE);
    let next = receipt(
        "000124",
        &["SKU-1002 Rye bread        1 x 3.10   3.10"],
        "3.10",
    );
    rig.device.send(&next);
    let events = rig
        .wait_events("the next receipt", |e| {
            sales(e).iter().any(|s| sale_line(s).receipt_id == "000124")
        })
        .await;
    let s = sales(&events);
    let first: Vec<&Event> = s
        .iter()
        .copied()
        .filter(|e| sale_line(e).receipt_id == "000123")
        .collect();
    assert_sample_sales(&first, "000123");
    assert_eq!(s.len(), 3, "{s:?}");
    assert!(rig.store.quarantine().is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn escpos_receipt_cut_off_by_an_unplug_is_quarantined_whole() {
    let mut rig = Rig::start("pos", "pos-escpos-journal");
    rig.wait_up(true).await;
    let partial = b"\x1b@RECEIPT R-CUT\nSKU-1001 Oat milk 1L      2 x 2.49   4.98\n".to_vec();
    rig.device.send(&partial);
    // Let socat pass the bytes on: what reached the agent's side is still
    // read after the pty dies, what socat still held is gone with it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    rig.unplug();
    let q = wait_for_async("the cut-off receipt in quarantine", || {
        let q = rig.store.quarantine();
        (!q.is_empty()).then_some(q)
    })
    .await;
    assert_eq!(q.len(), 1, "{q:?}");
    let (device, reason, raw) = &q[0];
    assert_eq!(device, "pos");
    assert!(reason.contains("R-CUT"), "{reason}");
    assert_eq!(raw, &partial);
    assert!(sales(&rig.store.events()).is_empty());

    // Plugged back in, the next receipt starts afresh.
    rig.plug();
    rig.wait_up(true).await;
    rig.device.send(ESCPOS_SAMPLE);
    let events = rig
        .wait_events("sales after replug", |e| !sales(e).is_empty())
        .await;
    assert_sample_sales(&sales(&events), "000123");
    rig.stop().await;
}

// ---------------------------------------------------------------------------
// Port lost and back

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_that_disappears_and_reappears_is_reopened() {
    let mut rig = Rig::start("uhf", "uhf-m100-serial");
    rig.wait_up(true).await;
    rig.device.send(M100_SAMPLE);
    rig.wait_tag(SAMPLE_EPC).await;

    rig.unplug();
    let down = wait_for_async("device down after unplug", || {
        rig.store
            .health
            .get("uhf")
            .filter(|h| !h.up && h.reconnects >= 1)
    })
    .await;
    assert!(down.last_error.is_some());

    rig.plug();
    // The runner reopened the port: it is up and polls the module again.
    rig.wait_up(true).await;
    wait_for_async("multi-poll on the new port", || {
        rig.device.received().starts_with(&MULTI_POLL).then_some(())
    })
    .await;
    rig.device.send(&notice(&EPC_A));
    let events = rig.wait_tag(&epc_hex(&EPC_A)).await;
    assert_eq!(arrivals(&events).len(), 2);
    let h = rig.store.health.get("uhf").unwrap();
    assert!(h.up);
    assert!(h.reconnects >= 1);
    rig.stop().await;
}
