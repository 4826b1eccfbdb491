//! Linearizability checker for KV histories (implemented with issue 4).
