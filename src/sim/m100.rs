//! A simulated M100-class UHF RFID module (codec `m100`, spec/profiles.md)
//! on a serial line. Like the real module it stays quiet until told to
//! multi-poll (`BB 00 27 ...`), then reports every tag in its antenna
//! field as a tag notice (type 02, cmd 22) once per inventory round, or
//! the "no tag" error frame when the field is empty, until told to stop
//! (`BB 00 28 ...`) or the rounds run out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::say::Say;
use crate::codecs::m100::frame;

const CMD_MULTI_POLL: u8 = 0x27;
const CMD_STOP: u8 = 0x28;
/// Rounds asked for when a multi-poll command carries none.
const DEFAULT_ROUNDS: u32 = 65535;
/// The module's answer to a poll round that found no tag (error 15).
pub const NO_TAG: [u8; 8] = [0xBB, 0x01, 0xFF, 0x00, 0x01, 0x15, 0x16, 0x7E];

/// A tag in the antenna field: its EPC (hex) and the RSSI it is read at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub epc: String,
    pub rssi_dbm: i8,
}

/// The tags the module's antenna sees right now; the demo's story (or the
/// standalone simulator's wandering shoppers) changes it.
#[derive(Debug, Clone, Default)]
pub struct Field(Arc<Mutex<Vec<Tag>>>);

impl Field {
    pub fn set(&self, tags: Vec<Tag>) {
        *self.lock() = tags;
    }

