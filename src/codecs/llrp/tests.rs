//! Test vectors: messages built by hand from the LLRP 1.1 spec, and frames
//! captured from llrpkit's reader emulator (testdata/capture.py writes
//! testdata/capture.hex).

use chrono::{TimeZone, Utc};

use super::decode::{ReaderEvent, ReaderMessage, TagReport};
use super::encode::{self, InventoryPlan};
use super::frame::{self, Splitter};
use super::params::{LlrpParams, Vendor, power_index};
use super::{decode, msg, tag_reads};

/// A captured frame by name.
fn captured(name: &str) -> Vec<u8> {
    let text = include_str!("testdata/capture.hex");
    let line = text
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("no captured frame {name}"));
    hex::decode(line.split(' ').nth(1).expect("hex")).expect("valid hex")
}

fn decoded(bytes: &[u8]) -> ReaderMessage {
    decode(&frame::parse(bytes).expect("one whole frame")).expect("decodes")
}

/// A message of `message_type` with `body`, header by hand: version 1 in
/// bits 10-12, the type in the low 10 bits, length, id.
fn by_hand(message_type: u16, id: u32, body: &[u8]) -> Vec<u8> {
    let mut m = Vec::new();
    m.extend_from_slice(&((1u16 << 10) | message_type).to_be_bytes());
    m.extend_from_slice(&(10 + body.len() as u32).to_be_bytes());
    m.extend_from_slice(&id.to_be_bytes());
    m.extend_from_slice(body);
    m
}

const EPC: [u8; 12] = [
    0x30, 0x14, 0x25, 0x1E, 0x8C, 0x00, 0x00, 0x40, 0x00, 0x00, 0x00, 0x2A,
];

/// TagReportData (240) with EPC-96 (TV 13), AntennaID (TV 1) 2, PeakRSSI
/// (TV 6) -61, FirstSeenTimestampUTC (TV 2), then an Impinj Custom
/// parameter and an unknown TLV (type 900), both to be skipped.
fn hand_report() -> Vec<u8> {
    let mut trd = vec![0x8D];
    trd.extend_from_slice(&EPC);
    trd.extend_from_slice(&[0x81, 0x00, 0x02]);
    trd.extend_from_slice(&[0x86, (-61i8) as u8]);
    trd.push(0x82);
    trd.extend_from_slice(&1_764_547_200_000_000u64.to_be_bytes());
    // Custom: type 1023, length 14, vendor 25882, subtype 57, 2 bytes data.
    trd.extend_from_slice(&[0x03, 0xFF, 0x00, 0x0E]);
    trd.extend_from_slice(&25882u32.to_be_bytes());
    trd.extend_from_slice(&57u32.to_be_bytes());
    trd.extend_from_slice(&[0xAB, 0xCD]);
    trd.extend_from_slice(&[0x03, 0x84, 0x00, 0x05, 0x99]);
    let mut body = vec![0x00, 0xF0];
    body.extend_from_slice(&(4 + trd.len() as u16).to_be_bytes());
    body.extend_from_slice(&trd);
    by_hand(61, 0, &body)
}

#[test]
fn hand_built_report_decodes_and_skips_vendor_parameters() {
    let ReaderMessage::Report(tags) = decoded(&hand_report()) else {
        panic!("not a report");
    };
    assert_eq!(
        tags,
        vec![TagReport {
            epc: EPC.to_vec(),
            antenna: Some(2),
            peak_rssi_dbm: Some(-61),
            first_seen_us: Some(1_764_547_200_000_000),
            ..TagReport::default()
        }]
    );
    let now = Utc.timestamp_opt(1_764_547_230, 0).unwrap();
    let reads = tag_reads(&tags, now);
    assert_eq!(reads[0].epc, "3014251E8C0000400000002A");
    assert_eq!(reads[0].antenna, Some(2));
    assert_eq!(reads[0].rssi_dbm, Some(-61));
    assert_eq!(reads[0].ts, Utc.timestamp_opt(1_764_547_200, 0).unwrap());
}

#[test]
fn reader_clock_in_1970_gives_the_arrival_time() {
    let tags = vec![TagReport {
        epc: EPC.to_vec(),
        first_seen_us: Some(5_000_000),
        ..TagReport::default()
    }];
    let now = Utc.timestamp_opt(1_764_547_230, 0).unwrap();
    assert_eq!(tag_reads(&tags, now)[0].ts, now);
}

#[test]
fn every_cut_short_report_is_an_error_with_an_offset_never_a_panic() {
    let full = hand_report();
    for len in frame::HEADER_LEN..full.len() {
        let mut cut = full[..len].to_vec();
        // Keep the header's length honest so only the body is short.
        cut[2..6].copy_from_slice(&(len as u32).to_be_bytes());
        let f = frame::parse(&cut).expect("frame");
        if let Err(e) = decode(&f) {
            assert!(e.offset <= len, "offset {} beyond {len}: {e}", e.offset);
        }
    }
}

