//! Strict base64url: tokens must be canonical (no padding, no junk, zero trailing bits), so that
//! one token has exactly one byte string; JWK members may carry padding (some IdPs emit it).

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;

const URL_SAFE_OPTIONAL_PAD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Decode a JWS segment: unpadded, canonical base64url only.
pub fn decode_segment(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// Decode a JWK member (base64url, padding tolerated, still canonical).
pub fn decode_jwk_member(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_OPTIONAL_PAD.decode(s).ok()
}

pub fn encode(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictness() {
        assert_eq!(decode_segment("Zm9v").unwrap(), b"foo");
        assert!(decode_segment("Zm9v=").is_none());
        assert!(decode_segment("Zm9v?").is_none());
        assert!(decode_segment(" Zm9v").is_none());
        assert!(
            decode_segment("Zm+v").is_none(),
            "standard alphabet is not base64url"
        );
        // "AB" has non-zero unused bits (canonical is "AA").
        assert!(decode_segment("AB").is_none());
        assert_eq!(decode_segment("").unwrap(), b"");
        assert_eq!(decode_jwk_member("AQAB").unwrap(), vec![1, 0, 1]);
        assert_eq!(decode_jwk_member("YQ==").unwrap(), b"a");
        assert!(decode_jwk_member("Y Q").is_none());
    }
}
