use super::keys::SigningKey;
use super::*;

fn sample() -> Receipt {
    Receipt {
        deployment_id: "dep-1".into(),
        region: "cn-north-1".into(),
        pseudonym: [0xab; 32],
        erased_at_ms: 1_700_000_000_123,
        destroyed_versions: vec![1, 2, 5],
        backup_horizon_ms: 1_702_592_000_123,
        key_id: "0011223344556677".into(),
    }
}

fn signer(seed: u8) -> SigningKey {
    SigningKey::from_seed(&[seed; 32]).unwrap()
}

#[test]
fn encoding_is_the_documented_bytes() {
    let r = Receipt {
        deployment_id: "d".into(),
        region: "rg".into(),
        pseudonym: [7; 32],
        erased_at_ms: 0x0102,
        destroyed_versions: vec![3, 9],
        backup_horizon_ms: 0,
        key_id: "k1".into(),
    };
    let mut want = b"sealgate/v1/erasure-receipt\0".to_vec();
    want.extend_from_slice(&[0, 1, b'd']);
    want.extend_from_slice(&[0, 2, b'r', b'g']);
    want.extend_from_slice(&[7; 32]);
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 1, 2]);
    want.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 9]);
    want.extend_from_slice(&[0; 8]);
    want.extend_from_slice(&[0, 2, b'k', b'1']);
    assert_eq!(r.encode().unwrap(), want);
    assert_eq!(Receipt::decode(&want).unwrap(), r);
}

#[test]
fn round_trips() {
    let r = sample();
    assert_eq!(Receipt::decode(&r.encode().unwrap()).unwrap(), r);
    let empty = Receipt {
        destroyed_versions: vec![],
        ..sample()
    };
    assert_eq!(Receipt::decode(&empty.encode().unwrap()).unwrap(), empty);
}

#[test]
fn signed_receipt_verifies_with_its_key_only() {
    let key = signer(1);
    let file = key.sign(sample()).unwrap();
    let got = verify(&file, &[key.public().clone()]).unwrap();
    assert_eq!(got.key_id, key.public().key_id);
    assert_eq!(got.destroyed_versions, vec![1, 2, 5]);

    // Another key with the receipt's id cannot be made; another key under
    // its own id is not the receipt's.
    let other = signer(2);
    assert_eq!(
        verify(&file, &[other.public().clone()]),
        Err(ReceiptError::UnknownKey(key.public().key_id.clone()))
    );
    // A key list whose entry lies about the id (built by hand) fails the
    // signature.
    let liar = PublicKey {
        key_id: key.public().key_id.clone(),
        key: other.public().key,
    };
    assert!(matches!(
        verify(&file, &[liar]),
        Err(ReceiptError::BadSignature(_))
    ));
}

#[test]
fn every_changed_byte_fails() {
    let key = signer(3);
    let keys = [key.public().clone()];
    let file = key.sign(sample()).unwrap();
    for i in 0..file.len() {
        for flip in [0x01u8, 0x80] {
            let mut bad = file.clone();
            bad[i] ^= flip;
            assert!(
                verify(&bad, &keys).is_err(),
                "byte {i} ^ {flip:#x} still verifies"
            );
        }
    }
}

#[test]
fn trailing_and_missing_bytes_fail() {
    let key = signer(4);
    let keys = [key.public().clone()];
    let file = key.sign(sample()).unwrap();
    let mut longer = file.clone();
    longer.push(0);
    assert_eq!(verify(&longer, &keys), Err(ReceiptError::TrailingBytes(1)));
    let encoding = sample().encode().unwrap();
    let mut trailing = encoding.clone();
    trailing.extend_from_slice(b"xy");
    assert_eq!(
        Receipt::decode(&trailing),
        Err(ReceiptError::TrailingBytes(2))
    );
    for n in 0..file.len() {
        assert!(verify(&file[..n], &keys).is_err(), "{n} bytes verify");
    }
    for n in 0..encoding.len() {
        let e = Receipt::decode(&encoding[..n]).unwrap_err();
        assert!(matches!(e, ReceiptError::Truncated(_)), "{n}: {e:?}");
    }
}

#[test]
fn malformed_encodings_get_precise_errors() {
    let encoding = sample().encode().unwrap();
    let mut magic = encoding.clone();
    magic[0] = b'S';
    assert_eq!(Receipt::decode(&magic), Err(ReceiptError::BadMagic));
    assert_eq!(Receipt::decode(b"hello"), Err(ReceiptError::BadMagic));

    let unordered = Receipt {
        destroyed_versions: vec![2, 2],
        ..sample()
    };
    assert_eq!(unordered.encode(), Err(ReceiptError::VersionsOutOfOrder));
    // Versions 1, 2, 5 swapped on the wire to 2, 1, 5.
    let at = MAGIC.len() + 2 + 5 + 2 + 10 + 32 + 8 + 4;
    let mut swapped = encoding.clone();
    swapped[at..at + 8].copy_from_slice(&[0, 0, 0, 2, 0, 0, 0, 1]);
    assert_eq!(
        Receipt::decode(&swapped),
        Err(ReceiptError::VersionsOutOfOrder)
    );
    // A count past the bytes present allocates nothing.
    let mut huge = encoding.clone();
    huge[at - 4..at].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(
        Receipt::decode(&huge),
        Err(ReceiptError::Truncated("destroyed versions"))
    );
    let mut negative = encoding.clone();
    negative[at - 12] = 0x80;
    assert_eq!(
        Receipt::decode(&negative),
        Err(ReceiptError::NegativeTime("erased_at"))
    );
    let mut utf8 = encoding;
    utf8[MAGIC.len() + 2] = 0xff;
    assert_eq!(
        Receipt::decode(&utf8),
        Err(ReceiptError::BadText("deployment id"))
    );
}

#[test]
fn public_key_lines_round_trip_and_check_the_id() {
    let key = signer(5).public().clone();
    assert_eq!(key.key_id.len(), 16);
    let line = key.to_line();
    assert_eq!(PublicKey::parse_line(&line).unwrap(), key);
    let two = format!("# keys\n{line}\n\n{}\n", signer(6).public().to_line());
    assert_eq!(PublicKey::parse_lines(&two).unwrap().len(), 2);
    let wrong_id = format!("0000000000000000 {}", hex::encode(key.key));
    assert!(matches!(
        PublicKey::parse_line(&wrong_id),
        Err(ReceiptError::BadPublicKey(_))
    ));
    assert!(PublicKey::parse_line("abc").is_err());
    assert!(PublicKey::parse_lines(&format!("{line}\nzz zz\n"))
        .unwrap_err()
        .to_string()
        .contains("line 2"));
}
