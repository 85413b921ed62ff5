//! A bounds-checked reader for unpacked Cap'n Proto messages.
//!
//! Why our own reader instead of `capnp::message::Reader`: the dynamic decoder must see what capnp's
//! public API hides — the cap-table index of a capability pointer, the raw words of an `AnyPointer`,
//! the word offset where a bad pointer sits — and it must turn every malformed input into a value
//! it can show, never a panic. The limits are the ones a libmultiprocess peer enforces (C++
//! `ReaderOptions` defaults, which capnp-rust shares), so mpspy flags exactly what the peer would
//! reject.

use std::cell::Cell;

/// Most segments a peer accepts: the first header word holds `count - 1` and must be below 511.
pub const MAX_SEGMENTS: usize = 511;
/// Traversal limit in words (64 MiB), also the most a frame may hold in total.
pub const TRAVERSAL_LIMIT_WORDS: u64 = 8 * 1024 * 1024;
/// Pointer nesting limit.
pub const NESTING_LIMIT: u32 = 64;

/// Why a frame or a pointer could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The segment table announces more segments than a peer accepts.
    #[error("frame announces {0} segments (a peer accepts at most 511)")]
    TooManySegments(u64),
    /// The segment sizes add up to more than the traversal limit.
    #[error("frame announces {0} words (a peer accepts at most 8388608 = 64 MiB)")]
    TooLarge(u64),
    /// The frame has no segments with content (an empty first segment cannot hold a root).
    #[error("frame has an empty first segment, so no root pointer")]
    NoRoot,
    /// Fewer bytes than the header says.
    #[error("frame truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes the header asks for.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// A pointer leads outside its segment.
    #[error("pointer at segment {segment} word {word} points outside its segment")]
    OutOfBounds {
        /// Segment holding the pointer.
        segment: u32,
        /// Word index of the pointer within that segment.
        word: usize,
    },
    /// A far pointer names a segment the frame does not have.
    #[error("far pointer to missing segment {0}")]
    NoSuchSegment(u32),
    /// A far pointer's landing pad is not what the encoding requires.
    #[error("malformed far pointer landing pad at segment {segment} word {word}")]
    BadLandingPad {
        /// Segment of the landing pad.
        segment: u32,
        /// Word index of the landing pad.
        word: usize,
    },
    /// An inline-composite list tag that is not a struct tag, or whose elements overflow the list.
    #[error("malformed inline-composite list tag at segment {segment} word {word}")]
    BadListTag {
        /// Segment of the tag.
        segment: u32,
        /// Word index of the tag.
        word: usize,
    },
    /// More pointer-reachable data than the traversal limit allows.
    #[error("traversal limit exceeded (more than 8 Mi words read)")]
    TraversalLimit,
    /// Pointers nested deeper than 64 levels.
    #[error("nesting limit exceeded (more than 64 levels)")]
    NestingLimit,
    /// More zero-size list elements than the frame has words (see [`Message`] for why).
    #[error(
        "list of {count} zero-size elements, more than the {left} words the frame has left for them"
    )]
    TooManyEmptyElements {
        /// Elements in the list.
        count: u64,
        /// What the frame's allowance had left.
        left: u64,
    },
    /// A pointer of another kind than the schema expects.
    #[error("expected {expected}, found {found}")]
    WrongKind {
        /// What the schema asks for.
        expected: &'static str,
        /// What the pointer is.
        found: &'static str,
    },
}

/// Reads the segment table at the start of `bytes` and returns the whole frame length, or
/// `Ok(None)` when more bytes are needed to know it.
///
/// This is the one place that knows the stream framing; the splitter and the message parser
/// both call it.
pub fn frame_len(bytes: &[u8]) -> Result<Option<usize>, WireError> {
    if bytes.len() < 4 {
        return Ok(None);
    }
    let count = u64::from(read_u32(bytes, 0)) + 1;
    if count > MAX_SEGMENTS as u64 {
        return Err(WireError::TooManySegments(count));
    }
    let count = count as usize;
    let header = header_len(count);
    if bytes.len() < 4 + 4 * count {
        return Ok(None);
    }
    let mut words: u64 = 0;
    for i in 0..count {
        words += u64::from(read_u32(bytes, 4 + 4 * i));
    }
    if words > TRAVERSAL_LIMIT_WORDS {
        return Err(WireError::TooLarge(words));
    }
    Ok(Some(header + 8 * words as usize))
}

