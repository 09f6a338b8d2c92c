//! Runnable templates for the sssonector crates live in this package's examples.
#![forbid(unsafe_code)]
