//! [`RequestView`]: what a filter stage reads of one request, read from the host at most once,
//! and [`StageResult`]: how a stage left the request.
//!
//! Every adapter is a *stage* (`<filter>::stage`) that decides on a `RequestView` instead of
//! calling the host for headers and properties itself. A standalone filter gives each request a
//! fresh view; the bundle (`filters/bundle`, `meshward.wasm`) hands the same view to each of its
//! stages in turn, so the header map is read once and every property at most once per request.
//!
//! The view stays what the host would answer: a stage that edits the request headers does it
//! through the view, which makes the host call and applies the same edit to its copy with the
//! host's rules (names lowercased on add/replace, removal of every value in any case, replace =
//! remove all, then append; see the harness's `envoy_model::header_map`, which follows Envoy 1.40).
//! A property a stage sets through the view (jwt-authn's published identity) is what a later
//! stage reads back, without asking the host: the identity is handed over in memory.

use std::ops::Range;
use std::rc::Rc;

use crate::{wire, MapType, Status};

/// How a stage left the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageResult {
    /// The stage let the request go on: the next stage (or the upstream) gets it.
    Continue,
    /// The stage answered the request (or, failing even that, stopped it): nothing else runs.
    Replied,
    /// The stage parked the request (jwt-authn waiting for keys); it is decided again later.
    Paused,
}

/// The request headers and properties of one request, read from the host at most once.
#[derive(Debug)]
pub struct RequestView {
    /// Bundled: any header lookup reads the whole map (one host call serves every stage).
    /// Standalone: a single lookup asks the host for that header unless the map is read already,
    /// as each filter did before it had a view.
    whole_map: bool,
    headers: Headers,
    properties: Vec<(PropertyPath, PropertyRead)>,
}

/// A property's path, e.g. `&["connection", "mtls"]`.
type PropertyPath = &'static [&'static str];

/// What reading a property gave: its bytes, none, or the host's error.
type PropertyRead = Result<Option<Vec<u8>>, Status>;

/// The request header map as far as it was read.
#[derive(Debug)]
enum Headers {
    Unread,
    /// The host would not hand the map over (or handed over a malformed one).
    Failed(Status),
    /// Shared with any [`HeaderSnapshot`] a stage holds; an edit while one is held copies the
    /// map first (the snapshot keeps what was read).
    Read(Rc<HeaderMap>),
}

/// The pairs of the map in host order, as ranges into one buffer: the host's serialized map,
/// decoded in place (no copy per header), with the names and values of later edits appended.
#[derive(Debug, Clone)]
struct HeaderMap {
    buf: Vec<u8>,
    entries: Vec<(Range<usize>, Range<usize>)>,
}

impl HeaderMap {
    /// Decode the host's serialized map; `None` if it is malformed.
    fn decode(raw: Vec<u8>) -> Option<Self> {
        let base = raw.as_ptr() as usize;
        let range = |part: &[u8]| -> Option<Range<usize>> {
            let start = (part.as_ptr() as usize).checked_sub(base)?;
            Some(start..start.checked_add(part.len())?)
        };
        let pairs = wire::decode_map(&raw)?;
        let mut entries = Vec::with_capacity(pairs.len());
        for (name, value) in pairs {
            // An empty name or value may point anywhere (e.g. at a static empty slice): give it
            // an empty range.
            let name = if name.is_empty() { 0..0 } else { range(name)? };
            let value = if value.is_empty() {
                0..0
            } else {
                range(value)?
            };
            entries.push((name, value));
        }
        Some(Self { buf: raw, entries })
    }

    fn bytes(&self, range: &Range<usize>) -> &[u8] {
        self.buf.get(range.clone()).unwrap_or_default()
    }

    fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.entries
            .iter()
            .map(|(name, value)| (self.bytes(name), self.bytes(value)))
    }

    /// The first value of `name` in any case (the host's `proxy_get_header_map_value`).
    fn first(&self, name: &[u8]) -> Option<&[u8]> {
        self.pairs()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    fn contains(&self, name: &[u8]) -> bool {
        self.first(name).is_some()
    }

    fn remove(&mut self, name: &[u8]) {
        let buf = &self.buf;
        self.entries.retain(|(n, _)| {
            !buf.get(n.clone())
                .unwrap_or_default()
                .eq_ignore_ascii_case(name)
        });
    }

    /// Remove every value, then append one with the name lowercased (Envoy's `setCopy`).
    fn replace(&mut self, name: &[u8], value: &[u8]) {
        self.remove(name);
        let name_start = self.buf.len();
        self.buf.extend(name.iter().map(u8::to_ascii_lowercase));
        let value_start = self.buf.len();
        self.buf.extend_from_slice(value);
        let end = self.buf.len();
        self.entries
            .push((name_start..value_start, value_start..end));
    }
}

/// The request header pairs as a [`RequestView`] had them when the snapshot was taken (shared
/// with the view, not copied).
#[derive(Debug, Clone)]
pub struct HeaderSnapshot(Rc<HeaderMap>);