fn header_len(segments: usize) -> usize {
    // count word + one size per segment, padded to a multiple of 8 bytes
    (4 + 4 * segments).div_ceil(8) * 8
}

fn read_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One complete frame split into segments, with the read limits of a single traversal.
///
/// Besides a peer's limits, one of mpspy's own: list elements that take no bytes (`Void`
/// elements, zero-size structs) cost one word of the frame each. A peer only counts them
/// against the traversal limit, so a 24-byte frame may claim 8 Mi of them, and a peer that
/// reads lazily pays nothing; but mpspy turns every element into a value and a JSON entry, so
/// without this a few frames of fuzz input became gigabytes. Real senders allocate elements
/// at their schema's size, so only lists of `Void` or of empty structs can meet the limit, and
/// only when they are longer than the whole frame.
#[derive(Debug)]
pub struct Message<'a> {
    segments: Vec<&'a [u8]>,
    budget: Cell<u64>,
    /// Zero-size list elements still allowed: the frame's words, less those already read.
    empty_elements: Cell<u64>,
}

impl<'a> Message<'a> {
    /// Parses one frame that starts at the beginning of `bytes`; returns it and its length.
    pub fn parse(bytes: &'a [u8]) -> Result<(Message<'a>, usize), WireError> {
        let len = frame_len(bytes)?.ok_or(WireError::Truncated {
            need: 8,
            have: bytes.len(),
        })?;
        if bytes.len() < len {
            return Err(WireError::Truncated {
                need: len,
                have: bytes.len(),
            });
        }
        let count = read_u32(bytes, 0) as usize + 1;
        let mut at = header_len(count);
        let mut segments = Vec::with_capacity(count);
        for i in 0..count {
            let size = read_u32(bytes, 4 + 4 * i) as usize * 8;
            segments.push(&bytes[at..at + size]);
            at += size;
        }
        if segments[0].is_empty() {
            return Err(WireError::NoRoot);
        }
        let words = segments.iter().map(|s| s.len() as u64 / 8).sum();
        Ok((
            Message {
                segments,
                budget: Cell::new(TRAVERSAL_LIMIT_WORDS),
                empty_elements: Cell::new(words),
            },
            len,
        ))
    }

    /// Sizes of the segments in words, as the frame header announced them.
    pub fn segment_words(&self) -> Vec<usize> {
        self.segments.iter().map(|s| s.len() / 8).collect()
    }