#[test]
fn tlv_length_overrunning_its_parent_names_the_byte() {
    let mut m = hand_report();
    // TagReportData's length (bytes 12-13) one larger than what is there.
    let len = u16::from_be_bytes([m[12], m[13]]) + 1;
    m[12..14].copy_from_slice(&len.to_be_bytes());
    let e = decode(&frame::parse(&m).unwrap()).unwrap_err();
    assert_eq!(e.offset, 10);
    assert!(e.what.contains("TLV parameter 240"), "{e}");
}

#[test]
fn tlv_length_below_its_header_is_refused() {
    let m = by_hand(61, 0, &[0x00, 0xF0, 0x00, 0x02]);
    let e = decode(&frame::parse(&m).unwrap()).unwrap_err();
    assert_eq!(e.offset, 10);
    assert!(e.what.contains("less than its 4-byte header"), "{e}");
}

#[test]
fn unknown_tv_type_is_an_error_not_a_guess() {
    // TagReportData holding TV type 100, whose length nobody knows.
    let m = by_hand(61, 0, &[0x00, 0xF0, 0x00, 0x07, 0xE4, 0x00, 0x01]);
    let e = decode(&frame::parse(&m).unwrap()).unwrap_err();
    assert_eq!(e.offset, 14);
    assert!(e.what.contains("unknown TV parameter type 100"), "{e}");
}

#[test]
fn tag_report_without_epc_is_refused() {
    let m = by_hand(61, 0, &[0x00, 0xF0, 0x00, 0x07, 0x81, 0x00, 0x01]);
    let e = decode(&frame::parse(&m).unwrap()).unwrap_err();
    assert!(e.what.contains("without an EPC"), "{e}");
}

#[test]
fn response_without_status_is_refused() {
    let m = by_hand(msg::ADD_ROSPEC_RESPONSE, 4, &[]);
    let e = decode(&frame::parse(&m).unwrap()).unwrap_err();
    assert!(e.what.contains("no LLRPStatus"), "{e}");
}

#[test]
fn hand_built_antenna_and_gpi_events() {
    // ReaderEventNotificationData(246): UTCTimestamp(128),
    // AntennaEvent(255) connected antenna 4, GPIEvent(248) port 2 high,
    // ReaderExceptionEvent(252) "hot".
    let mut data = vec![0x00, 0x80, 0x00, 0x0C];
    data.extend_from_slice(&7u64.to_be_bytes());
    data.extend_from_slice(&[0x00, 0xFF, 0x00, 0x07, 0x01, 0x00, 0x04]);
    data.extend_from_slice(&[0x00, 0xF8, 0x00, 0x07, 0x00, 0x02, 0x80]);
    data.extend_from_slice(&[0x00, 0xFC, 0x00, 0x09, 0x00, 0x03, b'h', b'o', b't']);
    let mut body = vec![0x00, 0xF6];
    body.extend_from_slice(&(4 + data.len() as u16).to_be_bytes());
    body.extend_from_slice(&data);
    assert_eq!(
        decoded(&by_hand(63, 0, &body)),
        ReaderMessage::Events {
            timestamp_us: Some(7),
            events: vec![
                ReaderEvent::Antenna {
                    antenna: 4,
                    connected: true
                },
                ReaderEvent::Gpi {
                    port: 2,
                    high: true
                },
                ReaderEvent::ReaderException {
                    message: "hot".into()
                },
            ],
        }
    );
}

