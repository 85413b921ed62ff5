//! Bitcoin readings of `Data` blobs: a 32-byte hash, an 80-byte block header, a transaction or a
//! whole block, shown the way Bitcoin Core shows them (hashes byte-reversed, amounts in BTC).
//!
//! The decoder only knows a field is `Data`; whether it holds a header or a transaction is a
//! guess from its length and structure, with the field name as a tie-breaker. A blob is called a
//! transaction or a block only when Bitcoin's consensus serialization consumes every byte of it,
//! so garbage stays raw bytes. Nothing here allocates in proportion to a length read from the
//! blob, and nothing panics.

use sha2::{Digest, Sha256};

/// One Bitcoin-aware reading of a byte blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reading {
    /// What the bytes are read as: "hash", "block header", "transaction" or "block".
    pub label: String,
    /// Short `name value` lines for a narrow detail pane; hashes are in full, the UI wraps them.
    pub lines: Vec<String>,
}

/// What the bytes look like to a Bitcoin developer, best guess first; empty when nothing fits.
///
/// `field` is the Cap'n Proto field name (e.g. "hash", "blockHeader", "coinbaseTx", "block",
/// "result"). It only orders the readings that fit; it never makes a reading fit.
pub fn readings(field: &str, bytes: &[u8]) -> Vec<Reading> {
    // Default order, most specific evidence first: a block or transaction must consume every
    // byte, whereas any 80 bytes with sane bits and time pass as a header.
    let mut found = Vec::new();
    if let Some(reading) = block_reading(bytes) {
        found.push((Kind::Block, reading));
    }
    if let Some(tx) = exact_tx(bytes) {
        found.push((Kind::Tx, tx_reading(&tx)));
    }
    if let Ok(raw) = <&[u8; HEADER_LEN]>::try_from(bytes) {
        let header = Header::parse(raw);
        if header.plausible() {
            found.push((
                Kind::Header,
                Reading {
                    label: "block header".to_owned(),
                    lines: header.lines(),
                },
            ));
        }
    }
    if let Ok(hash) = <&[u8; 32]>::try_from(bytes) {
        found.push((
            Kind::Hash,
            Reading {
                label: "hash".to_owned(),
                lines: vec![display_hex(hash)],
            },
        ));
    }
    let preferred = hint(field);
    // Stable: readings the name does not single out keep the default order.
    found.sort_by_key(|(kind, _)| Some(*kind) != preferred);
    found.into_iter().map(|(_, reading)| reading).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Block,
    Tx,
    Header,
    Hash,
}

/// The reading a field name asks for. "header" wins over "block" because `blockHeader` is a
/// header; "coinbase" means the coinbase transaction.
fn hint(field: &str) -> Option<Kind> {
    let name = field.to_ascii_lowercase();
    if name.contains("header") {
        Some(Kind::Header)
    } else if name.contains("tx") || name.contains("transaction") || name.contains("coinbase") {
        Some(Kind::Tx)
    } else if name.contains("block") {
        Some(Kind::Block)
    } else if name.contains("hash") || name.contains("tip") {
        Some(Kind::Hash)
    } else {
        None
    }
}

const HEADER_LEN: usize = 80;
/// Bitcoin Core's `MAX_SIZE`: `ReadCompactSize` refuses anything larger.
const MAX_COMPACT_SIZE: u64 = 0x0200_0000;
/// Smallest serialized input: outpoint (36), empty scriptSig length (1), sequence (4).
const MIN_INPUT_LEN: usize = 41;
/// Smallest serialized output: value (8), empty scriptPubKey length (1).
const MIN_OUTPUT_LEN: usize = 9;
/// Smallest transaction this module accepts: version, one input, one output, locktime.
const MIN_TX_LEN: usize = 4 + 1 + MIN_INPUT_LEN + 1 + MIN_OUTPUT_LEN + 4;
/// Below this a locktime is a block height, from it on a unix time (`LOCKTIME_THRESHOLD`).
const LOCKTIME_THRESHOLD: u32 = 500_000_000;
/// Time of the mainnet genesis block; no chain has blocks before it.
const GENESIS_TIME: u32 = 1_231_006_505;
const SATS_PER_BTC: i128 = 100_000_000;

/// Bitcoin's hash: SHA-256 of SHA-256, over the concatenation of `parts`.
fn sha256d(parts: &[&[u8]]) -> [u8; 32] {
    let mut first = Sha256::new();
    for part in parts {
        first.update(part);
    }
    Sha256::digest(first.finalize()).into()
}

/// Hex of `bytes` last byte first: how `uint256::GetHex` prints hashes, which are stored
/// little-endian.
fn display_hex(bytes: &[u8]) -> String {
    bytes.iter().rev().map(|b| format!("{b:02x}")).collect()
}

/// Satoshis as BTC with all 8 decimals, the way `bitcoin-cli` prints amounts.
fn btc(sats: i128) -> String {
    let sign = if sats < 0 { "-" } else { "" };
    let abs = sats.unsigned_abs();
    let per = SATS_PER_BTC.unsigned_abs();
    format!("{sign}{}.{:08} BTC", abs / per, abs % per)
}