    /// The root pointer (word 0 of segment 0).
    pub fn root(&self) -> Result<Target<'_>, WireError> {
        self.read_pointer(0, 0, 0)
    }

    fn word(&self, segment: u32, index: usize) -> Option<u64> {
        let seg = self.segments.get(segment as usize)?;
        let b = seg.get(index * 8..index * 8 + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    fn charge(&self, words: u64) -> Result<(), WireError> {
        let left = self.budget.get();
        if words > left {
            self.budget.set(0);
            return Err(WireError::TraversalLimit);
        }
        self.budget.set(left - words);
        Ok(())
    }

    /// Takes `count` zero-size list elements from the frame's allowance.
    fn take_empty_elements(&self, count: u64) -> Result<(), WireError> {
        let left = self.empty_elements.get();
        if count > left {
            return Err(WireError::TooManyEmptyElements { count, left });
        }
        self.empty_elements.set(left - count);
        Ok(())
    }

    fn in_bounds(&self, segment: u32, start: i64, words: u64) -> bool {
        let Some(seg) = self.segments.get(segment as usize) else {
            return false;
        };
        start >= 0 && (start as u64).saturating_add(words) <= (seg.len() / 8) as u64
    }

    /// Reads the pointer at `segment`/`index`; `depth` is the nesting level of that pointer.
    pub(crate) fn read_pointer(
        &self,
        segment: u32,
        index: usize,
        depth: u32,
    ) -> Result<Target<'_>, WireError> {
        if depth > NESTING_LIMIT {
            return Err(WireError::NestingLimit);
        }
        let word = self.word(segment, index).ok_or(WireError::OutOfBounds {
            segment,
            word: index,
        })?;
        if word == 0 {
            return Ok(Target::Null);
        }
        match word & 3 {
            2 => self.read_far(word, segment, index, depth),
            3 => {
                if word & 0xffff_fffc == 0 {
                    Ok(Target::Capability((word >> 32) as u32))
                } else {
                    Ok(Target::Other(word))
                }
            }
            _ => {
                // Offset counts words from the end of the pointer.
                let offset = i64::from((word as u32 as i32) >> 2);
                self.resolve(
                    word,
                    segment,
                    index as i64 + 1 + offset,
                    segment,
                    index,
                    depth,
                )
            }
        }
    }

    fn read_far(
        &self,
        word: u64,
        segment: u32,
        index: usize,
        depth: u32,
    ) -> Result<Target<'_>, WireError> {
        let double = word & 4 != 0;
        let pad_index = ((word >> 3) & 0x1fff_ffff) as usize;
        let pad_segment = (word >> 32) as u32;
        if pad_segment as usize >= self.segments.len() {
            return Err(WireError::NoSuchSegment(pad_segment));
        }
        let bad_pad = WireError::BadLandingPad {
            segment: pad_segment,
            word: pad_index,
        };
        let pad = self.word(pad_segment, pad_index).ok_or(bad_pad.clone())?;
        if !double {
            // A single landing pad is an ordinary struct or list pointer relative to itself.
            return match pad & 3 {
                0 | 1 => {
                    let offset = i64::from((pad as u32 as i32) >> 2);
                    self.resolve(
                        pad,
                        pad_segment,
                        pad_index as i64 + 1 + offset,
                        pad_segment,
                        pad_index,
                        depth,
                    )
                }
                3 if pad & 0xffff_fffc == 0 => Ok(Target::Capability((pad >> 32) as u32)),
                _ => Err(bad_pad),
            };
        }
        // A double landing pad: a far pointer to the content, then a tag giving kind and size.
        let tag = self
            .word(pad_segment, pad_index + 1)
            .ok_or(bad_pad.clone())?;
        if pad & 7 != 2 || tag & 3 > 1 {
            return Err(bad_pad);
        }
        let content_segment = (pad >> 32) as u32;
        let content_index = ((pad >> 3) & 0x1fff_ffff) as i64;
        if content_segment as usize >= self.segments.len() {
            return Err(WireError::NoSuchSegment(content_segment));
        }
        let _ = (segment, index);
        self.resolve(
            tag,
            content_segment,
            content_index,
            pad_segment,
            pad_index,
            depth,
        )
    }

    /// Builds the target of a struct or list pointer `word` whose content starts at `start` in
    /// `segment`. `at_segment`/`at_index` locate the pointer for error messages.
    fn resolve(
        &self,
        word: u64,
        segment: u32,
        start: i64,
        at_segment: u32,
        at_index: usize,
        depth: u32,
    ) -> Result<Target<'_>, WireError> {
        let oob = WireError::OutOfBounds {
            segment: at_segment,
            word: at_index,
        };
        if word & 3 == 0 {
            let data = ((word >> 32) & 0xffff) as u16;
            let ptrs = (word >> 48) as u16;
            let size = u64::from(data) + u64::from(ptrs);
            if !self.in_bounds(segment, start, size) {
                return Err(oob);
            }
            self.charge(size.max(1))?;
            let start = start as usize;
            let seg = self.segments[segment as usize];
            return Ok(Target::Struct(StructRef {
                msg: self,
                data: &seg[start * 8..(start + usize::from(data)) * 8],
                segment,
                ptr_start: start + usize::from(data),
                ptr_count: ptrs,
                depth: depth + 1,
            }));
        }
        let elem = ElementSize::from_bits((word >> 32) & 7);
        let count = (word >> 35) as u32;
        if elem == ElementSize::InlineComposite {
            let words = u64::from(count);
            if !self.in_bounds(segment, start, words + 1) {
                return Err(oob);
            }
            let tag = self.word(segment, start as usize).ok_or(oob.clone())?;
            let bad_tag = WireError::BadListTag {
                segment,
                word: start as usize,
            };
            if tag & 3 != 0 {
                return Err(bad_tag);
            }
            let len = ((tag as u32) >> 2) as u64;
            let data = ((tag >> 32) & 0xffff) as u16;
            let ptrs = (tag >> 48) as u16;
            let per = u64::from(data) + u64::from(ptrs);
            if len * per > words {
                return Err(bad_tag);
            }
            // Zero-sized elements still cost a word each, so a tiny frame cannot claim a
            // billion-element list for free.
            self.charge(words.max(len))?;
            if per == 0 {
                self.take_empty_elements(len)?;
            }
            return Ok(Target::List(ListRef {
                msg: self,
                segment,
                start: start as usize + 1,
                len: len as u32,
                elem,
                struct_data: data,
                struct_ptrs: ptrs,
                depth: depth + 1,
            }));
        }
        let bits = u64::from(count) * elem.bits();
        let words = bits.div_ceil(64);
        if !self.in_bounds(segment, start, words) {
            return Err(oob);
        }
        if elem == ElementSize::Void {
            self.charge(u64::from(count))?;
            self.take_empty_elements(u64::from(count))?;
        } else {
            self.charge(words)?;
        }
        Ok(Target::List(ListRef {
            msg: self,
            segment,
            start: start as usize,
            len: count,
            elem,
            struct_data: 0,
            struct_ptrs: 0,
            depth: depth + 1,
        }))
    }
}

