//! Why bytes could not be decoded as a frame.

/// A frame that can never be valid. The connection is closed with an error frame carrying
/// [`code`](DecodeError::code), and the event is counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame type byte is not one this version knows.
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The payload is longer than the agreed maximum.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// The payload length announced.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// The payload ends inside a field.
    #[error("truncated {0} frame")]
    Truncated(&'static str),
    /// Bytes left over after the last field.
    #[error("{0} unexpected bytes after the frame's fields")]
    TrailingBytes(usize),
    /// A field holds a value that is not allowed.
    #[error("invalid frame: {0}")]
    Invalid(&'static str),
}

impl DecodeError {
    /// The error code sent in the closing [`Frame::Error`](crate::proto::Frame::Error).
    pub fn code(&self) -> u16 {
        match self {
            DecodeError::UnknownType(_) => 2,
            DecodeError::TooLarge { .. } => 3,
            DecodeError::Truncated(_) | DecodeError::TrailingBytes(_) => 4,
            DecodeError::Invalid(_) => 5,
        }
    }
}