/// A unix time as `YYYY-MM-DD HH:MM:SS UTC`.
fn utc(secs: u32) -> String {
    let secs = u64::from(secs);
    let (year, month, day) = civil_from_days(secs / 86_400);
    let of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        of_day / 3_600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// The proleptic Gregorian date `days` after 1970-01-01. Years are counted from March 1st so
/// the leap day is the last day of a year, and in 400-year eras of exactly 146 097 days, within
/// which the leap rules are plain divisions.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // 0000-03-01 is 719 468 days before 1970-01-01.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    // Remove the leap days (every 4th year, not every 100th, but every 400th) before dividing.
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March have lengths 31 30 31 30 31 31 30 31 30 31 31 (29|28): 153 days per 5.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// Reads Bitcoin's serialization front to back; every read fails rather than run past the end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Cursor { bytes, pos: 0 }
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn at_end(&self) -> bool {
        self.pos == self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(len)?;
        let taken = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(taken)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }

    fn u8(&mut self) -> Option<u8> {
        let [byte] = self.array()?;
        Some(byte)
    }

    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    /// A compact-size integer, refused when not minimally encoded or above `MAX_SIZE`, as
    /// Bitcoin Core's `ReadCompactSize` does.
    fn compact_size(&mut self) -> Option<u64> {
        let (value, floor) = match self.u8()? {
            0xfd => (u64::from(u16::from_le_bytes(self.array()?)), 0xfd),
            0xfe => (u64::from(self.u32()?), 0x1_0000),
            0xff => (u64::from_le_bytes(self.array()?), 0x1_0000_0000),
            small => (u64::from(small), 0),
        };
        // A wider form than needed is a second encoding of the same number: not canonical.
        (floor..=MAX_COMPACT_SIZE).contains(&value).then_some(value)
    }

    /// A count of items at least `min_len` bytes each; refused when the rest of the blob could
    /// not hold that many, so a garbage count never drives a loop or an allocation.
    fn count(&mut self, min_len: usize) -> Option<usize> {
        let count = usize::try_from(self.compact_size()?).ok()?;
        (count.checked_mul(min_len)? <= self.remaining()).then_some(count)
    }

    /// A compact-size length followed by that many bytes (a script or a witness item).
    fn var_bytes(&mut self) -> Option<&'a [u8]> {
        let len = self.count(1)?;
        self.take(len)
    }
}

/// An 80-byte block header, fields as serialized (little-endian).
struct Header {
    version: i32,
    prev: [u8; 32],
    merkle_root: [u8; 32],
    time: u32,
    bits: u32,
    nonce: u32,
    hash: [u8; 32],
}

impl Header {
    fn parse(raw: &[u8; HEADER_LEN]) -> Header {
        let word = |at: usize| u32::from_le_bytes([raw[at], raw[at + 1], raw[at + 2], raw[at + 3]]);
        let hash32 = |at: usize| {
            let mut hash = [0; 32];
            hash.copy_from_slice(&raw[at..at + 32]);
            hash
        };
        Header {
            version: i32::from_le_bytes(word(0).to_le_bytes()),
            prev: hash32(4),
            merkle_root: hash32(36),
            time: word(68),
            bits: word(72),
            nonce: word(76),
            hash: sha256d(&[raw]),
        }
    }

    /// Whether a lone 80-byte blob is worth calling a header: `bits` must encode a target Bitcoin
    /// Core would accept (positive, non-zero, within 256 bits) and the time must not predate
    /// Bitcoin. Nonce and hash are not checked, because block templates are unsolved.
    fn plausible(&self) -> bool {
        let exponent = self.bits >> 24;
        let mantissa = self.bits & 0x007f_ffff;
        let negative = self.bits & 0x0080_0000 != 0;
        // The target is mantissa * 256^(exponent - 3); its top byte must stay within byte 32.
        let mantissa_len = match mantissa {
            0..=0xff => 1,
            0x100..=0xffff => 2,
            _ => 3,
        };
        let fits = exponent + mantissa_len <= 35;
        let nonzero = if exponent <= 3 {
            mantissa >> (8 * (3 - exponent)) != 0
        } else {
            mantissa != 0
        };
        !negative && fits && nonzero && self.time >= GENESIS_TIME
    }

    fn lines(&self) -> Vec<String> {
        vec![
            format!("hash {}", display_hex(&self.hash)),
            format!("version 0x{:08x} ({})", self.version, self.version),
            format!("prev {}", display_hex(&self.prev)),
            format!("merkle root {}", display_hex(&self.merkle_root)),
            format!("time {} ({})", self.time, utc(self.time)),
            format!("bits {:08x}", self.bits),
            format!("nonce {}", self.nonce),
        ]
    }
}

/// What the readings need of a parsed transaction.
struct Tx<'a> {
    version: u32,
    inputs: usize,
    outputs: usize,
    /// Sum of the output values in satoshis; wide enough that no garbage value overflows it.
    value_out: i128,
    /// The scriptSig of a coinbase; `None` when the transaction is not a coinbase.
    coinbase_script_sig: Option<&'a [u8]>,
    has_witness: bool,
    locktime: u32,
    txid: [u8; 32],
    wtxid: [u8; 32],
    /// Serialized size with witness.
    size: usize,
    /// Serialized size without marker, flag and witness (what the txid commits to).
    base_size: usize,
}

