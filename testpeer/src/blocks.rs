//! The fixed chain state the test peer reports: a regtest-like tip at height 5
//! and one block template on top of it.
//!
//! The bytes are shaped like Bitcoin's serializations (80-byte header, a
//! segwit coinbase with a witness commitment) so decoders and pretty-printers
//! see realistic sizes (the template block is 227 bytes, as observed from a
//! real regtest node), but the hashes are made up: nothing here validates.

/// Height of the tip.
pub(crate) const TIP_HEIGHT: i32 = 5;

/// Hash of the tip, in internal byte order (as on the wire).
pub(crate) const TIP_HASH: [u8; 32] = [
    0xcb, 0x86, 0x57, 0xd6, 0x5e, 0x1a, 0x0c, 0x4f, 0x9a, 0x2b, 0x11, 0x73, 0x08, 0xd4, 0x3e, 0x6f,
    0x52, 0xa1, 0x9c, 0x07, 0xbd, 0x44, 0x2e, 0x91, 0x6a, 0x3f, 0x05, 0xe8, 0x77, 0x1b, 0x20, 0x3d,
];

/// Coinbase fields (what `BlockTemplate.getCoinbaseTx` returns).
pub(crate) const COINBASE_VERSION: u32 = 2;
pub(crate) const COINBASE_SEQUENCE: u32 = 0xffff_fffe;
pub(crate) const COINBASE_LOCK_TIME: u32 = 5;
pub(crate) const BLOCK_REWARD: i64 = 5_000_000_000;
/// BIP34 height push for height 5 (`OP_5`): what the node fixes at the start
/// of the coinbase scriptSig.
pub(crate) const SCRIPT_SIG_PREFIX: [u8; 1] = [0x55];
/// The coinbase input's witness: the 32-byte zero witness reserved value.
pub(crate) const COINBASE_WITNESS: [u8; 32] = [0; 32];

const WITNESS_COMMITMENT: [u8; 32] = [0x5a; 32];
const MERKLE_ROOT: [u8; 32] = [0x4d; 32];
/// Regtest genesis time plus five 10-minute blocks.
const TIME: u32 = 1_296_688_602 + 5 * 600;
/// Regtest's proof-of-work limit in compact form.
const BITS: u32 = 0x207f_ffff;

/// The 80-byte block header of the template.
pub(crate) fn header() -> Vec<u8> {
    let mut h = Vec::with_capacity(80);
    h.extend_from_slice(&0x2000_0000u32.to_le_bytes());
    h.extend_from_slice(&TIP_HASH);
    h.extend_from_slice(&MERKLE_ROOT);
    h.extend_from_slice(&TIME.to_le_bytes());
    h.extend_from_slice(&BITS.to_le_bytes());
    h.extend_from_slice(&0u32.to_le_bytes());
    h
}

/// The witness commitment output (value 0, `OP_RETURN` + 36 bytes): the one
/// output a miner's coinbase must include, serialized as a `CTxOut`.
pub(crate) fn required_output() -> Vec<u8> {
    let mut out = Vec::with_capacity(47);
    out.extend_from_slice(&0i64.to_le_bytes());
    out.push(38);
    out.extend_from_slice(&[0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]);
    out.extend_from_slice(&WITNESS_COMMITMENT);
    out
}

/// The whole template block: header, one transaction (the coinbase, with
/// witness).
pub(crate) fn block() -> Vec<u8> {
    let mut b = header();
    b.push(1); // transaction count
    b.extend_from_slice(&COINBASE_VERSION.to_le_bytes());
    b.extend_from_slice(&[0x00, 0x01]); // segwit marker and flag
    b.push(1); // input count
    b.extend_from_slice(&[0; 32]); // null prevout hash
    b.extend_from_slice(&u32::MAX.to_le_bytes()); // null prevout index
    b.push(2); // scriptSig: height push plus OP_0 padding (minimum length 2)
    b.extend_from_slice(&SCRIPT_SIG_PREFIX);
    b.push(0x00);
    b.extend_from_slice(&COINBASE_SEQUENCE.to_le_bytes());
    b.push(2); // output count
    b.extend_from_slice(&BLOCK_REWARD.to_le_bytes());
    b.extend_from_slice(&[1, 0x51]); // OP_TRUE, as regtest tests like to pay to
    b.extend_from_slice(&required_output());
    b.push(1); // one witness item ...
    b.push(32); // ... of 32 bytes
    b.extend_from_slice(&COINBASE_WITNESS);
    b.extend_from_slice(&COINBASE_LOCK_TIME.to_le_bytes());
    b
}

/// Lowercase hex of `bytes` in display order (byte-reversed), as Bitcoin shows
/// hashes.
pub(crate) fn display_hash(bytes: &[u8]) -> String {
    bytes.iter().rev().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_a_real_regtest_template() {
        assert_eq!(header().len(), 80);
        assert_eq!(required_output().len(), 47);
        assert_eq!(block().len(), 227);
        assert_eq!(&block()[..80], &header()[..]);
    }

    #[test]
    fn display_hash_reverses() {
        assert_eq!(display_hash(&[0x01, 0x02, 0xab]), "ab0201");
    }
}
