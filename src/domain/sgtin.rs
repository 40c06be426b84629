//! SGTIN-96 EPC decoding per the GS1 EPC Tag Data Standard (TDS), and the
//! GTIN check-digit helpers that go with it.
//!
//! An SGTIN-96 EPC is 96 bits: header (8, always `0x30`), filter (3),
//! partition (3), company prefix and item reference (44 bits together,
//! split according to the partition), serial (38). The GTIN-14 is rebuilt
//! as indicator digit + company prefix + rest of the item reference +
//! check digit.

/// The SGTIN-96 header byte.
const SGTIN96_HEADER: u8 = 0x30;

/// Hex digits in a 96-bit EPC.
const EPC_HEX_LEN: usize = 24;

/// Bits of the serial number.
const SERIAL_BITS: u32 = 38;

/// Largest serial number that fits in 38 bits.
pub const MAX_SERIAL: u64 = (1 << SERIAL_BITS) - 1;

/// TDS partition table, indexed by partition value 0..=6:
/// (company prefix bits, company prefix digits, item reference bits,
/// item reference digits). Prefix and item reference always total 44 bits
/// and 13 digits.
const PARTITIONS: [(u32, usize, u32, usize); 7] = [
    (40, 12, 4, 1),
    (37, 11, 7, 2),
    (34, 10, 10, 3),
    (30, 9, 14, 4),
    (27, 8, 17, 5),
    (24, 7, 20, 6),
    (20, 6, 24, 7),
];

/// A decoded SGTIN-96: which trade item (GTIN) and which instance of it
/// (serial) an RFID tag carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sgtin {
    /// Filter value 0..=7 (e.g. 1 = point-of-sale item, 3 = case).
    pub filter: u8,
    /// Partition 0..=6: how the 44 bits split into prefix and item reference.
    pub partition: u8,
    /// GS1 company prefix, zero-padded to its digit count (6..=12 digits).
    pub company_prefix: String,
    /// Item reference including its leading indicator digit, zero-padded
    /// to its digit count (1..=7 digits).
    pub item_reference: String,
    /// GTIN-14 with computed check digit.
    pub gtin: String,
    /// Serial number (38 bits).
    pub serial: u64,
}

/// Why an EPC could not be decoded as SGTIN-96, or a GTIN encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SgtinError {
    #[error("EPC {text:?} is not hexadecimal")]
    NotHex { text: String },
    #[error("EPC has {len} hex digits, SGTIN-96 needs 24")]
    WrongLength { len: usize },
    #[error("EPC header 0x{header:02X} is not SGTIN-96 (0x30)")]
    NotSgtin96 { header: u8 },
    #[error("partition {0} is not defined for SGTIN-96 (0..=6)")]
    BadPartition(u8),
    #[error("company prefix value {value} does not fit in {digits} digits")]
    CompanyPrefixTooLarge { value: u64, digits: usize },
    #[error("item reference value {value} does not fit in {digits} digits")]
    ItemReferenceTooLarge { value: u64, digits: usize },
    #[error("{gtin:?} is not a valid GTIN")]
    BadGtin { gtin: String },
    #[error("filter {0} does not fit in 3 bits (0..=7)")]
    BadFilter(u8),
    #[error("serial {0} does not fit in 38 bits")]
    SerialTooLarge(u64),
}