/// What a pointer leads to.
#[derive(Debug, Clone, Copy)]
pub enum Target<'m> {
    /// The null pointer.
    Null,
    /// A struct.
    Struct(StructRef<'m>),
    /// A list.
    List(ListRef<'m>),
    /// A capability: the index into the message's cap table.
    Capability(u32),
    /// An "other" pointer that is not a capability (reserved by the encoding).
    Other(u64),
}

impl<'m> Target<'m> {
    /// A short word for the kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Null => "null",
            Target::Struct(_) => "struct",
            Target::List(_) => "list",
            Target::Capability(_) => "capability",
            Target::Other(_) => "reserved pointer",
        }
    }

    /// The struct behind this pointer; null reads as an empty struct (all defaults), as in capnp.
    pub fn as_struct(self) -> Result<StructRef<'m>, WireError> {
        match self {
            Target::Struct(s) => Ok(s),
            other => Err(WireError::WrongKind {
                expected: "struct",
                found: other.kind(),
            }),
        }
    }

    /// The list behind this pointer.
    pub fn as_list(self) -> Result<ListRef<'m>, WireError> {
        match self {
            Target::List(l) => Ok(l),
            other => Err(WireError::WrongKind {
                expected: "list",
                found: other.kind(),
            }),
        }
    }
}

/// A struct inside a message: its data section as bytes and the location of its pointers.
#[derive(Debug, Clone, Copy)]
pub struct StructRef<'m> {
    msg: &'m Message<'m>,
    data: &'m [u8],
    segment: u32,
    ptr_start: usize,
    ptr_count: u16,
    depth: u32,
}

impl<'m> StructRef<'m> {
    /// Data section size in whole words (sub-word list elements round down to 0).
    pub fn data_words(&self) -> u16 {
        (self.data.len() / 8) as u16
    }

    /// Turns this into the all-default struct (no sections), standing in for a null pointer.
    pub(crate) fn truncate_to_empty(&mut self) {
        self.data = &[];
        self.ptr_count = 0;
    }

    /// Pointer section size.
    pub fn pointer_count(&self) -> u16 {
        self.ptr_count
    }

