//! fast_intake fixtures (root).