#[test]
fn captured_session_frames_decode() {
    assert!(matches!(
        decoded(&captured("connection_attempt")),
        ReaderMessage::Events { ref events, .. } if events == &[ReaderEvent::ConnectionAttempt { status: 0 }]
    ));
    let ReaderMessage::Capabilities {
        status,
        capabilities,
    } = decoded(&captured("capabilities_response"))
    else {
        panic!("not capabilities");
    };
    assert!(status.is_success());
    assert_eq!(capabilities.max_antennas, Some(4));
    assert_eq!(capabilities.manufacturer, Some(25882));
    assert_eq!(capabilities.model, Some(700));
    assert_eq!(capabilities.firmware.as_deref(), Some("llrpkit-emu 0.1"));
    // The emulator's table: index 1..21 is 10.00..30.00 dBm.
    assert_eq!(capabilities.power_table.first(), Some(&(1, 1000)));
    assert_eq!(power_index(&capabilities.power_table, 27.4), Some(18));

    for (name, t) in [
        (
            "set_reader_config_response",
            msg::SET_READER_CONFIG_RESPONSE,
        ),
        ("add_rospec_response", msg::ADD_ROSPEC_RESPONSE),
        ("enable_rospec_response", msg::ENABLE_ROSPEC_RESPONSE),
        ("start_rospec_response", msg::START_ROSPEC_RESPONSE),
        ("close_connection_response", msg::CLOSE_CONNECTION_RESPONSE),
    ] {
        match decoded(&captured(name)) {
            ReaderMessage::Response {
                message_type,
                status,
            } => {
                assert_eq!(message_type, t, "{name}");
                assert!(status.is_success(), "{name}: {status}");
            }
            other => panic!("{name}: {other:?}"),
        }
    }
    let ReaderMessage::Response { status, .. } = decoded(&captured("delete_rospec_error")) else {
        panic!("not a response");
    };
    assert_eq!(status.code, 100);
    assert_eq!(status.description, "no ROSpec 0");

    assert_eq!(decoded(&captured("keepalive")), ReaderMessage::Keepalive);
    assert_eq!(
        decoded(&captured("antenna_disconnected")),
        ReaderMessage::Events {
            timestamp_us: match decoded(&captured("antenna_disconnected")) {
                ReaderMessage::Events { timestamp_us, .. } => timestamp_us,
                _ => None,
            },
            events: vec![ReaderEvent::Antenna {
                antenna: 3,
                connected: false
            }],
        }
    );
}

#[test]
fn captured_reports_carry_epc96_and_epcdata() {
    let ReaderMessage::Report(tags) = decoded(&captured("report_epc96")) else {
        panic!("not a report");
    };
    assert_eq!(tags.len(), 1);
    assert_eq!(hex::encode_upper(&tags[0].epc), "E2000017010B016210000001");
    assert_eq!(tags[0].antenna, Some(2));
    assert!(
        tags[0]
            .peak_rssi_dbm
            .is_some_and(|r| (-80..-30).contains(&r))
    );
    assert!(tags[0].first_seen_us.is_some() && tags[0].last_seen_us.is_some());
    assert_eq!(tags[0].seen_count, Some(1));

    let ReaderMessage::Report(tags) = decoded(&captured("report_epcdata")) else {
        panic!("not a report");
    };
    assert_eq!(
        hex::encode_upper(&tags[0].epc),
        "303132333435363738393A3B3C3D3E3F"
    );
    assert_eq!(tags[0].antenna, Some(2));
}

#[test]
fn splitter_finds_the_same_frames_however_the_stream_is_cut() {
    let names = [
        "connection_attempt",
        "capabilities_response",
        "report_epc96",
        "keepalive",
        "report_epcdata",
    ];
    let stream: Vec<u8> = names.iter().flat_map(|n| captured(n)).collect();
    for chunk in [1, 3, 7, 10, 64, stream.len()] {
        let mut s = Splitter::new();
        let mut frames = Vec::new();
        for piece in stream.chunks(chunk) {
            s.push(piece);
            while let Some(f) = s.next_frame().expect("in step") {
                frames.push(f.bytes);
            }
        }
        let want: Vec<Vec<u8>> = names.iter().map(|n| captured(n)).collect();
        assert_eq!(frames, want, "chunks of {chunk}");
        assert_eq!(s.pending(), 0);
    }
}

#[test]
fn splitter_refuses_an_impossible_length_with_the_stream_offset() {
    let mut s = Splitter::new();
    s.push(&captured("keepalive"));
    s.push(&[0x04, 0x3E, 0x00, 0x00, 0x00, 0x03, 0, 0, 0, 0]);
    assert!(s.next_frame().unwrap().is_some());
    let e = s.next_frame().unwrap_err();
    assert_eq!(e.offset, 10 + 2);
    assert!(e.what.contains("out of step"), "{e}");
}

fn plan() -> InventoryPlan {
    InventoryPlan {
        rospec_id: 7,
        antennas: vec![1, 3],
        power_index: Some(81),
        session: Some(2),
        tag_population: 32,
        mode_index: None,
        impinj_search_mode: None,
        report_every_n_tags: 1,
    }
}