impl HeaderSnapshot {
    /// Every pair in the host's order, duplicates kept.
    pub fn pairs(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.0.pairs()
    }

    /// How many pairs.
    pub fn len(&self) -> usize {
        self.0.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.entries.is_empty()
    }
}

impl RequestView {
    /// The view of a standalone filter: single header lookups ask the host until the whole map
    /// is read.
    pub fn standalone() -> Self {
        Self::new(false)
    }

    /// The view of the bundle: the whole map is read on the first header lookup and serves
    /// every later one, of every stage.
    pub fn bundled() -> Self {
        Self::new(true)
    }

    fn new(whole_map: bool) -> Self {
        Self {
            whole_map,
            headers: Headers::Unread,
            properties: Vec::new(),
        }
    }

    /// Read the whole request header map if it was not read yet.
    fn load(&mut self) -> Result<&Rc<HeaderMap>, Status> {
        if let Headers::Unread = self.headers {
            self.headers = match crate::get_map_raw(MapType::HttpRequestHeaders) {
                Ok(raw) => match HeaderMap::decode(raw) {
                    Some(map) => Headers::Read(Rc::new(map)),
                    None => Headers::Failed(Status::SERIALIZATION_FAILURE),
                },
                Err(status) => Headers::Failed(status),
            };
        }
        match &self.headers {
            Headers::Read(map) => Ok(map),
            Headers::Failed(status) => Err(*status),
            // Just read above.
            Headers::Unread => Err(Status::INTERNAL_FAILURE),
        }
    }

