//! The RPC envelope: every variant of `rpc.capnp`'s `Message`, read with the same wire reader as
//! params and results so one frame goes through one set of limits.
//!
//! Offsets follow rpc.capnp's compiled layout (file `@0xb312981b2552a250`); tests cross-check them
//! against messages built with `capnp_rpc::rpc_capnp`.

use serde::Serialize;

use crate::wire::{Message, StructRef, Target, WireError};

/// A decoded envelope; `Payload` contents still borrow the frame.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Rpc<'m> {
    /// `unimplemented`: the peer echoes a message it did not understand.
    Unimplemented(Echoed),
    /// `abort`: the peer is closing the connection.
    Abort(ExceptionInfo),
    /// `bootstrap`.
    Bootstrap {
        /// The question id.
        question: u32,
    },
    /// `call`.
    Call(Call<'m>),
    /// `return`.
    Return(Return<'m>),
    /// `finish`.
    Finish {
        /// The question being finished.
        question: u32,
        /// Whether the caller releases the result caps.
        release_result_caps: bool,
    },
    /// `resolve`.
    Resolve {
        /// The promise export being resolved.
        promise: u32,
        /// What it resolved to.
        resolution: Resolution,
    },
    /// `release`.
    Release {
        /// The export id (of the receiver).
        id: u32,
        /// How many references are dropped.
        count: u32,
    },
    /// `disembargo`.
    Disembargo {
        /// The target.
        target: MessageTarget,
        /// The context variant and its id.
        context: String,
    },
    /// Level-3 and obsolete variants, shown raw.
    Other {
        /// The union discriminant.
        which: u16,
        /// Its name in rpc.capnp.
        name: &'static str,
    },
}

/// What an `unimplemented` message echoes back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Echoed {
    /// The echoed message's variant name.
    pub which: &'static str,
    /// Its question id, for an echoed `call` or `bootstrap`.
    pub question: Option<u32>,
}

/// A `call`.
#[derive(Debug, Clone)]
pub struct Call<'m> {
    /// The question id.
    pub question: u32,
    /// The interface id.
    pub interface_id: u64,
    /// The method ordinal.
    pub method_id: u16,
    /// What the call is aimed at.
    pub target: MessageTarget,
    /// The params.
    pub params: Payload<'m>,
    /// `sendResultsTo`: 0 caller, 1 yourself, 2 thirdParty.
    pub send_results_to: u16,
}

/// `MessageTarget`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageTarget {
    /// A capability the receiver exported.
    ImportedCap(u32),
    /// A capability inside the answer to one of the sender's questions (pipelining).
    PromisedAnswer(PromisedAnswer),
    /// A target variant this build does not know.
    Unknown(u16),
}

/// `PromisedAnswer`: question plus the pointer-field path into its results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PromisedAnswer {
    /// The question whose answer holds the capability.
    pub question: u32,
    /// `getPointerField` indices (noops dropped).
    pub path: Vec<u16>,
}

/// `Payload`.
#[derive(Debug, Clone)]
pub struct Payload<'m> {
    /// The params or results struct (an `AnyPointer`).
    pub content: Target<'m>,
    /// The cap table.
    pub cap_table: Vec<CapDescriptor>,
}

/// `CapDescriptor`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "id")]
pub enum CapDescriptor {
    /// No capability.
    None,
    /// An export of the sender.
    SenderHosted(u32),
    /// A promise exported by the sender.
    SenderPromise(u32),
    /// An export of the receiver, sent back.
    ReceiverHosted(u32),
    /// A capability in the receiver's answer to a question of its own.
    ReceiverAnswer(PromisedAnswer),
    /// Level-3 handoff.
    ThirdPartyHosted,
    /// A variant this build does not know.
    Unknown(u16),
}

/// `return`.
#[derive(Debug, Clone)]
pub struct Return<'m> {
    /// The question this answers (the other side's question id).
    pub answer: u32,
    /// `releaseParamCaps`.
    pub release_param_caps: bool,
    /// What came back.
    pub outcome: Outcome<'m>,
}

/// The `return` union.
#[derive(Debug, Clone)]
pub enum Outcome<'m> {
    /// `results`.
    Results(Payload<'m>),
    /// `exception`.
    Exception(ExceptionInfo),
    /// `canceled`.
    Canceled,
    /// `resultsSentElsewhere`.
    ResultsSentElsewhere,
    /// `takeFromOtherQuestion`.
    TakeFromOtherQuestion(u32),
    /// `acceptFromThirdParty` (or `awaitFromThirdParty` in 1.x).
    AcceptFromThirdParty,
    /// A variant this build does not know.
    Unknown(u16),
}

