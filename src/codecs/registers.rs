//! Codec `registers`: what the registers of a Modbus smart shelf or sensor
//! mean (spec/profiles.md "Codec `registers`"). This is the pure part:
//! profile parameters, which registers to read, how to turn register words
//! into scaled values, and which values are worth emitting. Polling the
//! device is the transport's job.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde::Deserialize;

/// Most registers one Modbus read (function 03/04) may return.
pub const MAX_READ: u16 = 125;

/// Which Modbus register table a value lives in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Table {
    /// Holding registers, read with function 03.
    Holding,
    /// Input registers, read with function 04.
    Input,
}

impl Table {
    /// The name used in profiles and messages.
    pub fn name(self) -> &'static str {
        match self {
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }
}

/// How the register words of one value are to be read as a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RegType {
    U16,
    I16,
    U32,
    I32,
    F32,
}

impl RegType {
    /// How many 16-bit registers a value of this type takes.
    pub fn words(self) -> u16 {
        match self {
            RegType::U16 | RegType::I16 => 1,
            RegType::U32 | RegType::I32 | RegType::F32 => 2,
        }
    }

    /// The name used in profiles and messages.
    pub fn name(self) -> &'static str {
        match self {
            RegType::U16 => "u16",
            RegType::I16 => "i16",
            RegType::U32 => "u32",
            RegType::I32 => "i32",
            RegType::F32 => "f32",
        }
    }
}

/// Order of the two registers of a 32-bit value. Modbus itself only
/// defines 16-bit registers, so devices differ: `big` has the high word
/// first (at the lower address), `little` the low word first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WordOrder {
    #[default]
    Big,
    Little,
}

/// Which event the values become.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Emit {
    /// `shelf_weight` per slot (smart shelves).
    ShelfWeight,
    /// Generic `reading` per value (sensors).
    #[default]
    Reading,
}

/// The `[registers]` table of a firmware profile.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistersParams {
    /// Table the slots are read from.
    #[serde(default = "default_slot_table")]
    pub table: Table,
    /// Address of slot 0.
    #[serde(default)]
    pub start: u16,
    /// Distance between slots in registers; when absent, the words of `type`.
    #[serde(default)]
    pub words_per_slot: Option<u16>,
    /// Number of slots (0 for a device with only named values).
    #[serde(default)]
    pub slots: u16,
    /// Type of each slot value.
    #[serde(rename = "type", default = "default_type")]
    pub r#type: RegType,
    /// Word order of 32-bit slot values.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Factor from the raw slot value to `unit`.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Unit of the scaled slot values.
    #[serde(default)]
    pub unit: String,
    /// Which event the values become.
    #[serde(default)]
    pub emit: Emit,
    /// Emit a value only when it moved at least this much since the last
    /// emitted one...
    #[serde(default)]
    pub min_change: f64,
    /// ...or when this many seconds passed since the last emission.
    #[serde(default = "default_heartbeat_s")]
    pub heartbeat_s: u64,
    /// Named values (sensors), each at its own address.
    #[serde(default)]
    pub values: Vec<NamedValue>,
}

/// One `[[registers.values]]` entry: a value with a name at a fixed address.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedValue {
    /// Name of the reading, e.g. `temperature`.
    pub name: String,
    /// Table the value is read from.
    #[serde(default = "default_value_table")]
    pub table: Table,
    /// Address of the value's first register.
    pub address: u16,
    /// How its registers are read as a number.
    #[serde(rename = "type", default = "default_type")]
    pub r#type: RegType,
    /// Word order of a 32-bit value.
    #[serde(default)]
    pub word_order: WordOrder,
    /// Factor from the raw value to `unit`.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Unit of the scaled value.
    #[serde(default)]
    pub unit: String,
}

fn default_slot_table() -> Table {
    Table::Holding
}

// Sensors expose their measurements as input registers far more often
// than as holding registers.
fn default_value_table() -> Table {
    Table::Input
}

// A Modbus register is natively an unsigned 16-bit word.
fn default_type() -> RegType {
    RegType::U16
}

fn default_scale() -> f64 {
    1.0
}

fn default_heartbeat_s() -> u64 {
    300
}

/// One Modbus read: `count` registers of `table` from `start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReadRequest {
    pub table: Table,
    pub start: u16,
    pub count: u16,
}