    /// Every request header pair, in the host's order, duplicates kept (one host call, the first
    /// time). A map the host would not hand over, or handed over malformed, is its error
    /// ([`Status::SERIALIZATION_FAILURE`] for a malformed one), every time.
    pub fn headers(&mut self) -> Result<wire::Pairs<'_>, Status> {
        Ok(self.load()?.pairs().collect())
    }

    /// The request header map as read so far, to hold while editing the request through the
    /// view (jwt-authn reads the headers, decides, then edits them): the same host call and
    /// errors as [`headers`](Self::headers), no copy of the map unless an edit is made while the
    /// snapshot is held. The snapshot keeps the pairs it was taken with.
    pub fn header_snapshot(&mut self) -> Result<HeaderSnapshot, Status> {
        Ok(HeaderSnapshot(Rc::clone(self.load()?)))
    }

    /// The first value of request header `name` (any case), as `proxy_get_header_map_value`
    /// answers; `None` if absent.
    pub fn header(&mut self, name: &str) -> Result<Option<Vec<u8>>, Status> {
        if self.whole_map {
            return Ok(self.load()?.first(name.as_bytes()).map(<[u8]>::to_vec));
        }
        match &self.headers {
            Headers::Read(map) => Ok(map.first(name.as_bytes()).map(<[u8]>::to_vec)),
            Headers::Unread | Headers::Failed(_) => {
                crate::get_map_value(MapType::HttpRequestHeaders, name)
            }
        }
    }

    /// Remove every value of request header `name`. When the map is read and has no such
    /// header, the host is not asked (there is nothing to remove).
    pub fn remove_header(&mut self, name: &[u8]) -> Result<(), Status> {
        if let Headers::Read(map) = &self.headers {
            if !map.contains(name) {
                return Ok(());
            }
        }
        crate::remove_map_value(MapType::HttpRequestHeaders, name)?;
        if let Headers::Read(map) = &mut self.headers {
            Rc::make_mut(map).remove(name);
        }
        Ok(())
    }

    /// Set request header `name` to exactly `value`.
    pub fn replace_header(&mut self, name: &[u8], value: &[u8]) -> Result<(), Status> {
        crate::replace_map_value(MapType::HttpRequestHeaders, name, value)?;
        if let Headers::Read(map) = &mut self.headers {
            Rc::make_mut(map).replace(name, value);
        }
        Ok(())
    }

    /// The property at `path` (one host call the first time; later reads, and reads after
    /// [`publish_property`](Self::publish_property), answer from the view). A failed read is kept
    /// and answered again: the request fails closed on it in every stage that needs it.
    pub fn property(&mut self, path: PropertyPath) -> Result<Option<&[u8]>, Status> {
        let index = match self.properties.iter().position(|(p, _)| *p == path) {
            Some(index) => index,
            None => {
                self.properties.push((path, crate::get_property(path)));
                self.properties.len().saturating_sub(1)
            }
        };
        match self.properties.get(index) {
            Some((_, Ok(value))) => Ok(value.as_deref()),
            Some((_, Err(status))) => Err(*status),
            None => Err(Status::INTERNAL_FAILURE),
        }
    }

    /// Set the property at `path` (`proxy_set_property`: for other filters too); later
    /// [`property`](Self::property) reads of it answer `value` without asking the host.
    pub fn publish_property(
        &mut self,
        path: &'static [&'static str],
        value: &[u8],
    ) -> Result<(), Status> {
        crate::set_property(path, value)?;
        let known = Ok(Some(value.to_vec()));
        match self.properties.iter_mut().find(|(p, _)| *p == path) {
            Some((_, slot)) => *slot = known,
            None => self.properties.push((path, known)),
        }
        Ok(())
    }

    /// A view whose header map is `pairs` (native tests: there is no host to read it from).
    #[cfg(test)]
    fn with_headers(whole_map: bool, pairs: &[(&str, &str)]) -> Self {
        let raw = wire::encode_map(pairs).unwrap_or_default();
        let mut view = Self::new(whole_map);
        view.headers = match HeaderMap::decode(raw) {
            Some(map) => Headers::Read(Rc::new(map)),
            None => Headers::Failed(Status::SERIALIZATION_FAILURE),
        };
        view
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(view: &mut RequestView) -> Vec<(String, String)> {
        view.headers()
            .unwrap()
            .into_iter()
            .map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn a_read_map_answers_lookups_first_value_any_case() {
        let mut view = RequestView::with_headers(
            false,
            &[(":path", "/a"), ("x-a", "1"), ("x-a", "2"), ("x-e", "")],
        );
        assert_eq!(view.header("X-A").unwrap(), Some(b"1".to_vec()));
        assert_eq!(view.header("x-e").unwrap(), Some(Vec::new()));
        assert_eq!(view.header("x-b").unwrap(), None);
        assert_eq!(pairs(&mut view).len(), 4);
    }

    #[test]
    fn edits_follow_the_hosts_rules_but_need_the_host() {
        // Natively the host refuses every edit: the view must not change either.
        let mut view = RequestView::with_headers(false, &[("x-a", "1"), ("b", "2")]);
        assert_eq!(
            view.replace_header(b"X-A", b"9"),
            Err(Status::UNIMPLEMENTED)
        );
        assert_eq!(view.remove_header(b"b"), Err(Status::UNIMPLEMENTED));
        assert_eq!(pairs(&mut view).len(), 2);
        // Removing an absent header asks nobody.
        assert_eq!(view.remove_header(b"absent"), Ok(()));
    }

    #[test]
    fn the_map_model_replaces_by_removing_all_then_appending_lowercased() {
        let raw = wire::encode_map(&[("a", "1"), ("b", "2"), ("A", "3")]).unwrap();
        let mut map = HeaderMap::decode(raw).unwrap();
        map.replace(b"A", b"9");
        map.replace(b"New", b"");
        let got: Vec<(&[u8], &[u8])> = map.pairs().collect();
        assert_eq!(
            got,
            vec![
                (&b"b"[..], &b"2"[..]),
                (&b"a"[..], &b"9"[..]),
                (&b"new"[..], &b""[..])
            ]
        );
        map.remove(b"B");
        assert_eq!(map.pairs().count(), 2);
        assert!(!map.contains(b"b"));
    }

    #[test]
    fn a_snapshot_keeps_what_was_read_while_the_view_is_edited() {
        let mut view = RequestView::with_headers(true, &[("a", "1"), ("b", "2")]);
        let snapshot = view.header_snapshot().unwrap();
        // Edit the view's model directly (natively the host refuses edits): copy on write.
        if let Headers::Read(map) = &mut view.headers {
            Rc::make_mut(map).replace(b"A", b"9");
        }
        let before: Vec<(&[u8], &[u8])> = snapshot.pairs().collect();
        assert_eq!(before, vec![(&b"a"[..], &b"1"[..]), (&b"b"[..], &b"2"[..])]);
        assert_eq!(snapshot.len(), 2);
        assert_eq!(view.header("a").unwrap(), Some(b"9".to_vec()));
    }

    #[test]
    fn a_malformed_map_is_a_serialization_failure_every_time() {
        assert!(HeaderMap::decode(vec![5, 0, 0, 0, 1]).is_none());
        let mut view = RequestView::bundled();
        // Natively the read fails; the failure is kept, not retried.
        assert_eq!(view.headers().err(), Some(Status::UNIMPLEMENTED));
        assert_eq!(view.header_snapshot().err(), Some(Status::UNIMPLEMENTED));
        assert_eq!(view.header(":path").err(), Some(Status::UNIMPLEMENTED));
    }

    #[test]
    fn properties_are_read_once_and_set_ones_are_known() {
        const P: &[&str] = &["a", "b"];
        const Q: &[&str] = &["meshward_request_auth"];
        let mut view = RequestView::standalone();
        assert_eq!(view.property(P), Err(Status::UNIMPLEMENTED));
        assert_eq!(view.property(P), Err(Status::UNIMPLEMENTED));
        assert_eq!(view.properties.len(), 1);
        // Natively set_property fails, so nothing becomes known.
        assert_eq!(view.publish_property(Q, b"{}"), Err(Status::UNIMPLEMENTED));
        assert_eq!(view.properties.len(), 1);
        view.properties.push((Q, Ok(Some(b"{}".to_vec()))));
        assert_eq!(view.property(Q), Ok(Some(&b"{}"[..])));
    }
}