#[test]
fn add_rospec_matches_the_spec_layout_byte_for_byte() {
    let got = encode::add_rospec(5, &plan());
    let antenna_conf = |a: u8| -> Vec<u8> {
        let mut v = vec![0x00, 0xDE, 0x00, 0x20, 0x00, a];
        // RFTransmitter(224): hop table 1, channel 1, power index 81.
        v.extend_from_slice(&[0x00, 0xE0, 0x00, 0x0A, 0x00, 0x01, 0x00, 0x01, 0x00, 0x51]);
        // C1G2InventoryCommand(330): state-unaware, then
        // C1G2SingulationControl(336): session 2 (0b10 << 6), population
        // 32, transit time 0.
        v.extend_from_slice(&[0x01, 0x4A, 0x00, 0x10, 0x00]);
        v.extend_from_slice(&[0x01, 0x50, 0x00, 0x0B, 0x80, 0x00, 0x20, 0, 0, 0, 0]);
        v
    };
    let mut ips = vec![0x00, 0xBA, 0x00, 0x47, 0x00, 0x01, 0x01];
    ips.extend(antenna_conf(1));
    ips.extend(antenna_conf(3));
    let mut ai = vec![0x00, 0xB7, 0x00, 0x5A, 0x00, 0x02, 0x00, 0x01, 0x00, 0x03];
    ai.extend_from_slice(&[0x00, 0xB8, 0x00, 0x09, 0x00, 0, 0, 0, 0]);
    ai.extend(ips);
    let mut rospec = vec![0x00, 0xB1, 0x00, 0x83, 0, 0, 0, 7, 0x00, 0x00];
    // ROBoundarySpec(178): start trigger(179) null, stop trigger(182)
    // null with duration 0.
    rospec.extend_from_slice(&[0x00, 0xB2, 0x00, 0x12]);
    rospec.extend_from_slice(&[0x00, 0xB3, 0x00, 0x05, 0x00]);
    rospec.extend_from_slice(&[0x00, 0xB6, 0x00, 0x09, 0x00, 0, 0, 0, 0]);
    rospec.extend(ai);
    // ROReportSpec(237): upon N tags or end of ROSpec, N = 1;
    // TagReportContentSelector(238): antenna, RSSI, first/last seen, count.
    rospec.extend_from_slice(&[0x00, 0xED, 0x00, 0x0D, 0x02, 0x00, 0x01]);
    rospec.extend_from_slice(&[0x00, 0xEE, 0x00, 0x06, 0x17, 0x80]);
    assert_eq!(hex::encode(&got), hex::encode(by_hand(20, 5, &rospec)));
}

#[test]
fn small_messages_match_the_spec() {
    assert_eq!(encode::get_reader_capabilities(1), by_hand(1, 1, &[0x00]));
    assert_eq!(encode::delete_rospec(2, 0), by_hand(21, 2, &[0, 0, 0, 0]));
    assert_eq!(encode::enable_rospec(3, 7), by_hand(24, 3, &[0, 0, 0, 7]));
    assert_eq!(encode::start_rospec(4, 7), by_hand(22, 4, &[0, 0, 0, 7]));
    assert_eq!(encode::keepalive_ack(98), by_hand(72, 98, &[]));
    assert_eq!(encode::close_connection(9), by_hand(14, 9, &[]));
    let mut cfg = vec![0x00, 0x00, 0xF4, 0x00, 0x20];
    for event in [1u8, 2, 4, 8] {
        cfg.extend_from_slice(&[0x00, 0xF5, 0x00, 0x07, 0x00, event, 0x80]);
    }
    cfg.extend_from_slice(&[0x00, 0xDC, 0x00, 0x09, 0x01, 0x00, 0x00, 0x27, 0x10]);
    assert_eq!(encode::set_reader_config(5, 10_000), by_hand(3, 5, &cfg));
}

#[test]
fn profile_params_are_checked() {
    let ok = LlrpParams::default();
    assert_eq!(ok.validate(), Ok(()));
    let bad = LlrpParams {
        search_mode: Some("dual-target".into()),
        ..LlrpParams::default()
    };
    assert!(bad.validate().unwrap_err().contains("vendor = \"impinj\""));
    let impinj = LlrpParams {
        vendor: Vendor::Impinj,
        search_mode: Some("tag-focus".into()),
        ..LlrpParams::default()
    };
    assert_eq!(impinj.impinj_search_mode(), Some(3));
    for bad in [
        LlrpParams {
            antennas: vec![1, 1],
            ..LlrpParams::default()
        },
        LlrpParams {
            session: Some(4),
            ..LlrpParams::default()
        },
        LlrpParams {
            tx_power_dbm: Some(45.0),
            ..LlrpParams::default()
        },
        LlrpParams {
            report_every_n_tags: 0,
            ..LlrpParams::default()
        },
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
}

#[test]
fn power_lookup_takes_the_highest_at_or_below() {
    let table = [(1, 1000), (2, 1500), (3, 2000)];
    assert_eq!(power_index(&table, 17.9), Some(2));
    assert_eq!(power_index(&table, 20.0), Some(3));
    assert_eq!(power_index(&table, 5.0), Some(1));
    assert_eq!(power_index(&[], 20.0), None);
}