impl Tx<'_> {
    /// BIP141 weight: non-witness bytes count four times, witness bytes once.
    fn weight(&self) -> usize {
        self.base_size * 3 + self.size
    }
}

/// A transaction in Bitcoin's serialization (BIP144 when it carries witnesses) starting at the
/// cursor. Refused where Bitcoin Core's deserializer refuses (bad flag, empty witness record,
/// non-canonical sizes) and, beyond that, when it has no inputs or no outputs: such a thing is
/// never a valid transaction, and an empty input list is what a segwit marker looks like.
fn parse_tx<'a>(cursor: &mut Cursor<'a>) -> Option<Tx<'a>> {
    let start = cursor.pos;
    let version_bytes = cursor.take(4)?;
    let version = u32::from_le_bytes(version_bytes.try_into().ok()?);
    // BIP144: a zero where the input count belongs is the marker; flag 1 is the only one defined.
    let segwit = cursor.peek() == Some(0);
    if segwit {
        cursor.take(1)?;
        if cursor.u8()? != 1 {
            return None;
        }
    }
    let body_start = cursor.pos;
    let inputs = cursor.count(MIN_INPUT_LEN)?;
    if inputs == 0 {
        return None;
    }
    let mut first_input = None;
    for index in 0..inputs {
        let prev_hash: [u8; 32] = cursor.array()?;
        let prev_index = cursor.u32()?;
        let script_sig = cursor.var_bytes()?;
        cursor.u32()?; // sequence
        if index == 0 {
            first_input = Some((prev_hash, prev_index, script_sig));
        }
    }
    let outputs = cursor.count(MIN_OUTPUT_LEN)?;
    if outputs == 0 {
        return None;
    }
    let mut value_out = 0i128;
    for _ in 0..outputs {
        value_out += i128::from(cursor.i64()?);
        cursor.var_bytes()?; // scriptPubKey
    }
    let body_end = cursor.pos;
    if segwit {
        let mut any_item = false;
        for _ in 0..inputs {
            let items = cursor.count(1)?;
            any_item |= items > 0;
            for _ in 0..items {
                cursor.var_bytes()?;
            }
        }
        // Core: "Superfluous witness record" — the marker promises at least one witness item.
        if !any_item {
            return None;
        }
    }
    let locktime_bytes = cursor.take(4)?;
    let locktime = u32::from_le_bytes(locktime_bytes.try_into().ok()?);
    let body = &cursor.bytes[body_start..body_end];
    let whole = &cursor.bytes[start..cursor.pos];
    // A coinbase has exactly one input, spending the null outpoint.
    let coinbase_script_sig = first_input.and_then(|(prev_hash, prev_index, script_sig)| {
        (inputs == 1 && prev_hash == [0; 32] && prev_index == u32::MAX).then_some(script_sig)
    });
    Some(Tx {
        version,
        inputs,
        outputs,
        value_out,
        coinbase_script_sig,
        has_witness: segwit,
        locktime,
        txid: sha256d(&[version_bytes, body, locktime_bytes]),
        wtxid: sha256d(&[whole]),
        size: whole.len(),
        base_size: version_bytes.len() + body.len() + locktime_bytes.len(),
    })
}

/// A transaction that is the whole blob, not a prefix of it.
fn exact_tx(bytes: &[u8]) -> Option<Tx<'_>> {
    let mut cursor = Cursor::new(bytes);
    let tx = parse_tx(&mut cursor)?;
    cursor.at_end().then_some(tx)
}

/// The block height a coinbase scriptSig starts with (BIP34): `OP_0`, `OP_1`..`OP_16`, or a push
/// of 1 to 8 bytes holding a little-endian script number. `None` for anything else, including
/// negative numbers.
fn bip34_height(script_sig: &[u8]) -> Option<u64> {
    let (&opcode, rest) = script_sig.split_first()?;
    match opcode {
        0x00 => Some(0),
        0x51..=0x60 => Some(u64::from(opcode - 0x50)),
        0x01..=0x08 => {
            let number = rest.get(..usize::from(opcode))?;
            // Script numbers keep their sign in the top bit of the last byte.
            if number.last()? & 0x80 != 0 {
                return None;
            }
            Some(
                number
                    .iter()
                    .rev()
                    .fold(0u64, |value, &byte| (value << 8) | u64::from(byte)),
            )
        }
        _ => None,
    }
}

fn locktime_line(locktime: u32) -> String {
    if locktime == 0 {
        "locktime 0".to_owned()
    } else if locktime < LOCKTIME_THRESHOLD {
        format!("locktime {locktime} (height)")
    } else {
        format!("locktime {locktime} ({})", utc(locktime))
    }
}