    /// The raw data section.
    pub fn data(&self) -> &'m [u8] {
        self.data
    }

    /// Reads `N` little-endian bytes at byte offset `at`; past the end of the data section the
    /// value is zero, which is how older senders with smaller structs are read.
    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        if let Some(b) = self.data.get(at..at + N) {
            out.copy_from_slice(b);
        }
        out
    }

    /// Bit `offset` of the data section.
    pub fn bit(&self, offset: u32) -> bool {
        self.data
            .get(offset as usize / 8)
            .is_some_and(|b| b >> (offset % 8) & 1 == 1)
    }

    /// The u8 at element offset `offset`.
    pub fn u8(&self, offset: u32) -> u8 {
        self.bytes::<1>(offset as usize)[0]
    }

    /// The u16 at element offset `offset` (in units of 2 bytes).
    pub fn u16(&self, offset: u32) -> u16 {
        u16::from_le_bytes(self.bytes(offset as usize * 2))
    }

    /// The u32 at element offset `offset` (in units of 4 bytes).
    pub fn u32(&self, offset: u32) -> u32 {
        u32::from_le_bytes(self.bytes(offset as usize * 4))
    }

    /// The u64 at element offset `offset` (in units of 8 bytes).
    pub fn u64(&self, offset: u32) -> u64 {
        u64::from_le_bytes(self.bytes(offset as usize * 8))
    }

    /// Pointer field `index`; past the pointer section it reads as null.
    pub fn pointer(&self, index: u16) -> Result<Target<'m>, WireError> {
        if index >= self.ptr_count {
            return Ok(Target::Null);
        }
        self.msg.read_pointer(
            self.segment,
            self.ptr_start + usize::from(index),
            self.depth,
        )
    }

    /// The raw word of pointer field `index` (0 when absent), for showing opaque pointers.
    pub fn pointer_word(&self, index: u16) -> u64 {
        if index >= self.ptr_count {
            return 0;
        }
        self.msg
            .word(self.segment, self.ptr_start + usize::from(index))
            .unwrap_or(0)
    }
}

/// Element size code of a list pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementSize {
    /// 0 bits.
    Void,
    /// 1 bit.
    Bit,
    /// 1 byte.
    Byte,
    /// 2 bytes.
    TwoBytes,
    /// 4 bytes.
    FourBytes,
    /// 8 bytes.
    EightBytes,
    /// One pointer.
    Pointer,
    /// Structs with a tag word.
    InlineComposite,
}

impl ElementSize {
    fn from_bits(b: u64) -> Self {
        match b {
            0 => Self::Void,
            1 => Self::Bit,
            2 => Self::Byte,
            3 => Self::TwoBytes,
            4 => Self::FourBytes,
            5 => Self::EightBytes,
            6 => Self::Pointer,
            _ => Self::InlineComposite,
        }
    }

    /// Bits per element (for inline composite, not meaningful: 0).
    pub fn bits(self) -> u64 {
        match self {
            Self::Void | Self::InlineComposite => 0,
            Self::Bit => 1,
            Self::Byte => 8,
            Self::TwoBytes => 16,
            Self::FourBytes => 32,
            Self::EightBytes | Self::Pointer => 64,
        }
    }
}

/// A list inside a message.
#[derive(Debug, Clone, Copy)]
pub struct ListRef<'m> {
    msg: &'m Message<'m>,
    segment: u32,
    /// First element's word index (after the tag word for inline composite).
    start: usize,
    len: u32,
    elem: ElementSize,
    struct_data: u16,
    struct_ptrs: u16,
    depth: u32,
}

impl<'m> ListRef<'m> {
    /// Number of elements.
    pub fn len(&self) -> u32 {
        self.len
    }

    /// True when the list has no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How the elements are encoded.
    pub fn element_size(&self) -> ElementSize {
        self.elem
    }

    /// This list, unless it is a bit list: a peer reads a bit list only as a `List(Bool)`
    /// (capnp no longer upgrades boolean lists to structs), so mpspy refuses it as a list of
    /// structs or of wider elements too, which also keeps one byte of bits from decoding to
    /// eight whole structs.
    pub fn wider_than_bits(self) -> Result<Self, WireError> {
        if self.elem == ElementSize::Bit {
            return Err(WireError::WrongKind {
                expected: "list of structs or of wider elements",
                found: "bit list",
            });
        }
        Ok(self)
    }

