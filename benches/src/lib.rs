//! Criterion benches for snapsync; see benches/benches/.
#![forbid(unsafe_code)]
