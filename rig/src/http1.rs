//! The rig's one HTTP/1.1 reader, for both directions: [`read_response`] (the client) and
//! [`read_request`] (the upstream). It frames messages itself (a head up to its empty line; a body
//! by content-length, chunked, or until close) and leaves the parsing of a head to `httparse`.

use std::io::{BufRead, ErrorKind, Read};

use anyhow::{bail, Context, Result};

use crate::message::{RequestHead, Response};

/// Reads one response to a request (`head_request`: a response to `HEAD`, which has no body),
/// skipping interim (1xx) responses.
pub fn read_response(reader: &mut impl BufRead, head_request: bool) -> Result<Response> {
    loop {
        let Some(head) = read_head(reader)? else {
            bail!("the server closed the connection without a response");
        };
        let mut slots = vec![httparse::EMPTY_HEADER; header_slots(&head)];
        let mut parsed = httparse::Response::new(&mut slots);
        let httparse::Status::Complete(_) = parsed.parse(&head)? else {
            bail!("incomplete response head");
        };
        let status = parsed.code.unwrap_or_default();
        let headers = header_pairs(parsed.headers);
        if (100..200).contains(&status) {
            continue; // interim response: the final one follows
        }
        let framing = if head_request || status == 204 || status == 304 {
            BodyFraming::None
        } else {
            framing(&headers, BodyFraming::UntilClose)?
        };
        let body = read_body(reader, framing)?;
        return Ok(Response {
            status,
            headers,
            body,
        });
    }
}

/// Reads one request, body included. `Ok(None)` when the peer closed an idle connection; the
/// flag says whether the connection must close after the reply (`connection: close`, HTTP/1.0).
pub fn read_request(reader: &mut impl BufRead) -> Result<Option<(RequestHead, bool)>> {
    let Some(head) = read_head(reader)? else {
        return Ok(None);
    };
    let mut slots = vec![httparse::EMPTY_HEADER; header_slots(&head)];
    let mut req = httparse::Request::new(&mut slots);
    let httparse::Status::Complete(_) = req.parse(&head)? else {
        bail!("incomplete request head");
    };
    let headers = header_pairs(req.headers);
    let framing = framing(&headers, BodyFraming::None)?;
    let body = read_body(reader, framing)?;
    let close = wants_close(&headers) || req.version == Some(0);
    let received = RequestHead {
        method: req.method.unwrap_or_default().to_string(),
        path: req.path.unwrap_or_default().to_string(),
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    };
    Ok(Some((received, close)))
}

/// Largest head (request or status line + headers) either side accepts: above any limit a test can
/// configure in Envoy (`max_request_headers_kb` ≤ 8192).
const MAX_HEAD_BYTES: usize = 9 * 1024 * 1024;
/// Largest body either side reads.
const MAX_BODY_BYTES: usize = 64 * 1024 * 1024;

/// Reads one head, up to and including the empty line. `Ok(None)` on a clean EOF before any byte
/// (the peer closed an idle keep-alive connection).
fn read_head(reader: &mut impl BufRead) -> Result<Option<Vec<u8>>> {
    let mut head = Vec::new();
    loop {
        let before = head.len();
        let n = read_until_lenient(reader, &mut head)?;
        if n == 0 {
            if head.is_empty() {
                return Ok(None);
            }
            bail!(
                "connection closed in the middle of a head ({} bytes read)",
                head.len()
            );
        }
        // A line holding only CRLF (or LF) ends the head; leading empty lines are tolerated
        // (RFC 9112 §2.2) by dropping them.
        let line = head.get(before..).unwrap_or_default();
        if line == b"\r\n" || line == b"\n" {
            if before == 0 {
                head.clear();
                continue;
            }
            return Ok(Some(head));
        }
        if head.len() > MAX_HEAD_BYTES {
            bail!("head larger than {MAX_HEAD_BYTES} bytes");
        }
    }
}

/// `read_until(b'\n')` that treats a TLS peer closing without close_notify as EOF: Envoy may do
/// that on a `connection: close` reply, and what was received is still a valid message.
fn read_until_lenient(reader: &mut impl BufRead, buf: &mut Vec<u8>) -> Result<usize> {
    match reader.read_until(b'\n', buf) {
        Ok(n) => Ok(n),
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(0),
        Err(e) => Err(e).context("reading a line"),
    }
}

/// How many header slots to give httparse for this head: one per line is always enough.
fn header_slots(head: &[u8]) -> usize {
    head.iter().filter(|&&b| b == b'\n').count() + 1
}

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyFraming {
    None,
    Length(usize),
    Chunked,
    UntilClose,
}

/// The framing given by a message's headers (RFC 9112 §6.3): chunked wins over content-length;
/// `default` applies when neither is present (requests: no body; responses: until close).
fn framing(headers: &[(String, String)], default: BodyFraming) -> Result<BodyFraming> {
    let chunked = headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    });
    if chunked {
        return Ok(BodyFraming::Chunked);
    }
    match headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        Some((_, v)) => {
            let len: usize = v
                .trim()
                .parse()
                .with_context(|| format!("bad content-length {v:?}"))?;
            if len > MAX_BODY_BYTES {
                bail!("content-length {len} above {MAX_BODY_BYTES}");
            }
            Ok(BodyFraming::Length(len))
        }
        None => Ok(default),
    }
}

/// Reads a body with the given framing (trailers of a chunked body are read and discarded).
fn read_body(reader: &mut impl BufRead, framing: BodyFraming) -> Result<Vec<u8>> {
    match framing {
        BodyFraming::None => Ok(Vec::new()),
        BodyFraming::Length(len) => {
            let mut body = vec![0; len];
            reader.read_exact(&mut body).context("reading a body")?;
            Ok(body)
        }
        BodyFraming::UntilClose => {
            let mut body = Vec::new();
            match reader.take(MAX_BODY_BYTES as u64).read_to_end(&mut body) {
                Ok(_) => Ok(body),
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(body),
                Err(e) => Err(e).context("reading a body until close"),
            }
        }
        BodyFraming::Chunked => read_chunked(reader),
    }
}

fn read_chunked(reader: &mut impl BufRead) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let mut line = Vec::new();
        if read_until_lenient(reader, &mut line)? == 0 {
            bail!("connection closed inside a chunked body");
        }
        let text = String::from_utf8_lossy(&line);
        let size_text = text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size line {text:?}"))?;
        if size == 0 {
            // Trailers, then the final empty line.
            loop {
                let mut trailer = Vec::new();
                if read_until_lenient(reader, &mut trailer)? == 0 || trailer.trim_ascii().is_empty()
                {
                    return Ok(body);
                }
            }
        }
        if body.len().saturating_add(size) > MAX_BODY_BYTES {
            bail!("chunked body above {MAX_BODY_BYTES} bytes");
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .context("reading a chunk")?;
        let mut crlf = [0u8; 2];
        reader
            .read_exact(&mut crlf)
            .context("reading a chunk's CRLF")?;
    }
}

/// Whether a message's headers ask to close the connection after it.
fn wants_close(headers: &[(String, String)]) -> bool {
    headers.iter().any(|(n, v)| {
        n.eq_ignore_ascii_case("connection")
            && v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close"))
    })
}

/// Header pairs from httparse, with values decoded lossily (tests compare text).
fn header_pairs(headers: &[httparse::Header<'_>]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|h| {
            (
                h.name.to_string(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect()
}
