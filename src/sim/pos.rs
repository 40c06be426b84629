//! A simulated POS terminal printing its receipts on a serial ESC/POS
//! printer (Epson TM-T88 class), as the agent's receipt-printer tap sees
//! them (profile `pos-escpos-journal`, codec `lines`): initialise, bold
//! centred store name, `RECEIPT <id>  POS <n>`, one line per item
//! `SKU name  qty x price  total`, `TOTAL`, a CODE128 barcode of the
//! receipt id, feed and cut, like `samples/escpos-receipt.bin`.

use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::catalog::decimal;
use super::say::Say;

const ESC: u8 = 0x1B;
const GS: u8 = 0x1D;
/// Characters of the item name column (a 42-column printer).
const NAME_WIDTH: usize = 20;

/// One item line of a receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub sku: String,
    pub name: String,
    /// Negative for a return.
    pub qty: i64,
    pub unit_price_minor: i64,
}

/// A finished sale as the till prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub id: String,
    pub pos: String,
    pub lines: Vec<Line>,
}

impl Receipt {
    pub fn total_minor(&self) -> i64 {
        self.lines.iter().map(|l| l.qty * l.unit_price_minor).sum()
    }

    /// One compact line for humans: `R-1: 2 x SKU-1001 @ 2.49, ... = 8.08`.
    pub fn describe(&self) -> String {
        let items: Vec<String> = self
            .lines
            .iter()
            .map(|l| format!("{} x {} @ {}", l.qty, l.sku, decimal(l.unit_price_minor)))
            .collect();
        format!(
            "receipt {} (POS {}): {} = {}",
            self.id,
            self.pos,
            items.join(", "),
            decimal(self.total_minor())
        )
    }
}

/// The receipt as the printer receives it.
pub fn escpos(
    store_name: &str,
    r: &Receipt,
    printed_at: chrono::DateTime<chrono::Local>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(&[ESC, b'@']); // initialise
    out.extend_from_slice(&[ESC, b't', 0]); // code page 437
    out.extend_from_slice(&[ESC, b'a', 1, ESC, b'E', 1]); // centred, bold
    out.extend_from_slice(store_name.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(&[ESC, b'E', 0, ESC, b'a', 0]);
    out.extend_from_slice(format!("RECEIPT {}  POS {}\n", r.id, r.pos).as_bytes());
    out.extend_from_slice(format!("{}\n", printed_at.format("%Y-%m-%d %H:%M:%S")).as_bytes());
    for l in &r.lines {
        let name: String = l.name.chars().take(NAME_WIDTH).collect();
        let text = format!(
            "{} {:<NAME_WIDTH$} {:>3} x {:>6} {:>8}\n",
            l.sku,
            name,
            l.qty,
            decimal(l.unit_price_minor),
            decimal(l.qty * l.unit_price_minor)
        );
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(&[ESC, b'E', 1]);
    out.extend_from_slice(format!("TOTAL {}\n", decimal(r.total_minor())).as_bytes());
    out.extend_from_slice(&[ESC, b'E', 0]);
    // CODE128 barcode of the receipt id: height, width, HRI below, then
    // `GS k 73 n {B data` (code set B).
    let code: Vec<u8> =
        r.id.bytes()
            .filter(|b| b.is_ascii_graphic())
            .take(60)
            .collect();
    out.extend_from_slice(&[ESC, b'a', 1, GS, b'h', 0x40, GS, b'w', 2, GS, b'H', 2]);
    out.extend_from_slice(&[GS, b'k', 73, (code.len() + 2) as u8, b'{', b'B']);
    out.extend_from_slice(&code);
    out.extend_from_slice(&[ESC, b'd', 6]); // feed 6 lines
    out.extend_from_slice(&[GS, b'V', 0]); // full cut: the receipt is done
    out
}

/// The till's printer port.
pub struct Printer<W> {
    port: W,
    store_name: String,
    say: Say,
}

impl<W: AsyncWrite + Unpin> Printer<W> {
    pub fn new(port: W, store_name: &str, say: Say) -> Self {
        Printer {
            port,
            store_name: store_name.to_string(),
            say,
        }
    }

    /// Print one receipt (returns once the bytes are written).
    pub async fn print(&mut self, r: &Receipt) -> std::io::Result<()> {
        let bytes = escpos(&self.store_name, r, chrono::Local::now());
        self.port.write_all(&bytes).await?;
        self.port.flush().await?;
        self.say.line(format!(
            "-> {} ({} bytes ESC/POS)",
            r.describe(),
            bytes.len()
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codecs::Decoded;
    use crate::event::EventBody;
    use crate::profiles::{Codec, ProfileSet};

    #[test]
    fn receipts_decode_with_the_agents_profile() {
        let set = ProfileSet::builtin().unwrap();
        let Codec::Lines(params) = &set.get("pos-escpos-journal").unwrap().codec else {
            panic!("pos-escpos-journal is a lines profile");
        };
        let mut decoder = crate::codecs::lines::LinesDecoder::new((**params).clone(), "pos-1");
        let receipt = Receipt {
            id: "R-7".into(),
            pos: "1".into(),
            lines: vec![
                Line {
                    sku: "SKU-1001".into(),
                    name: "Oat milk 1L".into(),
                    qty: 2,
                    unit_price_minor: 249,
                },
                Line {
                    sku: "SKU-1005".into(),
                    name: "Sparkling water 1.5L with a very long name".into(),
                    qty: 1,
                    unit_price_minor: 79,
                },
            ],
        };
        let out = decoder.feed(
            &escpos("DEMO STORE", &receipt, chrono::Local::now()),
            crate::event::now_millis(),
        );
        let sales: Vec<(String, i64, i64)> = out
            .iter()
            .flat_map(|d| match d {
                Decoded::Events(e) => e.clone(),
                other => panic!("{other:?}"),
            })
            .map(|(_, body)| match body {
                EventBody::Sale(l) => {
                    assert_eq!(l.receipt_id, "R-7");
                    (l.sku, l.qty, l.unit_price_minor)
                }
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            sales,
            vec![("SKU-1001".into(), 2, 249), ("SKU-1005".into(), 1, 79)]
        );
    }
}