    pub fn tags(&self) -> Vec<Tag> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Tag>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The tag notice frame for `tag`: `RSSI(1) PC(2) EPC(n) CRC(2)`, or `None`
/// when the EPC is not whole 16-bit words of hex.
pub fn tag_notice(tag: &Tag) -> Option<Vec<u8>> {
    let epc = hex::decode(&tag.epc).ok()?;
    if epc.is_empty() || epc.len() % 2 != 0 || epc.len() > 62 {
        return None;
    }
    // PC word: EPC length in words in bits 15..11.
    let pc = ((epc.len() / 2) as u16) << 11;
    let mut pc_epc = pc.to_be_bytes().to_vec();
    pc_epc.extend_from_slice(&epc);
    let crc = crc16_genibus(&pc_epc);
    let mut payload = vec![tag.rssi_dbm as u8];
    payload.extend_from_slice(&pc_epc);
    payload.extend_from_slice(&crc.to_be_bytes());
    Some(frame(0x02, 0x22, &payload))
}

/// The CRC-16 a Gen2 tag stores over PC + EPC (CRC-16/GENIBUS: poly
/// 0x1021, init 0xFFFF, result inverted).
fn crc16_genibus(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for b in bytes {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    !crc
}

/// A command from the agent, as far as the module cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    MultiPoll(u32),
    Stop,
    Other(u8),
}

/// Take the complete command frames off the front of `buf`; bytes that
/// cannot start a frame are dropped, as the module does.
fn take_commands(buf: &mut Vec<u8>) -> Vec<Command> {
    let mut out = Vec::new();
    loop {
        match buf.iter().position(|b| *b == 0xBB) {
            Some(0) => {}
            Some(i) => {
                buf.drain(..i);
            }
            None => {
                buf.clear();
                return out;
            }
        }
        let (Some(&cmd), Some(&hi), Some(&lo)) = (buf.get(2), buf.get(3), buf.get(4)) else {
            return out;
        };
        let len = 7 + usize::from(u16::from_be_bytes([hi, lo]));
        if len > 1024 {
            buf.drain(..1); // not a frame; look for the next BB
            continue;
        }
        let Some(f) = buf.get(..len) else {
            return out;
        };
        out.push(match cmd {
            CMD_MULTI_POLL => {
                // Payload: reserved byte 22, then the round count.
                let rounds = match (f.get(6), f.get(7)) {
                    (Some(h), Some(l)) => u32::from(u16::from_be_bytes([*h, *l])),
                    _ => DEFAULT_ROUNDS,
                };
                Command::MultiPoll(rounds)
            }
            CMD_STOP => Command::Stop,
            other => Command::Other(other),
        });
        buf.drain(..len);
    }
}

/// Run the module on `port` until the port fails: answer the agent's
/// commands and, while polling, report the field every `round`.
pub async fn run<P>(port: P, field: Field, round: Duration, say: Say) -> std::io::Result<()>
where
    P: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rx, mut tx) = tokio::io::split(port);
    let mut rounds_left: u32 = 0;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 256];
    let mut ticker = tokio::time::interval(round);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Print the "no tag" answer once per quiet spell, not every round.
    let mut said_empty = false;
    loop {
        tokio::select! {
            n = rx.read(&mut chunk) => {
                let n = n?;
                if n == 0 {
                    return Ok(());
                }
                buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
                for command in take_commands(&mut buf) {
                    match command {
                        Command::MultiPoll(rounds) => {
                            say.line(format!("<- multi-poll ({rounds} rounds)"));
                            rounds_left = rounds;
                        }
                        Command::Stop => {
                            say.line("<- stop");
                            rounds_left = 0;
                        }
                        Command::Other(cmd) => say.line(format!("<- command 0x{cmd:02X} (ignored)")),
                    }
                }
            }
            _ = ticker.tick(), if rounds_left > 0 => {
                rounds_left -= 1;
                let tags = field.tags();
                if tags.is_empty() {
                    if !said_empty {
                        say.line("-> no tag in the field (error 15), every round");
                        said_empty = true;
                    }
                    tx.write_all(&NO_TAG).await?;
                    continue;
                }
                said_empty = false;
                let mut bytes = Vec::new();
                for tag in &tags {
                    if let Some(f) = tag_notice(tag) {
                        say.line(format!("-> tag notice {} {} dBm", tag.epc, tag.rssi_dbm));
                        bytes.extend_from_slice(&f);
                    }
                }
                tx.write_all(&bytes).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codecs::Decoded;
    use crate::codecs::m100::{M100Decoder, MULTI_POLL, STOP};

    #[test]
    fn the_sample_notice_is_rebuilt_byte_for_byte() {
        // samples/m100-tag-notice.bin up to its CRC, which in the sample
        // is not a computed one.
        let sample = [
            0xBB, 0x02, 0x22, 0x00, 0x11, 0xC4, 0x30, 0x00, 0x30, 0x74, 0x25, 0x7B, 0xF7, 0x19,
            0x4E, 0x40, 0x00, 0x00, 0x1A, 0x85,
        ];
        let f = tag_notice(&Tag {
            epc: "3074257BF7194E4000001A85".into(),
            rssi_dbm: -60,
        })
        .unwrap();
        assert_eq!(&f[..20], &sample[..]);
        assert_eq!(f.len(), 24);
    }

    #[test]
    fn notices_decode_with_the_agents_codec() {
        let tag = Tag {
            epc: "30340FB0C2A0005000000007".into(),
            rssi_dbm: -52,
        };
        let mut d = M100Decoder::new();
        let out = d.feed(&tag_notice(&tag).unwrap(), crate::event::now_millis());
        let reads: Vec<_> = out
            .iter()
            .flat_map(|d| match d {
                Decoded::TagReads(r) => r.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(reads.len(), 1);
        assert_eq!(reads[0].epc, tag.epc);
        assert_eq!(reads[0].rssi_dbm, Some(-52));
    }

    #[test]
    fn commands_are_recognised_in_a_noisy_stream() {
        let mut buf = vec![0x00, 0x13];
        buf.extend_from_slice(&MULTI_POLL);
        buf.extend_from_slice(&STOP[..3]);
        assert_eq!(take_commands(&mut buf), vec![Command::MultiPoll(65535)]);
        buf.extend_from_slice(&STOP[3..]);
        assert_eq!(take_commands(&mut buf), vec![Command::Stop]);
        assert!(buf.is_empty());
    }
}