fn tx_reading(tx: &Tx<'_>) -> Reading {
    let mut lines = vec![format!("txid {}", display_hex(&tx.txid))];
    if tx.has_witness {
        lines.push(format!("wtxid {}", display_hex(&tx.wtxid)));
    }
    if let Some(script_sig) = tx.coinbase_script_sig {
        lines.push(match bip34_height(script_sig) {
            Some(height) => format!("coinbase, height {height} (BIP34)"),
            None => "coinbase".to_owned(),
        });
    }
    let weight = tx.weight();
    lines.extend([
        format!("version {}", tx.version),
        format!("inputs {}, outputs {}", tx.inputs, tx.outputs),
        format!("output value {}", btc(tx.value_out)),
        locktime_line(tx.locktime),
        format!(
            "size {} B, weight {weight} WU, vsize {} vB",
            tx.size,
            weight.div_ceil(4)
        ),
    ]);
    Reading {
        label: "transaction".to_owned(),
        lines,
    }
}

/// Bitcoin's merkle root of `hashes` (an odd level pairs its last hash with itself).
fn merkle_root(mut level: Vec<[u8; 32]>) -> [u8; 32] {
    while level.len() > 1 {
        level = level
            .chunks(2)
            .map(|pair| {
                let left = &pair[0];
                let right = pair.get(1).unwrap_or(left);
                sha256d(&[left, right])
            })
            .collect();
    }
    level.first().copied().unwrap_or_default()
}

