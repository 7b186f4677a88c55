//! test module noop