/// `Resolve`'s union.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Resolution {
    /// Resolved to a capability.
    Cap(CapDescriptor),
    /// Broken.
    Exception(ExceptionInfo),
    /// A variant this build does not know.
    Unknown(u16),
}

/// `Exception`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExceptionInfo {
    /// `failed`, `overloaded`, `disconnected` or `unimplemented`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The reason text.
    pub reason: String,
    /// The trace text, if any.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub trace: String,
}

const VARIANTS: [&str; 15] = [
    "unimplemented",
    "abort",
    "call",
    "return",
    "finish",
    "resolve",
    "release",
    "obsoleteSave",
    "bootstrap",
    "obsoleteDelete",
    "provide",
    "accept",
    "join",
    "disembargo",
    "thirdPartyAnswer",
];

/// The rpc.capnp name of a `Message` discriminant.
pub fn variant_name(which: u16) -> &'static str {
    VARIANTS
        .get(usize::from(which))
        .copied()
        .unwrap_or("unknown")
}

/// Decodes the envelope of a parsed frame.
pub fn decode<'m>(msg: &'m Message<'m>) -> Result<Rpc<'m>, WireError> {
    let root = msg.root()?.as_struct()?;
    decode_message(root)
}

fn decode_message(root: StructRef<'_>) -> Result<Rpc<'_>, WireError> {
    let which = root.u16(0);
    let body = root.pointer(0)?;
    let body_struct = || -> Result<StructRef<'_>, WireError> {
        match body {
            // A null body reads as the all-default struct, as capnp would.
            Target::Null => Ok(empty_struct(root)),
            t => t.as_struct(),
        }
    };
    Ok(match which {
        0 => {
            let inner = body_struct()?;
            let w = inner.u16(0);
            let question = match w {
                2 | 8 => inner.pointer(0)?.as_struct().ok().map(|s| s.u32(0)),
                _ => None,
            };
            Rpc::Unimplemented(Echoed {
                which: variant_name(w),
                question,
            })
        }
        1 => Rpc::Abort(exception(body_struct()?)?),
        2 => {
            let s = body_struct()?;
            Rpc::Call(Call {
                question: s.u32(0),
                method_id: s.u16(2),
                send_results_to: s.u16(3),
                interface_id: s.u64(1),
                target: target(s.pointer(0)?)?,
                params: payload(s.pointer(1)?)?,
            })
        }
        3 => {
            let s = body_struct()?;
            let outcome = match s.u16(3) {
                0 => Outcome::Results(payload(s.pointer(0)?)?),
                1 => Outcome::Exception(exception(struct_or_empty(s, s.pointer(0)?)?)?),
                2 => Outcome::Canceled,
                3 => Outcome::ResultsSentElsewhere,
                4 => Outcome::TakeFromOtherQuestion(s.u32(2)),
                5 => Outcome::AcceptFromThirdParty,
                w => Outcome::Unknown(w),
            };
            Rpc::Return(Return {
                answer: s.u32(0),
                release_param_caps: !s.bit(32),
                outcome,
            })
        }
        4 => {
            let s = body_struct()?;
            Rpc::Finish {
                question: s.u32(0),
                release_result_caps: !s.bit(32),
            }
        }
        5 => {
            let s = body_struct()?;
            let resolution = match s.u16(2) {
                0 => Resolution::Cap(cap_descriptor(struct_or_empty(s, s.pointer(0)?)?)?),
                1 => Resolution::Exception(exception(struct_or_empty(s, s.pointer(0)?)?)?),
                w => Resolution::Unknown(w),
            };
            Rpc::Resolve {
                promise: s.u32(0),
                resolution,
            }
        }
        6 => {
            let s = body_struct()?;
            Rpc::Release {
                id: s.u32(0),
                count: s.u32(1),
            }
        }
        8 => Rpc::Bootstrap {
            question: body_struct()?.u32(0),
        },
        13 => {
            let s = body_struct()?;
            let context = match s.u16(2) {
                0 => format!("senderLoopback {}", s.u32(0)),
                1 => format!("receiverLoopback {}", s.u32(0)),
                2 => "accept".to_string(),
                3 => format!("provide {}", s.u32(0)),
                w => format!("unknown {w}"),
            };
            Rpc::Disembargo {
                target: target(s.pointer(0)?)?,
                context,
            }
        }
        w => Rpc::Other {
            which: w,
            name: variant_name(w),
        },
    })
}

