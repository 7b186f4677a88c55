//! Header maps with Envoy's mutation semantics (the pairs format itself is `meshward_abi`'s).

use std::borrow::Cow;

use meshward_abi::encoding::{decode_map_lenient, encode_map};

/// An ordered multimap of lowercased names to values (bytes, as the ABI allows any bytes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HeaderMap {
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

impl HeaderMap {
    pub fn from_pairs<N: AsRef<[u8]>, V: AsRef<[u8]>>(
        pairs: impl IntoIterator<Item = (N, V)>,
    ) -> Self {
        let mut m = HeaderMap::default();
        for (n, v) in pairs {
            m.add(n.as_ref(), v.as_ref());
        }
        m
    }

    pub fn entries(&self) -> &[(Vec<u8>, Vec<u8>)] {
        &self.entries
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Envoy's `byteSize()`: Σ name + value.
    pub fn byte_size(&self) -> usize {
        self.entries.iter().map(|(n, v)| n.len() + v.len()).sum()
    }

    /// First value (Envoy's wasm `getHeaderMapValue` returns only the first).
    pub fn get(&self, name: &[u8]) -> Option<&[u8]> {
        // Stored names are lowercase, so a case-insensitive compare equals lowercasing the key,
        // without allocating on every lookup.
        self.entries
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_slice())
    }

    pub fn get_str(&self, name: &str) -> Option<String> {
        self.get(name.as_bytes()).map(|v| text(v).into_owned())
    }

    /// Appends an entry (Envoy `addCopy`, which lowercases the key).
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        self.entries
            .push((name.to_ascii_lowercase(), value.to_vec()));
    }

    /// Envoy `setCopy` (with `http_set_copy_replace_all_headers`): remove all, then add.
    pub fn replace(&mut self, name: &[u8], value: &[u8]) {
        self.remove(name);
        self.add(name, value);
    }

    pub fn remove(&mut self, name: &[u8]) {
        self.entries.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    pub fn to_strings(&self) -> Vec<(String, String)> {
        self.entries
            .iter()
            .map(|(n, v)| (text(n).into_owned(), text(v).into_owned()))
            .collect()
    }

    /// The proxy-wasm pairs format: u32 count, then (u32 name_len, u32 value_len) per pair,
    /// then each name and value followed by a NUL byte.
    pub fn serialize(&self) -> Vec<u8> {
        // Only a map of over 4 GiB does not fit the format; no request gets near.
        encode_map(&self.entries).unwrap_or_default()
    }
}

/// Bytes as text, invalid UTF-8 replaced. `from_utf8_lossy` walks its chunk iterator even for
/// valid input; headers are nearly always valid, so the plain check goes first.
pub(crate) fn text(bytes: &[u8]) -> Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Cow::Borrowed(s),
        Err(_) => String::from_utf8_lossy(bytes),
    }
}

/// Pairs a guest handed over, read as Envoy reads them (cpp-host `toPairs`: malformed input is an
/// empty list).
pub(crate) fn deserialize_pairs(data: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    decode_map_lenient(data)
        .unwrap_or_default()
        .into_iter()
        .map(|(n, v)| (n.to_vec(), v.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip() {
        let m = HeaderMap::from_pairs([("A", "1"), ("b", "")]);
        let bytes = m.serialize();
        assert_eq!(deserialize_pairs(&bytes), m.entries().to_vec());
        assert_eq!(m.get(b"a"), Some(&b"1"[..]));
    }

    #[test]
    fn truncated_pairs_are_empty() {
        let m = HeaderMap::from_pairs([("a", "1")]);
        let bytes = m.serialize();
        assert!(deserialize_pairs(&bytes[..bytes.len() - 2]).is_empty());
    }

    #[test]
    fn replace_removes_all_and_appends() {
        let mut m = HeaderMap::from_pairs([("a", "1"), ("b", "2"), ("a", "3")]);
        m.replace(b"A", b"9");
        assert_eq!(
            m.to_strings(),
            vec![("b".into(), "2".into()), ("a".into(), "9".into())]
        );
    }
}
