"""Two releases serving one database at once, as during a rolling deployment
(scripts/check-previous-release). Python standard library only.

  previous_release.py both-serve PREVIOUS_BASE CURRENT_BASE TOKEN

Each release creates a post with an attachment; the other reads the post, its attachment
list and the attachment's bytes, deletes the attachment and then the post; each lists
posts. Exits non-zero naming the first step that failed.
"""
import hashlib
import json
import os
import sys
import time

from container_test import AUTHORIZATION, BOUNDARY, create_post, multipart_head, request

LISTING_WAIT_SECS = 30


def check(step, status, body, expected):
    if status != expected:
        sys.exit(f"{step}: answered {status}, not {expected}: {body[:300]!r}")
    return json.loads(body) if body else None


def write(base, name):
    post = create_post(base)
    data = os.urandom(48 * 1024).hex().encode()
    body = multipart_head(f"{name}.txt") + data + f"\r\n--{BOUNDARY}--\r\n".encode()
    status, answer = request(
        "POST", base + post["attachments_url"], body,
        {"content-type": f"multipart/form-data; boundary={BOUNDARY}"},
    )
    attachment = check(f"{name}: upload", status, answer, 201)["items"][0]
    return post, attachment, hashlib.sha256(data).hexdigest()


def read_and_delete(base, name, post, attachment, digest):
    check(f"{name}: read the post", *request("GET", f"{base}/v1/posts/{post['id']}"), 200)
    # Listed at once, or (from a release before migration 0004) by the reaper.
    deadline = time.monotonic() + LISTING_WAIT_SECS
    while True:
        listed = check(f"{name}: list its attachments", *request("GET", base + post["attachments_url"]), 200)
        if attachment["id"] in [item["id"] for item in listed["items"]]:
            break
        if time.monotonic() > deadline:
            sys.exit(f"{name}: the attachment is not listed after {LISTING_WAIT_SECS} s")
        time.sleep(0.5)
    status, content = request("GET", base + attachment["content_url"])
    if status != 200 or hashlib.sha256(content).hexdigest() != digest:
        sys.exit(f"{name}: the attachment's bytes answered {status}, or differ")
    check(f"{name}: list posts", *request("GET", f"{base}/v1/posts?limit=5"), 200)
    url = f"{base}{post['attachments_url']}/{attachment['id']}"
    check(f"{name}: delete the attachment", *request("DELETE", url), 204)
    check(f"{name}: delete the post", *request("DELETE", f"{base}/v1/posts/{post['id']}"), 204)


def both_serve(previous, current, token):
    AUTHORIZATION["Authorization"] = f"Bearer {token}"
    written_by_previous = write(previous, "the previous release writes")
    written_by_current = write(current, "this release writes")
    read_and_delete(current, "this release reads what the previous wrote", *written_by_previous)
    read_and_delete(previous, "the previous release reads what this one wrote", *written_by_current)
    print("both releases served each other's posts and attachments")


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    {"both-serve": both_serve}[command](*args)