/// A struct with no sections, standing in for a null struct pointer (all fields default).
fn empty_struct(like: StructRef<'_>) -> StructRef<'_> {
    let mut s = like;
    s.truncate_to_empty();
    s
}

fn struct_or_empty<'m>(parent: StructRef<'m>, t: Target<'m>) -> Result<StructRef<'m>, WireError> {
    match t {
        Target::Null => Ok(empty_struct(parent)),
        t => t.as_struct(),
    }
}

fn target(t: Target<'_>) -> Result<MessageTarget, WireError> {
    let Target::Struct(s) = t else {
        return Ok(MessageTarget::Unknown(u16::MAX));
    };
    Ok(match s.u16(2) {
        0 => MessageTarget::ImportedCap(s.u32(0)),
        1 => MessageTarget::PromisedAnswer(promised_answer(struct_or_empty(s, s.pointer(0)?)?)?),
        w => MessageTarget::Unknown(w),
    })
}

fn promised_answer(s: StructRef<'_>) -> Result<PromisedAnswer, WireError> {
    let mut path = Vec::new();
    if let Target::List(ops) = s.pointer(0)? {
        let ops = ops.wider_than_bits()?;
        for i in 0..ops.len() {
            if let Some(op) = ops.struct_at(i)
                && op.u16(0) == 1
            {
                path.push(op.u16(1));
            }
        }
    }
    Ok(PromisedAnswer {
        question: s.u32(0),
        path,
    })
}

fn payload(t: Target<'_>) -> Result<Payload<'_>, WireError> {
    let s = match t {
        Target::Null => {
            return Ok(Payload {
                content: Target::Null,
                cap_table: Vec::new(),
            });
        }
        t => t.as_struct()?,
    };
    let mut cap_table = Vec::new();
    if let Target::List(l) = s.pointer(1)? {
        let l = l.wider_than_bits()?;
        for i in 0..l.len() {
            if let Some(d) = l.struct_at(i) {
                cap_table.push(cap_descriptor(d)?);
            }
        }
    }
    Ok(Payload {
        content: s.pointer(0)?,
        cap_table,
    })
}

fn cap_descriptor(s: StructRef<'_>) -> Result<CapDescriptor, WireError> {
    Ok(match s.u16(0) {
        0 => CapDescriptor::None,
        1 => CapDescriptor::SenderHosted(s.u32(1)),
        2 => CapDescriptor::SenderPromise(s.u32(1)),
        3 => CapDescriptor::ReceiverHosted(s.u32(1)),
        4 => CapDescriptor::ReceiverAnswer(promised_answer(struct_or_empty(s, s.pointer(0)?)?)?),
        5 => CapDescriptor::ThirdPartyHosted,
        w => CapDescriptor::Unknown(w),
    })
}

fn exception(s: StructRef<'_>) -> Result<ExceptionInfo, WireError> {
    let text = |i: u16| -> Result<String, WireError> {
        Ok(match s.pointer(i)? {
            Target::List(l) => {
                let b = l.bytes().unwrap_or_default();
                String::from_utf8_lossy(b.strip_suffix(&[0]).unwrap_or(b)).into_owned()
            }
            _ => String::new(),
        })
    };
    Ok(ExceptionInfo {
        kind: match s.u16(2) {
            0 => "failed",
            1 => "overloaded",
            2 => "disconnected",
            3 => "unimplemented",
            _ => "unknown",
        },
        reason: text(0)?,
        trace: text(1)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call whose params' cap table is the list pointer `table` with `data` after it.
    fn call_with_cap_table(table: u64, data: u64) -> Vec<u8> {
        let words = [
            (1u64 << 32) | (1 << 48), // root: Message, 1 data word, 1 pointer
            2,                        // which = call
            (3u64 << 32) | (3 << 48), // the Call: 3 data words, 3 pointers
            0,
            0,
            0,
            0,                       // target
            (1 << 2) | (2u64 << 48), // params: a Payload one word further on
            0,
            0,     // content
            table, // capTable
            data,
        ];
        let mut f = vec![0, 0, 0, 0];
        f.extend_from_slice(&(words.len() as u32).to_le_bytes());
        for w in words {
            f.extend_from_slice(&w.to_le_bytes());
        }
        f
    }

    #[test]
    fn a_cap_table_may_be_a_byte_list_but_not_a_bit_list() {
        // 8 one-byte elements: capnp reads them as structs (all `none` descriptors here).
        let bytes = call_with_cap_table(1 | (2 << 32) | (8 << 35), 0);
        let (m, _) = Message::parse(&bytes).unwrap();
        let Rpc::Call(c) = decode(&m).unwrap() else {
            panic!("a call")
        };
        assert_eq!(c.params.cap_table, vec![CapDescriptor::None; 8]);
        // 64 bits: a peer refuses to read them as structs, and so does mpspy.
        let bits = call_with_cap_table(1 | (1 << 32) | (64 << 35), u64::MAX);
        let (m, _) = Message::parse(&bits).unwrap();
        assert_eq!(
            decode(&m).unwrap_err(),
            WireError::WrongKind {
                expected: "list of structs or of wider elements",
                found: "bit list"
            }
        );
    }
}
