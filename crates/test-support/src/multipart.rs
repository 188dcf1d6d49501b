//! `multipart/form-data` bodies of `file` parts, built by hand so tests control every byte.

/// The multipart boundary the helpers use.
pub const BOUNDARY: &str = "posts-api-test-boundary-7MA4YWxkTrZu0gW";

/// The header of one `file` part.
pub fn part_header(name: &str) -> String {
    format!(
        "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
}

/// The closing boundary.
pub fn closing_boundary() -> String {
    format!("--{BOUNDARY}--\r\n")
}

/// The `Content-Type` of the bodies the helpers build.
pub fn form_content_type() -> String {
    format!("multipart/form-data; boundary={BOUNDARY}")
}

/// A `multipart/form-data` body of `file` parts: (content type, body).
pub fn multipart(files: &[(&str, &[u8])]) -> (String, Vec<u8>) {
    let mut body = Vec::new();
    for (name, bytes) in files {
        body.extend_from_slice(part_header(name).as_bytes());
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(closing_boundary().as_bytes());
    (form_content_type(), body)
}
