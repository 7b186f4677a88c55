//! The JWS algorithms we verify, and which key type each needs.

/// A supported JWS `alg`. `none`, the ES512/P-521 family and anything else are not representable:
/// [`Alg::parse`] returns `None` and the token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

/// The key family an algorithm needs; the binding of `alg` to `kty` (and curve) is what stops
/// key-confusion attacks such as HS256 "signed" with an RSA public key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFamily {
    Rsa,
    P256,
    P384,
    Ed25519,
    Oct,
}

impl Alg {
    /// Case-sensitive, as RFC 7515 says (`NONE`, `hs256` are unknown).
    pub fn parse(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "PS256" => Alg::PS256,
            "PS384" => Alg::PS384,
            "PS512" => Alg::PS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            "EdDSA" => Alg::EdDSA,
            "HS256" => Alg::HS256,
            "HS384" => Alg::HS384,
            "HS512" => Alg::HS512,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::PS256 => "PS256",
            Alg::PS384 => "PS384",
            Alg::PS512 => "PS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
            Alg::EdDSA => "EdDSA",
            Alg::HS256 => "HS256",
            Alg::HS384 => "HS384",
            Alg::HS512 => "HS512",
        }
    }

    pub fn family(self) -> KeyFamily {
        match self {
            Alg::RS256 | Alg::RS384 | Alg::RS512 | Alg::PS256 | Alg::PS384 | Alg::PS512 => {
                KeyFamily::Rsa
            }
            Alg::ES256 => KeyFamily::P256,
            Alg::ES384 => KeyFamily::P384,
            Alg::EdDSA => KeyFamily::Ed25519,
            Alg::HS256 | Alg::HS384 | Alg::HS512 => KeyFamily::Oct,
        }
    }

    /// Minimum HMAC key length in bytes: the hash output size (RFC 7518 §3.2). 0 for non-HMAC.
    pub fn min_hmac_key_len(self) -> usize {
        match self {
            Alg::HS256 => 32,
            Alg::HS384 => 48,
            Alg::HS512 => 64,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_is_exact_and_rejects_none() {
        assert_eq!(Alg::parse("RS256"), Some(Alg::RS256));
        assert_eq!(Alg::parse("EdDSA"), Some(Alg::EdDSA));
        for bad in [
            "none", "None", "NONE", "rs256", "ES512", "Ed25519", "", "HS256 ",
        ] {
            assert_eq!(Alg::parse(bad), None, "{bad}");
        }
        for alg in [Alg::RS256, Alg::PS512, Alg::ES384, Alg::HS384, Alg::EdDSA] {
            assert_eq!(Alg::parse(alg.name()), Some(alg));
        }
    }

    #[test]
    fn families() {
        assert_eq!(Alg::PS384.family(), KeyFamily::Rsa);
        assert_eq!(Alg::ES256.family(), KeyFamily::P256);
        assert_eq!(Alg::HS512.family(), KeyFamily::Oct);
        assert_eq!(Alg::HS384.min_hmac_key_len(), 48);
    }
}
