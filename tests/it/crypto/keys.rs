//! Key types: no key bytes in `Debug`, pseudonyms, shards, key wrapping.

use aws_lc_rs::hmac;
use sealgate::crypto::keys::WRAPPED_LEN;
use sealgate::crypto::{
    CryptoError, Dek, Kek, MasterKey, NamingKey, Pseudonym, Suite, UserKey, Wrapped, WrappedDek,
};

use super::differential::unwrap_key;

const KNOWN: [u8; 32] = [
    0xde, 0xad, 0xbe, 0xef, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98,
    0x76, 0x54, 0x32, 0x10, 0x0f, 0x1e, 0x2d, 0x3c, 0x4b, 0x5a, 0x69, 0x78, 0x87, 0x96, 0xa5, 0xb4,
];

/// Every rendering of the key bytes we can think of.
fn renderings(bytes: &[u8]) -> Vec<String> {
    vec![
        ::hex::encode(bytes),
        ::hex::encode_upper(bytes),
        format!("{bytes:?}"),
        format!("{bytes:x?}"),
        format!("{bytes:#?}"),
        // Any 4-byte window, decimal as Debug prints it.
        format!("{}, {}, {}, {}", bytes[0], bytes[1], bytes[2], bytes[3]),
        ::hex::encode(&bytes[..4]),
        format!("{:?}", &bytes[..4]),
    ]
}

fn assert_opaque(debug: &[String], name: &str, secret: Option<&[u8]>) {
    for d in debug {
        assert_eq!(d, &format!("{name}(..)"), "Debug of {name}");
        if let Some(bytes) = secret {
            for r in renderings(bytes) {
                assert!(!d.contains(&r), "{name} Debug leaks {r}");
            }
        }
    }
}

fn debugs<T: std::fmt::Debug>(value: &T) -> Vec<String> {
    vec![
        format!("{value:?}"),
        format!("{value:#?}"),
        format!("{value:x?}"),
    ]
}

#[test]
fn debug_never_shows_key_bytes() {
    let master = MasterKey::from_bytes(&KNOWN).unwrap();
    assert_eq!(master.expose_for_keyring(), &KNOWN);
    assert_opaque(&debugs(&master), "MasterKey", Some(&KNOWN));
    let naming = NamingKey::from_bytes(&KNOWN).unwrap();
    assert_eq!(naming.expose_for_keyring(), &KNOWN);
    assert_opaque(&debugs(&naming), "NamingKey", Some(&KNOWN));

    // Generated keys have no accessor; their Debug is the bare type name.
    assert_opaque(&debugs(&Kek::generate().unwrap()), "Kek", None);
    assert_opaque(&debugs(&UserKey::generate().unwrap()), "UserKey", None);
    assert_opaque(&debugs(&Dek::generate().unwrap()), "Dek", None);
    assert_opaque(&debugs(&MasterKey::generate().unwrap()), "MasterKey", None);
    assert_opaque(&debugs(&NamingKey::generate().unwrap()), "NamingKey", None);

    // A KEK's bytes are recoverable from its wrapped form under a known
    // master key: check its Debug against them.
    let kek = Kek::generate().unwrap();
    let wrapped = master.wrap_kek(&kek, b"aad").unwrap();
    let kek_bytes = unwrap_key(&KNOWN, wrapped.as_bytes(), b"aad").unwrap();
    assert_opaque(&debugs(&kek), "Kek", Some(&kek_bytes));
    // And a user key's, from its wrap under that KEK.
    let user = UserKey::generate().unwrap();
    let wrapped_user = kek.wrap_user_key(&user, b"u").unwrap();
    let user_bytes = unwrap_key(&kek_bytes, wrapped_user.as_bytes(), b"u").unwrap();
    assert_opaque(&debugs(&user), "UserKey", Some(&user_bytes));
    let dek = Dek::generate().unwrap();
    let wrapped_dek = user.wrap_dek(Suite::Aes256Gcm, &dek, b"id").unwrap();
    let dek_bytes = unwrap_key(&user_bytes, wrapped_dek.as_bytes(), b"id").unwrap();
    assert_opaque(&debugs(&dek), "Dek", Some(&dek_bytes));

    // Wrapped keys print their kind only.
    assert_eq!(format!("{wrapped:?}"), "Wrapped<Kek>(..)");
    assert_eq!(format!("{wrapped_user:?}"), "Wrapped<UserKey>(..)");
    assert_eq!(format!("{wrapped_dek:?}"), "Wrapped<Dek>(..)");
    assert!(!format!("{wrapped:#?}").contains(&::hex::encode(&wrapped.as_bytes()[..4])));
}

