//! The tensor directory and dequantisation of tensor data to f32.

use std::fmt;

use half::{bf16, f16};

use crate::GgufError;
use crate::cursor::Cursor;

/// Most dimensions a ggml tensor can have (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;

macro_rules! ggml_types {
    ($($variant:ident = $id:literal),* $(,)?) => {
        /// A tensor's ggml element type, by its on-disk id, so callers can see what a tensor holds
        /// even when this crate cannot dequantise it.
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum GgmlType {
            $(
                #[doc = concat!("On-disk type id ", stringify!($id), " (`GGML_TYPE_", stringify!($variant), "`).")]
                $variant,
            )*
            /// An id missing from the table above (a newer ggml type).
            Unknown(u32),
        }

        impl GgmlType {
            /// Maps an on-disk type id; unknown ids are kept rather than rejected.
            pub fn from_id(id: u32) -> Self {
                match id {
                    $($id => Self::$variant,)*
                    other => Self::Unknown(other),
                }
            }

            /// The on-disk type id, for messages and comparisons with other tools.
            pub fn id(self) -> u32 {
                match self {
                    $(Self::$variant => $id,)*
                    Self::Unknown(id) => id,
                }
            }
        }

        impl fmt::Display for GgmlType {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    $(Self::$variant => f.write_str(stringify!($variant)),)*
                    Self::Unknown(id) => write!(f, "unknown ggml type {id}"),
                }
            }
        }
    };
}

ggml_types! {
    F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
    Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
    IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22,
    IQ4_XS = 23, I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
    TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39,
}

impl GgmlType {
    /// `(elements, bytes)` per block for the types [`dequantise`] decodes; `None` for the rest.
    pub(crate) fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            Self::F32 => Some((1, 4)),
            Self::F16 | Self::BF16 => Some((1, 2)),
            Self::Q8_0 => Some((32, 34)),
            Self::Q4_0 => Some((32, 18)),
            Self::Q4_1 => Some((32, 20)),
            _ => None,
        }
    }
}

/// One entry of the tensor directory: where a tensor's data lives and how to interpret it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    name: String,
    dims: Vec<usize>,
    ggml_type: GgmlType,
    offset: u64,
    n_elements: usize,
}

impl TensorInfo {
    /// The tensor's name, e.g. `blk.0.attn_q.weight`, the key for [`crate::GgufFile::tensor_f32`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Dimensions as stored, fastest-varying first (ggml's `ne`), e.g. `[in, out]` for a matrix.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// Dimensions in row-major (PyTorch) order, the reverse of [`Self::dims`].
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }

    /// The element type, which decides how the data is decoded.
    pub fn ggml_type(&self) -> GgmlType {
        self.ggml_type
    }

    /// Offset of the data from the start of the data section (see [`crate::GgufFile::data_offset`]).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Number of elements (product of the dimensions; checked not to overflow when parsed).
    pub fn n_elements(&self) -> usize {
        self.n_elements
    }

    /// Reads one directory entry; offsets must be multiples of the file's `alignment`.
    pub(crate) fn read(cur: &mut Cursor<'_>, alignment: usize) -> Result<Self, GgufError> {
        let name = cur.string()?;
        let path = cur.path();
        let invalid = |reason: String| GgufError::InvalidTensorInfo { path: path.to_path_buf(), tensor: name.clone(), reason };
        let n_dims = cur.u32()?;
        if n_dims as usize > MAX_DIMS {
            return Err(invalid(format!("{n_dims} dimensions, at most {MAX_DIMS} are allowed")));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(cur.len()?);
        }
        let n_elements =
            dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(|| invalid(format!("element count of dimensions {dims:?} overflows")))?;
        let ggml_type = GgmlType::from_id(cur.u32()?);
        let offset = cur.u64()?;
        if offset % alignment as u64 != 0 {
            return Err(invalid(format!("data offset {offset} is not a multiple of the alignment {alignment}")));
        }
        Ok(Self { name, dims, ggml_type, offset, n_elements })
    }
}