/// What a sample is: a shelf slot or a named sensor value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SampleKey {
    Slot(u16),
    Named(String),
}

/// One decoded value, scaled, with its unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub key: SampleKey,
    pub value: f64,
    pub unit: String,
}

/// A register range to read, before merging. Addresses are u32 so that
/// the end of a range at register 65535 (= 65536) is representable.
struct Span {
    table: Table,
    start: u32,
    end: u32,
}

/// One past the last register address.
const ADDRESS_END: u32 = 1 << 16;

impl RegistersParams {
    /// Distance between slots in registers: `words_per_slot`, or the words
    /// of the slot type when not given.
    pub fn slot_stride(&self) -> u16 {
        self.words_per_slot.unwrap_or(self.r#type.words())
    }

    /// Check the parameters; the error names the offending key
    /// (`registers.<key>`) so `storegate check` can point at it.
    pub fn validate(&self) -> Result<(), String> {
        if self.slots == 0 && self.values.is_empty() {
            return Err(
                "registers.slots: set slots > 0 or add at least one [[registers.values]]".into(),
            );
        }
        let words = self.r#type.words();
        if let Some(wps) = self.words_per_slot {
            if wps < words {
                return Err(format!(
                    "registers.words_per_slot: {wps} is fewer than the {words} registers of type {}",
                    self.r#type.name()
                ));
            }
        }
        if self.slots > 0 {
            let last_slot =
                u32::from(self.start) + u32::from(self.slots - 1) * u32::from(self.slot_stride());
            if last_slot + u32::from(words) > ADDRESS_END {
                return Err(format!(
                    "registers.slots: {} slots of {} registers from {} run past register 65535",
                    self.slots,
                    self.slot_stride(),
                    self.start
                ));
            }
        }
        if !self.scale.is_finite() {
            return Err("registers.scale: must be a finite number".into());
        }
        if !(self.min_change.is_finite() && self.min_change >= 0.0) {
            return Err("registers.min_change: must be a number >= 0".into());
        }
        if self.emit == Emit::ShelfWeight && self.slots == 0 {
            return Err("registers.emit: shelf_weight needs slots > 0".into());
        }
        for (i, v) in self.values.iter().enumerate() {
            let key = format!("registers.values[{i}]");
            if v.name.trim().is_empty() {
                return Err(format!("{key}.name: must not be empty"));
            }
            if self.values[..i].iter().any(|other| other.name == v.name) {
                return Err(format!("{key}.name: {:?} is used twice", v.name));
            }
            if u32::from(v.address) + u32::from(v.r#type.words()) > ADDRESS_END {
                return Err(format!(
                    "{key}.address: a {} at {} runs past register 65535",
                    v.r#type.name(),
                    v.address
                ));
            }
            if !v.scale.is_finite() {
                return Err(format!("{key}.scale: must be a finite number"));
            }
        }
        Ok(())
    }

    /// The register ranges the values occupy, each exactly its own
    /// registers, in address order.
    fn spans(&self) -> Vec<Span> {
        let words = u32::from(self.r#type.words());
        let stride = u32::from(self.slot_stride());
        let mut spans = Vec::new();
        for i in 0..u32::from(self.slots) {
            let start = u32::from(self.start) + i * stride;
            if start + words > ADDRESS_END {
                break; // invalid profile; validate() reports it
            }
            spans.push(Span {
                table: self.table,
                start,
                end: start + words,
            });
        }
        for v in &self.values {
            let start = u32::from(v.address);
            let end = start + u32::from(v.r#type.words());
            if end <= ADDRESS_END {
                spans.push(Span {
                    table: v.table,
                    start,
                    end,
                });
            }
        }
        spans.sort_by_key(|s| (s.table, s.start, s.end));
        spans
    }

    /// Whether the registers `from..to` of `table` lie inside the slot
    /// block (from slot 0 to the end of the last slot's value), i.e. are
    /// padding between slots. The device defines that block, so reading
    /// its padding is safe, and one read of the block beats one per slot.
    /// Other gaps are never read: an address the device does not
    /// implement gets an exception instead of data.
    fn is_slot_padding(&self, table: Table, from: u32, to: u32) -> bool {
        let Some(last) = self.slots.checked_sub(1) else {
            return false;
        };
        let block_start = u32::from(self.start);
        let block_end = block_start
            + u32::from(last) * u32::from(self.slot_stride())
            + u32::from(self.r#type.words());
        table == self.table && from >= block_start && to <= block_end
    }

    /// The reads to make each poll: values that overlap, touch or are
    /// separated only by slot padding share one request of at most
    /// [`MAX_READ`] registers. A value is never split across two requests,
    /// so a 32-bit value cannot tear (high word from one poll, low word
    /// from the next).
    pub fn read_plan(&self) -> Vec<ReadRequest> {
        let mut plan = Vec::new();
        let mut current: Option<Span> = None;
        for span in self.spans() {
            match &mut current {
                Some(cur)
                    if cur.table == span.table
                        && (span.start <= cur.end
                            || self.is_slot_padding(cur.table, cur.end, span.start))
                        && cur.end.max(span.end) - cur.start <= u32::from(MAX_READ) =>
                {
                    cur.end = cur.end.max(span.end);
                }
                _ => {
                    if let Some(done) = current.replace(span) {
                        plan.push(to_request(&done));
                    }
                }
            }
        }
        if let Some(done) = current {
            plan.push(to_request(&done));
        }
        plan
    }

    /// Turn the words returned for a read plan into scaled samples: one
    /// per slot (`SampleKey::Slot`), then one per named value. Fails as a
    /// whole, naming the problem, if a read returned the wrong number of
    /// registers, a needed register was not read, or a value is not a
    /// finite number.
    pub fn decode(&self, reads: &[(ReadRequest, Vec<u16>)]) -> Result<Vec<Sample>, String> {
        let mut registers: HashMap<(Table, u32), u16> = HashMap::new();
        for (req, words) in reads {
            if words.len() != usize::from(req.count) {
                return Err(format!(
                    "read of {} {} registers from {} returned {}",
                    req.count,
                    req.table.name(),
                    req.start,
                    words.len()
                ));
            }
            for (addr, word) in (u32::from(req.start)..).zip(words) {
                registers.insert((req.table, addr), *word);
            }
        }

        let value_at = |table: Table, address: u32, ty: RegType, order: WordOrder| {
            let words = (address..address + u32::from(ty.words()))
                .map(|a| {
                    registers
                        .get(&(table, a))
                        .copied()
                        .ok_or_else(|| format!("{} register {a} was not read", table.name()))
                })
                .collect::<Result<Vec<u16>, String>>()?;
            decode_word(&words, ty, order).ok_or_else(|| {
                format!(
                    "{} register {address}: {:04X?} is not a finite {}",
                    table.name(),
                    words,
                    ty.name()
                )
            })
        };

        let mut samples = Vec::new();
        let stride = u32::from(self.slot_stride());
        for slot in 0..self.slots {
            let address = u32::from(self.start) + u32::from(slot) * stride;
            let raw = value_at(self.table, address, self.r#type, self.word_order)?;
            samples.push(Sample {
                key: SampleKey::Slot(slot),
                value: raw * self.scale,
                unit: self.unit.clone(),
            });
        }
        for v in &self.values {
            let raw = value_at(v.table, u32::from(v.address), v.r#type, v.word_order)?;
            samples.push(Sample {
                key: SampleKey::Named(v.name.clone()),
                value: raw * v.scale,
                unit: v.unit.clone(),
            });
        }
        Ok(samples)
    }
}

/// A merged span as a request. Spans end at or before register 65536 and
/// are at most MAX_READ long, so both fit in u16.
fn to_request(span: &Span) -> ReadRequest {
    ReadRequest {
        table: span.table,
        start: u16::try_from(span.start).unwrap_or(u16::MAX),
        count: u16::try_from(span.end - span.start).unwrap_or(0),
    }
}

/// Read the registers of one value as a number, exactly: `u16`/`i16` from
/// one word, `u32`/`i32` from two words (high word first for
/// [`WordOrder::Big`]), `f32` from the IEEE 754 bits of two words. `None`
/// if the number of words does not fit the type, or an `f32` is NaN or
/// infinite (devices use NaN for "no reading", which no event can carry).
pub fn decode_word(words: &[u16], ty: RegType, order: WordOrder) -> Option<f64> {
    match (ty, words) {
        (RegType::U16, &[w]) => Some(f64::from(w)),
        (RegType::I16, &[w]) => Some(f64::from(w as i16)),
        (RegType::U32 | RegType::I32 | RegType::F32, &[first, second]) => {
            let (hi, lo) = match order {
                WordOrder::Big => (first, second),
                WordOrder::Little => (second, first),
            };
            let bits = (u32::from(hi) << 16) | u32::from(lo);
            match ty {
                RegType::U32 => Some(f64::from(bits)),
                RegType::I32 => Some(f64::from(bits as i32)),
                _ => Some(f64::from(f32::from_bits(bits))).filter(|v| v.is_finite()),
            }
        }
        _ => None,
    }
}

/// Decides which samples are worth emitting (`min_change` / `heartbeat_s`),
/// so a shelf polled every second does not journal the same weight every
/// second, yet still proves it is alive now and then.
#[derive(Debug, Clone)]
pub struct ChangeFilter {
    min_change: f64,
    heartbeat: Duration,
    /// Per key: the last emitted value and when it was emitted.
    last: HashMap<SampleKey, (f64, Instant)>,
}

impl ChangeFilter {
    /// A filter emitting on a change of at least `min_change` or after
    /// `heartbeat` without an emission.
    pub fn new(min_change: f64, heartbeat: Duration) -> Self {
        ChangeFilter {
            min_change,
            heartbeat,
            last: HashMap::new(),
        }
    }

    /// The filter a profile's `min_change` and `heartbeat_s` describe.
    pub fn from_params(params: &RegistersParams) -> Self {
        Self::new(params.min_change, Duration::from_secs(params.heartbeat_s))
    }

    /// Whether to emit `value` for `key` at `now`; if so it becomes the
    /// value later ones are compared with. The first value of a key is
    /// always emitted. Comparing with the last *emitted* value (not the
    /// last seen) means a slow drift is still reported once it adds up.
    pub fn should_emit(&mut self, key: &SampleKey, value: f64, now: Instant) -> bool {
        let emit = match self.last.get(key) {
            None => true,
            Some(&(last_value, last_time)) => {
                (value - last_value).abs() >= self.min_change
                    || now.saturating_duration_since(last_time) >= self.heartbeat
            }
        };
        if emit {
            self.last.insert(key.clone(), (value, now));
        }
        emit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHELF: &str = include_str!("../../firmware-profiles/loadcell-shelf-modbus.toml");
    const XY_MD02: &str = include_str!("../../firmware-profiles/xy-md02.toml");

    /// The `[registers]` table of a profile file.
    fn profile_params(text: &str) -> RegistersParams {
        let table: toml::Table = toml::from_str(text).unwrap();
        table["registers"].clone().try_into().unwrap()
    }

    fn params(text: &str) -> RegistersParams {
        toml::from_str(text).unwrap()
    }

    fn req(table: Table, start: u16, count: u16) -> ReadRequest {
        ReadRequest {
            table,
            start,
            count,
        }
    }

    use RegType::*;
    use WordOrder::{Big, Little};

    #[test]
    fn decode_16_bit_types() {
        assert_eq!(decode_word(&[0], U16, Big), Some(0.0));
        assert_eq!(decode_word(&[0xFFFF], U16, Big), Some(65535.0));
        assert_eq!(decode_word(&[0xFFFF], I16, Big), Some(-1.0));
        assert_eq!(decode_word(&[0xFF85], I16, Big), Some(-123.0));
        assert_eq!(decode_word(&[0x8000], I16, Little), Some(-32768.0));
        assert_eq!(decode_word(&[0x7FFF], I16, Big), Some(32767.0));
    }

    #[test]
    fn decode_32_bit_integers_both_orders() {
        assert_eq!(decode_word(&[0xFFFF, 0xFFFE], I32, Big), Some(-2.0));
        assert_eq!(decode_word(&[0xFFFE, 0xFFFF], I32, Little), Some(-2.0));
        // 70000 = 0x0001_1170
        assert_eq!(decode_word(&[0x0001, 0x1170], U32, Big), Some(70000.0));
        assert_eq!(decode_word(&[0x1170, 0x0001], U32, Little), Some(70000.0));
        assert_eq!(decode_word(&[0x0001, 0x1170], I32, Big), Some(70000.0));
        assert_eq!(
            decode_word(&[0xFFFF, 0xFFFF], U32, Big),
            Some(4_294_967_295.0)
        );
        assert_eq!(
            decode_word(&[0x8000, 0x0000], I32, Big),
            Some(f64::from(i32::MIN))
        );
        assert_eq!(
            decode_word(&[0xFFFF, 0x7FFF], I32, Little),
            Some(f64::from(i32::MAX))
        );
    }

    #[test]
    fn decode_f32_both_orders() {
        // 21.5 = 0x41AC_0000
        assert_eq!(decode_word(&[0x41AC, 0x0000], F32, Big), Some(21.5));
        assert_eq!(decode_word(&[0x0000, 0x41AC], F32, Little), Some(21.5));
        // -0.1f32 = 0xBDCC_CCCD, widened exactly.
        assert_eq!(
            decode_word(&[0xBDCC, 0xCCCD], F32, Big),
            Some(f64::from(-0.1f32))
        );
        // NaN and infinity are not readings.
        assert_eq!(decode_word(&[0x7FC0, 0x0000], F32, Big), None);
        assert_eq!(decode_word(&[0x7F80, 0x0000], F32, Big), None);
    }

    #[test]
    fn decode_word_count_must_match_type() {
        assert_eq!(decode_word(&[], U16, Big), None);
        assert_eq!(decode_word(&[1, 2], I16, Big), None);
        assert_eq!(decode_word(&[1], U32, Big), None);
        assert_eq!(decode_word(&[1, 2, 3], F32, Little), None);
    }

    #[test]
    fn named_i16_scaled() {
        let p = params(
            r#"
            [[values]]
            name = "temperature"
            address = 1
            type = "i16"
            scale = 0.1
            unit = "C"
            "#,
        );
        p.validate().unwrap();
        let samples = p
            .decode(&[(req(Table::Input, 1, 1), vec![0xFF85])])
            .unwrap();
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].key, SampleKey::Named("temperature".into()));
        assert!((samples[0].value - -12.3).abs() < 1e-9);
        assert_eq!(samples[0].unit, "C");
    }

    #[test]
    fn shelf_profile_parses_validates_and_decodes() {
        let p = profile_params(SHELF);
        p.validate().unwrap();
        assert_eq!(p.table, Table::Holding);
        assert_eq!((p.start, p.slots, p.slot_stride()), (0, 8, 2));
        assert_eq!(
            (p.r#type, p.word_order, p.emit),
            (I32, Big, Emit::ShelfWeight)
        );
        assert_eq!((p.min_change, p.heartbeat_s), (5.0, 300));
        assert_eq!(p.unit, "g");
        assert_eq!(p.read_plan(), vec![req(Table::Holding, 0, 16)]);

        // Slot i holds i * 1000 g, slot 7 reads -2 g (tare drift).
        let mut words = Vec::new();
        for i in 0..7u16 {
            words.extend([0, i * 1000]);
        }
        words.extend([0xFFFF, 0xFFFE]);
        let samples = p.decode(&[(req(Table::Holding, 0, 16), words)]).unwrap();
        let values: Vec<(SampleKey, f64)> =
            samples.iter().map(|s| (s.key.clone(), s.value)).collect();
        let mut expected: Vec<(SampleKey, f64)> = (0..7u16)
            .map(|i| (SampleKey::Slot(i), f64::from(i) * 1000.0))
            .collect();
        expected.push((SampleKey::Slot(7), -2.0));
        assert_eq!(values, expected);
        assert!(samples.iter().all(|s| s.unit == "g"));
    }

    #[test]
    fn xy_md02_profile_parses_validates_and_decodes() {
        let file: toml::Table = toml::from_str(XY_MD02).unwrap();
        assert_eq!(file["name"].as_str(), Some("xy-md02"));
        assert_eq!(file["kind"].as_str(), Some("sensor"));
        assert_eq!(file["codec"].as_str(), Some("registers"));
        assert_eq!(file["default_baud"].as_integer(), Some(9600));

        let p = profile_params(XY_MD02);
        p.validate().unwrap();
        assert_eq!(p.emit, Emit::Reading);
        assert_eq!(p.slots, 0);
        // Registers 1 and 2 are adjacent: one function-04 read.
        assert_eq!(p.read_plan(), vec![req(Table::Input, 1, 2)]);
        // 23.4 C (234 = 0x00EA), 56.7 % (567 = 0x0237).
        let samples = p
            .decode(&[(req(Table::Input, 1, 2), vec![0x00EA, 0x0237])])
            .unwrap();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].key, SampleKey::Named("temperature".into()));
        assert!((samples[0].value - 23.4).abs() < 1e-9);
        assert_eq!(samples[0].unit, "C");
        assert_eq!(samples[1].key, SampleKey::Named("humidity".into()));
        assert!((samples[1].value - 56.7).abs() < 1e-9);
        assert_eq!(samples[1].unit, "%");
    }

    #[test]
    fn profile_files_have_the_header_keys_first() {
        for (name, text) in [("loadcell-shelf-modbus", SHELF), ("xy-md02", XY_MD02)] {
            let keys: Vec<&str> = text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .take(4)
                .map(|l| l.split('=').next().unwrap_or("").trim())
                .collect();
            assert_eq!(keys, ["name", "kind", "codec", "description"], "{name}");
            let file: toml::Table = toml::from_str(text).unwrap();
            assert_eq!(file["name"].as_str(), Some(name));
        }
    }

    #[test]
    fn read_plan_named_values_with_gap_are_separate_reads() {
        let p = params(
            r#"
            [[values]]
            name = "a"
            address = 1
            [[values]]
            name = "c"
            address = 3
            [[values]]
            name = "d"
            address = 4
            type = "u32"
            [[values]]
            name = "h"
            table = "holding"
            address = 2
            "#,
        );
        p.validate().unwrap();
        assert_eq!(
            p.read_plan(),
            vec![
                req(Table::Holding, 2, 1),
                req(Table::Input, 1, 1),
                req(Table::Input, 3, 3),
            ]
        );
    }

    #[test]
    fn read_plan_merges_overlapping_values_and_slots() {
        // A named value inside the slot block adds no read.
        let p = params(
            r#"
            table = "input"
            start = 10
            slots = 4
            type = "i16"
            [[values]]
            name = "slot2_again"
            address = 12
            type = "i16"
            "#,
        );
        p.validate().unwrap();
        assert_eq!(p.read_plan(), vec![req(Table::Input, 10, 4)]);
    }

    #[test]
    fn read_plan_reads_slot_padding_but_not_after_last_slot() {
        // u16 values every 4 registers: 10, 14, 18 -> one read 10..=18.
        let p = params("start = 10\nslots = 3\nwords_per_slot = 4\n");
        p.validate().unwrap();
        assert_eq!(p.read_plan(), vec![req(Table::Holding, 10, 9)]);
        // A gap outside the slot block is not bridged, even next to it,
        // nor padding-sized gaps in the other table.
        let p = params(
            r#"
            start = 10
            slots = 3
            words_per_slot = 4
            [[values]]
            name = "before"
            table = "holding"
            address = 8
            [[values]]
            name = "after"
            table = "holding"
            address = 20
            [[values]]
            name = "in_a"
            address = 11
            [[values]]
            name = "in_b"
            address = 13
            "#,
        );
        p.validate().unwrap();
        assert_eq!(
            p.read_plan(),
            vec![
                req(Table::Holding, 8, 1),
                req(Table::Holding, 10, 9),
                req(Table::Holding, 20, 1),
                req(Table::Input, 11, 1),
                req(Table::Input, 13, 1),
            ]
        );
    }

    #[test]
    fn read_plan_splits_over_125_registers_between_values() {
        // 100 i32 slots = 200 registers: 62 slots (124 registers) then 38.
        let p = params("slots = 100\ntype = \"i32\"\n");
        p.validate().unwrap();
        let plan = p.read_plan();
        assert_eq!(
            plan,
            vec![req(Table::Holding, 0, 124), req(Table::Holding, 124, 76)]
        );

        // 200 u16 slots: 125 + 75.
        let p = params("start = 1000\nslots = 200\n");
        assert_eq!(
            p.read_plan(),
            vec![
                req(Table::Holding, 1000, 125),
                req(Table::Holding, 1125, 75)
            ]
        );

        // Slots far apart: padding is read only while it fits one read.
        let p = params("slots = 4\nwords_per_slot = 100\ntype = \"f32\"\n");
        p.validate().unwrap();
        assert_eq!(
            p.read_plan(),
            vec![req(Table::Holding, 0, 102), req(Table::Holding, 200, 102)]
        );
        let p = params("slots = 3\nwords_per_slot = 200\ntype = \"f32\"\n");
        p.validate().unwrap();
        assert_eq!(
            p.read_plan(),
            vec![
                req(Table::Holding, 0, 2),
                req(Table::Holding, 200, 2),
                req(Table::Holding, 400, 2),
            ]
        );
    }

    #[test]
    fn decode_across_split_reads() {
        let p = params("slots = 100\ntype = \"i32\"\nword_order = \"little\"\nscale = 0.5\n");
        let reads: Vec<(ReadRequest, Vec<u16>)> = p
            .read_plan()
            .into_iter()
            .map(|r| {
                // Register n holds: low word = slot number, high word = 0.
                let words = (r.start..r.start + r.count)
                    .map(|a| if a % 2 == 0 { a / 2 } else { 0 })
                    .collect();
                (r, words)
            })
            .collect();
        let samples = p.decode(&reads).unwrap();
        assert_eq!(samples.len(), 100);
        for (i, s) in samples.iter().enumerate() {
            assert_eq!(s.key, SampleKey::Slot(i as u16));
            assert_eq!(s.value, i as f64 * 0.5);
        }
    }

    #[test]
    fn decode_rejects_short_and_missing_reads() {
        let p = profile_params(SHELF);
        let err = p
            .decode(&[(req(Table::Holding, 0, 16), vec![0; 15])])
            .unwrap_err();
        assert!(err.contains("returned 15"), "{err}");
        let err = p
            .decode(&[(req(Table::Holding, 0, 8), vec![0; 8])])
            .unwrap_err();
        assert!(err.contains("holding register 8 was not read"), "{err}");
        // Right addresses, wrong table.
        let err = p
            .decode(&[(req(Table::Input, 0, 16), vec![0; 16])])
            .unwrap_err();
        assert!(err.contains("not read"), "{err}");
        assert!(p.decode(&[]).is_err());
    }

    #[test]
    fn decode_rejects_nan() {
        let p = params("slots = 1\ntype = \"f32\"\n");
        let err = p
            .decode(&[(req(Table::Holding, 0, 2), vec![0x7FC0, 0])])
            .unwrap_err();
        assert!(err.contains("not a finite f32"), "{err}");
    }

    #[test]
    fn defaults() {
        let p = params("slots = 1\n");
        assert_eq!(p.table, Table::Holding);
        assert_eq!((p.start, p.words_per_slot, p.slot_stride()), (0, None, 1));
        assert_eq!((p.r#type, p.word_order, p.emit), (U16, Big, Emit::Reading));
        assert_eq!((p.scale, p.min_change, p.heartbeat_s), (1.0, 0.0, 300));
        assert_eq!(p.unit, "");
        assert_eq!(params("type = \"f32\"").slot_stride(), 2);

        let p = params("[[values]]\nname = \"t\"\naddress = 5\n");
        let v = &p.values[0];
        assert_eq!((v.table, v.r#type, v.word_order), (Table::Input, U16, Big));
        assert_eq!((v.scale, v.unit.as_str()), (1.0, ""));
    }

    #[test]
    fn unknown_keys_and_bad_values_rejected_by_parsing() {
        assert!(toml::from_str::<RegistersParams>("slot = 8").is_err());
        assert!(toml::from_str::<RegistersParams>("type = \"i64\"").is_err());
        assert!(toml::from_str::<RegistersParams>("table = \"coils\"").is_err());
        assert!(toml::from_str::<RegistersParams>("start = 70000").is_err());
        assert!(toml::from_str::<RegistersParams>("[[values]]\nname = \"t\"\n").is_err());
        assert!(
            toml::from_str::<RegistersParams>(
                "[[values]]\nname = \"t\"\naddress = 1\nunits = \"C\""
            )
            .is_err()
        );
    }

    #[test]
    fn validate_names_the_key() {
        let cases = [
            ("", "registers.slots"),
            (
                "slots = 2\ntype = \"i32\"\nwords_per_slot = 1",
                "registers.words_per_slot",
            ),
            (
                "slots = 2\ntype = \"f32\"\nwords_per_slot = 0",
                "registers.words_per_slot",
            ),
            ("slots = 2\nstart = 65535", "registers.slots"),
            (
                "slots = 1\nstart = 65535\ntype = \"u32\"",
                "registers.slots",
            ),
            (
                "slots = 300\nstart = 65000\nwords_per_slot = 2",
                "registers.slots",
            ),
            ("slots = 1\nscale = nan", "registers.scale"),
            ("slots = 1\nmin_change = -1.0", "registers.min_change"),
            (
                "emit = \"shelf_weight\"\n[[values]]\nname = \"t\"\naddress = 1",
                "registers.emit",
            ),
            (
                "[[values]]\nname = \"\"\naddress = 1",
                "registers.values[0].name",
            ),
            (
                "[[values]]\nname = \"t\"\naddress = 1\n[[values]]\nname = \"t\"\naddress = 2",
                "registers.values[1].name",
            ),
            (
                "[[values]]\nname = \"t\"\naddress = 65535\ntype = \"f32\"",
                "registers.values[0].address",
            ),
            (
                "[[values]]\nname = \"t\"\naddress = 1\nscale = inf",
                "registers.values[0].scale",
            ),
        ];
        for (text, key) in cases {
            let err = params(text).validate().unwrap_err();
            assert!(err.starts_with(&format!("{key}:")), "{text:?}: {err}");
        }
        // The last possible register is fine.
        params("slots = 1\nstart = 65535").validate().unwrap();
        params("[[values]]\nname = \"t\"\naddress = 65534\ntype = \"u32\"")
            .validate()
            .unwrap();
    }

    #[test]
    fn invalid_params_never_panic() {
        // Not validated: plan and decode must still not panic.
        let p = params("slots = 65535\nstart = 65535\nwords_per_slot = 65535\ntype = \"u32\"");
        assert!(p.validate().is_err());
        assert!(p.read_plan().is_empty());
        assert!(p.decode(&[]).is_err());
        let p = params("slots = 65535\nwords_per_slot = 1\n");
        let plan = p.read_plan();
        assert!(plan.iter().all(|r| r.count <= MAX_READ));
        let total: u32 = plan.iter().map(|r| u32::from(r.count)).sum();
        assert_eq!(total, 65535);
    }

    #[test]
    fn change_filter_min_change_and_heartbeat() {
        let t0 = Instant::now();
        let s = |secs| t0 + Duration::from_secs(secs);
        let slot = SampleKey::Slot(0);
        let mut f = ChangeFilter::new(5.0, Duration::from_secs(300));

        assert!(f.should_emit(&slot, 1000.0, s(0)), "first value");
        assert!(!f.should_emit(&slot, 1004.0, s(1)), "below min_change");
        assert!(!f.should_emit(&slot, 996.0, s(2)), "below, downwards");
        assert!(f.should_emit(&slot, 1005.0, s(3)), "exactly min_change");
        // Compared with the last emitted value (1005), not the last seen.
        assert!(!f.should_emit(&slot, 1008.0, s(4)));
        assert!(f.should_emit(&slot, 1010.0, s(5)), "drift adds up");
        assert!(f.should_emit(&slot, 1000.0, s(6)), "drop of 10");
        // Heartbeat: 300 s after the last emission (at 6 s).
        assert!(!f.should_emit(&slot, 1000.0, s(305)));
        assert!(f.should_emit(&slot, 1000.0, s(306)), "heartbeat");
        assert!(!f.should_emit(&slot, 1000.0, s(307)));

        // Keys are independent.
        let other = SampleKey::Named("temperature".into());
        assert!(f.should_emit(&other, 1000.0, s(307)), "first of its key");
        assert!(!f.should_emit(&other, 1000.0, s(308)));
    }

    #[test]
    fn change_filter_from_profile() {
        let t0 = Instant::now();
        let mut f = ChangeFilter::from_params(&profile_params(SHELF));
        let key = SampleKey::Slot(3);
        assert!(f.should_emit(&key, 500.0, t0));
        assert!(!f.should_emit(&key, 504.0, t0 + Duration::from_secs(299)));
        assert!(f.should_emit(&key, 504.0, t0 + Duration::from_secs(300)));

        // min_change 0 and heartbeat 0: everything is emitted.
        let mut f = ChangeFilter::new(0.0, Duration::ZERO);
        assert!(f.should_emit(&key, 1.0, t0));
        assert!(f.should_emit(&key, 1.0, t0));
    }
}
