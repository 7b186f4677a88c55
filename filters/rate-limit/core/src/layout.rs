//! The slot table's geometry and entry format version: what the config fixes (and hashes into
//! the table's namespace) and the table then uses. Its own module so that `config` and `table`
//! both depend on it and not on each other.

/// Version of the entry encoding; part of the shared-data namespace.
pub const FORMAT_VERSION: u8 = 1;
/// Associativity: slots per set entry.
pub const WAYS: u8 = 8;
/// Table geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableLayout {
    pub(crate) sets: u32,
    pub(crate) ways: u8,
}

impl TableLayout {
    /// `min(8, maxKeys)` ways and `maxKeys / ways` sets: at most `maxKeys` slots (up to 7 fewer).
    pub fn for_max_keys(max_keys: u32) -> Self {
        let ways = u8::try_from(max_keys.clamp(1, u32::from(WAYS))).unwrap_or(WAYS);
        let sets = max_keys.checked_div(u32::from(ways)).unwrap_or(1).max(1);
        Self { sets, ways }
    }
    pub fn sets(&self) -> u32 {
        self.sets
    }
    pub fn ways(&self) -> u8 {
        self.ways
    }
    /// Number of per-key slots (the bound on distinct buckets kept).
    pub fn capacity(&self) -> u32 {
        self.sets.saturating_mul(u32::from(self.ways))
    }
}
