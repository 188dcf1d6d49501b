"""HTTP helpers of scripts/container-test (Python standard library only).

  container_test.py ready URL SECONDS        wait for 200 from URL
  container_test.py round-trip BASE [TOKEN]  post + attachment up and down, bytes compared
  container_test.py direct-upload BASE TOKEN S3_ORIGIN
                                             a direct upload PUT to S3 by its presigned URL,
                                             then a presigned GET; both URLs on S3_ORIGIN
  container_test.py slow-upload BASE SECONDS upload 32 MiB paced over SECONDS; prints the status
  container_test.py credentials PORT TOKEN LIFETIME COUNT_FILE
                                             serve ECS container credentials: a new key at
                                             each call, valid LIFETIME seconds; the number
                                             of calls served is kept in COUNT_FILE
  container_test.py jwks PORT CERT KEY JWK   serve {"keys": [JWK]} over HTTPS at /jwks.json,
                                             an identity provider's key set
"""
import base64
import hashlib
import http.server
import json
import os
import signal
import ssl
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

BOUNDARY = "container-test-boundary"


AUTHORIZATION = {}


def request(method, url, body=None, headers=None, timeout=30):
    headers = {**AUTHORIZATION, **(headers or {})}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def ready(url, seconds):
    deadline = time.time() + float(seconds)
    last = None
    while time.time() < deadline:
        try:
            status, body = request("GET", url, timeout=3)
            if status == 200:
                return
            last = f"{status} {body[:300]!r}"
        except OSError as error:
            last = str(error)
        time.sleep(0.5)
    sys.exit(f"{url} not ready within {seconds} s: {last}")


def create_post(base):
    status, body = request(
        "POST", f"{base}/v1/posts", json.dumps({"title": "from the container test"}).encode(),
        {"content-type": "application/json"},
    )
    if status != 201:
        sys.exit(f"creating a post answered {status}: {body[:300]!r}")
    return json.loads(body)


def multipart_head(name):
    return (f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{name}\""
            "\r\nContent-Type: application/octet-stream\r\n\r\n").encode()


def round_trip(base, token=None):
    if token:
        AUTHORIZATION["Authorization"] = f"Bearer {token}"
    post = create_post(base)
    # Text (random bytes, base64-encoded): a type the default allow-list accepts.
    data = base64.b64encode(os.urandom(3 * 1024 * 1024 + 18))
    body = multipart_head("data.bin") + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    status, answer = request(
        "POST", base + post["attachments_url"], body,
        {"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    if status != 201:
        sys.exit(f"upload answered {status}: {answer[:300]!r}")
    attachment = json.loads(answer)["items"][0]
    status, downloaded = request("GET", base + attachment["content_url"])
    if status != 200 or hashlib.sha256(downloaded).hexdigest() != attachment["sha256"]:
        sys.exit(f"download answered {status} with other bytes than were uploaded")
    if attachment["sha256"] != hashlib.sha256(data).hexdigest():
        sys.exit("the stored digest is not the uploaded bytes' digest")
    print(f"post {post['id']}: {len(data)} bytes up and down, sha256 {attachment['sha256'][:16]}…")


def presigned(method, url, body=None, headers=None):
    """A request to S3 by a presigned URL: its own signature, never the API's token."""
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def direct_upload(base, token, s3_origin):
    AUTHORIZATION["Authorization"] = f"Bearer {token}"
    post = create_post(base)
    data = base64.b64encode(os.urandom(600 * 1024))
    status, answer = request(
        "POST", base + post["attachments_url"] + "/uploads",
        json.dumps({"filename": "direct.txt", "content_type": "text/plain", "size": len(data)}).encode(),
        {"content-type": "application/json"},
    )
    if status != 201:
        sys.exit(f"starting a direct upload answered {status}: {answer[:300]!r}")
    ticket = json.loads(answer)
    if not ticket["url"].startswith(s3_origin + "/"):
        sys.exit(f"the presigned PUT names {ticket['url'][:80]}, not {s3_origin}")
    status, answer = presigned("PUT", ticket["url"], data, ticket["headers"])
    if status != 200:
        sys.exit(f"the presigned PUT answered {status}: {answer[:300]!r}")
    status, answer = request("POST", base + ticket["complete_url"])
    if status != 201:
        sys.exit(f"completing the direct upload answered {status}: {answer[:300]!r}")
    attachment = json.loads(answer)
    status, answer = request("GET", base + attachment["url"] + "/url")
    if status != 200:
        sys.exit(f"GET …/url answered {status}: {answer[:300]!r}")
    download = json.loads(answer)["url"]
    if not download.startswith(s3_origin + "/"):
        sys.exit(f"the presigned GET names {download[:80]}, not {s3_origin}")
    status, downloaded = presigned("GET", download)
    if status != 200 or downloaded != data:
        sys.exit(f"the presigned GET answered {status} with other bytes than were uploaded")
    print(f"post {post['id']}: {len(data)} bytes to S3 by presigned PUT and back by presigned GET")


def slow_upload(base, seconds):
    """Sends 32 MiB of text at an even pace over SECONDS; prints `STATUS POST_ID`."""
    post = create_post(base)
    size, chunks = 32 * 1024 * 1024, 64
    head = multipart_head("slow.bin")
    tail = f"\r\n--{BOUNDARY}--\r\n".encode()
    pause = float(seconds) / chunks

    def body():
        yield head
        for _ in range(chunks):
            yield base64.b64encode(os.urandom(size // chunks // 4 * 3))
            time.sleep(pause)
        yield tail

    req = urllib.request.Request(
        base + post["attachments_url"], data=body(), method="POST",
        headers={"content-type": f"multipart/form-data; boundary={BOUNDARY}",
                 "content-length": str(len(head) + size + len(tail))},
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as response:
            print(response.status, post["id"])
    except urllib.error.HTTPError as error:
        print(error.code, post["id"])
    except OSError:
        print("disconnected", post["id"])


def serve(port, answer, tls=None):
    """Serves GETs on 127.0.0.1:PORT until SIGTERM: `answer(request)` gives the status and
    the JSON body (bytes, or None for none); `tls` is (certificate, key) for HTTPS."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            status, body = answer(self)
            self.send_response(status)
            if body is not None:
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
            self.end_headers()
            if body is not None:
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", int(port)), Handler)
    if tls:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*tls)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    server.serve_forever()


def credentials(port, token, lifetime, count_file):
    served = []

    def answer(request):
        if request.headers.get("Authorization") != token:
            return 401, None
        served.append(request.path)
        with open(count_file, "w") as f:
            f.write(str(len(served)))
        expiry = datetime.now(timezone.utc) + timedelta(seconds=int(lifetime))
        return 200, json.dumps({
            "AccessKeyId": "ASIA" + uuid.uuid4().hex[:16].upper(),
            "SecretAccessKey": uuid.uuid4().hex,
            "Token": uuid.uuid4().hex,
            "Expiration": expiry.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "RoleArn": "arn:aws:iam::123456789012:role/posts-api-task",
        }).encode()

    serve(port, answer)


def jwks(port, certificate, key, jwk):
    with open(jwk) as f:
        body = json.dumps({"keys": [json.load(f)]}).encode()
    serve(port, lambda request: (200, body) if request.path == "/jwks.json" else (404, None),
          tls=(certificate, key))


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"ready": ready, "round-trip": round_trip, "direct-upload": direct_upload, "slow-upload": slow_upload,
     "credentials": credentials, "jwks": jwks}[command](*args)