/// Decode an SGTIN-96 EPC given as 24 hex digits (upper or lower case,
/// surrounding whitespace ignored) into filter, partition, company prefix,
/// item reference, GTIN-14 and serial.
pub fn decode_sgtin96(epc_hex: &str) -> Result<Sgtin, SgtinError> {
    let text = epc_hex.trim();
    // Checked by hand rather than relying on from_str_radix, which would
    // also accept a leading '+'.
    if text.is_empty() || !text.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(SgtinError::NotHex {
            text: text.to_string(),
        });
    }
    // All ASCII now, so the byte length is the digit count.
    if text.len() != EPC_HEX_LEN {
        return Err(SgtinError::WrongLength { len: text.len() });
    }
    let bits = u128::from_str_radix(text, 16).map_err(|_| SgtinError::NotHex {
        text: text.to_string(),
    })?;

    let header = (bits >> 88) as u8;
    if header != SGTIN96_HEADER {
        return Err(SgtinError::NotSgtin96 { header });
    }
    let filter = ((bits >> 85) & 0b111) as u8;
    let partition = ((bits >> 82) & 0b111) as u8;
    let &(cp_bits, cp_digits, ir_bits, ir_digits) = PARTITIONS
        .get(usize::from(partition))
        .ok_or(SgtinError::BadPartition(partition))?;

    // The 44 bits below the partition: company prefix first, then item
    // reference.
    let cp_value = ((bits >> (82 - cp_bits)) & mask(cp_bits)) as u64;
    let ir_value = ((bits >> SERIAL_BITS) & mask(ir_bits)) as u64;
    let serial = (bits & mask(SERIAL_BITS)) as u64;

    // The binary fields are wider than their decimal digit counts, so a
    // tag can carry values no GTIN can hold; TDS says such EPCs are invalid.
    if cp_value >= 10u64.pow(cp_digits as u32) {
        return Err(SgtinError::CompanyPrefixTooLarge {
            value: cp_value,
            digits: cp_digits,
        });
    }
    if ir_value >= 10u64.pow(ir_digits as u32) {
        return Err(SgtinError::ItemReferenceTooLarge {
            value: ir_value,
            digits: ir_digits,
        });
    }

    let company_prefix = format!("{cp_value:0cp_digits$}");
    let item_reference = format!("{ir_value:0ir_digits$}");
    // Indicator digit (first of the item reference) goes first in the GTIN.
    let (indicator, item_rest) = item_reference.split_at(1);
    let first13 = format!("{indicator}{company_prefix}{item_rest}");
    let check = gtin_check_digit(&first13).ok_or_else(|| SgtinError::BadGtin {
        gtin: first13.clone(),
    })?;
    let gtin = format!("{first13}{check}");

    Ok(Sgtin {
        filter,
        partition,
        company_prefix,
        item_reference,
        gtin,
        serial,
    })
}

/// Encode a GTIN (any valid GTIN-8/12/13/14; it is normalised to 14 digits)
/// with the given partition, filter and serial as an SGTIN-96 EPC in
/// upper-case hex. Used by simulators and tests to make tag data.
pub fn encode_sgtin96(
    gtin14: &str,
    partition: u8,
    filter: u8,
    serial: u64,
) -> Result<String, SgtinError> {
    let gtin = normalize_gtin(gtin14).ok_or_else(|| SgtinError::BadGtin {
        gtin: gtin14.to_string(),
    })?;
    let &(cp_bits, cp_digits, _, _) = PARTITIONS
        .get(usize::from(partition))
        .ok_or(SgtinError::BadPartition(partition))?;
    if filter > 0b111 {
        return Err(SgtinError::BadFilter(filter));
    }
    if serial > MAX_SERIAL {
        return Err(SgtinError::SerialTooLarge(serial));
    }

    // gtin is 14 ASCII digits: indicator, company prefix, rest of item
    // reference, check digit (dropped: it is recomputed on decode).
    let bad = || SgtinError::BadGtin {
        gtin: gtin14.to_string(),
    };
    let indicator = gtin.get(0..1).ok_or_else(bad)?;
    let prefix = gtin.get(1..1 + cp_digits).ok_or_else(bad)?;
    let item_rest = gtin.get(1 + cp_digits..13).ok_or_else(bad)?;
    let cp_value: u128 = prefix.parse().map_err(|_| bad())?;
    let ir_value: u128 = format!("{indicator}{item_rest}")
        .parse()
        .map_err(|_| bad())?;

    let bits = (u128::from(SGTIN96_HEADER) << 88)
        | (u128::from(filter) << 85)
        | (u128::from(partition) << 82)
        | (cp_value << (82 - cp_bits))
        | (ir_value << SERIAL_BITS)
        | u128::from(serial);
    Ok(format!("{bits:024X}"))
}

