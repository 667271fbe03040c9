use axum::http::StatusCode;
use base64::Engine;

use super::{is_json_object, json_images, BASE64};
use crate::config::UploadLimits;

fn limits(max_parts: usize, max_part_bytes: u64) -> UploadLimits {
    UploadLimits {
        max_parts,
        max_part_bytes,
        ..UploadLimits::default()
    }
}

fn encoded(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn json_images_decode_in_order_with_or_without_padding_and_as_data_urls() {
    let a = encoded(b"first image");
    let b = encoded(b"second").trim_end_matches('=').to_string();
    let c = format!("data:image/png;base64,{}", encoded(b"third"));
    let body = serde_json::json!({ "images": [a, b, c] }).to_string();
    let upload = json_images(body.as_bytes(), &limits(3, 64)).unwrap();
    assert!(upload.list, "a JSON list is answered with a list");
    let parts: Vec<_> = upload.parts.into_iter().map(Result::unwrap).collect();
    assert_eq!(parts, [&b"first image"[..], b"second", b"third"]);
}

#[test]
fn one_bad_json_image_fails_alone() {
    let body = serde_json::json!({ "images": [encoded(b"ok"), "not base64!", encoded(&[7; 65])] })
        .to_string();
    let upload = json_images(body.as_bytes(), &limits(3, 64)).unwrap();
    assert_eq!(upload.parts.len(), 3, "no part lost");
    assert_eq!(upload.parts[0].as_deref().unwrap(), b"ok");
    let bad = upload.parts[1].as_ref().unwrap_err();
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.message.contains("base64"), "{}", bad.message);
    let big = upload.parts[2].as_ref().unwrap_err();
    assert_eq!(big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        big.message.contains("server.uploads.max_part_bytes"),
        "{}",
        big.message
    );
}

#[test]
fn the_byte_limit_is_exact_whatever_the_padding() {
    for len in 60..=70 {
        let image = vec![1u8; len];
        let padded = encoded(&image);
        for text in [padded.clone(), padded.trim_end_matches('=').to_string()] {
            let body = serde_json::json!({ "images": [text] }).to_string();
            let part = json_images(body.as_bytes(), &limits(1, 64))
                .unwrap()
                .parts
                .remove(0);
            assert_eq!(part.is_ok(), len <= 64, "{len} bytes");
            if let Ok(bytes) = part {
                assert_eq!(bytes.len(), len);
            }
        }
    }
}

#[test]
fn an_oversized_image_is_refused_before_decoding() {
    // Not valid base64 at all: refused for its length, never decoded.
    let body = serde_json::json!({ "images": ["!".repeat(4000)] }).to_string();
    let part = json_images(body.as_bytes(), &limits(1, 1000))
        .unwrap()
        .parts
        .remove(0);
    assert_eq!(part.unwrap_err().status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[test]
fn too_many_images_fail_the_request_naming_the_limit() {
    let body = serde_json::json!({ "images": vec![encoded(b"x"); 5] }).to_string();
    let e = json_images(body.as_bytes(), &limits(4, 64)).unwrap_err();
    assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        e.message.contains("server.uploads.max_parts"),
        "{}",
        e.message
    );
    assert!(json_images(body.as_bytes(), &limits(5, 64)).is_ok());
}

#[test]
fn malformed_json_bodies_are_400_and_an_empty_list_422() {
    for body in [&br#"{"images": "x"}"#[..], br#"{"image": ["x"]}"#, b"{"] {
        let e = json_images(body, &limits(4, 64)).unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST, "{e:?}");
        assert!(e.message.contains("\"images\""), "{}", e.message);
    }
    let e = json_images(br#"{"images": []}"#, &limits(4, 64)).unwrap_err();
    assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[test]
fn only_a_json_object_is_taken_for_json() {
    assert!(is_json_object(b" \n{\"images\": []}"));
    assert!(!is_json_object(b"\x89PNG\r\n\x1a\n"));
    assert!(!is_json_object(b"\xff\xd8\xff\xe0"));
    assert!(!is_json_object(b""));
    assert_eq!(BASE64.decode("YQ").unwrap(), b"a");
}