/// A header, a transaction count and exactly that many transactions, nothing after. The header
/// is not held to [`Header::plausible`]: transactions consuming every byte are evidence enough.
fn block_reading(bytes: &[u8]) -> Option<Reading> {
    let raw: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    let header = Header::parse(raw);
    let mut cursor = Cursor::new(bytes);
    cursor.take(HEADER_LEN)?;
    let count = cursor.count(MIN_TX_LEN)?;
    if count == 0 {
        return None;
    }
    let mut base_size = cursor.pos;
    let mut txids = Vec::with_capacity(count);
    let mut first = None;
    for _ in 0..count {
        let tx = parse_tx(&mut cursor)?;
        base_size += tx.base_size;
        txids.push(tx.txid);
        first.get_or_insert(tx);
    }
    let first = first?;
    if !cursor.at_end() {
        return None;
    }
    let mut lines = header.lines();
    let computed_root = merkle_root(txids);
    if computed_root != header.merkle_root {
        // Templates leave the root for the miner to fill in; say what it should be.
        lines.push(format!(
            "merkle root of txs {} (differs)",
            display_hex(&computed_root)
        ));
    }
    lines.push(format!("txs {count}"));
    lines.push(format!(
        "size {} B, weight {} WU",
        bytes.len(),
        base_size * 3 + bytes.len()
    ));
    match first.coinbase_script_sig {
        Some(script_sig) => {
            lines.push(format!("coinbase txid {}", display_hex(&first.txid)));
            // BIP34 binds only version 2+ blocks; older coinbases (genesis's pushes its bits)
            // start with numbers that are not heights.
            if header.version >= 2
                && let Some(height) = bip34_height(script_sig)
            {
                lines.push(format!("coinbase height {height} (BIP34)"));
            }
            lines.push(format!("coinbase value {}", btc(first.value_out)));
        }
        None => lines.push("first tx is not a coinbase".to_owned()),
    }
    Some(Reading {
        label: "block".to_owned(),
        lines,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(hex: &str) -> Vec<u8> {
        assert!(hex.len().is_multiple_of(2), "odd hex length");
        (0..hex.len())
            .step_by(2)
            .map(|at| u8::from_str_radix(&hex[at..at + 2], 16).expect("hex digit"))
            .collect()
    }

    /// A hash given in display order, as stored (reversed).
    fn internal(display: &str) -> Vec<u8> {
        let mut bytes = unhex(display);
        bytes.reverse();
        bytes
    }

    /// Serializes a header from its field values, hashes given in display order.
    fn header(version: i32, prev: &str, merkle: &str, time: u32, bits: u32, nonce: u32) -> Vec<u8> {
        let mut raw = version.to_le_bytes().to_vec();
        raw.extend(internal(prev));
        raw.extend(internal(merkle));
        raw.extend(time.to_le_bytes());
        raw.extend(bits.to_le_bytes());
        raw.extend(nonce.to_le_bytes());
        assert_eq!(raw.len(), 80);
        raw
    }

    fn find<'a>(readings: &'a [Reading], label: &str) -> Option<&'a Reading> {
        readings.iter().find(|reading| reading.label == label)
    }

    fn reading(field: &str, bytes: &[u8], label: &str) -> Reading {
        let all = readings(field, bytes);
        find(&all, label)
            .unwrap_or_else(|| panic!("no {label} reading in {all:#?}"))
            .clone()
    }

    /// The rest of the line starting with `key `.
    fn value<'a>(reading: &'a Reading, key: &str) -> &'a str {
        reading
            .lines
            .iter()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no `{key}` line in {reading:#?}"))
    }

    fn labels(readings: &[Reading]) -> Vec<&str> {
        readings
            .iter()
            .map(|reading| reading.label.as_str())
            .collect()
    }

    const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";
    const GENESIS_MERKLE_ROOT: &str =
        "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b";
    /// The mainnet genesis coinbase (204 bytes); its txid is the genesis merkle root.
    const GENESIS_COINBASE: &str = "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff4d04ffff001d0104455468652054696d65732030332f4a616e2f32303039204368616e63656c6c6f72206f6e206272696e6b206f66207365636f6e64206261696c6f757420666f722062616e6b73ffffffff0100f2052a01000000434104678afdb0fe5548271967f1a67130b7105cd6a828e03909a67962e0ea1f61deb649f6bc3f4cef38c4f35504e51ec112de5c384df7ba0b8d578a4c702b6bf11d5fac00000000";

    fn genesis_header() -> Vec<u8> {
        header(
            1,
            ZERO_HASH,
            GENESIS_MERKLE_ROOT,
            1_231_006_505,
            0x1d00_ffff,
            2_083_236_893,
        )
    }

    fn genesis_block() -> Vec<u8> {
        let mut block = genesis_header();
        block.push(1);
        block.extend(unhex(GENESIS_COINBASE));
        block
    }

    // From the regtest session in tests/fixtures/captures/bitcoin-node-master/pyclient.{c2s,s2c}.bin
    // (`mpspy decode … --json`); the same node session (bitcoin-node-4515) is logged in
    // tests/fixtures/debug-logs/bitcoin-node-master-ipc-trace.log.

    /// s2c seq 36, `Mining.getTip` results `result.hash` (with `height = 5`), raw as sent.
    const TIP_HASH: &str = "cb8657d6816ad0837fd88d504d6732c1741d13bb3ce0770f0480f9d5de2cab45";
    /// The node's own RPC reply naming that block when it mined it (`generatetoaddress`, debug log
    /// line 437), in display order.
    const TIP_HASH_RPC: &str = "45ab2cded5f980040f77e03cbb131d74c132674d508dd87f83d06a81d65786cb";
    const TIP_HEIGHT: u64 = 5;
    /// s2c seq 42, `BlockTemplate.getBlockHeader` result: the template on top of that tip.
    const TEMPLATE_HEADER: &str = "00000020cb8657d6816ad0837fd88d504d6732c1741d13bb3ce0770f0480f9d5de2cab450000000000000000000000000000000000000000000000000000000000000000f11d046bffff7f2000000000";
    /// s2c seq 44, `BlockTemplate.getBlock` result: that template as a whole block.
    const TEMPLATE_BLOCK: &str = "00000020cb8657d6816ad0837fd88d504d6732c1741d13bb3ce0770f0480f9d5de2cab450000000000000000000000000000000000000000000000000000000000000000f11d046bffff7f200000000001020000000001010000000000000000000000000000000000000000000000000000000000000000ffffffff025600feffffff0200f2052a0100000001510000000000000000266a24aa21a9ede2f61c3f71d1defd3fa999dfa36953755c690689799962b48bebd836974e8cf90120000000000000000000000000000000000000000000000000000000000000000005000000";
    /// s2c seq 50, `BlockTemplate.getCoinbaseTx` result fields the block's coinbase must agree with.
    const TEMPLATE_COINBASE_VERSION: &str = "2";
    const TEMPLATE_COINBASE_LOCKTIME: &str = "5 (height)";
    const TEMPLATE_REWARD: &str = "50.00000000 BTC"; // blockRewardRemaining 5000000000
    /// c2s seq 62, `Mining.checkBlock` param `block`: ten zero bytes the node rejected.
    const CHECKBLOCK_GARBAGE: &str = "00000000000000000000";

    #[test]
    fn mainnet_genesis_header() {
        let raw = genesis_header();
        let all = readings("blockHeader", &raw);
        assert_eq!(labels(&all), ["block header"]);
        let header = &all[0];
        assert_eq!(
            value(header, "hash"),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
        assert_eq!(value(header, "version"), "0x00000001 (1)");
        assert_eq!(value(header, "prev"), ZERO_HASH);
        assert_eq!(value(header, "merkle root"), GENESIS_MERKLE_ROOT);
        assert_eq!(
            value(header, "time"),
            "1231006505 (2009-01-03 18:15:05 UTC)"
        );
        assert_eq!(value(header, "bits"), "1d00ffff");
        assert_eq!(value(header, "nonce"), "2083236893");
    }

    #[test]
    fn regtest_genesis_header_hash_is_what_the_node_reports() {
        // Regtest's genesis differs from mainnet's only in time, bits and nonce. The node of the
        // capture reported it as `bestblockhash` at `blocks 0` (debug log line 26).
        let raw = header(
            1,
            ZERO_HASH,
            GENESIS_MERKLE_ROOT,
            1_296_688_602,
            0x207f_ffff,
            2,
        );
        let header = reading("result", &raw, "block header");
        assert_eq!(
            value(&header, "hash"),
            "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206"
        );
    }

    #[test]
    fn mainnet_genesis_coinbase() {
        let raw = unhex(GENESIS_COINBASE);
        assert_eq!(raw.len(), 204);
        let all = readings("coinbaseTx", &raw);
        assert_eq!(labels(&all), ["transaction"]);
        let tx = &all[0];
        assert_eq!(value(tx, "txid"), GENESIS_MERKLE_ROOT);
        assert!(!tx.lines.iter().any(|line| line.starts_with("wtxid")));
        assert_eq!(value(tx, "version"), "1");
        assert_eq!(value(tx, "inputs"), "1, outputs 1");
        assert_eq!(value(tx, "output value"), "50.00000000 BTC");
        assert_eq!(value(tx, "locktime"), "0");
        assert_eq!(value(tx, "size"), "204 B, weight 816 WU, vsize 204 vB");
        // Genesis predates BIP34: its scriptSig starts by pushing the bits 0x1d00ffff, which a
        // lone transaction cannot tell from a height (the block reading can, by version).
        assert_eq!(value(tx, "coinbase,"), "height 486604799 (BIP34)");
    }

    #[test]
    fn mainnet_genesis_block() {
        let raw = genesis_block();
        let all = readings("block", &raw);
        assert_eq!(labels(&all), ["block"]);
        let block = &all[0];
        assert_eq!(
            value(block, "hash"),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
        assert_eq!(value(block, "txs"), "1");
        assert_eq!(value(block, "coinbase txid"), GENESIS_MERKLE_ROOT);
        assert_eq!(value(block, "coinbase value"), "50.00000000 BTC");
        assert_eq!(value(block, "size"), "285 B, weight 1140 WU");
        // The root in the header is the root of the txs, and a version-1 block has no height.
        assert!(!block.lines.iter().any(|line| line.contains("differs")));
        assert!(!block.lines.iter().any(|line| line.contains("BIP34")));
        // The header lines are the header reading's.
        let header = reading("block", &genesis_header(), "block header");
        assert_eq!(block.lines[..header.lines.len()], header.lines[..]);
    }

    /// A version-2 segwit spend: one input, two P2WPKH outputs, a two-item witness.
    struct Segwit {
        raw: Vec<u8>,
        stripped: Vec<u8>,
        witness_len: usize,
    }

    fn segwit_tx() -> Segwit {
        let version = 2u32.to_le_bytes();
        let mut body = vec![1]; // one input
        body.extend(internal(GENESIS_MERKLE_ROOT)); // spends some earlier output
        body.extend(0u32.to_le_bytes());
        body.push(0); // empty scriptSig: the signature lives in the witness
        body.extend(0xffff_fffdu32.to_le_bytes());
        body.push(2); // two outputs
        for (sats, key_hash_byte) in [(150_000_000u64, 0x11u8), (25_000_000, 0x22)] {
            body.extend(sats.to_le_bytes());
            body.push(22);
            body.extend([0x00, 0x14]);
            body.extend([key_hash_byte; 20]);
        }
        let mut witness = vec![2u8]; // two items: signature, public key
        witness.push(72);
        witness.extend([0x30; 72]);
        witness.push(33);
        witness.extend([0x02; 33]);
        let locktime = 0u32.to_le_bytes();

        let mut raw = version.to_vec();
        raw.extend([0x00, 0x01]); // marker, flag
        raw.extend(&body);
        raw.extend(&witness);
        raw.extend(locktime);
        let mut stripped = version.to_vec();
        stripped.extend(&body);
        stripped.extend(locktime);
        Segwit {
            raw,
            stripped,
            witness_len: 2 + witness.len(),
        }
    }

    #[test]
    fn segwit_transaction() {
        let Segwit {
            raw,
            stripped,
            witness_len,
        } = segwit_tx();
        let tx = reading("tx", &raw, "transaction");
        let txid = value(&tx, "txid");
        let wtxid = value(&tx, "wtxid");
        assert_ne!(txid, wtxid);
        assert_eq!(value(&tx, "version"), "2");
        assert_eq!(value(&tx, "inputs"), "1, outputs 2");
        assert_eq!(value(&tx, "output value"), "1.75000000 BTC");
        assert!(!tx.lines.iter().any(|line| line.starts_with("coinbase")));

        let base = stripped.len();
        let total = raw.len();
        assert_eq!(total, base + witness_len);
        let weight = base * 3 + total;
        let vsize = weight.div_ceil(4);
        assert_eq!((base, total, weight, vsize), (113, 223, 562, 141));
        assert_eq!(
            value(&tx, "size"),
            format!("{total} B, weight {weight} WU, vsize {vsize} vB")
        );
        // The wtxid is the hash of everything, the txid of the witness-free serialization.
        assert_eq!(wtxid, display_hex(&sha256d(&[&raw])));

        let legacy = reading("tx", &stripped, "transaction");
        assert_eq!(value(&legacy, "txid"), txid);
        assert!(!legacy.lines.iter().any(|line| line.starts_with("wtxid")));
        assert_eq!(
            value(&legacy, "size"),
            format!("{base} B, weight {} WU, vsize {base} vB", base * 4)
        );
    }

    #[test]
    fn serialization_the_node_refuses_is_not_a_tx() {
        let Segwit { raw, .. } = segwit_tx();
        // Flag other than 1.
        let mut bad_flag = raw.clone();
        bad_flag[5] = 0x02;
        assert!(readings("tx", &bad_flag).is_empty());
        // Marker and flag with every witness stack empty ("Superfluous witness record").
        let segwit = segwit_tx();
        let mut empty_witness = segwit.stripped[..segwit.stripped.len() - 4].to_vec();
        empty_witness.splice(4..4, [0x00, 0x01]);
        empty_witness.push(0); // no items for the one input
        empty_witness.extend(0u32.to_le_bytes());
        assert!(readings("tx", &empty_witness).is_empty());
        // The genesis coinbase with its input count written non-canonically (0xfd 0x0001).
        let genesis = unhex(GENESIS_COINBASE);
        let mut wide_count = genesis[..4].to_vec();
        wide_count.extend([0xfd, 0x01, 0x00]);
        wide_count.extend(&genesis[5..]);
        assert!(readings("tx", &wide_count).is_empty());
        // Counts far beyond the blob: refused without looping or allocating.
        for count in [
            &[0xfe, 0xff, 0xff, 0xff, 0x01][..],
            &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            &[0xfd, 0xff, 0xff],
        ] {
            let mut huge = 1u32.to_le_bytes().to_vec();
            huge.extend(count);
            huge.extend([0u8; 100]);
            assert!(readings("tx", &huge).is_empty());
            let mut block = genesis_header();
            block.extend(count);
            block.extend([0u8; 100]);
            assert!(find(&readings("block", &block), "block").is_none());
        }
    }

    #[test]
    fn capture_tip_hash_reads_as_the_node_prints_it() {
        let all = readings("hash", &unhex(TIP_HASH));
        assert_eq!(
            all,
            [Reading {
                label: "hash".to_owned(),
                lines: vec![TIP_HASH_RPC.to_owned()],
            }]
        );
    }

    #[test]
    fn capture_template_header() {
        let header = reading("result", &unhex(TEMPLATE_HEADER), "block header");
        // The template builds on the tip getTip reported.
        assert_eq!(value(&header, "prev"), TIP_HASH_RPC);
        assert_eq!(value(&header, "version"), "0x20000000 (536870912)");
        // Regtest's proof-of-work limit, and the minute the log shows the template being made.
        assert_eq!(value(&header, "bits"), "207fffff");
        assert_eq!(
            value(&header, "time"),
            "1795431921 (2026-11-23 11:05:21 UTC)"
        );
        // Unsolved: the miner fills in the merkle root and grinds the nonce.
        assert_eq!(value(&header, "merkle root"), ZERO_HASH);
        assert_eq!(value(&header, "nonce"), "0");
    }

    #[test]
    fn capture_template_block() {
        let raw = unhex(TEMPLATE_BLOCK);
        let all = readings("result", &raw);
        assert_eq!(labels(&all), ["block"]);
        let block = &all[0];
        // Its header is the one getBlockHeader returned, so its hash is too.
        assert_eq!(raw[..80], unhex(TEMPLATE_HEADER)[..]);
        let header = reading("result", &unhex(TEMPLATE_HEADER), "block header");
        assert_eq!(block.lines[..header.lines.len()], header.lines[..]);
        assert_eq!(value(block, "txs"), "1");
        // The coinbase commits to the height after the tip's.
        assert_eq!(
            value(block, "coinbase height"),
            format!("{} (BIP34)", TIP_HEIGHT + 1)
        );
        assert_eq!(value(block, "coinbase value"), TEMPLATE_REWARD);
        // With one transaction the merkle root is its txid; the template's header has zeros.
        let coinbase_txid = value(block, "coinbase txid");
        assert_eq!(
            value(block, "merkle root of txs"),
            format!("{coinbase_txid} (differs)")
        );

        // The coinbase on its own: a segwit transaction (witness reserved value) agreeing with
        // what getCoinbaseTx reported.
        let coinbase = reading("coinbaseTx", &raw[81..], "transaction");
        assert_eq!(value(&coinbase, "txid"), coinbase_txid);
        assert_ne!(value(&coinbase, "wtxid"), coinbase_txid);
        assert_eq!(
            value(&coinbase, "coinbase,"),
            format!("height {} (BIP34)", TIP_HEIGHT + 1)
        );
        assert_eq!(value(&coinbase, "version"), TEMPLATE_COINBASE_VERSION);
        assert_eq!(value(&coinbase, "locktime"), TEMPLATE_COINBASE_LOCKTIME);
        assert_eq!(value(&coinbase, "output value"), TEMPLATE_REWARD);
        assert_eq!(value(&coinbase, "inputs"), "1, outputs 2");
        let weight = (raw.len() - 81 - 2 - 34) * 3 + (raw.len() - 81);
        assert_eq!(
            value(&coinbase, "size"),
            format!(
                "{} B, weight {weight} WU, vsize {} vB",
                raw.len() - 81,
                weight.div_ceil(4)
            )
        );
    }

    #[test]
    fn capture_checkblock_garbage_has_no_reading() {
        assert!(readings("block", &unhex(CHECKBLOCK_GARBAGE)).is_empty());
    }

    /// An 80-byte blob that is both a plausible header and a transaction: the name decides.
    #[test]
    fn field_name_orders_readings() {
        let mut raw = 2u32.to_le_bytes().to_vec();
        raw.push(1);
        raw.extend([0x42; 32]);
        raw.extend(0u32.to_le_bytes());
        raw.push(8);
        raw.extend([0x51; 8]);
        raw.extend(u32::MAX.to_le_bytes());
        raw.push(1);
        raw.extend(1_000u64.to_le_bytes());
        raw.push(12);
        raw.extend([0x6a, 0x0a, 0, 0]);
        raw.extend(1_600_000_000u32.to_le_bytes()); // header time
        raw.extend(0x207f_ffffu32.to_le_bytes()); // header bits
        raw.extend(0u32.to_le_bytes()); // locktime = header nonce
        assert_eq!(raw.len(), 80);

        assert_eq!(
            labels(&readings("blockHeader", &raw)),
            ["block header", "transaction"]
        );
        assert_eq!(
            labels(&readings("coinbaseTx", &raw)),
            ["transaction", "block header"]
        );
        assert_eq!(
            labels(&readings("result", &raw)),
            ["transaction", "block header"]
        );
        assert_eq!(hint("block"), Some(Kind::Block));
        assert_eq!(hint("blockHeader"), Some(Kind::Header));
        assert_eq!(hint("transaction"), Some(Kind::Tx));
        assert_eq!(hint("currentTip"), Some(Kind::Hash));
        assert_eq!(hint("result"), None);
    }

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(951_868_799), "2000-02-29 23:59:59 UTC");
        assert_eq!(utc(u32::MAX), "2106-02-07 06:28:15 UTC");
    }

    #[test]
    fn bip34_heights() {
        assert_eq!(bip34_height(&[0x00]), Some(0));
        assert_eq!(bip34_height(&[0x56, 0x00]), Some(6));
        assert_eq!(bip34_height(&[0x60]), Some(16));
        assert_eq!(bip34_height(&[0x01, 0x11]), Some(17));
        // Mainnet block 227931, where BIP34 activated: push of 3 bytes 0x037a5b.
        assert_eq!(bip34_height(&[0x03, 0x5b, 0x7a, 0x03]), Some(227_931));
        assert_eq!(bip34_height(&[0x02, 0x80, 0x80]), None); // negative
        assert_eq!(bip34_height(&[0x03, 0x01, 0x02]), None); // truncated push
        assert_eq!(bip34_height(&[0x4f]), None); // OP_1NEGATE
        assert_eq!(bip34_height(&[]), None);
    }

    /// Header plausibility restated from the compact format's definition, to check garbage.
    fn valid_bits_and_time(raw: &[u8]) -> bool {
        let time = u32::from_le_bytes(raw[68..72].try_into().unwrap());
        let bits = u32::from_le_bytes(raw[72..76].try_into().unwrap());
        let [size, m2, m1, m0] = bits.to_be_bytes();
        if m2 & 0x80 != 0 {
            return false;
        }
        let mantissa = [m2, m1, m0];
        // Target = mantissa * 256^(size - 3); drop bytes shifted out below, count bytes above.
        let kept = &mantissa[..(usize::from(size)).min(3)];
        let first = kept.iter().position(|&byte| byte != 0);
        let target_len = first.map(|at| 3 - at + usize::from(size).saturating_sub(3));
        target_len.is_some_and(|len| len <= 32) && time >= GENESIS_TIME
    }

    #[test]
    fn garbage_never_panics_and_reads_only_what_parses() {
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 33) as u8
        };
        let mut headers = 0;
        for len in 0..200 {
            // Many 80-byte samples, so that both plausible and implausible headers turn up.
            let samples = if len == 80 { 2_000 } else { 50 };
            for _ in 0..samples {
                let raw: Vec<u8> = (0..len).map(|_| next()).collect();
                for field in ["result", "block", "blockHeader", "coinbaseTx", "hash"] {
                    let all = readings(field, &raw);
                    let has = |label: &str| find(&all, label).is_some();
                    assert!(!has("transaction") && !has("block"), "{raw:02x?}");
                    assert_eq!(has("block header"), len == 80 && valid_bits_and_time(&raw));
                    assert_eq!(has("hash"), len == 32);
                    headers += usize::from(has("block header"));
                }
            }
        }
        assert!(
            headers > 0 && headers < 2_000 * 5,
            "{headers} header readings"
        );
        // Near misses of real data: every proper prefix, one byte too many, each byte changed.
        for (raw, label) in [
            (genesis_block(), "block"),
            (unhex(TEMPLATE_BLOCK), "block"),
            (unhex(GENESIS_COINBASE), "transaction"),
            (segwit_tx().raw, "transaction"),
            (unhex(TEMPLATE_BLOCK)[81..].to_vec(), "transaction"),
        ] {
            for end in 0..raw.len() {
                assert!(find(&readings("block", &raw[..end]), label).is_none());
            }
            let mut longer = raw.clone();
            longer.push(0);
            assert!(readings("tx", &longer).is_empty());
            for at in 0..raw.len() {
                let mut changed = raw.clone();
                changed[at] ^= 0xa5;
                let _ = readings("block", &changed);
            }
        }
    }
}