/// GS1 mod-10 check digit for the digits that precede it (13 for a
/// GTIN-14, 12 for a GTIN-13, ...): weights 3, 1, 3, ... from the right.
/// `None` if the input is empty or not all ASCII digits.
pub fn gtin_check_digit(first13: &str) -> Option<u8> {
    if first13.is_empty() || !first13.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let sum: u32 = first13
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let digit = u32::from(b - b'0');
            if i % 2 == 0 { digit * 3 } else { digit }
        })
        .sum();
    Some(((10 - sum % 10) % 10) as u8)
}

/// Whether `gtin` is a GTIN-8, -12, -13 or -14 (all digits) with the right
/// check digit.
pub fn is_valid_gtin(gtin: &str) -> bool {
    if !matches!(gtin.len(), 8 | 12 | 13 | 14) || !gtin.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let (body, check) = gtin.split_at(gtin.len() - 1);
    gtin_check_digit(body).is_some_and(|c| check.as_bytes() == [b'0' + c])
}

/// A valid GTIN left-padded with zeros to 14 digits, the form the catalog
/// keys on; `None` if it is not a valid GTIN. Padding keeps the check
/// digit right because the weights count from the right.
pub fn normalize_gtin(gtin: &str) -> Option<String> {
    is_valid_gtin(gtin).then(|| format!("{gtin:0>14}"))
}

