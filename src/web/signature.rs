//! GitHub's webhook signature: `X-Hub-Signature-256`, HMAC-SHA256 of the
//! raw body under the webhook secret, made and checked (in constant time).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::settings::Secret;

/// `sha256=<hex>` of HMAC-SHA256(secret, body), as GitHub signs deliveries.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest.iter() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `header` is a valid signature of `body` under any of `secrets`.
/// The comparison is constant-time (`Mac::verify_slice`).
pub fn verify(secrets: &[Secret], body: &[u8], header: &str) -> bool {
    let Some(hex) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Some(expected) = decode_hex(hex) else {
        return false;
    };
    if expected.len() != 32 {
        return false;
    }
    // Check every secret (no early exit) so timing says nothing about which matched.
    let mut ok = false;
    for secret in secrets {
        let Ok(mut mac) = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        else {
            continue;
        };
        mac.update(body);
        ok |= mac.verify_slice(&expected).is_ok();
    }
    ok
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_githubs_test_vector() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../shared/fixtures/github/signature-test-vector.json"
        );
        let text = std::fs::read_to_string(path).expect("shared fixtures are beside the project");
        let v: serde_json::Value = serde_json::from_str(&text).expect("json");
        let secret = v["secret"].as_str().expect("secret");
        let payload = v["payload"].as_str().expect("payload");
        let expected = v["signature_256"].as_str().expect("signature");
        assert_eq!(sign(secret.as_bytes(), payload.as_bytes()), expected);
        let secrets = vec![Secret::new("old-secret"), Secret::new(secret)];
        assert!(verify(&secrets, payload.as_bytes(), expected));
        assert!(!verify(&secrets[..1], payload.as_bytes(), expected));
        assert!(!verify(&secrets, b"Hello, World?", expected));
        for bad in [
            "",
            "sha256=",
            "sha1=757107ea",
            "sha256=zz",
            "sha256=757107ea0e",
        ] {
            assert!(!verify(&secrets, payload.as_bytes(), bad), "{bad}");
        }
        assert!(!verify(&[], payload.as_bytes(), expected));
    }
}
