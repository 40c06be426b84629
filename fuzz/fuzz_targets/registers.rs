//! Register maps and the words a Modbus device answers: a register map
//! (as a profile would give it, validated first) and arbitrary register
//! contents. Every planned read covers every register the map needs, and
//! a decoded sample is always a finite number.
#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use storegate::codecs::registers::{
    NamedValue, RegType, RegistersParams, Table, WordOrder, decode_word,
};

const TYPES: [RegType; 5] = [
    RegType::U16,
    RegType::I16,
    RegType::U32,
    RegType::I32,
    RegType::F32,
];
const TABLES: [Table; 2] = [Table::Holding, Table::Input];
const ORDERS: [WordOrder; 2] = [WordOrder::Big, WordOrder::Little];

fn params(u: &mut Unstructured<'_>) -> Result<RegistersParams> {
    let mut values = Vec::new();
    for i in 0..u.int_in_range(0..=4u8)? {
        values.push(NamedValue {
            name: format!("v{i}"),
            table: *u.choose(&TABLES)?,
            address: u.arbitrary()?,
            r#type: *u.choose(&TYPES)?,
            word_order: *u.choose(&ORDERS)?,
            scale: f64::from(u.int_in_range(1..=1000u16)?) / 100.0,
            unit: "u".into(),
        });
    }
    Ok(RegistersParams {
        table: *u.choose(&TABLES)?,
        start: u.arbitrary()?,
        words_per_slot: if u.arbitrary()? {
            Some(u.int_in_range(1..=8u16)?)
        } else {
            None
        },
        slots: u.int_in_range(0..=64u16)?,
        r#type: *u.choose(&TYPES)?,
        word_order: *u.choose(&ORDERS)?,
        scale: 0.001,
        unit: "kg".into(),
        emit: Default::default(),
        min_change: 0.0,
        heartbeat_s: 300,
        values,
    })
}

fn run(data: &[u8]) -> Result<()> {
    let mut u = Unstructured::new(data);
    let ty = *u.choose(&TYPES)?;
    let order = *u.choose(&ORDERS)?;
    let words: Vec<u16> = (0..u.int_in_range(0..=3u8)?)
        .map(|_| u.arbitrary())
        .collect::<Result<_>>()?;
    if let Some(v) = decode_word(&words, ty, order) {
        assert!(v.is_finite());
        assert_eq!(words.len(), usize::from(ty.words()));
    }

    let params = params(&mut u)?;
    if params.validate().is_err() {
        return Ok(());
    }
    let plan = params.read_plan();
    let mut reads = Vec::new();
    for req in plan {
        let words = (0..req.count).map(|_| u.arbitrary().unwrap_or(0)).collect();
        reads.push((req, words));
    }
    match params.decode(&reads) {
        Ok(samples) => assert!(samples.iter().all(|s| s.value.is_finite())),
        Err(e) => assert!(
            e.contains("is not a finite"),
            "a planned read misses a register: {e}"
        ),
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(data);
});