/// The low `n` bits set.
fn mask(n: u32) -> u128 {
    (1u128 << n) - 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tds_example_decodes() {
        let s = decode_sgtin96("3074257BF7194E4000001A85").unwrap();
        assert_eq!(
            s,
            Sgtin {
                filter: 3,
                partition: 5,
                company_prefix: "0614141".into(),
                item_reference: "812345".into(),
                gtin: "80614141123458".into(),
                serial: 6789,
            }
        );
    }

    #[test]
    fn lower_case_and_whitespace_accepted() {
        let s = decode_sgtin96(" 3074257bf7194e4000001a85\n").unwrap();
        assert_eq!(s.gtin, "80614141123458");
        assert_eq!(s.serial, 6789);
    }

    #[test]
    fn tds_example_encodes() {
        assert_eq!(
            encode_sgtin96("80614141123458", 5, 3, 6789).unwrap(),
            "3074257BF7194E4000001A85"
        );
    }

    /// One example per partition: (partition, filter, serial, GTIN-14,
    /// expected EPC, company prefix, item reference). The EPCs were
    /// computed independently of this code; two are worked by hand below.
    ///
    /// Partition 0, GTIN 11234567890125:
    /// - check digit of 1123456789012, weights 3,1,3.. from the right:
    ///   2*3+1+0*3+9+8*3+7+6*3+5+4*3+3+2*3+1+1*3 = 95 -> (10-5)%10 = 5.
    /// - prefix 12 digits "123456789012" = 0x1CBE991A14 (40 bits),
    ///   item reference "1" (indicator only) = 0001 (4 bits).
    /// - bits after header 0x30: filter 001, partition 000, prefix
    ///   0001 1100 1011 1110 1001 1001 0001 1010 0001 0100, item 0001,
    ///   serial 12345 = 0x3039 in 38 bits. Regrouped in nibbles:
    ///   0010 0000 0111 0010 1111 1010 0110 0100 0110 1000 0101 0000
    ///   = 2072FA646850, then item's last 2 bits "01" + serial's top 2
    ///   bits "00" = 4, then serial's low 36 bits 000003039.
    ///   EPC = 30 2072FA646850 4 000003039.
    ///
    /// Partition 6, GTIN 50001239876546:
    /// - check digit of 5000123987654:
    ///   4*3+5+6*3+7+8*3+9+3*3+2+1*3+0+0*3+0+5*3 = 104 -> 6.
    /// - prefix 6 digits "000123" = 123 = 0x0007B (20 bits), item
    ///   reference "5987654" (indicator 5 + 987654) = 0x5B5D46 (24 bits).
    /// - bits after header: 001 110 | 0000 0000 0000 0111 1011 |
    ///   0101 1011 0101 1101 0100 0110 | serial; in nibbles:
    ///   0011 1000 0000 0000 0001 1110 1101 0110 1101 0111 0101 0001
    ///   = 38001ED6D751, then "10" + "00" = 8, then 000003039.
    ///   EPC = 30 38001ED6D751 8 000003039.
    const PER_PARTITION: [(u8, u8, u64, &str, &str, &str, &str); 7] = [
        (
            0,
            1,
            12345,
            "11234567890125",
            "302072FA6468504000003039",
            "123456789012",
            "1",
        ),
        (
            1,
            1,
            12345,
            "04012345678956",
            "30252AF16BA2A14000003039",
            "40123456789",
            "05",
        ),
        (
            2,
            1,
            12345,
            "09501234567129",
            "302A36515587030000003039",
            "9501234567",
            "012",
        ),
        (
            3,
            1,
            12345,
            "14006381333938",
            "302D7E140B515C4000003039",
            "400638133",
            "1393",
        ),
        (
            4,
            1,
            12345,
            "31234567800074",
            "30305E30A71D4DC000003039",
            "12345678",
            "30007",
        ),
        (
            5,
            3,
            6789,
            "80614141123458",
            "3074257BF7194E4000001A85",
            "0614141",
            "812345",
        ),
        (
            6,
            1,
            12345,
            "50001239876546",
            "3038001ED6D7518000003039",
            "000123",
            "5987654",
        ),
    ];

    #[test]
    fn one_example_per_partition() {
        for (partition, filter, serial, gtin, epc, prefix, item) in PER_PARTITION {
            assert!(is_valid_gtin(gtin), "{gtin}");
            assert_eq!(
                encode_sgtin96(gtin, partition, filter, serial).unwrap(),
                epc,
                "partition {partition}"
            );
            let s = decode_sgtin96(epc).unwrap();
            assert_eq!(s.partition, partition);
            assert_eq!(s.filter, filter);
            assert_eq!(s.serial, serial);
            assert_eq!(s.gtin, gtin);
            assert_eq!(s.company_prefix, prefix);
            assert_eq!(s.item_reference, item);
        }
    }

    #[test]
    fn round_trip_all_partitions_filters_and_serial_extremes() {
        for partition in 0..=6u8 {
            for filter in 0..=7u8 {
                for serial in [0, 1, 6789, MAX_SERIAL] {
                    for gtin in ["80614141123458", "00000000000000", "99999999999997"] {
                        let epc = encode_sgtin96(gtin, partition, filter, serial).unwrap();
                        let s = decode_sgtin96(&epc).unwrap();
                        assert_eq!(
                            (s.gtin.as_str(), s.partition, s.filter, s.serial),
                            (gtin, partition, filter, serial)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn encode_normalizes_shorter_gtins() {
        // GTIN-13 0614141123452 is GTIN-14 00614141123452.
        let epc = encode_sgtin96("0614141123452", 5, 1, 7).unwrap();
        assert_eq!(decode_sgtin96(&epc).unwrap().gtin, "00614141123452");
    }

    #[test]
    fn encode_rejects_bad_arguments() {
        assert_eq!(
            encode_sgtin96("80614141123457", 5, 3, 1),
            Err(SgtinError::BadGtin {
                gtin: "80614141123457".into()
            })
        );
        assert_eq!(
            encode_sgtin96("80614141123458", 7, 3, 1),
            Err(SgtinError::BadPartition(7))
        );
        assert_eq!(
            encode_sgtin96("80614141123458", 5, 8, 1),
            Err(SgtinError::BadFilter(8))
        );
        assert_eq!(
            encode_sgtin96("80614141123458", 5, 3, MAX_SERIAL + 1),
            Err(SgtinError::SerialTooLarge(MAX_SERIAL + 1))
        );
    }

    #[test]
    fn other_headers_rejected() {
        // Impinj-style EPC from the R700 sample (header 0xE2).
        assert_eq!(
            decode_sgtin96("E28011606000020A6681F23F"),
            Err(SgtinError::NotSgtin96 { header: 0xE2 })
        );
        // SGTIN-198 header, right length for 96 bits.
        assert_eq!(
            decode_sgtin96("3674257BF7194E4000001A85"),
            Err(SgtinError::NotSgtin96 { header: 0x36 })
        );
    }

    #[test]
    fn wrong_length_rejected() {
        assert_eq!(
            decode_sgtin96("3074257BF7194E4000001A8"),
            Err(SgtinError::WrongLength { len: 23 })
        );
        assert_eq!(
            decode_sgtin96("3074257BF7194E4000001A8500"),
            Err(SgtinError::WrongLength { len: 26 })
        );
        // A 128-bit EPC would overflow nothing, just be refused.
        assert_eq!(
            decode_sgtin96(&"F".repeat(40)),
            Err(SgtinError::WrongLength { len: 40 })
        );
    }

    #[test]
    fn non_hex_rejected() {
        for text in [
            "",
            "   ",
            "3074257BF7194E4000001A8G",
            "+074257BF7194E4000001A85",
            "3074257BF7194E40 0001A85",
            "3074257BF7194E4000001A8é",
        ] {
            assert!(
                matches!(decode_sgtin96(text), Err(SgtinError::NotHex { .. })),
                "{text:?}"
            );
        }
    }

    #[test]
    fn partition_7_rejected() {
        // 0x30, filter 3 (011), partition 7 (111): 0011 0000 0111 11.. = 307C...
        assert_eq!(
            decode_sgtin96("307C257BF7194E4000001A85"),
            Err(SgtinError::BadPartition(7))
        );
    }

    #[test]
    fn values_too_large_for_their_digits_rejected() {
        // Partition 6: 20-bit company prefix of all ones = 1048575 > 6 digits.
        let bits: u128 = (0x30u128 << 88) | (6 << 82) | (0xFFFFF << 62);
        let epc = format!("{bits:024X}");
        assert_eq!(
            decode_sgtin96(&epc),
            Err(SgtinError::CompanyPrefixTooLarge {
                value: 0xFFFFF,
                digits: 6
            })
        );
        // Partition 0: 4-bit item reference of 10 > 1 digit.
        let bits: u128 = (0x30u128 << 88) | (10 << 38);
        let epc = format!("{bits:024X}");
        assert_eq!(
            decode_sgtin96(&epc),
            Err(SgtinError::ItemReferenceTooLarge {
                value: 10,
                digits: 1
            })
        );
    }

    #[test]
    fn check_digits() {
        // GTIN-13 0614141123452 (GS1 example) and its GTIN-14 form.
        assert_eq!(gtin_check_digit("061414112345"), Some(2));
        assert_eq!(gtin_check_digit("0061414112345"), Some(2));
        // TDS example GTIN-14 80614141123458.
        assert_eq!(gtin_check_digit("8061414112345"), Some(8));
        // GTIN-8 9638-5074: 9*3+6+3*3+8+5*3+0+7*3 = 86 -> 4.
        assert_eq!(gtin_check_digit("9638507"), Some(4));
        assert_eq!(gtin_check_digit("0000000000000"), Some(0));
        assert_eq!(gtin_check_digit(""), None);
        assert_eq!(gtin_check_digit("12a4"), None);
        assert_eq!(gtin_check_digit("١٢٣"), None);
    }

    #[test]
    fn gtin_validity() {
        assert!(is_valid_gtin("0614141123452"));
        assert!(is_valid_gtin("00614141123452"));
        assert!(is_valid_gtin("80614141123458"));
        assert!(is_valid_gtin("96385074"));
        assert!(is_valid_gtin("614141123452")); // GTIN-12 (UPC-A)
        assert!(!is_valid_gtin("0614141123453")); // wrong check digit
        assert!(!is_valid_gtin("614141123453")); // GTIN-12, wrong check digit
        assert!(!is_valid_gtin("9638507")); // 7 digits
        assert!(!is_valid_gtin("006141411234520")); // 15 digits
        assert!(!is_valid_gtin("0614141l23452"));
        assert!(!is_valid_gtin(""));
    }

    #[test]
    fn gtin_normalization() {
        assert_eq!(
            normalize_gtin("0614141123452").as_deref(),
            Some("00614141123452")
        );
        assert_eq!(
            normalize_gtin("96385074").as_deref(),
            Some("00000096385074")
        );
        assert_eq!(
            normalize_gtin("80614141123458").as_deref(),
            Some("80614141123458")
        );
        assert_eq!(normalize_gtin("0614141123453"), None);
    }
}
