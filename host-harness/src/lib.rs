//! meshward harness
