//! Oracles shared by the fuzz targets: models written independently of the code under test, so
//! that a target checks *what* the code decides, not only that it does not crash.

pub mod backend;
pub mod bytes;
