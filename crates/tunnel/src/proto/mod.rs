//! The wire protocol, sans IO: frames and their codec. Bytes in, frames out, and back;
//! nothing here touches a socket or a clock.

mod error;
mod frame;
mod session;

pub use error::DecodeError;
pub use frame::{
    ALPN, DEFAULT_MAX_PAYLOAD, ErrorCode, FIRST_EXTENSION_TYPE, Frame, HEADER_LEN, Hello,
    MAX_PAYLOAD_LIMIT, Mode, PROTOCOL_VERSION, TunnelAddress, capability,
};
pub use session::{
    Assign, CloseReason, Event, Refusal, Role, Session, SessionConfig, State, StreamError,
    code as session_code,
};
