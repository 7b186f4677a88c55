//! test rig