#[test]
fn pseudonyms() {
    let a = NamingKey::from_bytes(&KNOWN).unwrap();
    let mut other = KNOWN;
    other[31] ^= 1;
    let b = NamingKey::from_bytes(&other).unwrap();

    let p = a.pseudonym("user-42");
    assert_eq!(p, a.pseudonym("user-42"), "deterministic");
    assert_eq!(
        p,
        NamingKey::from_bytes(&KNOWN).unwrap().pseudonym("user-42")
    );
    assert_ne!(p, b.pseudonym("user-42"), "depends on the naming key");
    assert_ne!(p, a.pseudonym("user-43"));
    assert_ne!(a.pseudonym(""), a.pseudonym("\0"));

    // HMAC-SHA-256(naming key, "sealgate/v1/pseudonym\0" || user id).
    let key = hmac::Key::new(hmac::HMAC_SHA256, &KNOWN);
    for id in ["user-42", "", "ünïcödé", "a\0b"] {
        let tag = hmac::sign(
            &key,
            &[&b"sealgate/v1/pseudonym\0"[..], id.as_bytes()].concat(),
        );
        assert_eq!(&a.pseudonym(id).as_bytes()[..], tag.as_ref(), "{id:?}");
    }

    // Hex form.
    let text = p.to_string();
    assert_eq!(text, ::hex::encode(p.as_bytes()));
    assert_eq!(format!("{p:?}"), format!("Pseudonym({text})"));
    assert_eq!(Pseudonym::from_hex(&text), Ok(p));
    assert_eq!(
        Pseudonym::from_hex(&text.to_uppercase()),
        Err(CryptoError::Malformed)
    );
    assert_eq!(
        Pseudonym::from_hex(&text[..62]),
        Err(CryptoError::Malformed)
    );
    assert_eq!(
        Pseudonym::from_hex(&format!("{text}00")),
        Err(CryptoError::Malformed)
    );
    assert_eq!(
        Pseudonym::from_hex(&format!("{}zz", &text[..62])),
        Err(CryptoError::Malformed)
    );

    // Shard: first 8 bytes big-endian, modulo the shard count.
    let head = u64::from_be_bytes(p.as_bytes()[..8].try_into().unwrap());
    for n in [1u32, 2, 3, 7, 16, 1000, u32::MAX] {
        assert_eq!(u64::from(p.shard(n)), head % u64::from(n), "{n} shards");
    }
    assert_eq!(p.shard(0), 0, "zero shards behaves as one");
    let zeros = Pseudonym::from_hex(&"00".repeat(32)).unwrap();
    let high = Pseudonym::from_hex(&format!("{}{}", "00".repeat(7), "ff".repeat(25))).unwrap();
    assert_eq!(zeros.shard(16), 0);
    assert_eq!(high.shard(1 << 16), 0xff, "only the first 8 bytes count");
}

#[test]
fn wrapped_keys_need_the_right_key_and_aad() {
    let master = MasterKey::from_bytes(&KNOWN).unwrap();
    let other_master = MasterKey::generate().unwrap();
    let kek = Kek::generate().unwrap();
    let w = master.wrap_kek(&kek, b"shard 3 v1").unwrap();
    assert_eq!(w.as_bytes().len(), WRAPPED_LEN);
    assert_eq!(WRAPPED_LEN, 60);
    assert_ne!(
        w,
        master.wrap_kek(&kek, b"shard 3 v1").unwrap(),
        "fresh nonce per wrap"
    );
    let kek2 = master.unwrap_kek(&w, b"shard 3 v1").unwrap();
    assert_eq!(
        master.unwrap_kek(&w, b"shard 3 v2").err(),
        Some(CryptoError::DecryptionFailed)
    );
    assert_eq!(
        master.unwrap_kek(&w, b"").err(),
        Some(CryptoError::DecryptionFailed)
    );
    assert_eq!(
        other_master.unwrap_kek(&w, b"shard 3 v1").err(),
        Some(CryptoError::DecryptionFailed)
    );
    for i in 0..WRAPPED_LEN {
        let mut b = *w.as_bytes();
        b[i] ^= 0x40;
        let forged = Wrapped::<Kek>::from_bytes(&b).unwrap();
        assert!(
            master.unwrap_kek(&forged, b"shard 3 v1").is_err(),
            "byte {i}"
        );
    }
    assert_eq!(
        Wrapped::<Kek>::from_bytes(&[0; 59]).err(),
        Some(CryptoError::Malformed)
    );
    assert_eq!(
        Wrapped::<Kek>::from_bytes(&[0; 61]).err(),
        Some(CryptoError::Malformed)
    );
    assert_eq!(Wrapped::<Kek>::from_bytes(w.as_bytes()).unwrap(), w);

    // The unwrapped KEK is the same key: it opens what the original wrapped.
    let user = UserKey::generate().unwrap();
    let wu = kek.wrap_user_key(&user, b"pseudonym v1").unwrap();
    let user2 = kek2.unwrap_user_key(&wu, b"pseudonym v1").unwrap();
    assert_eq!(
        kek2.unwrap_user_key(&wu, b"pseudonym v2").err(),
        Some(CryptoError::DecryptionFailed)
    );
    assert_eq!(
        Kek::generate()
            .unwrap()
            .unwrap_user_key(&wu, b"pseudonym v1")
            .err(),
        Some(CryptoError::DecryptionFailed)
    );

    let dek = Dek::generate().unwrap();
    let wd: WrappedDek = user.wrap_dek(Suite::Aes256Gcm, &dek, b"identity").unwrap();
    assert!(user2.unwrap_dek(Suite::Aes256Gcm, &wd, b"identity").is_ok());
    assert_eq!(
        user2.unwrap_dek(Suite::Aes256Gcm, &wd, b"identitY").err(),
        Some(CryptoError::DecryptionFailed)
    );
    assert_eq!(
        UserKey::generate()
            .unwrap()
            .unwrap_dek(Suite::Aes256Gcm, &wd, b"identity")
            .err(),
        Some(CryptoError::DecryptionFailed)
    );

    // Wrong lengths for byte-loaded keys.
    assert_eq!(
        MasterKey::from_bytes(&[0; 31]).err(),
        Some(CryptoError::InvalidKeySize)
    );
    assert_eq!(
        NamingKey::from_bytes(&[0; 33]).err(),
        Some(CryptoError::InvalidKeySize)
    );
}
