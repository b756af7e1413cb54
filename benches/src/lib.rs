//! Criterion benches for snapsync; see benches/benches/.
