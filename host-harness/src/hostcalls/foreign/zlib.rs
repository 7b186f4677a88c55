//! Envoy's `compress` and `uncompress` foreign functions (foreign.cc): zlib's `compress()` (a
//! zlib stream at the default level) of the arguments, and zlib's `uncompress()` of them, any
//! failure being `SerializationFailure` with no result.

use std::io::{Read, Write};

use flate2::read::ZlibDecoder;
use flate2::write::ZlibEncoder;
use flate2::Compression;

use crate::Status;

pub(super) fn compress(arguments: &[u8]) -> (Status, Option<Vec<u8>>) {
    let mut encoder = ZlibEncoder::new(Vec::new(), Compression::default());
    match encoder.write_all(arguments).and_then(|()| encoder.finish()) {
        Ok(out) => (Status::OK, Some(out)),
        Err(_) => (Status::SERIALIZATION_FAILURE, None),
    }
}

pub(super) fn uncompress(arguments: &[u8]) -> (Status, Option<Vec<u8>>) {
    let mut decoder = ZlibDecoder::new(arguments);
    let mut out = Vec::new();
    // zlib's `uncompress()` wants the whole stream: a truncated one is Z_DATA_ERROR (or
    // Z_BUF_ERROR with no input), and so is trailing garbage's checksum mismatch.
    match decoder.read_to_end(&mut out) {
        Ok(_) if decoder.total_in() as usize == arguments.len() => (Status::OK, Some(out)),
        _ => (Status::SERIALIZATION_FAILURE, None),
    }
}