/// Decodes whole blocks of type `ty` to f32 (the caller sized `bytes` with
/// [`GgmlType::block_layout`]); `None` for the types this crate does not decode.
pub(crate) fn dequantise(ty: GgmlType, bytes: &[u8]) -> Option<Vec<f32>> {
    Some(match ty {
        GgmlType::F32 => decode::<4>(bytes, 1, |b, out| out.push(f32::from_le_bytes(*b))),
        GgmlType::F16 => decode::<2>(bytes, 1, |b, out| out.push(f16::from_le_bytes(*b).to_f32())),
        GgmlType::BF16 => decode::<2>(bytes, 1, |b, out| {
            out.push(bf16::from_le_bytes(*b).to_f32());
        }),
        GgmlType::Q8_0 => decode::<34>(bytes, 32, |b, out| {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            out.extend(b[2..].iter().map(|&q| d * f32::from(q.cast_signed())));
        }),
        GgmlType::Q4_0 => decode::<18>(bytes, 32, |b, out| {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            let centred = |q: u8| d * f32::from(i16::from(q) - 8);
            out.extend(b[2..].iter().map(|&q| centred(q & 0x0f)));
            out.extend(b[2..].iter().map(|&q| centred(q >> 4)));
        }),
        GgmlType::Q4_1 => decode::<20>(bytes, 32, |b, out| {
            let d = f16::from_le_bytes([b[0], b[1]]).to_f32();
            let m = f16::from_le_bytes([b[2], b[3]]).to_f32();
            let nibbles = &b[4..];
            out.extend(nibbles.iter().map(|&q| d * f32::from(q & 0x0f) + m));
            out.extend(nibbles.iter().map(|&q| d * f32::from(q >> 4) + m));
        }),
        _ => return None,
    })
}

/// Runs `block` over each `N`-byte block, each of which yields `per_block` values.
fn decode<const N: usize>(bytes: &[u8], per_block: usize, block: impl Fn(&[u8; N], &mut Vec<f32>)) -> Vec<f32> {
    let (blocks, _) = bytes.as_chunks::<N>();
    let mut out = Vec::with_capacity(blocks.len() * per_block);
    for b in blocks {
        block(b, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One block of nibbles 0..15 in the low halves and 15..0 in the high halves.
    fn nibbles() -> [u8; 16] {
        std::array::from_fn(|i| (i as u8) | ((15 - i as u8) << 4))
    }

    #[test]
    fn q4_1_low_nibbles_are_the_first_half_of_the_block() {
        let mut block = Vec::new();
        block.extend(f16::from_f32(0.5).to_le_bytes());
        block.extend(f16::from_f32(-2.0).to_le_bytes());
        block.extend(nibbles());
        let values = dequantise(GgmlType::Q4_1, &block).unwrap();
        let expected: Vec<f32> = (0..16).chain((0..16).rev()).map(|q| 0.5 * q as f32 - 2.0).collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn q4_0_centres_nibbles_on_eight() {
        let mut block = Vec::new();
        block.extend(f16::from_f32(0.25).to_le_bytes());
        block.extend(nibbles());
        let values = dequantise(GgmlType::Q4_0, &block).unwrap();
        let expected: Vec<f32> = (0..16).chain((0..16).rev()).map(|q| 0.25 * (q - 8) as f32).collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn q8_0_reads_signed_bytes() {
        let mut block = f16::from_f32(2.0).to_le_bytes().to_vec();
        block.extend((-16i8..16).map(|q| q as u8));
        let values = dequantise(GgmlType::Q8_0, &block).unwrap();
        let expected: Vec<f32> = (-16..16).map(|q| 2.0 * q as f32).collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn type_ids_round_trip_and_unknown_ids_are_kept() {
        assert_eq!(GgmlType::from_id(3), GgmlType::Q4_1);
        assert_eq!(GgmlType::Q4_K.id(), 12);
        assert_eq!(GgmlType::Q4_K.to_string(), "Q4_K");
        assert_eq!(GgmlType::from_id(1000), GgmlType::Unknown(1000));
        assert_eq!(GgmlType::Unknown(1000).to_string(), "unknown ggml type 1000");
    }
}
