//! An HTTP client of the posts-api, for black-box tests, with the requests most tests make.

use bytes::Bytes;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde_json::{Value, json};

use crate::multipart::{closing_boundary, form_content_type, multipart, part_header};

/// The chunk size of streamed request bodies.
const CHUNK: usize = 1024 * 1024;

/// Talks to one running service.
#[derive(Clone, Debug)]
pub struct ApiClient {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    /// A client that ignores proxy settings.
    pub client: reqwest::Client,
}

impl ApiClient {
    /// A client of the service at `address`.
    pub fn new(address: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            client: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("HTTP client"),
        }
    }

    /// A client of the service at `address` that sends `token` as its bearer token with
    /// every request.
    pub fn with_bearer(address: impl Into<String>, token: &str) -> Self {
        let mut value =
            HeaderValue::from_str(&format!("Bearer {token}")).expect("a token is a header value");
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        Self {
            address: address.into(),
            client: reqwest::Client::builder()
                .no_proxy()
                .default_headers(headers)
                .build()
                .expect("HTTP client"),
        }
    }

    /// `{address}{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// `GET {address}{path}`.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path).await
    }

    /// `GET {address}{path}`, read as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        self.get(path).await.json().await.expect("a JSON body")
    }

    /// `GET {address}{path}`, read as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.get(path).await.text().await.expect("a text body")
    }

    /// `POST {address}{path}` with a JSON body.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request reaches the service")
    }

    /// `PATCH {address}{path}` with a JSON body.
    pub async fn patch_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .patch(self.url(path))
            .json(body)
            .send()
            .await
            .expect("request reaches the service")
    }

    /// `{METHOD} {address}{path}` without a body.
    pub async fn request(&self, method: reqwest::Method, path: &str) -> reqwest::Response {
        self.client
            .request(method, self.url(path))
            .send()
            .await
            .expect("request reaches the service")
    }

    /// Creates a post and returns its id.
    pub async fn create_post(&self) -> String {
        let response = self
            .post_json("/v1/posts", &json!({ "title": "a post", "body": "text" }))
            .await;
        assert_eq!(response.status(), 201);
        let post: Value = response.json().await.expect("post JSON");
        id_of(&post)
    }

    /// Uploads files as one multipart request.
    pub async fn upload(&self, post_id: &str, files: &[(&str, &[u8])]) -> reqwest::Response {
        let (content_type, body) = multipart(files);
        self.client
            .post(self.url(&format!("/v1/posts/{post_id}/attachments")))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request reaches the service")
    }

    /// Uploads `bytes` as the one file of a multipart form, with its `Content-Length`,
    /// streamed in chunks of 1 MiB (so large files are not copied into one body).
    pub async fn upload_streamed(
        &self,
        post_id: &str,
        name: &str,
        bytes: Bytes,
    ) -> reqwest::Response {
        let head = Bytes::from(part_header(name));
        let tail = Bytes::from(format!("\r\n{}", closing_boundary()));
        let length = head.len() + bytes.len() + tail.len();
        let chunks = std::iter::once(head)
            .chain(chunks_of(bytes))
            .chain(std::iter::once(tail));
        self.client
            .post(self.url(&format!("/v1/posts/{post_id}/attachments")))
            .header("content-type", form_content_type())
            .header("content-length", length)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(
                chunks.map(Ok::<_, std::io::Error>),
            )))
            .send()
            .await
            .expect("request reaches the service")
    }

    /// Uploads `bytes` as the raw body, with its `Content-Length`, streamed in chunks.
    pub async fn upload_raw_streamed(
        &self,
        post_id: &str,
        name: &str,
        bytes: Bytes,
    ) -> reqwest::Response {
        let length = bytes.len();
        self.client
            .post(self.url(&format!(
                "/v1/posts/{post_id}/attachments/raw?filename={name}"
            )))
            .header("content-type", "application/octet-stream")
            .header("content-length", length)
            .body(reqwest::Body::wrap_stream(futures::stream::iter(
                chunks_of(bytes).map(Ok::<_, std::io::Error>),
            )))
            .send()
            .await
            .expect("request reaches the service")
    }

    /// Creates a resumable (tus) upload of `bytes`, a text file named `upload.txt`, and
    /// sends every byte in one `PATCH`, streamed in chunks; the `PATCH`'s answer, whose
    /// `Content-Location` names the attachment.
    pub async fn upload_resumable(&self, post_id: &str, bytes: Bytes) -> reqwest::Response {
        let created = self
            .client
            .post(self.url(&format!("/v1/posts/{post_id}/attachments/tus")))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Length", bytes.len())
            // `upload.txt` and `text/plain`, in base64.
            .header(
                "Upload-Metadata",
                "filename dXBsb2FkLnR4dA==,filetype dGV4dC9wbGFpbg==",
            )
            .send()
            .await
            .expect("request reaches the service");
        assert_eq!(created.status(), 201, "the upload is created");
        let upload = created.headers()["location"]
            .to_str()
            .expect("a Location")
            .to_owned();
        self.client
            .patch(self.url(&upload))
            .header("Tus-Resumable", "1.0.0")
            .header("Upload-Offset", "0")
            .header("Content-Type", "application/offset+octet-stream")
            .header("content-length", bytes.len())
            .body(reqwest::Body::wrap_stream(futures::stream::iter(
                chunks_of(bytes).map(Ok::<_, std::io::Error>),
            )))
            .send()
            .await
            .expect("request reaches the service")
    }

    /// A direct upload of `bytes` as `filename` of `content_type`, declared with `extra`
    /// fields besides (e.g. `sha256`): begun, PUT to its presigned URL, then completed;
    /// the completion's answer.
    pub async fn upload_direct(
        &self,
        post_id: &str,
        filename: &str,
        content_type: &str,
        bytes: Bytes,
        extra: Value,
    ) -> reqwest::Response {
        let ticket = self
            .stage_direct(post_id, filename, content_type, bytes, extra)
            .await;
        self.complete_direct(&ticket).await
    }

    /// A direct upload as [`Self::upload_direct`] makes it, begun and PUT but not yet
    /// completed: its ticket.
    pub async fn stage_direct(
        &self,
        post_id: &str,
        filename: &str,
        content_type: &str,
        bytes: Bytes,
        extra: Value,
    ) -> Value {
        let mut declaration =
            json!({ "filename": filename, "content_type": content_type, "size": bytes.len() });
        if let (Some(declared), Some(extra)) = (declaration.as_object_mut(), extra.as_object()) {
            declared.extend(extra.clone());
        }
        let begun = self
            .post_json(
                &format!("/v1/posts/{post_id}/attachments/uploads"),
                &declaration,
            )
            .await;
        assert_eq!(begun.status(), 201, "the upload begins");
        let ticket: Value = begun.json().await.expect("a ticket");
        let mut put = self.client.put(ticket["url"].as_str().expect("url"));
        for (name, value) in ticket["headers"].as_object().expect("headers") {
            put = put.header(name, value.as_str().expect("header value"));
        }
        let stored = put.body(bytes).send().await.expect("S3 answers");
        assert!(stored.status().is_success(), "PUT: {}", stored.status());
        ticket
    }

    /// Completes the direct upload of `ticket` (from [`Self::stage_direct`]).
    pub async fn complete_direct(&self, ticket: &Value) -> reqwest::Response {
        self.post_json(
            ticket["complete_url"].as_str().expect("complete_url"),
            &json!({}),
        )
        .await
    }

    /// Deletes an attachment.
    pub async fn delete_attachment(&self, post_id: &str, attachment_id: &str) -> reqwest::Response {
        self.request(
            reqwest::Method::DELETE,
            &format!("/v1/posts/{post_id}/attachments/{attachment_id}"),
        )
        .await
    }

    /// Downloads an attachment's content as it streams, keeping only its length.
    pub async fn download_length(&self, post_id: &str, attachment_id: &str) -> u64 {
        let mut response = self
            .get(&format!(
                "/v1/posts/{post_id}/attachments/{attachment_id}/content"
            ))
            .await;
        assert!(response.status().is_success(), "{}", response.status());
        let mut length = 0;
        while let Some(chunk) = response.chunk().await.expect("the body streams") {
            length += chunk.len() as u64;
        }
        length
    }

    /// Uploads one file and returns the attachment JSON.
    pub async fn upload_one(&self, post_id: &str, name: &str, bytes: &[u8]) -> Value {
        let response = self.upload(post_id, &[(name, bytes)]).await;
        assert_eq!(response.status(), 201);
        let mut body: Value = response.json().await.expect("JSON");
        body["items"][0].take()
    }

    /// Uploads one file and returns the attachment's id.
    pub async fn upload_one_id(&self, post_id: &str, name: &str, bytes: &[u8]) -> String {
        id_of(&self.upload_one(post_id, name, bytes).await)
    }

    /// A new post with one attachment of `bytes`: (post id, attachment JSON).
    pub async fn post_with_attachment(&self, name: &str, bytes: &[u8]) -> (String, Value) {
        let post = self.create_post().await;
        let attachment = self.upload_one(&post, name, bytes).await;
        (post, attachment)
    }
}

/// `bytes` in chunks of at most [`CHUNK`], without copying.
fn chunks_of(bytes: Bytes) -> impl Iterator<Item = Bytes> {
    (0..bytes.len())
        .step_by(CHUNK)
        .map(move |start| bytes.slice(start..(start + CHUNK).min(bytes.len())))
}

/// The `id` of a post or attachment JSON.
pub fn id_of(value: &Value) -> String {
    value["id"].as_str().expect("an id").to_owned()
}

/// Asserts that `response` is an `application/problem+json` error of `status` whose body
/// agrees, and returns the body.
pub async fn expect_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status);
    assert_eq!(
        response.headers()["content-type"],
        "application/problem+json"
    );
    let body: Value = response.json().await.expect("problem JSON");
    assert_eq!(body["status"], status);
    assert!(
        body["title"].is_string() && body["detail"].is_string(),
        "{body}"
    );
    body
}
