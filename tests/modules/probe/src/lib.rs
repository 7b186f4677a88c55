//! test module probe