    /// The element bytes of a byte list (Text, Data); `None` for other encodings.
    pub fn bytes(&self) -> Option<&'m [u8]> {
        if self.elem != ElementSize::Byte {
            return None;
        }
        let seg = self.msg.segments[self.segment as usize];
        seg.get(self.start * 8..self.start * 8 + self.len as usize)
    }

    /// Element `i` read as a struct. Lists of primitives or pointers read as structs whose only
    /// field is the element, so a reader with a newer schema still sees old-style lists.
    pub fn struct_at(&self, i: u32) -> Option<StructRef<'m>> {
        if i >= self.len {
            return None;
        }
        let seg = self.msg.segments[self.segment as usize];
        let i = i as usize;
        match self.elem {
            ElementSize::InlineComposite => {
                let per = usize::from(self.struct_data) + usize::from(self.struct_ptrs);
                let s = self.start + i * per;
                Some(StructRef {
                    msg: self.msg,
                    data: &seg[s * 8..(s + usize::from(self.struct_data)) * 8],
                    segment: self.segment,
                    ptr_start: s + usize::from(self.struct_data),
                    ptr_count: self.struct_ptrs,
                    depth: self.depth,
                })
            }
            ElementSize::Pointer => Some(StructRef {
                msg: self.msg,
                data: &[],
                segment: self.segment,
                ptr_start: self.start + i,
                ptr_count: 1,
                depth: self.depth,
            }),
            ElementSize::Void | ElementSize::Bit => Some(StructRef {
                msg: self.msg,
                data: &[],
                segment: self.segment,
                ptr_start: 0,
                ptr_count: 0,
                depth: self.depth,
            }),
            e => {
                let width = (e.bits() / 8) as usize;
                let at = self.start * 8 + i * width;
                Some(StructRef {
                    msg: self.msg,
                    data: &seg[at..at + width],
                    segment: self.segment,
                    ptr_start: 0,
                    ptr_count: 0,
                    depth: self.depth,
                })
            }
        }
    }

    /// Element `i` of a bit list.
    pub fn bit_at(&self, i: u32) -> bool {
        match self.elem {
            ElementSize::Bit => {
                let seg = self.msg.segments[self.segment as usize];
                seg.get(self.start * 8 + i as usize / 8)
                    .is_some_and(|b| b >> (i % 8) & 1 == 1)
            }
            _ => self.struct_at(i).is_some_and(|s| s.bit(0)),
        }
    }

    /// Pointer element `i` (also the first pointer of an inline-composite element).
    pub fn pointer_at(&self, i: u32) -> Result<Target<'m>, WireError> {
        match self.struct_at(i) {
            Some(s) => s.pointer(0),
            None => Ok(Target::Null),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(words: &[u64]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&(words.len() as u32).to_le_bytes());
        for w in words {
            b.extend_from_slice(&w.to_le_bytes());
        }
        b
    }

    #[test]
    fn frame_len_needs_header_then_body() {
        let f = frame(&[0, 0]);
        assert_eq!(frame_len(&f[..3]), Ok(None));
        assert_eq!(frame_len(&f), Ok(Some(24)));
        // Two segments: 4 + 2*4 = 12 bytes, padded to 16.
        let mut two = vec![1, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0];
        two.resize(16 + 24, 0);
        assert_eq!(frame_len(&two), Ok(Some(40)));
    }

    #[test]
    fn limits_match_the_peer() {
        let mut f = vec![0u8; 8];
        f[..4].copy_from_slice(&511u32.to_le_bytes());
        assert_eq!(frame_len(&f), Err(WireError::TooManySegments(512)));
        f[..4].copy_from_slice(&510u32.to_le_bytes());
        assert_eq!(frame_len(&f), Ok(None));
        let mut big = vec![0u8; 8];
        big[4..8].copy_from_slice(&(8 * 1024 * 1024 + 1u32).to_le_bytes());
        assert!(matches!(frame_len(&big), Err(WireError::TooLarge(_))));
    }

    #[test]
    fn struct_pointer_reads_fields_and_defaults_past_the_end() {
        // root: struct at offset 0, 1 data word, 1 pointer; data = 0x2a; pointer = cap #5.
        let root = (1u64 << 32) | (1u64 << 48);
        let f = frame(&[root, 0x2a, (5u64 << 32) | 3]);
        let (m, len) = Message::parse(&f).unwrap();
        assert_eq!(len, f.len());
        let s = m.root().unwrap().as_struct().unwrap();
        assert_eq!(s.u32(0), 42);
        assert_eq!(s.u64(3), 0, "past the data section reads zero");
        assert!(matches!(s.pointer(0), Ok(Target::Capability(5))));
        assert!(matches!(s.pointer(1), Ok(Target::Null)));
    }

    #[test]
    fn self_referencing_pointer_hits_a_limit_not_a_hang() {
        // A struct whose only pointer points back at itself (offset -2 from its end).
        let root = 1u64 << 48; // 0 data, 1 ptr, offset 0
        let back = ((-2i32 as u32 as u64) << 2 & 0xffff_fffc) | (1u64 << 48);
        let f = frame(&[root, back]);
        let (m, _) = Message::parse(&f).unwrap();
        let mut t = m.root().unwrap();
        let mut err = None;
        for _ in 0..200 {
            match t.as_struct().and_then(|s| s.pointer(0)) {
                Ok(next) => t = next,
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert_eq!(err, Some(WireError::NestingLimit));
    }

    #[test]
    fn far_pointers_single_and_double() {
        // Segment 0: root = far pointer to segment 1 word 0 (single landing pad).
        // Segment 1: pad = struct pointer offset 0 (1 data word), then the data word.
        let far = 2u64 | (1u64 << 32);
        let pad = 1u64 << 32;
        let mut b = Vec::new();
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&2u32.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&far.to_le_bytes());
        b.extend_from_slice(&pad.to_le_bytes());
        b.extend_from_slice(&7u64.to_le_bytes());
        let (m, _) = Message::parse(&b).unwrap();
        assert_eq!(m.root().unwrap().as_struct().unwrap().u64(0), 7);

        // Double landing pad: root -> seg1 word 0 (double); seg1 = [far to seg2 word 0, tag];
        // seg2 = [data word].
        let far2 = 2u64 | 4 | (1u64 << 32);
        let pad1 = 2u64 | (2u64 << 32);
        let tag = 1u64 << 32;
        let mut b = Vec::new();
        for w in [2u32, 1, 2, 1] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        for w in [far2, pad1, tag, 9] {
            b.extend_from_slice(&w.to_le_bytes());
        }
        let (m, _) = Message::parse(&b).unwrap();
        assert_eq!(m.root().unwrap().as_struct().unwrap().u64(0), 9);
    }

    #[test]
    fn out_of_bounds_and_bad_tags_are_errors() {
        let root = (5u64 << 2) | (1u64 << 32);
        let f = frame(&[root]);
        let (m, _) = Message::parse(&f).unwrap();
        assert!(matches!(m.root(), Err(WireError::OutOfBounds { .. })));

        // Inline composite claiming 1000 elements of 1 word in a 1-word list.
        let list = 1u64 | (7u64 << 32) | (1u64 << 35);
        let tag = (1000u64 << 2) | (1u64 << 32);
        let f = frame(&[list, tag, 0]);
        let (m, _) = Message::parse(&f).unwrap();
        assert!(matches!(m.root(), Err(WireError::BadListTag { .. })));
    }

    #[test]
    fn huge_void_list_is_charged() {
        // 2^29-1 void elements cost nothing in bytes but must hit the traversal limit.
        let list = 1u64 | (0x1fff_ffffu64 << 35);
        let f = frame(&[list]);
        let (m, _) = Message::parse(&f).unwrap();
        assert!(matches!(m.root(), Err(WireError::TraversalLimit)));
    }

    #[test]
    fn zero_size_elements_cost_a_word_of_the_frame_each() {
        // Found by fuzzing: a 232-byte call frame held a list of 4 Mi zero-size structs,
        // within the traversal limit; decoding and serializing it took seconds per frame.
        let composite = |len: u64| [1u64 | (7 << 32), len << 2];
        let f = frame(&composite(1_000_000));
        let (m, _) = Message::parse(&f).unwrap();
        assert_eq!(
            m.root().unwrap_err(),
            WireError::TooManyEmptyElements {
                count: 1_000_000,
                left: 2
            }
        );
        let void = |len: u64| 1u64 | (len << 35);
        let f = frame(&[void(1_000_000)]);
        let (m, _) = Message::parse(&f).unwrap();
        assert!(matches!(
            m.root(),
            Err(WireError::TooManyEmptyElements { .. })
        ));

        // Up to one per word of the frame, however they are spread over lists.
        let root = 2u64 << 48; // struct: no data, two pointers
        let f = frame(&[root, void(2) | (1 << 2), void(3), 0, 0]);
        let (m, _) = Message::parse(&f).unwrap();
        let s = m.root().unwrap().as_struct().unwrap();
        assert_eq!(s.pointer(0).unwrap().as_list().unwrap().len(), 2);
        assert_eq!(s.pointer(1).unwrap().as_list().unwrap().len(), 3);
        assert!(matches!(
            s.pointer(0),
            Err(WireError::TooManyEmptyElements { count: 2, left: 0 })
        ));
    }
}
